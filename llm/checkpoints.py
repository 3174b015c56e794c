"""Checkpoints: the lab's own format, OpenAI's GPT-2 weights and the book's `.pth` files.

The lab's format is one `.safetensors` file per model whose metadata (string to
string, as safetensors allows) holds:
  format   "llm-scratch-lab/1"
  config   the GPTConfig as JSON
  task     "lm", "classifier" or "instruct"
  labels   JSON list of class names (classifiers)
  training JSON dict of facts about how it was trained (free form)
  extra    JSON dict of non-tensor state a trainer needs to resume (free form)
Tensors are the model's state dict under their book names; extra tensors (an
optimizer's state, say) are stored under the prefix "extra/".

Two other layouts load into the same `GPTModel`:
- GPT-2 in the Hugging Face layout (`wte`, `h.0.attn.c_attn`, ...; section 5.5 loads
  the same weights from OpenAI's TensorFlow files): Conv1D weights are transposed
  for `nn.Linear`, the fused `c_attn` is split into W_query/W_key/W_value and the
  output head is tied to the token embedding.
- The book's `.pth` state dicts (chapters 5-7), read with `weights_only=True` so
  that no Python object in the file is ever rebuilt; the config comes from the
  tensors' shapes.
`load_any_checkpoint` tells the three apart by their content, not their name.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import GPT2_SIZES, PRESETS, GPTConfig
from .model import GPTModel
from .spam_data import SPAM_LABELS  # the book's chapter-6 labels (0 = not spam, 1 = spam)

FORMAT = "llm-scratch-lab/1"
TASKS = ("lm", "classifier", "instruct")
EXTRA_PREFIX = "extra/"
SCALE_PREFIX = "scale/"
STORAGES = ("fp32", "int8", "int4")
#: Values sharing one float16 scale in int4 storage (along a row, as in GPTQ / llama.cpp's 4-bit formats).
INT4_GROUP = 32

#: The Hugging Face Hub repositories of OpenAI's four GPT-2 sizes (all have `model.safetensors`).
HUB_REPOS = {
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
HUB_FILENAME = "model.safetensors"
#: Attention heads of the GPT-2 sizes by embedding width: what a state dict cannot tell.
GPT2_HEADS = {PRESETS[s].emb_dim: PRESETS[s].n_heads for s in GPT2_SIZES}


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


@dataclass
class CheckpointInfo:
    """What a weights file holds, read without building the model (for `info` and the catalog)."""

    path: str
    layout: str  # "lab", "hub" (Hugging Face GPT-2) or "book" (a .pth state dict)
    config: GPTConfig
    task: str
    labels: list[str] | None
    training: dict
    num_parameters: int


def build_model(cfg: GPTConfig, task: str = "lm", num_classes: int | None = None) -> GPTModel:
    """A GPTModel for `task`; classifiers get the small output head of section 6.5."""
    model = GPTModel(cfg)
    if task == "classifier":
        model.out_head = torch.nn.Linear(cfg.emb_dim, num_classes or 2)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters, a tied output head counted once."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------- the lab's own format

def atomic_save_file(tensors: dict, path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Write a safetensors file through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes files only their owner can read; a checkpoint is a plain file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_checkpoint(path, model: GPTModel, task: str = "lm", labels: list[str] | None = None,
                    training: dict | None = None, extra: dict | None = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None, storage: str = "fp32") -> Path:
    """Save `model` with everything needed to rebuild it (atomically).

    A head tied by the config (`tie_weights`) is stored once (as `tok_emb.weight`). For a file that must
    stay small (the bundled model), `storage` "int8" keeps every matrix as int8 with one float16 scale
    per row (under "scale/<name>"), a quarter of the size; "int4" keeps 4 bits per value with one
    float16 scale per `INT4_GROUP` values, about a seventh. Both load back as float32.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    state = model.state_dict()
    if model.cfg.tie_weights and model.out_head.weight is model.tok_emb.weight:
        state.pop("out_head.weight")
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    if storage in QUANTIZERS:
        tensors = QUANTIZERS[storage](tensors)
    for k, v in (extra_tensors or {}).items():
        tensors[EXTRA_PREFIX + k] = v.detach().contiguous()
    metadata = {"format": FORMAT, "config": json.dumps(model.cfg.to_dict()), "task": task,
                "training": json.dumps(training or {}), "extra": json.dumps(extra or {})}
    if labels is not None:
        metadata["labels"] = json.dumps(list(labels))
    return atomic_save_file(tensors, path, metadata)


def quantize_rows(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """int8 storage: each 2-D float tensor becomes round(w / s) with s = max|row| / 127 per row."""
    out = {}
    for name, w in tensors.items():
        if w.is_floating_point() and w.dim() == 2:
            scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).to(torch.float16)
            out[name] = torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
            out[SCALE_PREFIX + name] = scale
        else:
            out[name] = w
    return out


def quantize_groups(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """int4 storage: each 2-D float tensor, in groups of `INT4_GROUP` values along its rows, becomes
    round(w / s) in -7..7 with s = max|group| / 7, two values (offset by 8) packed in each uint8.
    A matrix whose rows are not whole groups is stored as int8 rows instead."""
    out = {}
    for name, w in tensors.items():
        if not (w.is_floating_point() and w.dim() == 2):
            out[name] = w
        elif w.shape[1] % INT4_GROUP:
            out.update(quantize_rows({name: w}))
        else:
            groups = w.reshape(w.shape[0], -1, INT4_GROUP)
            scale = (groups.abs().amax(dim=-1) / 7).clamp(min=1e-12).to(torch.float16)
            q = torch.round(groups / scale.float()[..., None]).clamp(-7, 7).to(torch.uint8) + 8
            q = q.reshape(w.shape)
            out[name] = q[:, 0::2] | (q[:, 1::2] << 4)
            out[SCALE_PREFIX + name] = scale
    return out


def _unpack_int4(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 values of `quantize_groups`' packed bytes and per-group scales."""
    q = torch.stack((packed & 15, packed >> 4), dim=-1).reshape(packed.shape[0], -1).float() - 8
    return (q.reshape(*scale.shape, -1) * scale.float()[..., None]).reshape(q.shape)


#: How each small `storage` writes the matrices (fp32 writes them as they are).
QUANTIZERS = {"int8": quantize_rows, "int4": quantize_groups}


def dequantize(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 tensors of a file written with `storage` "int8" or "int4" (others pass through)."""
    scales = {k[len(SCALE_PREFIX):]: v for k, v in tensors.items() if k.startswith(SCALE_PREFIX)}
    out = {}
    for name, t in tensors.items():
        if name.startswith(SCALE_PREFIX):
            continue
        if name in scales:
            s = scales[name]
            if t.dtype == torch.int8 and s.shape == t.shape[:1]:
                t = t.float() * s.float()[:, None]
            elif (t.dtype == torch.uint8 and t.dim() == s.dim() == 2 and s.shape[0] == t.shape[0]
                  and t.shape[1] > 0 and s.shape[1] > 0 and (2 * t.shape[1]) % s.shape[1] == 0):
                t = _unpack_int4(t, s)
            else:
                raise CheckpointError(f"{name}: quantized weights and their scales do not match")
        out[name] = t
    return out


def read_metadata(path) -> dict:
    """The decoded metadata of a lab checkpoint, without loading its tensors."""
    path = Path(path)
    meta = _open_safetensors(path).metadata() or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is a .safetensors file but not a lab checkpoint "
                              f"(no '{FORMAT}' metadata)")
    try:
        return {"config": GPTConfig.from_dict(json.loads(meta["config"])), "task": meta.get("task", "lm"),
                "labels": json.loads(meta["labels"]) if "labels" in meta else None,
                "training": json.loads(meta.get("training", "{}")), "extra": json.loads(meta.get("extra", "{}"))}
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path.name}: damaged checkpoint metadata ({e})") from None


#: The largest shapes a checkpoint may declare, checked before anything is allocated. GPT-2 XL has a
#: 1,024-token context, 48 layers, width 1,600 and 25 heads with a 50,257-token vocabulary: these
#: leave room for any model of the book's family and refuse absurd declarations (a 0.8 MB file
#: claiming a 200,000-token context once made the server try to allocate 160 GB).
CONFIG_LIMITS = {"context_length": 32_768, "n_layers": 256, "emb_dim": 16_384, "n_heads": 256,
                 "vocab_size": 1_000_000}


def check_config_limits(cfg: GPTConfig, name: str) -> None:
    """Raise CheckpointError when `cfg` is beyond `CONFIG_LIMITS`."""
    beyond = [f"{key} {getattr(cfg, key):,} (at most {most:,})" for key, most in CONFIG_LIMITS.items()
              if getattr(cfg, key) > most]
    if beyond:
        raise CheckpointError(f"{name} declares a model beyond what this lab loads: {', '.join(beyond)}")


def check_declared_size(cfg: GPTConfig, file_bytes: int, name: str) -> None:
    """Raise CheckpointError when the config declares more parameters than the file can hold.

    Every parameter takes at least half a byte (int4 storage), so a config whose count (output
    head left out, as a head may be tied or small) exceeds twice the file's size does not describe
    its tensors; refused before the model is built.
    """
    count = cfg.num_parameters(tied_head=True)
    if count > 2 * file_bytes:
        raise CheckpointError(f"{name} declares a model of at least {count:,} parameters but the file has only "
                              f"{file_bytes:,} bytes: its config does not match its tensors")


def load_checkpoint(path, device="cpu") -> Checkpoint:
    """Load a lab checkpoint saved by `save_checkpoint`; raise CheckpointError naming any problem.

    The declared config is checked against the limits and the file's size before any tensor
    is read or any model built (`check_config_limits`, `check_declared_size`).
    """
    path = Path(path)
    meta = read_metadata(path)
    if meta["task"] not in TASKS:
        raise CheckpointError(f"{path.name}: unknown task {meta['task']!r} in its metadata")
    check_config_limits(meta["config"], path.name)
    check_declared_size(meta["config"], path.stat().st_size, path.name)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is damaged or truncated ({e})") from None
    extra_tensors = {k[len(EXTRA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    state = dequantize({k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)})
    labels = meta["labels"]
    model = _assemble(meta["config"], meta["task"], len(labels) if labels else None, state, path.name)
    return Checkpoint(model.to(device), meta["task"], labels, meta["training"], meta["extra"],
                      {k: v.to(device) for k, v in extra_tensors.items()}, str(path))


def check_state_shapes(own: dict[str, torch.Size], shapes: dict[str, torch.Size], name: str) -> None:
    """Raise one CheckpointError listing missing, unexpected and wrongly shaped tensors."""
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    wrong = [f"{k} {tuple(shapes[k])} vs {tuple(own[k])}"
             for k in own if k in shapes and tuple(shapes[k]) != tuple(own[k])]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"wrong shapes: {'; '.join(wrong[:3])}")
        raise CheckpointError(f"{name} does not fit the model: " + "; ".join(parts))


def load_state_dict_checked(model: GPTModel, state: dict, name: str) -> None:
    """`load_state_dict(strict=True)` with one clear message listing what does not fit."""
    check_state_shapes({k: v.shape for k, v in model.state_dict().items()},
                       {k: v.shape for k, v in state.items()}, name)
    model.load_state_dict(state, strict=True)


#: From this size on, models are built on the meta device: their random initialisation
#: would take seconds (the first meta build in a process costs ~4 s of torch set-up once).
META_MIN_PARAMS = 50_000_000


def _assemble(cfg: GPTConfig, task: str, num_classes: int | None, state: dict[str, torch.Tensor],
              name: str, tied_head: bool = False) -> GPTModel:
    """A model in eval mode holding the tensors of `state`; `tied_head` shares
    `tok_emb.weight` as the output head, as GPT-2 does.

    Large models are built on the meta device and take the tensors of `state` as
    their parameters (no random initialisation, no second copy in memory); small
    ones are built normally and copy them. The global random state is left alone.
    """
    tied_head = tied_head or (cfg.tie_weights and task != "classifier")
    check_config_limits(cfg, name)
    on_meta = cfg.num_parameters() >= META_MIN_PARAMS
    with torch.random.fork_rng(devices=[]), torch.device("meta" if on_meta else "cpu"):
        model = build_model(cfg, task, num_classes)
    own = {k: v.shape for k, v in model.state_dict().items()}
    if tied_head:
        own.pop("out_head.weight")
    check_state_shapes(own, {k: v.shape for k, v in state.items()}, name)
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=not tied_head, assign=on_meta)
    if tied_head:
        model.out_head.weight = model.tok_emb.weight
    if on_meta and not _restore_buffers(model, cfg):  # a buffer this code cannot rebuild: the slow way
        with torch.random.fork_rng(devices=[]):
            model = build_model(cfg, task, num_classes)
        model.load_state_dict(state, strict=not tied_head)
        if tied_head:
            model.out_head.weight = model.tok_emb.weight
    return model.eval()


def _restore_buffers(model: GPTModel, cfg: GPTConfig) -> bool:
    """Give a meta-built model its non-persistent buffers (the causal masks).

    They come from a twin built by model.py's own code with one-number-wide
    embeddings, so nothing about them is duplicated here. False if that fails.
    """
    twin = dict(GPTModel(cfg.with_(vocab_size=1, emb_dim=cfg.n_heads)).named_buffers())
    for name, buf in list(model.named_buffers()):
        if buf is not None and buf.is_meta:
            source = twin.get(name)
            if source is None or source.shape != buf.shape:
                return False
            module, _, attr = name.rpartition(".")
            model.get_submodule(module)._buffers[attr] = source
    return not any(t.is_meta for t in [*model.parameters(), *model.buffers()])


# --------------------------------------------------------------- reading any weights file

@dataclass
class _Weights:
    """The tensors of a file: names, shapes, and a way to read each one."""

    kind: str  # "safetensors" or "pth"
    shapes: dict[str, tuple[int, ...]]
    read: Callable[[str], torch.Tensor]
    metadata: dict[str, str]
    notes: dict


def _open_safetensors(path: Path):
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable .safetensors file; it is damaged, "
                              f"truncated or not a safetensors file ({e})") from None


def _read_safetensors(path: Path) -> _Weights:
    handle = _open_safetensors(path)
    shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}

    def read(name):
        try:
            return handle.get_tensor(name)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path.name} is damaged: tensor {name} cannot be read ({e})") from None

    return _Weights("safetensors", shapes, read, handle.metadata() or {}, {})


def _torch_load(path: Path, mmap: bool):
    """`torch.load` that never rebuilds arbitrary Python objects (weights_only=True)."""
    import pickle
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise CheckpointError(f"{path.name} holds pickled Python objects, not only tensors; it was "
                                  f"refused without running them (only weights-only state dicts load)") from None
        raise CheckpointError(f"{path.name} is not a PyTorch state dict (unreadable pickle: {e})") from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, UnicodeDecodeError,
            SafetensorError, RecursionError, TypeError, AttributeError) as e:
        # (torch.load hands a file named .safetensors to safetensors: a pickle renamed so lands here too)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path.name} is damaged, truncated or not a PyTorch file ({first_line})") from None


def _read_pth(path: Path, lazy: bool = False) -> _Weights:
    """A `torch.save`d state dict; the book's `{"model_state_dict": ..., ...}` too.

    lazy: map the file instead of reading it (for looking at shapes only).
    """
    obj = None
    if lazy:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # old (non-zip) files cannot be mapped: read them
            obj = None
    if obj is None:
        obj = _torch_load(path, mmap=False)
    notes = {}
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):
        if "optimizer_state_dict" in obj:
            notes["optimizer state"] = "included (not used here)"
        obj = obj["model_state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors or not all(isinstance(k, str) for k in tensors):
        raise CheckpointError(f"{path.name} is a PyTorch file but not a model state dict "
                              f"(found {type(obj).__name__}, no named tensors)")
    return _Weights("pth", {k: tuple(v.shape) for k, v in tensors.items()}, tensors.__getitem__, {}, notes)


def _read_weights(path, lazy: bool = False) -> _Weights:
    """Open a weights file by its content: safetensors or a PyTorch (zip or legacy) pickle."""
    path = Path(path)
    if path.is_dir() and (path / HUB_FILENAME).is_file():
        path = path / HUB_FILENAME
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name} is empty (0 bytes): not a checkpoint")
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors first: its 8-byte little-endian header length may itself begin with 0x80
    if len(head) > 8 and head[8:9] == b"{":  # safetensors: 8-byte header length, then JSON
        return _read_safetensors(path)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # zip (torch.save) or a raw pickle
        return _read_pth(path, lazy)
    raise CheckpointError(f"{path.name} is not a checkpoint: neither a .safetensors file nor a "
                          f"PyTorch state dict (it starts with {head[:8]!r})")


def _layout(weights: _Weights, path: Path) -> str:
    names = set(weights.shapes)
    if weights.metadata.get("format") == FORMAT:
        return "lab"
    if names & {"wte.weight", "transformer.wte.weight"}:
        return "hub"
    if {_strip_wrappers(n) for n in names} & {"tok_emb.weight"}:
        return "book"
    raise CheckpointError(f"{path.name} holds tensors but not a GPT model's (no tok_emb.weight or "
                          f"wte.weight; e.g. {', '.join(sorted(names)[:3])})")


# --------------------------------------------------------------- config from shapes

def _config_json_heads(path: Path) -> int | None:
    """`n_head` from a config.json next to the file (a Hub snapshot or `save_pretrained` folder)."""
    config = path.parent / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    for key in ("n_head", "n_heads", "num_attention_heads"):
        if isinstance(data.get(key), int):
            return data[key]
    return None


def _check_config_json(path: Path) -> None:
    """Refuse a Hub config whose activation or LayerNorm epsilon the lab's GPT does not use."""
    try:
        data = json.loads((path.parent / "config.json").read_text())
    except (OSError, ValueError):
        return
    activation = data.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{path.name}: its config.json uses activation {activation!r}; the "
                              f"lab's GPT uses GELU with the tanh approximation (gelu_new)")
    if abs(float(data.get("layer_norm_epsilon", 1e-5)) - 1e-5) > 1e-12:
        raise CheckpointError(f"{path.name}: its config.json uses layer_norm_epsilon "
                              f"{data['layer_norm_epsilon']}; the lab's GPT uses 1e-5")


def _resolve_heads(emb_dim: int, n_heads: int | None, path: Path) -> int:
    heads = n_heads or _config_json_heads(path) or GPT2_HEADS.get(emb_dim)
    if heads is None:
        raise CheckpointError(f"{path.name}: cannot tell the number of attention heads for "
                              f"emb_dim {emb_dim} from the tensors (GPT-2 sizes use "
                              f"{GPT2_HEADS}); pass n_heads")
    if emb_dim % heads:
        raise CheckpointError(f"{path.name}: emb_dim {emb_dim} is not divisible by {heads} heads")
    return heads


def _num_layers(names, pattern: str) -> int:
    indices = {int(m.group(1)) for n in names if (m := re.match(pattern, n))}
    return max(indices) + 1 if indices else 0


def _infer_config(shapes: dict, tok: str, pos: str, block_re: str, bias_key: str,
                  n_heads: int | None, path: Path) -> GPTConfig:
    """vocab and width from the token embedding, context from the positions, layers from the blocks."""
    for key in (tok, pos):
        if key not in shapes or len(shapes[key]) != 2:
            raise CheckpointError(f"{path.name} has no usable {key} tensor: not a complete GPT state dict")
    vocab_size, emb_dim = shapes[tok]
    context_length, pos_dim = shapes[pos]
    if pos_dim != emb_dim:
        raise CheckpointError(f"{path.name}: {pos} is {pos_dim} wide but {tok} is {emb_dim} wide")
    n_layers = _num_layers(shapes, block_re)
    if n_layers == 0:
        raise CheckpointError(f"{path.name} has embeddings but no transformer blocks")
    try:
        return GPTConfig(vocab_size=vocab_size, context_length=context_length, emb_dim=emb_dim,
                         n_heads=_resolve_heads(emb_dim, n_heads, path), n_layers=n_layers,
                         drop_rate=0.0, qkv_bias=bias_key in shapes)
    except ValueError as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path.name}: the tensor shapes give an impossible config ({e})") from None


# --------------------------------------------------------------- GPT-2 in the Hub layout

_HUB_BLOCK = {  # Hub name inside h.{i}. -> (book name inside trf_blocks.{i}., Conv1D weight to transpose)
    "ln_1.weight": ("norm1.scale", False), "ln_1.bias": ("norm1.shift", False),
    "ln_2.weight": ("norm2.scale", False), "ln_2.bias": ("norm2.shift", False),
    "attn.c_proj.weight": ("att.out_proj.weight", True), "attn.c_proj.bias": ("att.out_proj.bias", False),
    "mlp.c_fc.weight": ("ff.layers.0.weight", True), "mlp.c_fc.bias": ("ff.layers.0.bias", False),
    "mlp.c_proj.weight": ("ff.layers.2.weight", True), "mlp.c_proj.bias": ("ff.layers.2.bias", False),
}
_HUB_TOP = {"wte.weight": "tok_emb.weight", "wpe.weight": "pos_emb.weight",
            "ln_f.weight": "final_norm.scale", "ln_f.bias": "final_norm.shift"}
#: Buffers and duplicates the Hub files may carry: causal masks, and the head GPT-2 ties to wte.
_HUB_SKIP = re.compile(r"(^|\.)attn\.(bias|masked_bias)$|^lm_head\.weight$")


def _hub_names(shapes: dict) -> dict[str, str]:
    """Hub names without the `transformer.` prefix -> the names in the file; buffers dropped."""
    out = {}
    for name in shapes:
        short = name.removeprefix("transformer.")
        if not _HUB_SKIP.search(short):
            out[short] = name
    return out


def _hub_to_book(name: str, t: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """One Hub tensor as the book's tensor(s); works on meta tensors too, to map shapes."""
    if name in _HUB_TOP:
        return [(_HUB_TOP[name], t)]
    m = re.fullmatch(r"h\.(\d+)\.(.+)", name)
    if m is None:
        raise KeyError(name)
    layer, rest = m.groups()
    prefix = f"trf_blocks.{layer}."
    if rest in ("attn.c_attn.weight", "attn.c_attn.bias"):
        if t.shape[-1] % 3:
            raise KeyError(name)
        kind = rest.rsplit(".", 1)[1]
        parts = torch.split(t, t.shape[-1] // 3, dim=-1)  # Conv1D: [d, 3d], output columns q | k | v
        return [(f"{prefix}att.{w}.{kind}", p.t().contiguous() if kind == "weight" else p.contiguous())
                for w, p in zip(("W_query", "W_key", "W_value"), parts)]
    if rest not in _HUB_BLOCK:
        raise KeyError(name)
    book, transpose = _HUB_BLOCK[rest]
    return [(prefix + book, t.t().contiguous() if transpose else t)]


def _hub_book_shapes(names: dict[str, str], shapes: dict, path: Path) -> dict[str, tuple]:
    out, unknown = {}, []
    for short, name in names.items():
        try:
            for book, t in _hub_to_book(short, torch.empty(shapes[name], device="meta")):
                out[book] = tuple(t.shape)
        except (KeyError, RuntimeError, IndexError):
            unknown.append(name)
    if unknown:
        raise CheckpointError(f"{path.name}: {len(unknown)} tensors the GPT-2 layout does not have "
                              f"(e.g. {', '.join(sorted(unknown)[:3])})")
    return out


def _hub_config(names: dict[str, str], shapes: dict, n_heads: int | None, path: Path) -> GPTConfig:
    _check_config_json(path)
    short_shapes = {short: shapes[name] for short, name in names.items()}
    return _infer_config(short_shapes, "wte.weight", "wpe.weight", r"h\.(\d+)\.",
                         "h.0.attn.c_attn.bias", n_heads, path)


def _load_hub(weights: _Weights, path: Path, n_heads: int | None, training: dict | None,
              device) -> Checkpoint:
    names = _hub_names(weights.shapes)
    cfg = _hub_config(names, weights.shapes, n_heads, path)
    _hub_book_shapes(names, weights.shapes, path)  # an unknown tensor is an error before any reading
    state = {}
    for short, name in names.items():  # one tensor at a time: peak memory ~ one model
        state.update(_hub_to_book(short, weights.read(name)))
    model = _assemble(cfg, "lm", None, state, path.name, tied_head=True)
    info = {"source": "GPT-2 weights in the Hugging Face layout", "file": path.name}
    return Checkpoint(model.to(device), "lm", None, training or info, {}, {}, str(path))


def load_hub_gpt2_file(path, n_heads: int | None = None, device="cpu") -> Checkpoint:
    """Load a GPT-2 `model.safetensors` (or `.bin`) in the Hugging Face layout (section 5.5).

    Keys may carry the `transformer.` prefix of `GPT2LMHeadModel.save_pretrained`.
    The head count comes from `n_heads`, else a config.json next to the file, else the
    GPT-2 size with this width.
    """
    path = Path(path)
    weights = _read_weights(path)
    if _layout(weights, path) != "hub":
        raise CheckpointError(f"{path.name} is not in the Hugging Face GPT-2 layout (no wte.weight)")
    return _load_hub(weights, path, n_heads, None, device)


# --------------------------------------------------------------- the book's .pth files

_WRAPPERS = ("module.", "_orig_mod.")  # DataParallel and torch.compile prefixes


def _strip_wrappers(name: str) -> str:
    for prefix in _WRAPPERS:
        name = name.removeprefix(prefix)
    return name


def _book_state_shapes(weights: _Weights) -> dict[str, str]:
    """Book names -> names in the file; the chapter-3 `att.mask` buffers dropped."""
    return {_strip_wrappers(n): n for n in weights.shapes if not n.endswith("att.mask")}


def _book_task(shapes: dict, cfg: GPTConfig, path: Path, task: str | None,
               labels: list[str] | None) -> tuple[str, int | None, list[str] | None]:
    """Section 6.5's classifier has a few output rows; a name with "sft" is chapter 7's model."""
    rows = shapes.get("out_head.weight", (cfg.vocab_size,))[0]
    if rows != cfg.vocab_size:
        if task not in (None, "classifier"):
            raise CheckpointError(f"{path.name} has a {rows}-class output head, so it is a classifier, "
                                  f"not task {task!r}")
        labels = list(labels) if labels else (list(SPAM_LABELS) if rows == 2 else [f"class {i}" for i in range(rows)])
        if len(labels) != rows:
            raise CheckpointError(f"{path.name} has {rows} classes but {len(labels)} labels were given")
        return "classifier", rows, labels
    if task == "classifier":
        raise CheckpointError(f"{path.name} has a full-vocabulary output head: a language model, "
                              f"not a classifier")
    if task is None:
        task = "instruct" if "sft" in path.name.lower() else "lm"
    if task not in TASKS:
        raise CheckpointError(f"task must be one of {TASKS}, got {task!r}")
    return task, None, None


def _book_config(names: dict[str, str], shapes: dict, n_heads, path: Path) -> GPTConfig:
    short = {s: shapes[n] for s, n in names.items()}
    return _infer_config(short, "tok_emb.weight", "pos_emb.weight", r"trf_blocks\.(\d+)\.",
                         "trf_blocks.0.att.W_query.bias", n_heads, path)


def _load_book(weights: _Weights, path: Path, task, n_heads, labels, device) -> Checkpoint:
    names = _book_state_shapes(weights)
    cfg = _book_config(names, weights.shapes, n_heads, path)
    short_shapes = {s: weights.shapes[n] for s, n in names.items()}
    task, num_classes, labels = _book_task(short_shapes, cfg, path, task, labels)
    state = {s: weights.read(n) for s, n in names.items()}
    model = _assemble(cfg, task, num_classes, state, path.name)
    training = {"source": "the book's state dict (torch.save)", "file": path.name, **weights.notes}
    return Checkpoint(model.to(device), task, labels, training, {}, {}, str(path))


def load_book_pth(path, task: str | None = None, n_heads: int | None = None,
                  labels: list[str] | None = None, device="cpu") -> Checkpoint:
    """Load one of the book's `torch.save`d state dicts (chapters 5-7) with `weights_only=True`.

    `model.pth` (also as {"model_state_dict", "optimizer_state_dict"}), chapter 6's
    `review_classifier.pth` (task classifier, labels ham/spam), chapter 7's
    `gpt2-medium355M-sft.pth` (task instruct: "sft" in the name, or pass task) and the
    `rasbt/gpt2-from-scratch-pytorch` files. The config comes from the shapes.
    """
    path = Path(path)
    weights = _read_weights(path)
    if _layout(weights, path) != "book":
        raise CheckpointError(f"{path.name} is not in the book's layout (no tok_emb.weight)")
    return _load_book(weights, path, task, n_heads, labels, device)


# --------------------------------------------------------------- any file

def load_any_checkpoint(path, task: str | None = None, n_heads: int | None = None,
                        device="cpu") -> Checkpoint:
    """Load a lab checkpoint, a Hub GPT-2 file or a book state dict, told apart by content."""
    path = Path(path)
    weights = _read_weights(path)
    layout = _layout(weights, path)
    if layout == "lab":
        return load_checkpoint(path, device)
    if layout == "hub":
        return _load_hub(weights, path, n_heads, None, device)
    return _load_book(weights, path, task, n_heads, None, device)


def inspect_checkpoint(path, task: str | None = None, n_heads: int | None = None) -> CheckpointInfo:
    """Config, task, labels and parameter count of a weights file, without building the model."""
    path = Path(path)
    weights = _read_weights(path, lazy=True)
    layout = _layout(weights, path)
    numel = lambda shape: int(torch.Size(shape).numel())  # noqa: E731
    if layout == "lab":
        meta = read_metadata(path)
        shapes = weights.shapes
        int4 = {k for k in shapes if len(shapes.get(SCALE_PREFIX + k, ())) == 2}  # two values per stored byte
        count = sum(numel(s) * (2 if k in int4 else 1) for k, s in shapes.items()
                    if not k.startswith((EXTRA_PREFIX, SCALE_PREFIX)))
        return CheckpointInfo(str(path), layout, meta["config"], meta["task"], meta["labels"],
                              meta["training"], count)
    if layout == "hub":
        names = _hub_names(weights.shapes)
        cfg = _hub_config(names, weights.shapes, n_heads, path)
        count = sum(numel(s) for s in _hub_book_shapes(names, weights.shapes, path).values())
        return CheckpointInfo(str(path), layout, cfg, "lm", None,
                              {"source": "GPT-2 weights in the Hugging Face layout", "output head": "tied to tok_emb"},
                              count)
    names = _book_state_shapes(weights)
    cfg = _book_config(names, weights.shapes, n_heads, path)
    short = {s: weights.shapes[n] for s, n in names.items()}
    task, _, labels = _book_task(short, cfg, path, task, None)
    return CheckpointInfo(str(path), layout, cfg, task, labels,
                          {"source": "the book's state dict (torch.save)", **weights.notes},
                          sum(numel(s) for s in short.values()))


# --------------------------------------------------------------- OpenAI's GPT-2 from the Hub

def gpt2_size(name: str) -> str:
    """"gpt2-small", "gpt2", "124M" or "openai-community/gpt2" -> "gpt2-small"."""
    aliases = {"gpt2": "gpt2-small", "124m": "gpt2-small", "355m": "gpt2-medium",
               "774m": "gpt2-large", "1558m": "gpt2-xl"}
    key = name.strip().lower().removeprefix("openai-community/")
    key = aliases.get(key, key)
    if key not in HUB_REPOS:
        raise CheckpointError(f"unknown GPT-2 size {name!r}; choose one of: {', '.join(HUB_REPOS)}")
    return key


def manual_gpt2_path(size: str) -> Path:
    """Where a `model.safetensors` copied by hand is found: <checkpoints>/<size>/model.safetensors."""
    from .paths import checkpoints_dir
    return checkpoints_dir() / gpt2_size(size) / HUB_FILENAME


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids network calls."""
    from huggingface_hub import constants
    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper()
    return constants.HF_HUB_OFFLINE or env in ("1", "ON", "YES", "TRUE")


def cached_gpt2_path(size: str) -> Path | None:
    """The GPT-2 file if it is on this machine (Hugging Face cache, or placed by hand); no network."""
    from .paths import cached_hub_file
    size = gpt2_size(size)
    return cached_hub_file(HUB_REPOS[size], HUB_FILENAME, manual_gpt2_path(size))


def _by_hand(size: str) -> str:
    repo = HUB_REPOS[size]
    return (f"On a machine with internet run `python -m llm download {size}` and copy its Hugging Face "
            f"cache (~/.cache/huggingface/hub/models--{repo.replace('/', '--')}), or download "
            f"https://huggingface.co/{repo}/resolve/main/{HUB_FILENAME} and put it at "
            f"{manual_gpt2_path(size)} (or load the file by its path).")


def hub_status(timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the Hugging Face Hub answers: one HEAD request, made only when called.

    Respects HF_HUB_OFFLINE (no request at all). Returns (reachable, a sentence).
    """
    if hub_offline():
        return False, "the Hugging Face Hub is switched off on this machine (HF_HUB_OFFLINE is set)"
    from huggingface_hub import constants, get_session
    url = f"{constants.ENDPOINT}/api/models/{HUB_REPOS['gpt2-small']}"
    try:
        response = get_session().head(url, timeout=timeout, follow_redirects=True)
    except Exception as e:  # DNS, refused, timeout, proxy: all mean "not reachable from here"
        return False, f"the Hugging Face Hub is unreachable ({type(e).__name__}: {_first_line(e)})"
    if response.status_code >= 500:
        return False, f"the Hugging Face Hub answered with an error (HTTP {response.status_code})"
    return True, f"the Hugging Face Hub is reachable ({constants.ENDPOINT})"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else "no details"


def download_gpt2(size: str, timeout: float = 5.0) -> Path:
    """Fetch OpenAI's GPT-2 weights (and config.json) into the Hugging Face cache; return the file.

    Already cached: no network call. A Hub that does not answer within `timeout`
    seconds is reported at once instead of after the client's retries.
    """
    from huggingface_hub import hf_hub_download
    size = gpt2_size(size)
    cached = cached_gpt2_path(size)
    if cached is not None:
        return cached
    reachable, message = hub_status(timeout)
    if not reachable:
        raise CheckpointError(f"Cannot download {size}: {message}. " + _by_hand(size))
    try:
        path = hf_hub_download(HUB_REPOS[size], HUB_FILENAME)
        hf_hub_download(HUB_REPOS[size], "config.json")
    except Exception as e:  # connection refused, DNS, HTTP errors: all mean "not from here"
        raise CheckpointError(f"Cannot download {size}: the Hugging Face Hub is unreachable "
                              f"({type(e).__name__}: {_first_line(e)}). "
                              + _by_hand(size)) from None
    return Path(path)


def load_pretrained_gpt2(size: str = "gpt2-small", download: bool = False, device="cpu") -> Checkpoint:
    """OpenAI's GPT-2 (section 5.5) from the cache, or from the Hub when `download` is True."""
    size = gpt2_size(size)
    path = cached_gpt2_path(size)
    if path is None:
        if not download:
            raise CheckpointError(f"{size} is not downloaded yet (the lab never downloads on its own). "
                                  + _by_hand(size))
        path = download_gpt2(size)
    training = {"source": f"OpenAI GPT-2 {size}, {HUB_REPOS[size]} on the Hugging Face Hub",
                "file": str(path)}
    # Heads from the width (or config.json), not from `size`: a file placed by hand may be another size.
    return _load_hub(_read_weights(path), path, None, training, device)
