"""The judge tab end to end through `gradio_client`, against the fake Ollama server."""
import csv
import json
import socket
import threading

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from llm import judge

from conftest import screenshot
from ollama_fake import FakeOllama, Reply


def fake_score(response: str) -> int:
    """The fake judge's score for a response: a fixed function of its text."""
    return (len(response) * 7) % 101


def response_of(request):
    return request["messages"][0]["content"].split("`")[5]


def reply(request, n):
    text = response_of(request)
    if text.startswith("slow"):
        return Reply("50", delay=0.3)
    if text == "junk":
        return "I cannot score that."
    return f"Score: {fake_score(text)}"


@pytest.fixture(scope="module")
def fake():
    with FakeOllama(reply=reply) as server:
        yield server


@pytest.fixture(scope="module")
def judge_url(request):
    """The app's URL: the whole lab from conftest's `lab_url` when there is one, else the judge tab alone."""
    try:
        yield request.getfixturevalue("lab_url")
        return
    except pytest.FixtureLookupError:
        pass
    from llm.ui.app import build_app

    demo = build_app(["llm.ui.judge_tab"])
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def client(judge_url):
    return Client(judge_url, verbose=False)


def score_args(host, source="example", upload=None, a="model_response", b="(none)", **kw):
    settings = dict(model="llama3", rubric="0-100", parallel=4, repeat_k=1, timeout=30, temperature=0)
    settings.update(kw)
    return [host, settings["model"], settings["rubric"], settings["parallel"], settings["repeat_k"],
            settings["timeout"], settings["temperature"], source, upload, a, b]


def test_check_fills_the_model_list(client, fake):
    status, dropdown = client.predict(fake.url, "llama3", api_name="/check")
    assert status.startswith("✅ Ready: llama3:latest") and "4.7 GB" in status
    assert dropdown["value"] == "llama3:latest" and [c[1] for c in dropdown["choices"]] == ["llama3:latest"]


def test_check_says_what_to_do_when_no_server(client):
    status, _ = client.predict(f"http://127.0.0.1:{_free_port()}", "llama3", api_name="/check")
    assert status.startswith("⚠️") and "ollama serve" in status


def test_scores_the_bundled_example_end_to_end(client, fake):
    first_request = len(fake.requests)
    job = client.submit(*score_args(fake.url), api_name="/score")
    updates = list(job)
    progress, summary, table, figure, csv_path, json_path = updates[-1]
    entries = judge.load_example()
    expected = [fake_score(e["model_response"]) for e in entries]
    assert "**110 / 110** scored" in progress and "Done" in progress
    assert len(updates) >= 2  # at least the start and the finished table
    # the table: one row per record, in order, with the judge's raw reply
    headers, rows = table["headers"], table["data"]
    assert len(rows) == 110
    col = {name: headers.index(name) for name in ("index", "score", "judge_reply", "reference", "response")}
    assert [row[col["score"]] for row in rows] == expected
    assert rows[0][col["judge_reply"]] == f"Score: {expected[0]}"
    assert rows[0][col["reference"]] == entries[0]["output"] and rows[0][col["response"]] == entries[0]["model_response"]
    # the mean and the histogram
    mean = sum(expected) / len(expected)
    assert f"mean score **{mean:.2f}** over 110 of 110 items" in summary
    assert "parse failures: 0, errors: 0" in summary
    plot = json.loads(figure["plot"])
    assert sorted(plot["data"][0]["x"]) == sorted(expected)
    # the downloads
    with open(csv_path, newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    assert [int(r["score"]) for r in csv_rows] == expected
    saved = json.loads(open(json_path, encoding="utf-8").read())
    assert saved["summary"]["columns"]["model_response"]["mean"] == pytest.approx(mean)
    assert saved["judge_model"] == "llama3:latest" and len(saved["items"]) == 110
    # what the server received: the book's prompt and options, for all 110
    sent = fake.requests[first_request:]
    assert len(sent) == 110 and fake.problems == []
    assert sent[0]["messages"][0]["content"] in {judge.judge_prompt(e, "model_response") for e in entries}


def test_upload_csv_compares_two_columns(client, fake, tmp_path):
    path = tmp_path / "two_models.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["instruction", "input", "output", "model_a", "model_b"])
        writer.writerow(["Name a color.", "", "Blue.", "Blue is a color.", "Red."])
        writer.writerow(["Add 2 and 3.", "", "5", "The answer is 5.", "junk"])
        writer.writerow(["Opposite of hot?", "", "Cold.", "Cold.", "Warm, I think."])
    info, column_a, column_b = client.predict("upload", handle_file(str(path)), "model_response", "(none)",
                                              api_name="/records")
    assert "**3** records" in info and (column_a["value"], column_b["value"]) == ("model_a", "model_b")
    assert [c[1] for c in column_b["choices"]] == ["(none)", "model_a", "model_b"]
    result = client.predict(*score_args(fake.url, "upload", handle_file(str(path)), "model_a", "model_b"),
                            api_name="/score")
    progress, summary, table = result[:3]
    assert "**6 / 6** scored" in progress and "parse failures: **1**" in progress
    a = [fake_score(t) for t in ("Blue is a color.", "The answer is 5.", "Cold.")]
    b = [fake_score("Red."), fake_score("Warm, I think.")]
    assert f"**model_a**: mean score **{sum(a) / 3:.2f}**" in summary
    assert f"**model_b**: mean score **{sum(b) / 2:.2f}** over 2 of 3 items" in summary
    diff = ((a[0] - b[0]) + (a[2] - b[1])) / 2
    assert f"mean paired difference **{diff:+.2f}**" in summary and "over 2 items" in summary
    status = table["headers"].index("status")
    assert sorted(row[status] for row in table["data"]).count("parse failure") == 1


def test_bad_upload_gets_a_clear_message(client, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"instruction": "x", "output": ')
    with pytest.raises(AppError, match="not valid JSON"):
        client.predict("upload", handle_file(str(path)), "model_response", "(none)", api_name="/records")
    path.write_text('[{"input": "", "output": "y", "model_response": "z"}]')
    with pytest.raises(AppError, match="no 'instruction' field"):
        client.predict(*score_args("http://127.0.0.1:9", "upload", handle_file(str(path))), api_name="/score")


def test_server_down_and_missing_model_are_clear_errors(client, fake):
    with pytest.raises(AppError, match="ollama serve"):
        client.predict(*score_args(f"http://127.0.0.1:{_free_port()}"), api_name="/score")
    with pytest.raises(AppError, match="ollama pull mistral"):
        client.predict(*score_args(fake.url, model="mistral"), api_name="/score")


def test_stop_keeps_the_scores_so_far(client, fake, tmp_path):
    path = tmp_path / "slow.json"
    path.write_text(json.dumps([{"instruction": f"t{i}", "input": "", "output": "o", "model_response": f"slow {i}"}
                                for i in range(40)]))
    job = client.submit(*score_args(fake.url, "upload", handle_file(str(path)), parallel=1), api_name="/score")
    updates = []
    stopped = threading.Event()
    for update in job:
        updates.append(update)
        if len(updates) == 2 and not stopped.is_set():  # scores have arrived: stop from the same session
            assert client.predict(api_name="/stop") == "⏹ Stopping…"
            stopped.set()
    progress, _, table, _, csv_path, _ = updates[-1]
    assert stopped.is_set() and "Stopped: the scores so far are kept" in progress
    assert 1 <= len(table["data"]) < 40
    with open(csv_path, newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == len(table["data"])


def test_browser_scoring_run_shows_table_mean_and_histogram(judge_url, fake, open_page):
    """A real headless Chromium: check the server, score the bundled example, screenshot the result."""
    page = open_page(judge_url, height=1600, timeout_ms=30_000, lab=False)
    page.get_by_role("tab", name="Judge").click()
    page.fill("#judge-host input, #judge-host textarea", fake.url)
    page.click("#judge-check")
    # 90 s: on a loaded CI machine (2 cores, a full suite beside it) the check once took over 30 s.
    page.wait_for_function("document.querySelector('#judge-server-status').innerText.includes('Ready')",
                           timeout=90_000)
    page.click("#judge-score")
    page.wait_for_function("document.querySelector('#judge-progress').innerText.includes('Done')",
                           timeout=60_000)
    page.wait_for_selector("#judge-histogram .js-plotly-plot", timeout=30_000)
    summary = page.inner_text("#judge-summary")
    mean = sum(fake_score(e["model_response"]) for e in judge.load_example()) / 110
    assert f"mean score {mean:.2f} over 110 of 110 items" in summary
    assert "110 / 110" in page.inner_text("#judge-progress")
    assert page.locator("#judge-table tbody tr").count() > 0
    screenshot(page.locator("#tab-judge"), "judge")
