"""The Classify tab (chapter 6) through its named API endpoints: fine-tune, classify, batch, bad input.

One `gradio_client.Client` (one session) fine-tunes the randomly initialised `lab-tiny`
preset for a few steps, then classifies with the checkpoint that run registered.
"""
import csv
import math
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


@pytest.fixture(scope="module")
def finetuned(client):
    """(updates streamed, final outputs) of a 4-step fine-tuning run of lab-tiny, all layers trainable."""
    job = client.submit(BASE, "balanced", "all", 2, 4, 1, 1e-3, 8, 4, 123, api_name="/finetune_spam")
    updates = list(job)
    client.predict(api_name="/register_spam_classifier")  # the `.then` step the browser runs by itself
    return updates, job.outputs()[-1]


def test_finetune_streams_and_ends_with_accuracy_confusion_and_checkpoint(finetuned):
    updates, final = finetuned
    status, losses, lr, accs, compared, result_md, confusion, checkpoint, picker = final
    assert len(updates) >= 2  # the "preparing" update, then progress
    assert "Done" in status
    # the status says what the form changed in lab-tiny's from-scratch recipe, not the k / rank it does not use
    assert "the recipe for lab-tiny, changed here: lr 0.001, epochs 1, max_steps 4" in status
    assert "Test accuracy" in result_md and "after 4 steps" in result_md and "balanced data" in result_md
    loss_rows = losses["value"]["data"] if "value" in losses else losses["data"]
    assert {row[2] for row in loss_rows} == {"step loss", "smoothed", "train loss (evaluation)",
                                             "validation loss (evaluation)"}
    assert confusion is not None and Path(checkpoint).name.startswith("spam-lab-tiny-all-")
    from llm.checkpoints import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    assert ckpt.task == "classifier" and ckpt.labels == ["ham", "spam"] and ckpt.training["steps"] == 4
    assert picker["value"].endswith(Path(checkpoint).name)  # the new classifier is picked for classifying


def _classifier_key(finetuned):
    return finetuned[1][8]["value"]


def test_classify_gives_probabilities_and_an_explanation(client, finetuned):
    key = _classifier_key(finetuned)
    label, note, explanation = client.predict(key, "WINNER!! Claim your free prize now, call 0800",
                                              api_name="/classify")
    probs = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(probs) == {"ham", "spam"} and math.isclose(sum(probs.values()), 1.0, rel_tol=1e-5)
    assert label["label"] in probs and label["label"] in note
    assert "Claim" in explanation and "occlusion" in explanation


def test_long_message_is_truncated_with_a_notice(client, finetuned):
    _, note, _ = client.predict(_classifier_key(finetuned), "call now " * 6000, api_name="/classify")
    assert "only the first" in note


def test_batch_from_lines_and_a_csv(client, finetuned, tmp_path):
    path = tmp_path / "messages.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["label", "message"], ["spam", "Free entry, text WIN to 80086 now!"],
                                 ["ham", "See you at lunch, ok?"]])
    table, download, note = client.predict(_classifier_key(finetuned), "first line\n\nsecond line",
                                           handle_file(str(path)), api_name="/classify_batch")
    rows = table["data"] if "data" in table else table["value"]["data"]
    assert [r[0] for r in rows] == ["first line", "second line", "Free entry, text WIN to 80086 now!",
                                    "See you at lunch, ok?"]
    assert all(math.isclose(r[2] + r[3], 1.0, abs_tol=2e-4) for r in rows)
    assert "4 messages" in note and "accuracy against the file's labels" in note
    with open(download, newline="") as f:
        written = list(csv.reader(f))
    assert written[0][:4] == ["message", "label", "P(ham)", "P(spam)"] and len(written) == 5


def test_bad_input_gets_clear_messages(client, finetuned, tmp_path):
    key = _classifier_key(finetuned)
    with pytest.raises(AppError, match="empty"):
        client.predict(key, "   ", api_name="/classify")
    with pytest.raises(AppError, match="not a classifier"):
        client.predict(BASE, "hello", api_name="/classify")
    no_text = tmp_path / "numbers.csv"
    no_text.write_text("a,b\n1,2\n")
    with pytest.raises(AppError, match="no text column"):
        client.predict(key, "", handle_file(str(no_text)), api_name="/classify_batch")
    with pytest.raises(AppError, match="Nothing to classify"):
        client.predict(key, "\n\n", None, api_name="/classify_batch")
    with pytest.raises(AppError, match="minimum value 1|at least 1"):
        client.predict(BASE, "balanced", "all", 2, 4, 1, 1e-3, 0, 4, 123, api_name="/finetune_spam")
    with pytest.raises(AppError, match="learning rate"):
        client.predict(BASE, "balanced", "all", 2, 4, 1, -1.0, 8, 4, 123, api_name="/finetune_spam")


def test_stop_keeps_what_was_trained(client):
    job = client.submit(BASE, "balanced", "head", 2, 4, 1, 1e-3, 8, None, 123, api_name="/finetune_spam")
    for update in job:
        if "Step" in update[0]:
            client.predict(api_name="/stop_finetune")
            break
    for _ in job:  # drain to the end
        pass
    final = job.outputs()[-1]
    assert "Stopped after" in final[0]
    assert Path(final[7]).exists()


# --- in a real browser (Debian's chromium through Playwright), with screenshots ---------

def test_browser_finetune_then_classify_with_explanation(lab_url, open_page):
    page = open_page(lab_url, height=1000, timeout_ms=60_000)
    page.get_by_role("tab", name="Classify").click()
    page.click("#spam-policy input")
    page.get_by_role("option", name="all layers").click()
    page.fill("#spam-lr input", "0.001")
    page.fill("#spam-epochs input", "2")
    page.click("#spam-settings .label-wrap")  # batch size is folded under the Fine-tune button
    page.fill("#spam-batch input", "16")
    page.check("#spam-compare input")  # then the same recipe on random weights, drawn beside
    page.click("#spam-train")
    # mid-run: the step loss streams from the first step, the recipe is named in the status
    page.wait_for_function("(document.querySelector('#spam-status') || {innerText: ''}).innerText.includes('Step')",
                           timeout=600_000)
    page.wait_for_selector("#spam-loss-plot canvas, #spam-loss-plot svg")
    page.wait_for_timeout(3000)
    assert "the recipe for wharton-gpt, unchanged" in page.inner_text("#spam-status")
    screenshot(page, "classify-running", full_page=True)
    page.wait_for_function("(document.querySelector('#spam-result') || {innerText: ''}).innerText"
                           ".includes('Test accuracy')",
                           timeout=600_000)
    page.wait_for_selector("#spam-confusion .js-plotly-plot")
    assert "Done" in page.inner_text("#spam-status")
    assert "A random model of the same shape, same recipe: test accuracy" in page.inner_text("#spam-result")
    page.wait_for_selector("#spam-compare-plot canvas, #spam-compare-plot svg")
    screenshot(page, "classify-finetune", full_page=True)

    page.fill("#spam-message textarea", EXAMPLE_SPAM)
    page.click("#spam-classify")
    page.wait_for_selector("#spam-explanation .tok")
    assert page.locator("#spam-explanation .tok").count() > 10
    assert "spam" in page.inner_text("#spam-label")
    page.locator("#spam-message").scroll_into_view_if_needed()
    screenshot(page, "classify-explain", full_page=True)


EXAMPLE_SPAM = "URGENT! Your mobile number has been awarded a £2000 prize GUARANTEED. Call 09061790121 now"
