"""Pretraining on unlabeled text (chapter 5), on top of the one loop in `llm.training`.

Text in (`load_text`), the 90/10 split and the sliding-window loaders of chapter 2
(`split_text`, `make_loaders`), the loss of section 5.1 (`calc_loss_batch`,
`calc_loss_loader`, `perplexity`), named settings (`SETTINGS`: "lecture" and the
book's "book-ch05"), an honest time estimate measured on this machine
(`estimate_seconds`), and `pretrain(...)`, which builds everything and returns
a `Pretraining` job (the one job shape of `llm.jobs`: events, then `finish(path)`).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .checkpoints import Checkpoint, load_checkpoint
from .config import (  # noqa: F401  (chapter 5's settings live in llm.config, torch-free; re-exported)
    DEFAULT_PROMPT, DEFAULT_TEXT, MAX_TEXT_BYTES, SETTINGS, GPTConfig, PretrainSettings, get_settings)
from .data import GPTDatasetV1, count_windows
from .generation import generate_text
from .loss import chunked_cross_entropy
from .model import GPTModel
from .tokenizer import text_to_token_ids
from .jobs import TrainingJob
from .training import TrainRun, make_optimizer, mean_loss, train



# ---------------------------------------------------------------- text

def load_text(source: str | os.PathLike | bytes) -> str:
    """Read a training text (a path or the uploaded bytes); refuse empty, binary or too large input."""
    name = "the text"
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        name = path.name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise ValueError(f"{name} is {size / 1e6:.1f} MB; the limit for a training text is "
                             f"{MAX_TEXT_BYTES / 1e6:.0f} MB")
        data = path.read_bytes()
    if len(data) > MAX_TEXT_BYTES:
        raise ValueError(f"{name} is {len(data) / 1e6:.1f} MB; the limit for a training text is "
                         f"{MAX_TEXT_BYTES / 1e6:.0f} MB")
    if b"\x00" in data:
        raise ValueError(f"{name} looks like a binary file (it contains NUL bytes); give a plain .txt file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{name} is not UTF-8 text (undecodable byte at position {e.start}); "
                         "give a plain .txt file saved as UTF-8") from None
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\r\t\f")
    if control > max(10, len(text) // 100):
        raise ValueError(f"{name} looks like a binary file ({control} control characters); give a plain .txt file")
    if not text.strip():
        raise ValueError(f"{name} is empty: there is nothing to train on")
    return text


def split_text(text: str, train_ratio: float = 0.9, holdout_every: int | None = None) -> tuple[str, str]:
    """The first `train_ratio` of the characters for training, the rest for validation (section 5.1.3).

    `holdout_every=N` holds out every Nth paragraph (blank-line separated) instead, so a corpus
    of many books validates on all of them rather than on the end of the last one.
    """
    if holdout_every is not None:
        if not 2 <= holdout_every <= 1000:
            raise ValueError(f"holdout_every must be between 2 and 1000 paragraphs (got {holdout_every})")
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        held = {i for i in range(len(paragraphs)) if i % holdout_every == holdout_every - 1}
        return ("\n\n".join(p for i, p in enumerate(paragraphs) if i not in held),
                "\n\n".join(paragraphs[i] for i in sorted(held)))
    if not 0 < train_ratio < 1:
        raise ValueError(f"the training share must be between 0 and 1 (got {train_ratio})")
    split_idx = int(train_ratio * len(text))
    return text[:split_idx], text[split_idx:]


@dataclass
class PretrainData:
    """The two loaders of section 5.1.3 and how much data they hold."""

    train_loader: DataLoader
    val_loader: DataLoader
    train_tokens: int
    val_tokens: int
    train_windows: int
    val_windows: int
    context_length: int
    stride: int
    batch_size: int

    def summary(self) -> str:
        return (f"{self.train_tokens:,} training tokens -> {self.train_windows:,} windows of "
                f"{self.context_length} (stride {self.stride}) -> {len(self.train_loader):,} batches of "
                f"{self.batch_size}; {self.val_tokens:,} validation tokens -> {self.val_windows:,} windows")


def make_loaders(text: str, context_length: int, stride: int | None = None, batch_size: int = 2,
                 seed: int = 123, train_ratio: float = 0.9, holdout_every: int | None = None) -> PretrainData:
    """Split `text` 90/10 and cut both parts into sliding windows (sections 2.6 and 5.1.3).

    The training loader shuffles with its own generator seeded with `seed` and drops the
    last incomplete batch; the validation loader keeps its order and every window.
    """
    stride = context_length if stride is None else stride
    if context_length < 1:
        raise ValueError(f"the context length must be at least 1 token (got {context_length})")
    if stride < 1:
        raise ValueError(f"the stride must be at least 1 token (got {stride})")
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1 (got {batch_size})")
    train_text, val_text = split_text(text, train_ratio, holdout_every)
    train_ids, val_ids = text_to_token_ids(train_text), text_to_token_ids(val_text)
    need = context_length + 1
    for part, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < need:
            raise ValueError(f"the {part} part of the text has {len(ids):,} tokens, but one window of context "
                             f"{context_length} needs {need:,}: use a longer text (about "
                             f"{math.ceil(need / min(train_ratio, 1 - train_ratio)):,} tokens) or a shorter context")
    train_windows = count_windows(len(train_ids), context_length, stride)
    if train_windows < batch_size:
        raise ValueError(f"the training text makes {train_windows} windows, fewer than one batch of "
                         f"{batch_size}: use a smaller batch, a smaller stride or a longer text")
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(GPTDatasetV1(train_ids, max_length=context_length, stride=stride),
                              batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)
    val_loader = DataLoader(GPTDatasetV1(val_ids, max_length=context_length, stride=stride),
                            batch_size=batch_size, shuffle=False, drop_last=False)
    return PretrainData(train_loader, val_loader, len(train_ids), len(val_ids), train_windows,
                        count_windows(len(val_ids), context_length, stride), context_length, stride, batch_size)


# ---------------------------------------------------------------- loss (section 5.1)

def calc_loss_batch(input_batch, target_batch, model, device=None) -> torch.Tensor:
    """Cross-entropy of one batch: logits flattened over batch and positions (section 5.1.2).

    The book's `F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())`, with the
    output head applied a chunk of positions at a time (`llm.loss.chunked_cross_entropy`):
    the same loss and gradients without the (tokens x 50,257) logits ever whole in memory.
    """
    device = device or model.device
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    hidden = model(input_batch, hidden=True)
    out_head = getattr(model, "module", model).out_head  # (a DistributedDataParallel wraps the model)
    return chunked_cross_entropy(hidden, out_head, target_batch)


def calc_loss_loader(data_loader, model, device=None, num_batches: int | None = None) -> float:
    """Mean batch loss over the first `num_batches` batches of a loader (section 5.1.2)."""
    return mean_loss(model, data_loader, lm_loss, num_batches)


def lm_loss(model, batch) -> tuple[torch.Tensor, int]:
    """The loop's `loss_fn` for language modelling: (mean loss, tokens in the batch)."""
    input_batch, target_batch = batch
    return calc_loss_batch(input_batch, target_batch, model), target_batch.numel()


def perplexity(loss: float) -> float:
    """exp(loss): how many tokens the model is as unsure between as a uniform choice (section 5.1.2)."""
    return math.exp(loss) if loss < 700 else float("inf")


# ---------------------------------------------------------------- the run

def sampler(prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 50):
    """The book's `generate_and_print_sample` as a loop callback: a greedy continuation of `prompt`."""
    def sample(model) -> str:
        return generate_text(model, prompt, max_new_tokens=max_new_tokens, temperature=0.0, eos_id=None)
    return sample


class Pretraining(TrainingJob):
    """A pretraining job (section 5.2): iterate it for events, `finish(path)` saves (see `llm.jobs`).

    `.run`, `.model`, `.data` (the loaders) and `.settings` are what `pretrain` built.
    """

    task = "lm"

    def __init__(self, run: TrainRun, model: GPTModel, data: PretrainData, settings: PretrainSettings,
                 text_name: str | None = None):
        self.run, self.model, self.data, self.settings = run, model, data, settings
        self.storage = settings.storage
        self.facts = {"pretrain": settings.to_dict(), "train_tokens": data.train_tokens,
                      **({"text": text_name} if text_name else {})}
        self._start(settings.batch_size, settings.context_length)

    def save(self, path, resumable: bool = True, text_name: str | None = None):
        """Write the model now (resumable: with the run's state), without ending the job."""
        facts = {**self.facts, **({"text": text_name} if text_name else {})}
        return self.run.save(path, task="lm", training=facts, resumable=resumable, storage=self.storage)


def pretrain(text: str, settings: PretrainSettings | str = "lecture", model: GPTModel | None = None,
             resume: str | os.PathLike | Checkpoint | None = None, text_name: str | None = None,
             data: PretrainData | None = None, **overrides) -> Pretraining:
    """Start a pretraining job on `text`: model, loaders, loss, sampler and the one loop.

    `overrides` replace settings (of the settings or their TrainConfig, e.g. epochs=2, lr=1e-3;
    None values are ignored). `model` continues training an existing model (e.g. GPT-2 weights);
    `resume` continues a run saved resumable and takes its model and settings from the checkpoint.
    `data`: the loaders `make_loaders` already built for `text` with these settings (not rebuilt).
    """
    settings = get_settings(settings) if isinstance(settings, str) else settings
    checkpoint = None
    if resume is not None:
        checkpoint = resume if isinstance(resume, Checkpoint) else load_checkpoint(resume)
        model = checkpoint.model
        saved = checkpoint.training.get("pretrain")
        if saved:  # continue with the settings the run was started with (nested or the older flat form)
            settings = PretrainSettings.from_dict(saved)
        text_name = text_name or checkpoint.training.get("text")
    settings = settings.with_(**overrides)
    config = settings.train_config()
    if model is None:
        torch.manual_seed(config.seed)
        model = GPTModel(settings.model_config())
    if settings.context_length > model.cfg.context_length:
        raise ValueError(f"a context of {settings.context_length} tokens is beyond the model's context "
                         f"length of {model.cfg.context_length}")
    if data is None:
        data = make_loaders(text, settings.context_length, settings.stride, settings.batch_size, config.seed,
                            holdout_every=settings.holdout_every)
    run = train(model, data.train_loader, data.val_loader, lm_loss, config,
                sample=sampler(settings.prompt, settings.sample_tokens), resume=checkpoint)
    return Pretraining(run, model, data, settings, text_name)


def loss_rows(history: list[dict]) -> list[dict]:
    """One row per evaluation for a loss plot or CSV: tokens seen, train/val loss, perplexity, lr, time."""
    rows = []
    for e in history:
        m = e.get("metrics", {})
        val = m.get("val_loss")
        rows.append({"step": e["step"], "epoch": e["epoch"], "tokens_seen": e["seen"],
                     "train_loss": m.get("train_loss", e["train_loss"]), "val_loss": val,
                     "val_perplexity": perplexity(val) if val is not None else None,
                     "step_loss_mean": e["train_loss"], "lr": e["lr"], "tokens_per_s": e["tokens_per_s"],
                     "elapsed_s": e["elapsed"]})
    return rows


def estimate_seconds(cfg: GPTConfig, batch_size: int, context: int, steps: int, eval_forwards: int = 0,
                     timed_steps: int = 2) -> float:
    """Seconds for `steps` training steps plus `eval_forwards` evaluation batches, measured here.

    Times `timed_steps` real AdamW steps (after one untimed warm-up step) and one forward pass
    of a fresh model of shape `cfg` on random tokens, then scales up.
    """
    if context > cfg.context_length:
        raise ValueError(f"a context of {context} tokens is beyond the model's context length of {cfg.context_length}")
    gen = torch.Generator().manual_seed(0)
    model = GPTModel(cfg)
    model.train()
    optimizer = make_optimizer(model, 1e-4, 0.1)
    x = torch.randint(0, cfg.vocab_size, (batch_size, context + 1), generator=gen)
    batch = (x[:, :-1], x[:, 1:])
    times = []
    for i in range(timed_steps + 1):
        t = time.perf_counter()
        loss, _ = lm_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
    step = sum(times) / len(times)
    forward = 0.0
    if eval_forwards:
        model.eval()
        with torch.no_grad():
            t = time.perf_counter()
            lm_loss(model, batch)
            forward = time.perf_counter() - t
    return step * steps + forward * eval_forwards


def eval_forwards(settings: PretrainSettings, data: PretrainData, total_steps: int) -> int:
    """How many forward-only batches the evaluations of a run will take (train + val, plus the end)."""
    evals = 1 + total_steps // settings.train.eval_every + 1
    n = settings.train.eval_batches
    per_eval = (min(n, len(data.train_loader)) if n else len(data.train_loader)) + \
               (min(n, len(data.val_loader)) if n else len(data.val_loader))
    return evals * per_eval
