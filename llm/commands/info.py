"""`python -m llm info <file>`: what a checkpoint holds (config, task, labels, training facts)."""
from __future__ import annotations

import json

NAME = "info"
HELP = "print a checkpoint's config, task, labels, training facts and parameter count"

LAYOUTS = {"lab": "lab checkpoint (.safetensors with metadata)",
           "hub": "GPT-2 in the Hugging Face layout", "book": "the book's state dict (.pth)"}


def add_arguments(parser):
    parser.add_argument("file", help="a .safetensors or .pth file, or a preset / GPT-2 size name")
    parser.add_argument("--n-heads", type=int, default=None,
                        help="attention heads, for a state dict whose width is not a GPT-2 size")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def _named_info(name: str) -> dict:
    """Facts about a catalog key (a preset or a GPT-2 size) without loading it."""
    from llm.catalog import list_models, random_presets
    from llm.config import PRESETS

    entry = next((e for e in list_models() if e.key == name), None)
    if entry is None:
        raise FileNotFoundError(f"{name}: no such file, preset or GPT-2 size")
    if entry.path:
        return _file_info(entry.path, None)
    cfg = random_presets().get(name) or PRESETS[name]
    facts = {"file": None, "layout": entry.kind, "task": entry.task, "labels": None,
             "parameters": cfg.num_parameters(tied_head=entry.kind == "gpt2"), "config": cfg.to_dict(),
             "training": {"weights": entry.label}}
    if not entry.available:
        facts["training"]["available"] = f"no: {entry.reason}"
    return facts


def _file_info(path, n_heads) -> dict:
    from llm.checkpoints import inspect_checkpoint

    info = inspect_checkpoint(path, n_heads=n_heads)
    return {"file": info.path, "layout": info.layout, "task": info.task, "labels": info.labels,
            "parameters": info.num_parameters, "config": info.config.to_dict(), "training": info.training}


def run(args) -> int:
    from pathlib import Path

    facts = _file_info(args.file, args.n_heads) if Path(args.file).exists() else _named_info(args.file)
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    if facts["file"]:
        print(f"file:       {facts['file']}")
    print(f"layout:     {LAYOUTS.get(facts['layout'], facts['layout'])}")
    print(f"task:       {facts['task']}")
    if facts["labels"]:
        print(f"labels:     {', '.join(facts['labels'])}")
    if facts["parameters"] is not None:
        print(f"parameters: {facts['parameters']:,} ({facts['parameters'] / 1e6:.1f}M)")
    if facts["config"]:
        print("config:")
        for key, value in facts["config"].items():
            print(f"  {key}: {value}")
    if facts["training"]:
        print("training:")
        for key, value in facts["training"].items():
            print(f"  {key}: {value if isinstance(value, (str, int, float)) else json.dumps(value)}")
    return 0
