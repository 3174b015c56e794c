"""One training loop for pretraining (chapter 5) and both fine-tunings (chapters 6 and 7).

The loop is the book's `train_model_simple` (section 5.2) grown up with the
extras of appendix D: AdamW with decoupled weight decay, linear warm-up then
cosine decay, gradient clipping, plus gradient accumulation, exact resume and
a bounded evaluation. It is a generator: it yields small `TrainEvent` records
and stopping is simply no longer pulling from it.

Public API
----------
TrainConfig(lr, weight_decay, epochs, max_steps, warmup_steps, warmup_fraction, min_lr,
            schedule, grad_clip, grad_accum, eval_every, eval_batches, sample_every, seed, precision)
    Defined torch-free in `llm.recipes` (each task's settings contain one) and re-exported here.
    `.validate()` raises ValueError with a sentence naming the bad value (every number is bounded).
    `.total_steps(steps_per_epoch)`: how many optimizer steps the run takes.

train(model, train_loader, val_loader, loss_fn, config, evaluate=None, sample=None,
      resume=None, trainable=None) -> TrainRun   (an Iterator[TrainEvent])
    loss_fn(model, batch) -> (loss_tensor, num_items): the mean loss of one batch and how many
        items it covers (tokens for a language model, examples for a classifier); `seen` and
        `tokens_per_s` count these items.
    evaluate(model) -> dict[str, float]: called (model in eval mode, no grad) after step 1, every
        `eval_every` steps and at the end. Default: {"train_loss", "val_loss"}, each the book's
        `calc_loss_loader` mean over at most `eval_batches` batches.
    sample(model) -> str: called at every `sample_every`-th step that also evaluates, and at the end.
    resume: a path to a checkpoint written by `TrainRun.save` / `save_training_checkpoint`, or the
        `Checkpoint` loaded from one; the model's weights, the optimizer, the schedule position,
        the epoch, the position inside the epoch and the random number generators are restored,
        so the run continues with exactly the losses an uninterrupted run would have had.
    trainable: None (train every parameter whose `requires_grad` is True) or parameter-name
        prefixes to train, e.g. ("out_head", "final_norm", "trf_blocks.11"); every other
        parameter is frozen. Only parameters with requires_grad reach the optimizer.

TrainRun: iterate it for events; `.request_stop()` (from any thread) ends it at the next micro-batch;
    `.save(path, task=..., labels=..., training=..., resumable=True)`
    writes a checkpoint (resumable: with optimizer and loop state) at any point between two events; `.model`, `.optimizer`, `.state`,
    `.total_steps`, `.history` (the eval events so far). When the run ends or is closed the model
    is left in eval mode with no gradients; a run is never stopped in the middle of an
    optimizer step, because events are only yielded between steps.

TrainEvent(kind, step, total_steps, epoch, seen, train_loss, metrics, lr, tokens_per_s,
           elapsed, remaining, sample): `dataclasses.asdict(event)` is JSON-able. Every kind is
           declared once, in EVENT_KINDS (the loop yields step, eval and done; a job may add epoch).
    kind "step": after every optimizer step; train_loss is that step's mean loss,
        metrics {"grad_norm": ...} (the norm before clipping).
    kind "eval": after an evaluation; train_loss is the mean step loss since the previous
        evaluation, metrics is evaluate()'s dict, sample the text (or None).
    kind "done": once at the natural end, with the final metrics and sample.

make_optimizer(model, lr, weight_decay, embedding_lr_scale=1.0) -> torch.optim.AdamW
    Two groups, the nanoGPT rule: every parameter with 2 or more dimensions (Linear weights,
    token and position embeddings, the output head) decays; biases and LayerNorm scale/shift
    do not. `decay_groups(model)` returns the two name lists. A config's embedding_lr_scale
    other than 1 puts the token embedding in a third group at that multiple of the lr.
lr_at(step, config, total_steps) -> float: linear warm-up then cosine decay to min_lr.
save_training_checkpoint(path, model, optimizer, state, task="lm", labels=None, training=None)
load_training_state(checkpoint) -> TrainState
mean_loss(model, loader, loss_fn, num_batches=None) -> float  (the book's calc_loss_loader shape)
preserved_rng(loader): a context that puts torch's and the loader's random state back afterwards.

The three tasks wrap a TrainRun in the one job shape of `llm.jobs` (start → events → finish).

Several processes (appendix A, `llm.distributed`): started by torchrun, the run joins the
process group, moves the model to its rank's device (cuda:LOCAL_RANK or the CPU), wraps it in
DDP, and trains on its `DistributedSampler` share of `train_loader` (and evaluates on its share
of `val_loader`); `batch_size` is per rank, the global batch is world size x batch x grad_accum.
Step losses and evaluate()'s metrics are means over the ranks, `seen` and `tokens_per_s` count
the items of all ranks, samples are written on rank 0 only, and `.save` writes from rank 0
only, then waits for it on every rank. A checkpoint resumes on any number of ranks: on the same
number exactly; on another number from the same weights, optimizer state, epoch and share of the
epoch already done, with that world size's order of the remaining examples and steps per epoch.
With precision "bf16" the forward passes of training run under bf16 autocast, on CUDA only.

Reproducibility: a fresh run seeds torch's global generator and the train loader's own
`generator` (if it has one) with `config.seed`. Evaluation and sampling run with the random
state saved and restored around them, so evaluating does not change the training losses.
Two runs in the same process at the same time share torch's global generator (dropout), so
exact reproducibility holds for runs that do not overlap (or models without dropout).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from . import distributed
from .checkpoints import Checkpoint, CheckpointError, load_checkpoint, load_state_dict_checked, save_checkpoint
from .recipes import SCHEDULES, TRAIN_PRECISIONS, TrainConfig  # noqa: F401  (torch-free; re-exported)

#: Every kind of event a training job yields, declared once (`TrainEvent.kind`).
EVENT_KINDS = {
    "step": "after every optimizer step: train_loss is that step's mean loss, metrics {'grad_norm'}",
    "eval": "after an evaluation: train_loss is the mean step loss since the last one, metrics the "
            "evaluation's (train_loss, val_loss, ...), sample the text sample or None",
    "epoch": "at the end of an epoch, for jobs that measure something per epoch (the spam accuracy)",
    "done": "once, at the natural end of the run, with the final evaluation's metrics and sample",
}


@dataclass
class TrainEvent:
    """One record from the loop; see the module docstring for what each kind carries."""

    kind: str  # one of EVENT_KINDS
    step: int  # optimizer steps done
    total_steps: int
    epoch: int  # 1-based epoch the step belongs to
    seen: int  # items (tokens or examples) trained on so far
    train_loss: float
    metrics: dict = field(default_factory=dict)
    lr: float = 0.0
    tokens_per_s: float = 0.0  # items per second of training (evaluation time excluded)
    elapsed: float = 0.0  # wall seconds since the run started (summed over resumes)
    remaining: float | None = None  # estimated wall seconds to the end
    sample: str | None = None


@dataclass
class TrainState:
    """Where a run stands between two optimizer steps; enough to resume exactly."""

    step: int = 0
    epoch: int = 0  # 0-based index of the epoch in progress
    batch_in_epoch: int = 0  # micro-batches of that epoch already consumed
    seen: int = 0
    elapsed: float = 0.0
    window_loss: float = 0.0  # sum of step losses since the last evaluation
    window_steps: int = 0
    history: list = field(default_factory=list)  # eval events as dicts
    rng: dict = field(default_factory=dict)  # name -> uint8 state tensor (now and at epoch start)
    world_size: int = 1  # processes the run was trained on; batch_in_epoch counts per process

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("rng")
        return d


# ---------------------------------------------------------------- optimizer and schedule

def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim < 2  # biases, LayerNorm scale and shift


def decay_groups(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters that get weight decay, and those that do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if _no_decay(name, p) else decay).append(name)
    return decay, no_decay


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   embedding_lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay) over the trainable parameters, no decay on biases and norms.

    With `embedding_lr_scale` other than 1 the token embedding gets a group of its own whose
    lr is the scheduled lr times that scale (`lr_scale`, read by the training loop).
    """
    params = dict(model.named_parameters())
    decay, no_decay = decay_groups(model)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    own = ["tok_emb.weight"] if embedding_lr_scale != 1.0 and "tok_emb.weight" in decay else []
    groups = [{"params": [params[n] for n in decay if n not in own], "weight_decay": weight_decay},
              {"params": [params[n] for n in no_decay], "weight_decay": 0.0},
              {"params": [params[n] for n in own], "weight_decay": weight_decay, "lr_scale": embedding_lr_scale}]
    groups = [g for g in groups if g["params"]]
    # The fused CPU/GPU kernel does the whole update in one pass over memory.
    try:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def lr_at(step: int, config: TrainConfig, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based), appendix D.

    Warm-up: lr * (step + 1) / warmup for the first `warmup` steps (never 0);
    then cosine from lr down to min_lr at the end of the run ("constant" stays at lr).
    """
    warmup = config.warmup(total_steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def mean_loss(model, loader, loss_fn, num_batches: int | None = None, should_stop=None) -> float:
    """Mean of the batch losses over the first `num_batches` batches (the book's calc_loss_loader).

    `should_stop()` returning True ends it early with the mean of the batches done so far.
    """
    if loader is None or len(loader) == 0:
        return float("nan")
    num_batches = len(loader) if num_batches is None else min(num_batches, len(loader))
    total, done = 0.0, 0
    for i, batch in enumerate(loader):
        if i >= num_batches or (done and should_stop is not None and should_stop()):
            break
        total += float(loss_fn(model, batch)[0])
        done += 1
    return total / done


# ---------------------------------------------------------------- random state

def _loader_generator(loader) -> torch.Generator | None:
    return getattr(loader, "generator", None)


def _get_rng(loader) -> dict:
    states = {"torch": torch.get_rng_state()}
    gen = _loader_generator(loader)
    if gen is not None:
        states["loader"] = gen.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def _set_rng(loader, states: dict) -> None:
    torch.set_rng_state(states["torch"])
    gen = _loader_generator(loader)
    if gen is not None and "loader" in states:
        gen.set_state(states["loader"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


@contextlib.contextmanager
def preserved_rng(loader=None):
    """Run the body and put torch's random state and `loader`'s shuffle generator back as they were.

    Measuring on the (shuffled) training loader would otherwise change the order of the batches
    that follow, and with it the training run.
    """
    saved = _get_rng(loader)
    try:
        yield
    finally:
        _set_rng(loader, saved)


# ---------------------------------------------------------------- checkpoints

def save_training_checkpoint(path, model, optimizer: torch.optim.Optimizer, state: TrainState,
                             task: str = "lm", labels=None, training: dict | None = None,
                             config: TrainConfig | None = None) -> Path:
    """Write model + optimizer + loop state as one lab checkpoint (atomically, via save_checkpoint).

    The optimizer's state dict is flattened: its tensors go to `extra_tensors` as
    "optim/<param index>/<key>", everything else to the JSON `extra`, together with the
    names of the parameters in each group so a resume can check they still match.
    """
    opt = optimizer.state_dict()
    names = {id(p): n for n, p in model.named_parameters()}
    tensors, scalars = {}, {}
    for idx, per_param in opt["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{key}"] = value
            else:
                scalars[f"{idx}/{key}"] = value
    for key, value in state.rng.items():
        tensors[f"rng/{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt["param_groups"]]
    extra = {"trainer": {"state": state.to_json(), "optimizer_groups": groups, "optimizer_scalars": scalars,
                         "param_names": [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups],
                         "config": asdict(config) if config is not None else None}}
    return save_checkpoint(path, model, task=task, labels=labels, training=training, extra=extra,
                           extra_tensors=tensors)


def load_training_state(checkpoint: Checkpoint) -> TrainState:
    """The loop state stored in a checkpoint written by `save_training_checkpoint`."""
    trainer = checkpoint.extra.get("trainer")
    if not trainer:
        raise CheckpointError(f"{Path(checkpoint.source).name or 'this checkpoint'} holds a model but no "
                              "training state, so a run cannot resume from it (start a new run from it instead)")
    state = TrainState(**trainer["state"])
    state.rng = {k[len("rng/"):]: v for k, v in checkpoint.extra_tensors.items() if k.startswith("rng/")}
    return state


def _continue_on(state: TrainState, world_size: int) -> None:
    """Carry the position inside the epoch over to a run on another number of processes.

    batch_in_epoch counts each process's micro-batches, so the share of the epoch done
    (in examples) stays the same when it is scaled by old / new world size.
    """
    if state.world_size != world_size:
        state.batch_in_epoch = state.batch_in_epoch * state.world_size // world_size
        state.world_size = world_size


def _restore_optimizer(optimizer, model, checkpoint: Checkpoint) -> None:
    trainer = checkpoint.extra["trainer"]
    names = {id(p): n for n, p in model.named_parameters()}
    now = [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    if now != trainer["param_names"]:
        raise CheckpointError("the checkpoint was trained with a different set of trainable parameters "
                              "than this run, so its optimizer state does not fit")
    state: dict = {}
    for key, value in checkpoint.extra_tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in trainer["optimizer_scalars"].items():
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = []
    for g in trainer["optimizer_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------- the loop

def _check_precision(precision: str, device: torch.device) -> None:
    if precision != "bf16":
        return
    if device.type != "cuda":
        raise ValueError(f"bf16 mixed precision needs a CUDA GPU, but the model is on {device.type} (there bf16 "
                         "autocast is about 50x slower than float32): use precision fp32, or train on GPUs")
    if not torch.cuda.is_bf16_supported():
        raise ValueError(f"{torch.cuda.get_device_name(device)} has no bf16 support: use precision fp32")


def _set_trainable(model: torch.nn.Module, trainable) -> None:
    if trainable is None:
        return
    prefixes = tuple(trainable)
    matched = False
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
        matched |= p.requires_grad
    if not matched:
        raise ValueError(f"no parameter name starts with any of {list(prefixes)}")


class TrainRun:
    """The iterator `train` returns: events, plus `.save()` to write a resumable checkpoint."""

    def __init__(self, model, train_loader, val_loader, loss_fn, config: TrainConfig,
                 evaluate=None, sample=None, resume=None, trainable=None):
        config.validate()
        if len(train_loader) == 0:
            raise ValueError("the training data has no batches (the text is too short for one batch)")
        _set_trainable(model, trainable)
        device = distributed.ddp_setup()  # None unless started by torchrun
        if device is not None:
            model.to(device)
            train_loader = distributed.shard_loader(train_loader, config.seed)
            val_loader = distributed.shard_loader(val_loader, config.seed)
            if len(train_loader) == 0:
                raise ValueError(f"the training data has no batches on each of {distributed.world_size()} "
                                 "processes: use fewer processes, a smaller batch or more data")
        _check_precision(config.precision, model.device)
        self.model, self.config = model, config
        self.train_loader, self.val_loader, self.loss_fn = train_loader, val_loader, loss_fn
        self.evaluate = evaluate or self._default_evaluate
        self.sample = sample
        self.steps_per_epoch = math.ceil(len(train_loader) / config.grad_accum)
        self.total_steps = config.total_steps(self.steps_per_epoch)
        self.optimizer = make_optimizer(model, config.lr, config.weight_decay, config.embedding_lr_scale)
        if resume is not None:
            checkpoint = resume if isinstance(resume, Checkpoint) else load_checkpoint(resume)
            load_state_dict_checked(model, {k: v.to(model.device) for k, v in checkpoint.model.state_dict().items()},
                                    Path(checkpoint.source).name or "checkpoint")
            self.state = load_training_state(checkpoint)
            _restore_optimizer(self.optimizer, model, checkpoint)
            _continue_on(self.state, distributed.world_size())
        else:
            self.state = TrainState(world_size=distributed.world_size())
            torch.manual_seed(config.seed)
            gen = _loader_generator(train_loader)
            if gen is not None:
                gen.manual_seed(config.seed)
            self.state.rng = _get_rng(train_loader)
        # Training passes go through DDP (it averages the gradients over the ranks); evaluation,
        # sampling and saving use the model itself.
        self.ddp = distributed.ddp_model(model, device) if distributed.is_distributed() else None
        self._report = [] if os.environ.get(distributed.REPORT_ENV) else None  # test hook: (own, reported) losses
        self._stop = False
        self._gen = self._loop()

    # iterator protocol
    def __iter__(self) -> Iterator[TrainEvent]:
        return self

    def __next__(self) -> TrainEvent:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    @property
    def history(self) -> list[dict]:
        return self.state.history

    def save(self, path, task: str = "lm", labels=None, training: dict | None = None,
             resumable: bool = True, storage: str = "fp32") -> Path:
        """Write the model as it stands after the last event; `resumable` adds optimizer and loop state.

        A resumable checkpoint is about three times the model's size (AdamW keeps two moments
        per parameter); a plain one holds only the weights and the `training` facts, in
        `storage` precision ("int8": a quarter of the size, see `save_checkpoint`).
        """
        facts = {"steps": self.state.step, "seen": self.state.seen, "epochs": self.config.epochs,
                 "lr": self.config.lr, "seed": self.config.seed, "elapsed_s": round(self.state.elapsed, 1),
                 **(training or {})}
        if self.history:
            facts["final_metrics"] = self.history[-1].get("metrics", {})
        if not resumable:
            distributed.on_main(save_checkpoint, path, self.model, task=task, labels=labels, training=facts,
                                storage=storage)
        else:
            distributed.on_main(save_training_checkpoint, path, self.model, self.optimizer, self.state, task,
                                labels, facts, self.config)
        return Path(path)

    def _default_evaluate(self, model) -> dict[str, float]:
        n, stop = self.config.eval_batches, self.stop_requested
        metrics = {"train_loss": mean_loss(model, self.train_loader, self.loss_fn, n, stop)}
        if self.val_loader is not None and len(self.val_loader):
            metrics["val_loss"] = mean_loss(model, self.val_loader, self.loss_fn, n, stop)
        return metrics

    def request_stop(self) -> None:
        """Ask the run to end at the next micro-batch (safe from another thread).

        The micro-batches of an unfinished optimizer step are dropped (their gradients zeroed and
        their position in the epoch given back), so the weights are those after the last whole
        step and a resumed run continues exactly; an evaluation in progress ends early. The
        iterator then ends without a "done" event.
        """
        self._stop = True

    def stop_requested(self) -> bool:
        return self._stop

    def _batches(self) -> Iterator:
        """Micro-batches of the current epoch, continuing mid-epoch after a resume."""
        state, loader = self.state, self.train_loader
        distributed.set_epoch(loader, state.epoch)
        if state.batch_in_epoch == 0:
            state.rng.update({"epoch_" + k: v for k, v in _get_rng(loader).items()})
            return iter(loader)
        # Resume: replay the epoch's shuffle from its starting random state, skip what was done.
        now = _get_rng(loader)
        _set_rng(loader, {k[len("epoch_"):]: v for k, v in state.rng.items() if k.startswith("epoch_")})
        it = iter(loader)
        for _ in range(state.batch_in_epoch):
            next(it)
        _set_rng(loader, now)
        return it

    def _side_effect_free(self, fn):
        """Call fn(model) in eval mode without gradients, leaving the random state as it was."""
        self.model.eval()
        try:
            with preserved_rng(self.train_loader), torch.no_grad():
                return fn(self.model)
        finally:
            self.model.train()

    def _event(self, kind, loss, metrics, sample=None) -> TrainEvent:
        s = self.state
        rate = self._items / self._train_time if self._train_time > 0 else 0.0
        steps_now = s.step - self._start_step
        wall = time.perf_counter() - self._t0
        s.elapsed = self._elapsed0 + wall
        remaining = wall / steps_now * (self.total_steps - s.step) if steps_now else None
        return TrainEvent(kind, s.step, self.total_steps, s.epoch + 1, s.seen, float(loss), dict(metrics),
                          self._lr, rate, s.elapsed, remaining, sample)

    def _evaluation(self, final: bool = False) -> TrainEvent:
        s, c = self.state, self.config
        metrics = self._side_effect_free(self.evaluate)
        if distributed.is_distributed():
            metrics = distributed.all_reduce_mean(metrics)
        text = None
        wanted = final or c.sample_every is None or s.step % c.sample_every == 0 or s.step == 1
        if self.sample is not None and wanted and distributed.is_main():
            text = self._side_effect_free(self.sample)
        loss = s.window_loss / s.window_steps if s.window_steps else float("nan")
        event = self._event("eval", loss, metrics, text)
        s.window_loss, s.window_steps = 0.0, 0
        s.history.append(asdict(event))
        return event

    def _grad_sync(self, last_micro: bool):
        """DDP averages gradients in the backward of a step's last micro-batch only (`no_sync` before)."""
        return self.ddp.no_sync() if self.ddp is not None and not last_micro else contextlib.nullcontext()

    def _autocast(self):
        if self.config.precision == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _reduce_step(self, loss: float, items: int) -> tuple[float, int]:
        """The step's loss as the mean over the ranks and its items summed over them."""
        if self.ddp is None:
            reported = loss
        else:
            loss_sum, items = distributed.all_reduce_sum([loss, items])
            reported, items = loss_sum / distributed.world_size(), int(round(items))
        if self._report is not None:
            self._report.append((loss, reported))
        return reported, items

    def _optimizer_step(self, micro: int) -> float:
        """Clip, set the scheduled lr, step, zero; return the gradient norm before clipping."""
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if micro < self.config.grad_accum:  # short accumulation at the end of an epoch
            torch._foreach_mul_([p.grad for p in params], self.config.grad_accum / micro)
        if self.config.grad_clip:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip, foreach=True))
        else:
            norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))) if params else 0.0
        self._lr = lr_at(self.state.step, self.config, self.total_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = self._lr * g.get("lr_scale", 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def _loop(self) -> Iterator[TrainEvent]:
        s, c, model = self.state, self.config, self.model
        forward_model = self.ddp if self.ddp is not None else model
        self._t0, self._elapsed0 = time.perf_counter(), s.elapsed
        self._start_step, self._items, self._train_time = s.step, 0, 0.0
        self._lr = lr_at(min(s.step, self.total_steps - 1), c, self.total_steps)
        _set_rng(self.train_loader, s.rng)
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        try:
            while s.step < self.total_steps and (c.epochs is None or s.epoch < c.epochs):
                batches = self._batches()
                micro, loss_sum, items, t_step = 0, 0.0, 0, time.perf_counter()
                while s.step < self.total_steps:
                    if self._stop and not distributed.is_distributed():
                        s.batch_in_epoch -= micro  # the unfinished step's micro-batches are not trained on
                        self.optimizer.zero_grad(set_to_none=True)
                        return
                    batch = next(batches, None)
                    if batch is not None:
                        last_micro = micro + 1 == c.grad_accum or s.batch_in_epoch + 1 == len(self.train_loader)
                        with self._grad_sync(last_micro):
                            with self._autocast():
                                loss, n = self.loss_fn(forward_model, batch)
                            (loss / c.grad_accum).backward()
                        micro, loss_sum, items = micro + 1, loss_sum + loss.item(), items + int(n)
                        s.batch_in_epoch += 1
                    if micro and (micro == c.grad_accum or batch is None):
                        norm = self._optimizer_step(micro)
                        step_loss, items = self._reduce_step(loss_sum / micro, items)
                        s.step += 1
                        s.seen += items
                        s.window_loss += step_loss
                        s.window_steps += 1
                        dt = time.perf_counter() - t_step
                        self._items += items
                        self._train_time += dt
                        s.rng = {**s.rng, **_get_rng(self.train_loader)}
                        yield self._event("step", step_loss, {"grad_norm": norm})
                        if s.step == 1 or s.step % c.eval_every == 0 or s.step == self.total_steps:
                            yield self._evaluation(final=s.step == self.total_steps)
                        micro, loss_sum, items, t_step = 0, 0.0, 0, time.perf_counter()
                    if batch is None:
                        break
                if batch is None:  # epoch finished
                    s.epoch += 1
                    s.batch_in_epoch = 0
            last = s.history[-1] if s.history else None
            if last is None or last["step"] != s.step:
                last = asdict(self._evaluation(final=True))
            yield self._event("done", last["train_loss"], last["metrics"], last["sample"])
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            model.eval()
            if self._report is not None:
                distributed.write_rank_report(model, {"step": s.step, "own_losses": [a for a, _ in self._report],
                                                      "reported_losses": [b for _, b in self._report]})

    def __del__(self):
        gen = getattr(self, "_gen", None)
        if gen is not None:
            gen.close()


def train(model, train_loader, val_loader, loss_fn: Callable, config: TrainConfig,
          evaluate: Callable | None = None, sample: Callable | None = None, resume=None,
          trainable: Iterable[str] | None = None) -> TrainRun:
    """Train `model`, yielding `TrainEvent`s; see the module docstring for every argument."""
    return TrainRun(model, train_loader, val_loader, loss_fn, config, evaluate, sample, resume, trainable)
