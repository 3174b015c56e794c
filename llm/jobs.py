"""One job shape for the three training tasks of chapters 5, 6 and 7: start → events → result.

Pretraining (`llm.pretraining.pretrain`), spam fine-tuning (`llm.classifier.finetune_spam`)
and instruction fine-tuning (`llm.instruct.finetune_instruct`) differ in their data and
their loss, not in how they are driven. Each returns a `TrainingJob`:

    job = pretrain(text, settings)          # start: model, data, loss, the one loop; checks memory
    for event in job:                       # TrainEvents, kinds declared in llm.training.EVENT_KINDS
        ...                                 # stopping = no longer pulling (or job.request_stop())
    result = job.finish(path)               # final metrics, the checkpoint (saved one way), a JobResult

Before a job starts it estimates its peak memory (`training_memory`: parameters, gradients,
AdamW's two moments, activations and the logits of one batch) and refuses, with a sentence,
a run that would not fit in the memory free on its device.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

#: Share of the free memory a training run may plan to use (the rest is the margin of the estimate).
MEMORY_SHARE = 0.8


# ---------------------------------------------------------------- memory

@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step needs at its peak, by part (fp32 training, section 5.2 / appendix D)."""

    parameters: int
    gradients: int
    optimizer: int  # AdamW keeps two moments per trained parameter
    activations: int  # kept for the backward pass, per batch
    logits: int  # the (batch, positions, outputs) logits with their softmax and gradient
    batch_size: int
    positions: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations + self.logits

    @property
    def per_example(self) -> float:
        return (self.activations + self.logits) / max(1, self.batch_size)

    def describe(self) -> str:
        gb = 1e9
        return (f"about {self.total / gb:.1f} GB (weights {self.parameters / gb:.2f}, gradients "
                f"{self.gradients / gb:.2f}, AdamW state {self.optimizer / gb:.2f}, activations "
                f"{self.activations / gb:.2f} and logits {self.logits / gb:.2f} GB for a batch of "
                f"{self.batch_size:,} × {self.positions:,} tokens)")


def training_memory(model, batch_size: int, positions: int, logit_positions: int | None = None) -> MemoryEstimate:
    """Estimate the peak memory of one training step of `model` on `batch_size` × `positions` tokens.

    Per block the backward pass keeps about 16 floats per token and embedding dimension (inputs of
    the norms, attention projections, the 4x feed-forward) plus the attention weights (heads ×
    positions² per example). The output head's logits (`logit_positions` per example: all of them
    for a language model, 1 for a classifier) are kept three times: logits, softmax, gradient.
    """
    cfg = model.cfg
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    trained = sum(p.numel() for p in params if p.requires_grad)
    per_layer = positions * 16 * cfg.emb_dim + cfg.n_heads * positions * positions
    activations = 4 * batch_size * (cfg.n_layers * per_layer + 2 * positions * cfg.emb_dim)
    outputs = model.out_head.out_features
    logits = 4 * 3 * batch_size * (positions if logit_positions is None else logit_positions) * outputs
    return MemoryEstimate(weights, 4 * trained, 8 * trained, activations, logits, batch_size, positions)


def free_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes free for new allocations on `device` (CUDA: the GPU's; else MemAvailable), or None."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(estimate: MemoryEstimate, device: torch.device | str = "cpu", free: int | None = None) -> None:
    """Raise a ValueError, saying how much would fit, when the run needs more than is free."""
    free = free_memory(device) if free is None else free
    if free is None:
        return
    allowed = MEMORY_SHARE * free
    if estimate.total <= allowed:
        return
    fixed = estimate.parameters + estimate.gradients + estimate.optimizer
    fits = int((allowed - fixed) // estimate.per_example) if allowed > fixed else 0
    advice = (f"use a batch of at most {fits:,}" if fits >= 1 else
              "the model alone does not fit: pick a smaller model")
    raise ValueError(f"This run needs {estimate.describe()}, but only {free / 1e9:.1f} GB are free here: {advice}, "
                     "fewer tokens per example, or gradient accumulation.")


# ---------------------------------------------------------------- the job

@dataclass
class JobResult:
    """What a finished (or stopped) job produced; `result.test_acc` reads `result.metrics["test_acc"]`."""

    path: Path | None  # None: measured, not saved (`TrainingJob.measure`)
    task: str
    metrics: dict
    steps: int
    total_steps: int
    seen: int
    elapsed: float
    stopped: bool
    training: dict = field(default_factory=dict)
    labels: tuple | None = None

    def __getattr__(self, name):
        metrics = self.__dict__.get("metrics") or {}
        if name in metrics:
            return metrics[name]
        raise AttributeError(f"JobResult has no {name!r}")

    @property
    def wall_s(self) -> float:
        return round(self.elapsed, 1)


class TrainingJob:
    """The shape every training task has; subclasses set the data, the loss and what `finish` measures.

    A subclass builds `self.run` (a `llm.training.TrainRun`), `self.model`, `self.settings`,
    `self.task` ("lm", "classifier" or "instruct"), `self.labels` and `self.facts` (what it adds to
    the checkpoint's training facts), then calls `self._start(batch_size, positions, ...)`.
    """

    task = "lm"
    labels = None
    storage = "fp32"

    def _start(self, batch_size: int, positions: int, logit_positions: int | None = None) -> None:
        """Check the memory of one step, then get ready to yield events."""
        batch_size = min(batch_size, len(self.run.train_loader.dataset)) if hasattr(
            self.run.train_loader, "dataset") else batch_size
        self.memory = training_memory(self.model, batch_size, positions, logit_positions)
        check_memory(self.memory, self.model.device)
        self.last_event = None
        self.result: JobResult | None = None
        self._events = self.events()

    # start → events
    def events(self):
        """The events of the run; a subclass may add its own (declared in EVENT_KINDS)."""
        return iter(self.run)

    def __iter__(self):
        return self

    def __next__(self):
        event = next(self._events)
        self.last_event = event
        return event

    def request_stop(self) -> None:
        """End at the next micro-batch (safe from another thread); see `TrainRun.request_stop`."""
        self.run.request_stop()

    def close(self) -> None:
        self._events.close()
        self.run.close()

    @property
    def total_steps(self) -> int:
        return self.run.total_steps

    @property
    def finished(self) -> bool:
        return self.last_event is not None and self.last_event.kind == "done"

    # → result
    def final_metrics(self) -> dict:
        """The last evaluation's metrics, or an evaluation of the model as it is now (bounded)."""
        history, step = self.run.history, self.run.state.step
        if history and history[-1]["step"] == step:
            return dict(history[-1]["metrics"])
        self.run._stop = False  # a stop asked for the training, not for this last measurement
        return self.run._side_effect_free(self.run.evaluate)

    def before_save(self) -> None:
        """A hook: e.g. merge LoRA adapters into the weights."""

    def measure(self) -> JobResult:
        """Stop pulling events and measure the model as it is, without saving it (a baseline run)."""
        if self.result is not None:
            return self.result
        stopped = not self.finished
        self.close()
        metrics = self.final_metrics()
        state = self.run.state
        facts = {**self.facts, "stopped": stopped, "total_steps": self.run.total_steps,
                 **{k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}}
        self.result = JobResult(None, self.task, metrics, state.step, self.run.total_steps, state.seen,
                                state.elapsed, stopped, facts, tuple(self.labels) if self.labels else None)
        return self.result

    def finish(self, path, resumable: bool = False) -> JobResult:
        """Stop pulling events, measure, save the checkpoint at `path` and return the result."""
        if self.result is not None and self.result.path is not None:
            return self.result
        result = self.measure()
        self.before_save()
        path = self.run.save(path, task=self.task, labels=list(self.labels) if self.labels else None,
                             training=result.training, resumable=resumable, storage=self.storage)
        self.result = replace(result, path=Path(path))
        return self.result
