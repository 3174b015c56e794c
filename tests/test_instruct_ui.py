"""The Instruct & chat tab (chapter 7) through its named API endpoints, and in a browser.

One `gradio_client.Client` (one session) fine-tunes the randomly initialised `lab-tiny`
preset for a few steps, chats with the checkpoint that run registered (streamed),
and writes responses for the judge.
"""
import json
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from conftest import screenshot  # noqa: E402

BASE = "lab-tiny"


@pytest.fixture(scope="module")
def client(lab_url):
    return gradio_client.Client(lab_url, verbose=False)


def _text(content) -> str:
    """Chat content as text: Gradio 6 returns a list of parts ({"type": "text", "text": ...})."""
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def _rows(frame):
    return frame["value"]["data"] if "value" in frame else frame["data"]


@pytest.fixture(scope="module")
def finetuned(client):
    """(updates, final outputs) of a 6-step instruction fine-tuning of lab-tiny at lr 1e-3."""
    job = client.submit(BASE, "book", None, 2, 1e-3, 8, 6, False, api_name="/finetune_instruct")
    updates = list(job)
    client.predict(api_name="/register_instruct")  # the `.then` step the browser runs by itself
    return updates, job.outputs()[-1]


def test_finetune_streams_losses_samples_and_saves_an_instruct_checkpoint(finetuned):
    from llm.checkpoints import load_checkpoint

    updates, (status, losses, lr, compared, samples, checkpoint, picker) = finetuned
    assert len(updates) >= 2
    assert "Done" in status and "935 train / 55 validation" in status
    assert "the recipe for lab-tiny, changed here: max_steps 6" in status
    kinds = {row[2] for row in _rows(losses)}
    assert kinds == {"step loss", "smoothed", "train loss (evaluation)", "validation loss (evaluation)"}
    assert "Validation instruction:" in samples and "step     1:" in samples and "step     6:" in samples
    ckpt = load_checkpoint(checkpoint)
    assert ckpt.task == "instruct" and ckpt.training["steps"] == 6 and ckpt.training["batch_size"] == 8
    assert picker["value"].endswith(Path(checkpoint).name)  # selected for the chat


def test_chat_streams_through_gradio_client(client, finetuned):
    key = finetuned[1][6]["value"]
    job = client.submit("Name three primary colors.", [], "", key, 12, 1.0, 50, api_name="/chat")
    updates = list(job)
    history, cleared = job.outputs()[-1]
    assert cleared == ""
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert _text(history[0]["content"]).startswith("Name three primary colors.")
    replies = [_text(u[0][-1]["content"]) for u in updates if u[0] and u[0][-1]["role"] == "assistant"]
    assert len(replies) >= 2  # streamed: several updates of the growing reply
    assert all("### " not in r and "Below is an instruction" not in r for r in replies)


def test_chat_with_input_and_history(client, finetuned):
    key = finetuned[1][6]["value"]
    first = client.predict("Rewrite the sentence using a simile.", [], "The car is very fast.", key, 5, 0, 0,
                           api_name="/chat")[0]
    assert "*Input:* The car is very fast." in _text(first[0]["content"])
    second = client.predict("Name a fruit.", first, "", key, 5, 0, 0, api_name="/chat")[0]
    assert len(second) == 4 and _text(second[2]["content"]) == "Name a fruit."


def test_bad_input_gets_clear_messages(client, finetuned, tmp_path):
    key = finetuned[1][6]["value"]
    with pytest.raises(AppError, match="Type a message first"):
        client.predict("   ", [], "", key, 5, 0, 0, api_name="/chat")
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"instruction\": \"ok\", \"output\": \"x\"}, {\"output\": \"no instruction\"}]")
    with pytest.raises(AppError, match="record 1: has no 'instruction' field"):
        client.predict(BASE, "upload", handle_file(str(bad)), 1, 1e-3, 8, 1, False,
                       api_name="/finetune_instruct")
    broken = tmp_path / "broken.json"
    broken.write_text("[{\"instruction\": ")
    assert "not valid JSON" in client.predict(handle_file(str(broken)), api_name="/check_instruction_file")
    with pytest.raises(AppError, match="not valid JSON"):
        client.predict(key, "upload", handle_file(str(broken)), 5, api_name="/respond")
    with pytest.raises(AppError, match="Upload an instruction JSON"):
        client.predict(key, "upload", None, 5, api_name="/respond")
    with pytest.raises(AppError, match="learning rate"):
        client.predict(BASE, "book", None, 1, -1.0, 8, 1, False, api_name="/finetune_instruct")


def test_responses_for_judging_have_the_books_keys(client, finetuned, tmp_path):
    key = finetuned[1][6]["value"]
    records = [{"instruction": "Name a color.", "input": "", "output": "Blue."},
               {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}]
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(records))
    job = client.submit(key, "upload", handle_file(str(mine)), 4, api_name="/respond")
    list(job)
    status, table, path = job.outputs()[-1]
    assert "2 of 2 answered" in status
    written = json.loads(Path(path).read_text(encoding="utf-8"))
    assert [list(r) for r in written] == [["instruction", "input", "output", "model_response"]] * 2
    assert [r["output"] for r in written] == ["Blue.", "5"]


def test_stop_saves_what_was_trained(client):
    job = client.submit(BASE, "book", None, 2, 1e-3, 8, 0, False, api_name="/finetune_instruct")
    for update in job:
        if "Step" in update[0]:
            client.predict(api_name="/stop_finetune_instruct")
            break
    for _ in job:
        pass
    status, _, _, _, _, checkpoint, _ = job.outputs()[-1]
    assert "Stopped after" in status and Path(checkpoint).exists()


# --- in a real browser (Debian's chromium through Playwright), with a screenshot ---------

def test_browser_finetune_then_chat(lab_url, open_page):
    page = open_page(lab_url, height=1100)
    page.get_by_role("tab", name="Instruct & chat").click()
    page.click("#inst-settings .label-wrap")  # the learning rate is folded under the Fine-tune button
    page.fill("#inst-lr input", "0.001")
    page.fill("#inst-max-steps input", "30")
    page.check("#inst-compare input")  # then the same recipe on random weights, drawn beside
    page.click("#inst-train")
    page.wait_for_function("(document.querySelector('#inst-status') || {innerText: ''}).innerText"
                           ".includes('Step')")
    page.wait_for_function("(document.querySelector('#inst-samples textarea') || {value: ''}).value"
                           ".includes('    5: ')")
    page.wait_for_timeout(1000)
    screenshot(page, "instruct-finetune", full_page=True)
    page.wait_for_function("document.querySelector('#inst-status').innerText.includes('It is now selected')",
                           timeout=600_000)
    assert "A random model of the same shape, same recipe" in page.inner_text("#inst-status")
    page.wait_for_selector("#inst-compare-plot canvas, #inst-compare-plot svg")
    screenshot(page, "instruct-compare", full_page=True)
    page.get_by_text("Generation settings").click()
    page.fill("#chat-temperature input[type='number']", "0.8")
    page.press("#chat-temperature input[type='number']", "Enter")
    page.fill("#chat-top-k input[type='number']", "40")
    page.press("#chat-top-k input[type='number']", "Enter")
    page.fill("#chat-message textarea", "Rewrite the sentence using a simile.")
    page.fill("#chat-input textarea", "The car is very fast.")
    page.click("#chat-send")
    page.wait_for_function("document.querySelectorAll('#chat-box .message').length >= 2")
    page.wait_for_timeout(1500)
    assert "simile" in page.inner_text("#chat-box")
    # the note sits under the reply's progress until generation ends
    page.wait_for_function("(document.querySelector('#chat-note') || {innerText: ''}).innerText"
                           ".includes('instruction-tuned')", timeout=60_000)
    page.locator("#chat-box").scroll_into_view_if_needed()
    screenshot(page, "instruct", full_page=True)
