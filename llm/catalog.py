"""Which models the lab can use right now, and loading them through one shared cache.

A model is named by a key:
- a lab preset (`lab-tiny`, `lecture`, `book-ch05`, ...): the architecture of chapter 4
  with random weights from a fixed seed, so every tab and session sees the same
  untrained model; `gpt2-small-random` (any GPT-2 size + "-random") is the 124M shape
  with random weights, as in section 4.6;
- a GPT-2 size (`gpt2-small` ... `gpt2-xl`): OpenAI's weights (section 5.5), available
  once they are in the Hugging Face cache or placed by hand (see `llm.checkpoints`);
- a file path: a lab `.safetensors` checkpoint, a Hub GPT-2 file or the book's `.pth`.

`load_model` keeps recently used models in ONE bounded LRU cache shared by all
sessions (size from env LLM_LAB_MODEL_CACHE, default 3). The models it returns are
shared and in eval mode: never train them in place; `fresh=True` gives a private copy.
Nothing here touches the network unless `hub_status()` or a download is asked for.
"""
from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .checkpoints import (HUB_REPOS, Checkpoint, CheckpointError, cached_gpt2_path, count_parameters,
                          download_gpt2, gpt2_size, hub_status, inspect_checkpoint, load_any_checkpoint,
                          load_pretrained_gpt2)
from . import limits
from .config import GPT2_SIZES, PRESETS, GPTConfig
from .model import GPTModel
from .paths import BUNDLED_KEY, BUNDLED_MODEL, checkpoints_dir

__all__ = ["ModelEntry", "list_models", "load_model", "describe", "hub_status", "clear_cache",
           "cached_keys", "random_presets", "random_twin", "PRESET_SEED"]

#: Seed of the preset models' random weights (the book's `torch.manual_seed(123)`).
PRESET_SEED = 123
RANDOM_SUFFIX = "-random"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
NOT_DOWNLOADED = "not downloaded — Download needs the Hugging Face Hub"
MAX_LOCAL_FILES = 200
DEFAULT_CACHE_SIZE = 3
TASK_WORDS = {"lm": "language model", "classifier": "classifier", "instruct": "instruction-tuned"}


@dataclass(frozen=True)
class ModelEntry:
    key: str  # what `load_model` takes
    label: str  # what a person reads
    kind: str  # "preset", "gpt2", "local", "session" or "upload"
    task: str  # "lm", "classifier" or "instruct"
    available: bool
    reason: str = ""  # why not available
    path: str | None = None


# ----------------------------------------------------------------------------- listing

def _short_count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def random_presets() -> dict[str, GPTConfig]:
    """Keys of the randomly initialised models: lab presets and the GPT-2 shapes + "-random"."""
    configs = {name: cfg for name, cfg in PRESETS.items() if name not in GPT2_SIZES}
    configs.update({size + RANDOM_SUFFIX: PRESETS[size] for size in GPT2_SIZES})
    return configs


def _preset_entries() -> list[ModelEntry]:
    shown = [name for name in PRESETS if name not in GPT2_SIZES] + ["gpt2-small" + RANDOM_SUFFIX]
    configs = random_presets()
    return [ModelEntry(name, f"{name} (random init, untrained: a starting point for training from scratch, "
                             f"{_short_count(configs[name].num_parameters())} params)", "preset", "lm", True)
            for name in shown]


def _bundled_entries() -> list[ModelEntry]:
    """The lab-trained Wharton GPT that ships in assets/models, labelled with its corpus and losses."""
    if not BUNDLED_MODEL.is_file():
        return []
    task, summary, error = _peek(BUNDLED_MODEL)
    facts = _bundled_facts()
    val = facts.get("final_metrics", {}).get("val_loss")
    trained = (f"trained by the lab on {facts.get('text', 'Edith Wharton')}"
               + (f", held-out loss {val:.2f}" if isinstance(val, (int, float)) else ""))
    return [ModelEntry(BUNDLED_KEY, f"{BUNDLED_KEY} ({trained}; {summary})", "bundled", task, not error, error,
                       str(BUNDLED_MODEL))]


def _bundled_facts() -> dict:
    """The bundled checkpoint's training facts (corpus, steps, losses); {} when unreadable."""
    try:
        return inspect_checkpoint(BUNDLED_MODEL).training
    except CheckpointError:
        return {}


def _too_large(size: str) -> str:
    """Why this process may not load GPT-2 `size` (a shared Space's memory), or ''."""
    limit = limits.current().max_model_parameters
    if PRESETS[size].num_parameters(tied_head=True) <= limit:
        return ""
    return f"larger than this shared Space allows ({limit / 1e6:.0f}M parameters); run the lab locally"


def _gpt2_entries() -> list[ModelEntry]:
    entries = []
    for size in GPT2_SIZES:
        path = cached_gpt2_path(size)
        label = f"{size} (OpenAI GPT-2, {_short_count(PRESETS[size].num_parameters(tied_head=True))} params)"
        reason = _too_large(size) or ("" if path else NOT_DOWNLOADED)
        entries.append(ModelEntry(size, label, "gpt2", "lm", not reason, reason, str(path) if path else None))
    return entries


_peeked: dict[str, tuple[tuple, tuple[str, str, str]]] = {}  # path -> (stamp, (task, summary, error))
_peek_lock = threading.Lock()


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size)


def _peek(path: Path) -> tuple[str, str, str]:
    """(task, one-line summary, error) of a file, remembered until the file changes."""
    stamp = _stamp(path)
    with _peek_lock:
        hit = _peeked.get(str(path))
    if hit and hit[0] == stamp:
        return hit[1]
    try:
        info = inspect_checkpoint(path)
        summary = (f"{info.task}, {_short_count(info.num_parameters)} params, "
                   f"{info.config.n_layers}×{info.config.emb_dim}")
        result = (info.task, summary, "")
    except CheckpointError as e:
        result = ("lm", "unreadable", str(e))
    with _peek_lock:
        _peeked[str(path)] = (stamp, result)
    return result


def _file_entry(path: Path, kind: str, base: Path | None = None) -> ModelEntry:
    path = path.resolve()
    try:
        name = str(path.relative_to(base)) if base else path.name
    except ValueError:
        name = path.name
    if not path.is_file():
        return ModelEntry(str(path), name, kind, "lm", False, "file not found", str(path))
    task, summary, error = _peek(path)
    return ModelEntry(str(path), f"{name} ({summary})", kind, task, not error, error, str(path))


def _local_files() -> list[Path]:
    """Weights files under checkpoints_dir(), except GPT-2 files placed there by hand."""
    root = checkpoints_dir()
    if not root.is_dir():
        return []
    manual = {(root / size / "model.safetensors").resolve() for size in GPT2_SIZES}
    found = []
    for path in sorted(root.rglob("*")):
        if (path.suffix in WEIGHT_SUFFIXES and not path.name.startswith(".") and path.is_file()
                and path.resolve() not in manual):
            found.append(path)
            if len(found) >= MAX_LOCAL_FILES:
                break
    return found


def list_models(extra_paths=()) -> list[ModelEntry]:
    """Every model the lab knows now: presets, GPT-2 sizes, local files, then `extra_paths`.

    `extra_paths` are this session's files: paths (kind "session") or (path, kind)
    pairs with kind "session" or "upload". Reads file headers only, no weights.
    """
    root = checkpoints_dir()
    entries = _bundled_entries() + _gpt2_entries() + _preset_entries()
    entries += [_file_entry(p, "local", root.resolve()) for p in _local_files()]
    for item in extra_paths:
        path, kind = (item, "session") if isinstance(item, (str, os.PathLike)) else item
        entry = _file_entry(Path(path), kind)
        known = [i for i, e in enumerate(entries) if e.path == entry.path]
        if known:  # a session's file that lies in the checkpoints folder: list it once, as the session's
            entries[known[0]] = replace(entries[known[0]], kind=kind)
        else:
            entries.append(entry)
    return entries


# ----------------------------------------------------------------------------- loading

_cache: OrderedDict[tuple, Checkpoint] = OrderedDict()
_loading: dict[tuple, threading.Lock] = {}
_lock = threading.Lock()


def _cache_size() -> int:
    try:
        return max(0, int(os.environ.get("LLM_LAB_MODEL_CACHE", DEFAULT_CACHE_SIZE)))
    except ValueError:
        return DEFAULT_CACHE_SIZE


def _load_preset(key: str, cfg: GPTConfig) -> Checkpoint:
    """The preset's random model; the same for every caller (fixed seed, global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PRESET_SEED)
        model = GPTModel(cfg)
    training = {"source": f"random initialisation (seed {PRESET_SEED})",
                "note": "untrained: its text is gibberish until it is trained"}
    return Checkpoint(model.eval(), "lm", None, training, {}, {}, key)


def random_twin(key_or_path) -> Checkpoint:
    """A model of the same shape as `key_or_path` with random weights (seed `PRESET_SEED`).

    Fine-tuned with the same recipe beside the pretrained model, it shows what pretraining
    bought (chapter 6's point).
    """
    config = load_model(key_or_path).config
    return _load_preset(f"random-{Path(str(key_or_path)).stem}", config)


def _resolve(key_or_path, download: bool):
    """(cache key, loader) for a preset, a GPT-2 size or a file."""
    key = str(key_or_path).strip()
    presets = random_presets()
    if key == BUNDLED_KEY:
        if not BUNDLED_MODEL.is_file():
            raise CheckpointError(f"the bundled model is missing ({BUNDLED_MODEL}); rebuild it with "
                                  "`python -m llm pretrain --preset wharton --out assets/models/wharton-gpt.safetensors`")
        key = str(BUNDLED_MODEL)
    if key in presets:
        return ("preset", key), lambda: _load_preset(key, presets[key])
    if key in GPT2_SIZES or key in HUB_REPOS.values():
        size = gpt2_size(key)
        if _too_large(size):
            raise CheckpointError(f"{size} is {_too_large(size)}")
        path = cached_gpt2_path(size) or (download_gpt2(size) if download else None)
        if path is None:
            load_pretrained_gpt2(size)  # raises the "not downloaded, here is how" CheckpointError
        return ((size, str(path), *_stamp(path)),
                lambda: load_pretrained_gpt2(size, download=False))
    path = Path(key).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"unknown model {key!r}: not a preset ({', '.join(presets)}), a GPT-2 size "
            f"({', '.join(GPT2_SIZES)}) or an existing file")
    path = path.resolve()
    return (str(path), *_stamp(path)), lambda: load_any_checkpoint(path)


def load_model(key_or_path, download: bool = False, fresh: bool = False) -> Checkpoint:
    """The Checkpoint for a catalog key or a file path, from the shared LRU cache.

    The returned model is SHARED and in eval mode: do not train it in place.
    `fresh=True` returns a private copy that is not stored in the cache.
    `download=True` lets a GPT-2 size be fetched from the Hub if not cached.
    Thread-safe; two callers asking for the same model load it once.
    """
    cache_key, loader = _resolve(key_or_path, download)
    with _lock:
        hit = _cache.get(cache_key)
        if hit is not None:
            _cache.move_to_end(cache_key)
            return copy.deepcopy(hit) if fresh else hit
        if fresh:
            key_lock = None
        else:
            key_lock = _loading.setdefault(cache_key, threading.Lock())
    if key_lock is None:
        return loader()
    with key_lock:
        with _lock:
            hit = _cache.get(cache_key)
        if hit is not None:
            return hit
        checkpoint = loader()
        checkpoint.model.eval()
        with _lock:
            _loading.pop(cache_key, None)
            if _cache_size() > 0:
                _cache[cache_key] = checkpoint
                while len(_cache) > _cache_size():
                    _cache.popitem(last=False)
    return checkpoint


def cached_keys() -> list[tuple]:
    """The cache's keys, least recently used first."""
    with _lock:
        return list(_cache)


def clear_cache() -> None:
    with _lock:
        _cache.clear()


# ----------------------------------------------------------------------------- words

def describe(checkpoint: Checkpoint) -> str:
    """One line for a person: parameters, shape and task."""
    cfg = checkpoint.config
    task = TASK_WORDS.get(checkpoint.task, checkpoint.task)
    if checkpoint.task == "classifier" and checkpoint.labels:
        task += f" ({', '.join(checkpoint.labels)})"
    return (f"{_short_count(count_parameters(checkpoint.model))} parameters · {cfg.n_layers} layers × "
            f"{cfg.emb_dim} dims, {cfg.n_heads} heads, context {cfg.context_length} · {task}")
