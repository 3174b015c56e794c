"""The Ollama judge (section 7.8) against a real local HTTP server that speaks the Ollama API.

Every request goes through the real `ollama` client to `tests/ollama_fake.py`,
which scripts the replies and records what the client sent.
"""
import csv
import json
import socket
import threading

import pytest

from llm import judge
from llm.__main__ import main as cli_main

from ollama_fake import BOOK_OPTIONS, FakeOllama, Reply

FAST = dict(backoff=0.01)  # retries without the real backoff's waiting


@pytest.fixture
def fake():
    with FakeOllama() as server:
        yield server


@pytest.fixture
def dead_host():
    """A loopback address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def records(n, **responses):
    """n records; each keyword is a response column whose value is formatted with i."""
    return [{"instruction": f"Task {i}", "input": "" if i % 2 else f"input {i}", "output": f"answer {i}",
             **{key: text.format(i=i) for key, text in responses.items()}} for i in range(n)]


def response_of(request):
    """The model response quoted in a judge prompt (the text between the third pair of backticks)."""
    return request["messages"][0]["content"].split("`")[5]


# --- the prompt ------------------------------------------------------------------------

def test_prompt_is_the_books_text_with_and_without_input():
    with_input = {"instruction": "Rewrite the sentence using a simile.", "input": "The car is very fast.",
                  "output": "The car is as fast as lightning.", "model_response": "The car is as fast as a bullet."}
    assert judge.judge_prompt(with_input, "model_response") == (
        "Given the input `Below is an instruction that describes a task. Write a response that "
        "appropriately completes the request.\n\n### Instruction:\nRewrite the sentence using a simile."
        "\n\n### Input:\nThe car is very fast.` and correct output `The car is as fast as lightning.`, "
        "score the model response `The car is as fast as a bullet.` on a scale from 0 to 100, where 100 "
        "is the best score. Respond with the integer number only.")
    without = {"instruction": "Name a color.", "input": "", "output": "Blue.", "r": "Red."}
    assert judge.judge_prompt(without, "r") == (
        "Given the input `Below is an instruction that describes a task. Write a response that "
        "appropriately completes the request.\n\n### Instruction:\nName a color.` and correct output "
        "`Blue.`, score the model response `Red.` on a scale from 0 to 100, where 100 is the best score. "
        "Respond with the integer number only.")
    rubric = judge.judge_prompt(without, "r", "1-5")
    assert "on a scale from 1 to 5" in rubric and rubric.endswith("Respond with the integer number only.")


# --- parsing replies -------------------------------------------------------------------

@pytest.mark.parametrize("reply, scale, expected", [
    ("85", "0-100", 85), ("Score: 85", "0-100", 85), ("85/100", "0-100", 85), ("**85**", "0-100", 85),
    ("I would score this response 85 because it is close.", "0-100", 85),
    ("The response scores 85 out of 100.", "0-100", 85), ("The score is: **92**", "0-100", 92),
    ("Score: 85/100\n\nIt gets 2 of the 3 points right.", "0-100", 85),
    ("2/3 of the facts are right. Score: 70", "0-100", 70),
    ("The response is 100% correct. Score: 95", "0-100", 95), ("85.0", "0-100", 85),
    ("0", "0-100", 0), ("Score: 0/100", "0-100", 0),
    ("4/5", "1-5", 4), ("Rating: 4", "1-5", 4), ("3 out of 5", "1-5", 3), ("5", "1-5", 5),
    # no usable number: None, never 0
    ("150", "0-100", None), ("-5", "0-100", None), ("8/10", "0-100", None), ("7", "1-5", None),
    ("0", "1-5", None), ("I cannot evaluate this response.", "0-100", None), ("", "0-100", None),
    (None, "0-100", None),
])
def test_parse_score(reply, scale, expected):
    assert judge.parse_score(reply, scale) == expected


# --- preflight -------------------------------------------------------------------------

def test_check_server_ready_reports_the_model_and_its_size(fake):
    check = judge.check_server(fake.url, "llama3")
    assert check.ok and check.model == "llama3:latest" and check.size == 4_661_224_676
    assert check.models == ["llama3:latest"]
    assert "Ready: llama3:latest" in check.message and "4.7 GB" in check.message
    assert "8.0B parameters" in check.message and "context 8192" in check.message  # from /api/show
    assert "POST /api/show" in fake.paths


def test_check_server_says_to_pull_a_missing_model():
    with FakeOllama(models={"mistral:latest": 4_100_000_000}) as fake:
        check = judge.check_server(fake.url, "llama3")
    assert not check.ok and check.models == ["mistral:latest"]
    assert "ollama pull llama3" in check.message and "mistral:latest" in check.message


def test_check_server_says_to_start_ollama_when_nothing_listens(dead_host):
    check = judge.check_server(dead_host)
    assert not check.ok and check.models == []
    assert "ollama serve" in check.message and dead_host in check.message


def test_host_comes_from_argument_then_environment(monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert judge.resolve_host(None) == "http://localhost:11434"
    monkeypatch.setenv("OLLAMA_HOST", "http://10.0.0.5:11434")
    assert judge.resolve_host("") == "http://10.0.0.5:11434"
    assert judge.resolve_host("http://127.0.0.1:9") == "http://127.0.0.1:9"


@pytest.mark.parametrize("requested, available, expected", [
    ("llama3", ["llama3:latest", "phi3:latest"], "llama3:latest"),
    ("llama3", ["llama3:8b"], "llama3:8b"),
    ("llama3", ["llama3.1:latest", "mistral:latest"], "llama3.1:latest"),
    ("llama3:latest", ["llama3"], "llama3"),
    ("llama3:8b", ["llama3:8b", "llama3:70b"], "llama3:8b"),
    ("llama3:70b", ["llama3:8b"], None),
    ("llama3", ["mistral:latest"], None),
    ("phi3", ["phi3.5:latest"], None),  # only the default llama3 accepts a newer version
])
def test_resolve_model(requested, available, expected):
    assert judge.resolve_model(requested, available) == expected


# --- scoring ---------------------------------------------------------------------------

REPLIES = {"r0": "85", "r1": "Score: 72", "r2": "64/100", "r3": "**90**",
           "r4": "I would rate it 55 out of 100.", "r5": "I cannot judge this.", "r6": "150"}


@pytest.mark.parametrize("stream", [True, False])
def test_scores_replies_in_every_format_and_records_failures(stream):
    entries = records(7, model_response="r{i}")
    with FakeOllama(reply=lambda req, n: REPLIES[response_of(req)]) as fake:
        results = list(judge.score_responses(entries, host=fake.url, parallel=3, stream=stream))
    by_index = {r.index: r for r in results}
    assert sorted(by_index) == list(range(7))
    assert [by_index[i].score for i in range(5)] == [85, 72, 64, 90, 55]
    for i in (5, 6):  # garbage and out of range: recorded with the raw reply, score None
        assert by_index[i].score is None and by_index[i].status == "parse failure"
        assert by_index[i].raw == REPLIES[f"r{i}"] and "parse failure" in by_index[i].error
    # the fake saw the right model, prompt and the book's options on every request
    assert fake.problems == []
    assert {r["model"] for r in fake.requests} == {"llama3:latest"}
    assert all(r["options"] == BOOK_OPTIONS for r in fake.requests)
    assert all(r["stream"] is stream for r in fake.requests)
    sent = sorted(r["messages"][0]["content"] for r in fake.requests)
    assert sent == sorted(judge.judge_prompt(e, "model_response") for e in entries)
    summary = judge.summarize(results, ["model_response"])
    column = summary.columns["model_response"]
    assert column.mean == pytest.approx((85 + 72 + 64 + 90 + 55) / 5)
    assert (column.n_scored, column.n_items, column.parse_failures, column.errors) == (5, 7, 2, 0)


def test_rubric_1_to_5():
    entries = records(3, model_response="r{i}")
    replies = {"r0": "4/5", "r1": "Rating: 2", "r2": "5"}
    with FakeOllama(reply=lambda req, n: replies[response_of(req)]) as fake:
        results = list(judge.score_responses(entries, host=fake.url, rubric="1-5"))
    assert sorted((r.index, r.score) for r in results) == [(0, 4), (1, 2), (2, 5)]
    assert all("on a scale from 1 to 5" in r["messages"][0]["content"] for r in fake.requests)


def test_slow_reply_beyond_the_timeout_is_an_error_and_the_others_score():
    entries = records(3, model_response="r{i}")

    def reply(req, n):
        return Reply("90", delay=3.0) if response_of(req) == "r1" else Reply("80")

    with FakeOllama(reply=reply) as fake:
        results = list(judge.score_responses(entries, host=fake.url, parallel=3, timeout=0.4, retries=1, **FAST))
    by_index = {r.index: r for r in results}
    assert by_index[0].score == 80 and by_index[2].score == 80
    slow = by_index[1]
    assert slow.score is None and slow.status == "error" and slow.attempts == 2
    assert slow.error == "no reply within 0.4 s (tried 2 times)"


def test_streamed_reply_that_outlasts_the_timeout_is_cut():
    """The timeout bounds the whole streamed reply, not only the wait for each chunk."""
    entries = records(2, model_response="r{i}")

    def reply(req, n):  # r0 trickles in over ~1.2 s, each chunk well within the timeout
        return Reply("85" * 6, chunk_delay=0.2) if response_of(req) == "r0" else Reply("85" * 6)

    with FakeOllama(reply=reply) as fake:
        results = list(judge.score_responses(entries, host=fake.url, timeout=0.5, retries=0))
    by_index = {r.index: r for r in results}
    assert by_index[0].status == "error" and by_index[0].error == "no reply within 0.5 s"
    assert by_index[1].status == "parse failure"  # "858585..." arrived whole: out of range, not cut


def test_server_errors_are_retried_until_they_succeed():
    entries = records(4, model_response="r{i}")
    seen = {}

    def reply(req, n):  # every response fails twice with 500, then scores
        key = response_of(req)
        seen[key] = seen.get(key, 0) + 1
        return Reply(status=500, error="llama runner process has terminated") if seen[key] <= 2 else "77"

    with FakeOllama(reply=reply) as fake:
        results = list(judge.score_responses(entries, host=fake.url, parallel=2, retries=2, **FAST))
    assert [r.score for r in results] == [77] * 4 and all(r.attempts == 3 for r in results)
    assert len(fake.requests) == 12


def test_server_errors_beyond_the_retries_are_recorded():
    entries = records(2, model_response="r{i}")
    with FakeOllama(reply=lambda req, n: Reply(status=500, error="out of memory")) as fake:
        results = list(judge.score_responses(entries, host=fake.url, retries=1, **FAST))
    assert len(fake.requests) == 4
    assert all(r.score is None and r.status == "error" for r in results)
    assert results[0].error == "server error 500: out of memory (tried 2 times)"


def test_client_errors_are_not_retried():
    entries = records(1, model_response="r{i}")
    with FakeOllama(reply=lambda req, n: Reply(status=400, error="invalid options")) as fake:
        results = list(judge.score_responses(entries, host=fake.url, retries=3, **FAST))
    assert len(fake.requests) == 1 and results[0].error == "server error 400: invalid options"


def test_missing_model_stops_before_any_chat_request():
    with FakeOllama(models={"mistral:latest": 1}) as fake:
        with pytest.raises(judge.ModelNotFound, match="ollama pull llama3"):
            list(judge.score_responses(records(3, model_response="r"), host=fake.url))
    assert fake.requests == []


def test_404_mid_run_aborts_with_the_fix_and_keeps_the_scores_so_far():
    entries = records(6, model_response="r{i}")

    def reply(req, n):
        return "60" if n <= 3 else Reply(status=404, error='model "llama3:latest" not found, try pulling it first')

    results = []
    with FakeOllama(reply=reply) as fake:
        with pytest.raises(judge.ModelNotFound, match="ollama pull llama3:latest") as info:
            for result in judge.score_responses(entries, host=fake.url, parallel=1, retries=3, **FAST):
                results.append(result)
    assert "not found, try pulling it first" in str(info.value)
    assert [r.score for r in results] == [60, 60, 60]
    assert len(fake.requests) == 4  # a 404 is not retried


def test_server_down_before_the_run(dead_host):
    with pytest.raises(judge.ServerUnavailable, match="ollama serve"):
        list(judge.score_responses(records(2, model_response="r"), host=dead_host))


@pytest.mark.parametrize("stream", [True, False])
def test_server_going_away_mid_run_keeps_partial_results(stream):
    entries = records(12, model_response="r{i}")
    results = []
    with FakeOllama(reply=lambda req, n: "70", go_away_after=5) as fake:
        with pytest.raises(judge.ServerUnavailable) as info:
            for result in judge.score_responses(entries, host=fake.url, parallel=2, retries=2,
                                                stream=stream, **FAST):
                results.append(result)
    message = str(info.value)
    assert "stopped answering" in message and "5 of 12 scores" in message and "ollama serve" in message
    # every item is accounted for once: five scores, the rest recorded as errors
    assert sorted(r.index for r in results) == list(range(12))
    assert [r.score for r in results if r.score is not None] == [70] * 5
    assert all(r.status == "error" and r.error for r in results if r.score is None)
    assert fake.gone


def test_stop_keeps_the_scores_so_far():
    entries = records(30, model_response="r{i}")
    stop = threading.Event()
    results = []
    with FakeOllama(reply=lambda req, n: Reply("66", delay=0.05)) as fake:
        for result in judge.score_responses(entries, host=fake.url, parallel=2, stop_event=stop):
            results.append(result)
            if len(results) == 4:
                stop.set()
    assert 4 <= len(results) < 30
    assert all(r.score == 66 for r in results)
    assert len(fake.requests) < 30


def test_repeat_k_reports_the_judges_spread():
    entries = records(2, model_response="r{i}")
    # the fake's judge answers differently per seed: 80, 90, 85 for seeds 123, 124, 125
    by_seed = {123: "80", 124: "90", 125: "85"}
    with FakeOllama(reply=lambda req, n: by_seed[req["options"]["seed"]],
                    expect_options={"temperature": 0, "num_ctx": 2048}) as fake:
        results = list(judge.score_responses(entries, host=fake.url, repeat_k=3, parallel=3))
    assert fake.problems == []
    assert sorted(r["options"]["seed"] for r in fake.requests) == [123, 123, 124, 124, 125, 125]
    summary = judge.summarize(results)
    column = summary.columns["model_response"]
    assert summary.repeat_k == 3 and column.mean == pytest.approx(85.0)
    assert column.mean_range == 10 and column.max_range == 10
    assert column.mean_std == pytest.approx(4.0824829, rel=1e-6)  # pstdev(80, 90, 85)
    rows = judge.results_table(entries, results)
    assert [(row["score"], row["scores"], row["spread"]) for row in rows] == [(85.0, "80 90 85", 10)] * 2


def test_two_columns_give_the_paired_difference():
    entries = records(4, model_a="a{i}", model_b="b{i}")
    scores = {"a0": "80", "a1": "60", "a2": "90", "a3": "junk", "b0": "70", "b1": "60", "b2": "50", "b3": "40"}
    with FakeOllama(reply=lambda req, n: scores[response_of(req)]) as fake:
        results = list(judge.score_responses(entries, ["model_a", "model_b"], host=fake.url, parallel=4))
    summary = judge.summarize(results, ["model_a", "model_b"])
    assert summary.columns["model_a"].mean == pytest.approx(230 / 3)
    assert summary.columns["model_b"].mean == pytest.approx(55.0)
    paired = summary.paired  # item 3 has no score for A and is left out of the pairs
    assert (paired.a, paired.b, paired.n_pairs) == ("model_a", "model_b", 3)
    assert paired.mean_diff == pytest.approx((10 + 0 + 40) / 3)
    assert (paired.a_better, paired.b_better, paired.ties) == (2, 0, 1)
    assert summary.parse_failures == 1 and summary.errors == 0
    text = judge.format_summary(summary)
    assert "model_a − model_b" in text and "+16.67" in text


# --- records in, scores out ------------------------------------------------------------

def test_bundled_example_loads_with_its_response_column():
    entries = judge.load_example()
    assert len(entries) == 110 and judge.check_entries(entries) == ["model_response"]


def test_csv_input_and_outputs(tmp_path, fake):
    path = tmp_path / "answers.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["instruction", "input", "output", "gpt2", "mine"])
        writer.writeheader()
        writer.writerow({"instruction": "Name a color.", "input": "", "output": "Blue.", "gpt2": "Red.",
                         "mine": "Blue."})
    entries = judge.load_entries(path)
    assert entries[0]["input"] == "" and judge.check_entries(entries) == ["gpt2", "mine"]
    results = list(judge.score_responses(entries, host=fake.url))
    out_csv = judge.save_scores(tmp_path / "scores.csv", entries, results)
    rows = list(csv.DictReader(out_csv.open()))
    assert [(r["column"], r["score"], r["judge_reply"]) for r in rows] == [("gpt2", "85", "85"), ("mine", "85", "85")]
    out_json = judge.save_scores(tmp_path / "scores.json", entries, results, meta={"judge_model": "llama3"})
    saved = json.loads(out_json.read_text())
    assert saved["judge_model"] == "llama3" and saved["summary"]["columns"]["gpt2"]["mean"] == 85
    assert len(saved["items"]) == 2


@pytest.mark.parametrize("content, suffix, message", [
    ("[{\"instruction\": \"x\", ", ".json", "not valid JSON"),
    ('{"a": 1}', ".json", "must hold a list of records"),
    ('[{"input": "", "output": "y", "model_response": "z"}]', ".json", "no 'instruction'"),
    ('[{"instruction": "x", "input": "", "output": "y"}]', ".json", "no response column"),
    ("instruction,input,output,r\n", ".csv", "no data rows"),
])
def test_bad_files_get_a_clear_message(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(judge.JudgeError, match=message):
        judge.load_entries(path)


def test_unknown_response_column_names_the_ones_there():
    with pytest.raises(judge.JudgeError, match="no response column 'gpt3'.*found: model_response"):
        judge.check_entries(records(2, model_response="r"), ["gpt3"])


# --- the CLI ---------------------------------------------------------------------------

def test_cli_scores_a_file_and_writes_the_scores(tmp_path, capsys):
    source = tmp_path / "responses.json"
    source.write_text(json.dumps(records(5, model_response="r{i}")))
    out = tmp_path / "scores.json"
    with FakeOllama(reply=lambda req, n: "Score: 80") as fake:
        code = cli_main(["judge", "--file", str(source), "--host", fake.url, "--parallel", "2",
                         "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "mean score 80.00 over 5 of 5 items" in captured.out
    assert json.loads(out.read_text())["summary"]["columns"]["model_response"]["mean"] == 80


def test_cli_server_down_exits_with_the_fix(dead_host, capsys):
    assert cli_main(["judge", "--host", dead_host]) == 2
    assert "ollama serve" in capsys.readouterr().err


def test_cli_model_missing_exits_with_the_fix(capsys):
    with FakeOllama(models={"phi3:latest": 1}) as fake:
        assert cli_main(["judge", "--host", fake.url, "--model", "llama3"]) == 2
    assert "ollama pull llama3" in capsys.readouterr().err
