"""The Pretrain tab (chapter 5) through its named API endpoints, and in a browser.

API runs train a custom model of lab-tiny size (width 32, one layer) for a few steps on the-verdict,
so every run takes seconds; the browser test starts the real lecture preset and stops it mid-way.
gradio_client does not follow `.then` chains: after a run, a client calls /register_pretrained
(what the browser does by itself) to add the model to its session.
"""
import math
import os
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from conftest import screenshot  # noqa: E402

ORDER = ["source", "upload", "mode", "base", "emb_dim", "n_layers", "n_heads", "context", "max_length", "stride",
         "batch_size", "epochs", "max_steps", "lr", "weight_decay", "seed", "eval_every", "prompt", "keep"]
TINY = {"source": "the-verdict.txt", "upload": None, "mode": "custom", "base": "lab-tiny", "emb_dim": 32,
        "n_layers": 1, "n_heads": 2, "context": 32, "max_length": 32, "stride": 32, "batch_size": 4, "epochs": 1,
        "max_steps": 6, "lr": 3e-3, "weight_decay": 0.1, "seed": 1, "eval_every": 3,
        "prompt": "Every effort moves you", "keep": False}


def run_args(**changes) -> list:
    """The /pretrain endpoint's inputs in order: a tiny custom model unless `changes` say otherwise."""
    values = {**TINY, **changes}
    return [values[k] for k in ORDER]


def _rows(frame):
    return frame["value"]["data"] if "value" in frame else frame["data"]


def _train(client, **changes):
    """(updates, final outputs) of one run, with the model then registered in the client's session."""
    job = client.submit(*run_args(**changes), api_name="/pretrain")
    updates = list(job)
    final = job.outputs()[-1]
    client.predict(api_name="/register_pretrained")
    return updates, final


@pytest.fixture(scope="module")
def client(lab_url):
    return gradio_client.Client(lab_url, verbose=False)


@pytest.fixture(scope="module")
def short_text(tmp_path_factory):
    """The first 4,000 characters of the-verdict as an upload: fewer windows, quicker evaluations."""
    from llm.pretraining import DEFAULT_TEXT

    path = tmp_path_factory.mktemp("texts") / "verdict-start.txt"
    path.write_text(DEFAULT_TEXT.read_text(encoding="utf-8")[:4000], encoding="utf-8")
    return {"source": "upload", "upload": handle_file(str(path))}


@pytest.fixture(scope="module")
def trained(client):
    return _train(client)


def test_training_streams_loss_samples_and_ends_with_perplexity_and_checkpoint(trained):
    from llm.checkpoints import load_checkpoint

    updates, (status, plot, lr_plot, timeline, result, checkpoint, picker) = trained
    assert updates[0][0] == "Reading and tokenizing the text…"  # the first update comes at once
    assert updates[1][0].endswith("Preparing the data and the model…")
    assert any("Step **" in u[0] and "tokens/s" in u[0] and "remaining" in u[0] for u in updates)
    assert "✅ Done: 6 steps" in status
    rows = _rows(plot)
    assert {r[2] for r in rows} == {"step loss", "smoothed", "train loss (evaluation)",
                                    "validation loss (evaluation)"}
    assert [r[0] for r in rows if r[2] == "step loss"] == [1, 2, 3, 4, 5, 6]  # every step, not only evaluations
    assert [r[0] for r in rows if r[2] == "validation loss (evaluation)"] == [1, 3, 6]
    assert [r[0] for r in _rows(lr_plot)] == [1, 2, 3, 4, 5, 6]
    assert timeline.count("class='pt-sample'") == 3  # evaluations after steps 1, 3 and 6
    assert timeline.index("step 6 ") < timeline.index("step 1 ")  # newest first
    assert "<b>Every effort moves you</b>" in timeline
    val = [r[1] for r in rows if r[2] == "validation loss (evaluation)"][-1]
    assert f"Validation perplexity {math.exp(val):,.1f}" in result
    ckpt = load_checkpoint(checkpoint)
    assert ckpt.task == "lm" and ckpt.training["steps"] == 6 and ckpt.model.cfg.emb_dim == 32
    assert ckpt.training["pretrain"]["train"]["seed"] == 1 and ckpt.training["text"] == "the-verdict.txt"
    assert Path(picker["value"]).name == Path(checkpoint).name  # the server's file, selected in the shared picker


def verdict_tokens() -> tuple[int, int]:
    """Tokens in the-verdict's training and validation parts (the book's 90/10 split)."""
    from llm.pretraining import DEFAULT_TEXT, split_text
    from llm.tokenizer import text_to_token_ids

    return tuple(len(text_to_token_ids(part)) for part in split_text(DEFAULT_TEXT.read_text(encoding="utf-8")))


def test_windows_are_shown_before_starting(client):
    from llm.data import count_windows

    train, val = verdict_tokens()
    windows = count_windows(train, 64, 32)
    md = client.predict("the-verdict.txt", None, 64, 32, 4, 15, 0, api_name="/pretrain_data")
    assert f"**{train:,}** training / **{val:,}** validation tokens" in md
    assert f"**{windows:,} training windows**" in md and f"**{15 * (windows // 4):,} steps**" in md
    assert "windows overlap" in md
    short = client.predict("the-verdict.txt", None, 1024, 1024, 4, 1, 0, api_name="/pretrain_data")
    assert "⚠️ The validation part" in short
    assert "4 layers × 128 wide" in client.predict("lecture", "lab-tiny", 128, 4, 4, 64, api_name="/pretrain_model")
    assert "must be divisible" in client.predict("custom", "lab-tiny", 32, 1, 3, 32, api_name="/pretrain_model")


def test_bad_inputs_give_clear_messages(client, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Hello there. " * 8)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n ")
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    cases = [
        (dict(source="upload", upload=handle_file(str(short))), "one window of context 32 needs 33"),
        (dict(source="upload", upload=handle_file(str(empty))), "empty.txt is empty"),
        (dict(source="upload", upload=handle_file(str(binary))), "image.txt looks like a binary file"),
        (dict(source="upload", upload=None), "Upload a .txt file first"),
        (dict(lr=-1e-3), "learning rate must be a positive number"),
        (dict(batch_size=0), "Batch size.*(must be|minimum value 1)"),
        (dict(mode="lecture", max_length=128), "max_length 128 is beyond the model's context length of 64"),
        (dict(max_length=64), "beyond the model's context length of 32"),
        (dict(n_heads=3), "must be divisible by n_heads"),
        (dict(prompt="  "), "Type a prompt"),
    ]
    for changes, message in cases:
        with pytest.raises(AppError, match=message):
            client.predict(*run_args(**changes), api_name="/pretrain")
    assert "binary" in client.predict("upload", handle_file(str(binary)), 32, 32, 4, 1, 0, api_name="/pretrain_data")


def test_two_clients_training_at_once_get_their_own_models(lab_url, short_text):
    from llm.checkpoints import load_checkpoint

    a, b = (gradio_client.Client(lab_url, verbose=False) for _ in range(2))
    job_a = a.submit(*run_args(seed=1, **short_text), api_name="/pretrain")
    job_b = b.submit(*run_args(seed=2, lr=1e-3, **short_text), api_name="/pretrain")
    out_a, out_b = job_a.result(), job_b.result()  # the second waits in the queue while the first trains
    a.predict(api_name="/register_pretrained")
    b.predict(api_name="/register_pretrained")
    path_a, path_b = out_a[6]["value"], out_b[6]["value"]  # the server's files, selected in each picker
    assert Path(path_a).parent != Path(path_b).parent  # one folder per session
    assert _rows(out_a[1]) != _rows(out_b[1])
    weights_a, weights_b = (load_checkpoint(p).model.out_head.weight for p in (path_a, path_b))
    assert not weights_a.equal(weights_b)
    assert load_checkpoint(path_b).training["pretrain"]["train"]["seed"] == 2
    # each session knows its own model only (Gradio's dropdown or the catalog refuses the other's)
    refused = "not one of the models of this lab or this session|not in the list of choices"
    assert "custom" in a.predict(path_a, api_name="/model_info")
    with pytest.raises(AppError, match=refused):
        a.predict(path_b, api_name="/model_info")
    with pytest.raises(AppError, match=refused):
        b.predict(*run_args(mode="continue", base=path_a, **short_text), api_name="/pretrain")
    # and can continue training it (a private copy), keeping the result in the catalog folder
    _, (status, _, _, _, _, _, picker) = _train(a, mode="continue", base=path_a, max_steps=3, keep=True,
                                                **short_text)
    assert "✅ Done: 3 steps" in status
    path = picker["value"]
    assert Path(path).parent == Path(os.environ["LLM_LAB_CHECKPOINTS"]).resolve()
    assert load_checkpoint(path).training["pretrain"]["model"] == path_a


def test_stop_saves_what_was_trained(client):
    from llm.checkpoints import load_checkpoint
    from llm.data import count_windows

    total = 50 * (count_windows(verdict_tokens()[0], 32, 32) // 4)
    job = client.submit(*run_args(max_steps=0, epochs=50, eval_every=20), api_name="/pretrain")
    for update in job:
        if "Step **" in update[0]:
            client.predict(api_name="/stop_pretrain")
            break
    for _ in job:
        pass
    status, _, _, _, result, checkpoint, _ = job.outputs()[-1]
    steps = load_checkpoint(checkpoint).training["steps"]
    assert 1 <= steps < total and f"⏹ Stopped after {steps:,} of {total:,} steps" in status
    assert "Validation perplexity" in result


def test_estimate_measures_this_machine(client):
    line = client.predict(*run_args()[:-1], None, api_name="/estimate_pretrain")
    assert "Measured on this machine" in line and "for 6 steps" in line


# --- in a real browser (Debian's chromium through Playwright), with screenshots ----------

def test_browser_lecture_run_then_stop(lab_url, open_page):
    page = open_page(lab_url, height=1000)
    page.get_by_role("tab", name="Pretrain").click()
    page.wait_for_function("document.querySelector('#pt-data').innerText.includes('training windows')")
    assert "4 layers × 128 wide" in page.inner_text("#pt-model")
    page.click("#pt-settings .label-wrap")  # the settings are folded under the Start button
    page.fill("#pt-eval-every input", "20")
    page.press("#pt-eval-every input", "Enter")
    page.click("#pt-start")
    # steps 1, 20, ..., 120 evaluated: about half the run, where the samples turn into the-verdict's prose
    # (a wait, not a timing assertion: 2 shared cores)
    page.wait_for_function("document.querySelectorAll('#pt-samples .pt-sample').length >= 7", timeout=600_000)
    page.wait_for_selector("#pt-loss-plot canvas, #pt-loss-plot svg")
    page.wait_for_timeout(800)
    page.evaluate("document.querySelector('#pt-start').scrollIntoView()")
    screenshot(page, "pretrain-running")
    assert "tokens/s" in page.inner_text("#pt-status")
    page.click("#pt-stop")
    page.wait_for_function("document.querySelector('#pt-status').innerText.includes('Stopped after')")
    page.wait_for_function("document.querySelector('#pt-result').innerText.includes('Validation perplexity')")
    page.wait_for_function("(document.querySelector('#model-picker input') || {value: ''}).value"
                           ".includes('pretrained')")
    page.evaluate("document.querySelector('#pt-start').scrollIntoView()")
    page.wait_for_timeout(500)
    screenshot(page, "pretrain-stopped")
