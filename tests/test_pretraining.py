"""Pretraining (llm/pretraining.py) and `python -m llm pretrain`: text checks, loaders, loss, CLI."""
import csv
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

import llm.pretraining as pretraining
from llm.__main__ import main
from llm.checkpoints import load_checkpoint
from llm.data import count_windows
from llm.model import GPTModel
from llm.paths import ROOT_DIR
from llm.pretraining import (DEFAULT_TEXT, calc_loss_batch, calc_loss_loader, estimate_seconds, get_settings,
                             load_text, make_loaders, perplexity, pretrain, split_text)
from llm.tokenizer import text_to_token_ids
from llm.training import load_training_state

VERDICT = DEFAULT_TEXT.read_text(encoding="utf-8")


# ---------------------------------------------------------------- text

def test_load_text_reads_the_verdict_from_a_path_and_from_bytes():
    assert load_text(DEFAULT_TEXT) == VERDICT
    assert load_text(VERDICT.encode()) == VERDICT
    assert load_text("\ufeffhello".encode()) == "hello"  # a UTF-8 byte-order mark is dropped


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"  \n\t \n", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (bytes(range(1, 32)) * 20, "binary"),
    (b"caf\xe9 au lait", "not UTF-8"),
])
def test_load_text_refuses_empty_and_binary_input(data, message):
    with pytest.raises(ValueError, match=message):
        load_text(data)


def test_load_text_refuses_large_and_missing_files(tmp_path, monkeypatch):
    monkeypatch.setattr(pretraining, "MAX_TEXT_BYTES", 1000)
    big = tmp_path / "big.txt"
    big.write_text("word " * 1000)
    with pytest.raises(ValueError, match=r"big.txt is 0.0 MB; the limit .* is 0 MB"):
        load_text(big)
    with pytest.raises(ValueError, match="limit"):
        load_text(b"x" * 1001)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_text(tmp_path / "missing.txt")


def test_split_text_is_the_books_90_10_split():
    train, val = split_text(VERDICT)
    assert len(train) == int(0.9 * len(VERDICT)) and train + val == VERDICT
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_text(VERDICT, 1.0)


# ---------------------------------------------------------------- loaders

def test_make_loaders_counts_the_books_windows():
    data = make_loaders(VERDICT, context_length=256, stride=256, batch_size=2)
    train_ids = text_to_token_ids(split_text(VERDICT)[0])
    assert data.train_tokens == len(train_ids) and data.train_tokens + data.val_tokens >= 5145 - 2
    assert data.train_windows == count_windows(len(train_ids), 256, 256) == len(data.train_loader.dataset) == 18
    assert len(data.train_loader) == 9 and data.val_windows == 2  # as in section 5.1.3
    x, y = next(iter(data.train_loader))
    assert x.shape == y.shape == (2, 256)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert "18 windows of 256" in data.summary()


def test_make_loaders_shuffles_reproducibly_with_its_seed():
    first = [next(iter(make_loaders(VERDICT, 64, 64, 4, seed=s).train_loader))[0] for s in (1, 1, 2)]
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])


@pytest.mark.parametrize("text, kwargs, message", [
    ("Every effort moves you. " * 20, {"context_length": 256}, r"training part of the text has \d+ tokens, but one "
                                                               r"window of context 256 needs 257"),
    (VERDICT, {"context_length": 256, "batch_size": 64}, "fewer than one batch of 64"),
    (VERDICT, {"context_length": 64, "batch_size": 0}, "batch size must be at least 1"),
    (VERDICT, {"context_length": 0}, "context length must be at least 1"),
    (VERDICT, {"context_length": 64, "stride": -1}, "stride must be at least 1"),
])
def test_make_loaders_explains_what_does_not_fit(text, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_loaders(text, **kwargs)


# ---------------------------------------------------------------- loss

def test_calc_loss_batch_and_loader_are_the_books_cross_entropy(tiny_cfg):
    torch.manual_seed(123)
    model = GPTModel(tiny_cfg).eval()
    data = make_loaders(VERDICT, 32, 32, 2)
    x, y = next(iter(data.val_loader))
    with torch.no_grad():
        loss = calc_loss_batch(x, y, model, "cpu")
        manual = -torch.log_softmax(model(x), dim=-1).gather(-1, y.unsqueeze(-1)).mean()
    torch.testing.assert_close(loss, manual)
    # an untrained model is about as unsure as a uniform choice over 50,257 tokens (section 5.1.2)
    assert abs(float(loss) - math.log(50257)) < 1.0
    with torch.no_grad():
        two = [float(calc_loss_batch(xb, yb, model)) for xb, yb in list(data.val_loader)[:2]]
    assert calc_loss_loader(data.val_loader, model, "cpu", num_batches=2) == pytest.approx(sum(two) / 2)
    assert perplexity(math.log(50257)) == pytest.approx(50257)


# ---------------------------------------------------------------- settings and the run

def test_settings_refuse_a_context_beyond_the_model_and_unknown_names(tiny_cfg):
    with pytest.raises(ValueError, match="beyond the model's context length of 32"):
        pretrain(VERDICT, "lecture", model=GPTModel(tiny_cfg), context_length=64)
    with pytest.raises(ValueError, match="beyond the lecture model's context length"):
        get_settings("lecture").with_(context_length=4096).model_config()
    with pytest.raises(ValueError, match="unknown pretraining settings 'nope'"):
        get_settings("nope")
    with pytest.raises(ValueError, match="learning rate must be a positive"):
        pretrain(VERDICT, "lecture", model=GPTModel(tiny_cfg), context_length=32, lr=-1.0)


def test_book_settings_are_the_books():
    book = get_settings("book-ch05")
    cfg = book.model_config()
    assert (cfg.emb_dim, cfg.n_layers, cfg.n_heads, cfg.context_length) == (768, 12, 12, 256)
    assert (book.context_length, book.batch_size, book.lr, book.weight_decay, book.epochs, book.eval_every) == \
        (256, 2, 4e-4, 0.1, 10, 5)
    assert book.schedule == "constant"


def test_pretrain_runs_evaluates_samples_and_resumes(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    job = pretrain(VERDICT, "lecture", model=GPTModel(tiny_cfg), context_length=32, batch_size=8,
                   epochs=None, max_steps=6, eval_every=3, eval_batches=2, sample_tokens=5)
    events = []
    for event in job:
        events.append(event)
        if event.step == 4 and event.kind == "step":
            break
    job.save(tmp_path / "run.safetensors")
    evals = [e for e in events if e.kind == "eval"]
    assert [e.step for e in evals] == [1, 3] and {"train_loss", "val_loss"} <= set(evals[0].metrics)
    assert evals[0].sample and isinstance(evals[0].sample, str)
    resumed = pretrain(VERDICT, "lecture", resume=tmp_path / "run.safetensors")
    assert resumed.settings.context_length == 32 and resumed.settings.max_steps == 6  # the saved settings
    rest = list(resumed)
    assert [e.step for e in rest if e.kind == "step"] == [5, 6] and rest[-1].kind == "done"


def test_estimate_seconds_times_real_steps(tiny_cfg):
    one = estimate_seconds(tiny_cfg, batch_size=2, context=16, steps=1)
    assert one > 0 and estimate_seconds(tiny_cfg, 2, 16, steps=100, eval_forwards=10) > 0
    with pytest.raises(ValueError, match="beyond the model's context length"):
        estimate_seconds(tiny_cfg, 2, 64, 10)


# ---------------------------------------------------------------- CLI

def test_cli_trains_a_few_steps_and_writes_the_files(tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    code = main(["pretrain", "--model", "lab-tiny", "--context", "32", "--batch-size", "8", "--max-steps", "4",
                 "--eval-every", "2", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "done: 4 steps" in printed and "sample: Every effort moves you" in printed
    ckpt = load_checkpoint(out)
    assert ckpt.model.cfg.emb_dim == 64 and ckpt.training["steps"] == 4
    assert "trainer" not in ckpt.extra  # a finished run keeps no optimizer state
    with open(tmp_path / "tiny.loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 4] and float(rows[-1]["val_loss"]) > 0
    assert (tmp_path / "tiny.loss.html").read_text().count("tokens seen") >= 1


def test_cli_refuses_bad_input_with_a_message(tmp_path, capsys):
    binary = tmp_path / "x.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    assert main(["pretrain", "--text", str(binary)]) == 2
    assert "binary" in capsys.readouterr().err
    assert main(["pretrain", "--model", "lab-tiny", "--context", "999"]) == 2
    assert "context length" in capsys.readouterr().err
    assert main(["pretrain", "--model", "lab-tiny", "--context", "32", "--batch-size", "0"]) == 2
    assert "batch size must be at least 1" in capsys.readouterr().err


def test_cli_ctrl_c_saves_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "stopped.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT_DIR)}
    proc = subprocess.Popen([sys.executable, "-m", "llm", "pretrain", "--model", "lab-tiny", "--context", "32",
                             "--max-steps", "100000", "--eval-every", "1000", "--out", str(out), "--no-progress"],
                            cwd=ROOT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("step 1/"):  # the evaluation after the first step: training is under way
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resumable checkpoint" in err and "--resume" in err
    state = load_training_state(load_checkpoint(out))
    assert 1 <= state.step < 100000
