"""Checkpoints that describe themselves: one `.safetensors` file per model.

The file's metadata (string to string, as safetensors allows) holds:
  format   "llm-scratch-lab/1"
  config   the GPTConfig as JSON
  task     "lm", "classifier" or "instruct"
  labels   JSON list of class names (classifiers)
  training JSON dict of facts about how it was trained (free form)
  extra    JSON dict of non-tensor state a trainer needs to resume (free form)
Tensors are the model's state dict under their book names; extra tensors (an
optimizer's state, say) are stored under the prefix "extra/".
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import GPTConfig
from .model import GPTModel

FORMAT = "llm-scratch-lab/1"
TASKS = ("lm", "classifier", "instruct")
EXTRA_PREFIX = "extra/"


class CheckpointError(ValueError):
    """A file that cannot be used as a checkpoint; the message says why."""


@dataclass
class Checkpoint:
    model: GPTModel
    task: str = "lm"
    labels: list[str] | None = None
    training: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = ""

    @property
    def config(self) -> GPTConfig:
        return self.model.cfg


def build_model(cfg: GPTConfig, task: str = "lm", num_classes: int | None = None) -> GPTModel:
    """A GPTModel for `task`; classifiers get the small output head of section 6.5."""
    model = GPTModel(cfg)
    if task == "classifier":
        model.out_head = torch.nn.Linear(cfg.emb_dim, num_classes or 2)
    return model


def atomic_save_file(tensors: dict, path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Write a safetensors file through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_checkpoint(path, model: GPTModel, task: str = "lm", labels: list[str] | None = None,
                    training: dict | None = None, extra: dict | None = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Save `model` with everything needed to rebuild it (atomically)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        tensors[EXTRA_PREFIX + k] = v.detach().contiguous()
    metadata = {"format": FORMAT, "config": json.dumps(model.cfg.to_dict()), "task": task,
                "training": json.dumps(training or {}), "extra": json.dumps(extra or {})}
    if labels is not None:
        metadata["labels"] = json.dumps(list(labels))
    return atomic_save_file(tensors, path, metadata)


def read_metadata(path) -> dict:
    """The decoded metadata of a lab checkpoint, without loading its tensors."""
    from safetensors import safe_open
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable .safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is a .safetensors file but not a lab checkpoint "
                              f"(no '{FORMAT}' metadata)")
    try:
        return {"config": GPTConfig.from_dict(json.loads(meta["config"])), "task": meta.get("task", "lm"),
                "labels": json.loads(meta["labels"]) if "labels" in meta else None,
                "training": json.loads(meta.get("training", "{}")), "extra": json.loads(meta.get("extra", "{}"))}
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path.name}: damaged checkpoint metadata ({e})") from None


def load_checkpoint(path, device="cpu") -> Checkpoint:
    """Load a lab checkpoint saved by `save_checkpoint`; raise CheckpointError naming any problem."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is damaged or truncated ({e})") from None
    extra_tensors = {k[len(EXTRA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    labels = meta["labels"]
    model = build_model(meta["config"], meta["task"], len(labels) if labels else None)
    load_state_dict_checked(model, state, path.name)
    return Checkpoint(model.to(device), meta["task"], labels, meta["training"], meta["extra"],
                      extra_tensors, str(path))


def load_state_dict_checked(model: GPTModel, state: dict, name: str) -> None:
    """`load_state_dict(strict=True)` with one clear message listing what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"wrong shapes: {'; '.join(wrong[:3])}")
        raise CheckpointError(f"{name} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
