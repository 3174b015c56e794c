"""`python -m llm info <file>`: what a checkpoint holds (config, task, labels, training facts).

`python -m llm info --params [MODEL]`: its parameters per component and its memory at float32,
float16 and int8 (section 4.6), counted on the model built on the meta device (no weights read,
nothing downloaded), then the book's GPT_CONFIG_124M and GPT-2's four sizes side by side.
"""
from __future__ import annotations

import json

NAME = "info"
HELP = "print a checkpoint's config, task, labels, training facts and parameter count"

LAYOUTS = {"lab": "lab checkpoint (.safetensors with metadata)",
           "hub": "GPT-2 in the Hugging Face layout", "book": "the book's state dict (.pth)"}


def add_arguments(parser):
    parser.add_argument("file", nargs="?", help="a .safetensors or .pth file, or a preset / GPT-2 size name")
    parser.add_argument("--n-heads", type=int, default=None,
                        help="attention heads, for a state dict whose width is not a GPT-2 size")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--params", action="store_true",
                        help="the parameter and memory table (section 4.6) of the model, and of GPT-2's four sizes")


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


def _meta_model(facts: dict):
    """The model `facts` describe, built on the meta device (shapes only) with its head tied as loading ties it."""
    import torch

    from llm.checkpoints import build_model
    from llm.config import GPTConfig

    cfg = GPTConfig.from_dict(facts["config"])
    classes = len(facts["labels"]) if facts["task"] == "classifier" and facts["labels"] else None
    with torch.device("meta"):
        model = build_model(cfg, facts["task"], classes)
    if facts["task"] != "classifier" and (facts["layout"] in ("hub", "gpt2") or cfg.tie_weights):
        model.out_head.weight = model.tok_emb.weight
    return model


def _params(facts: dict | None) -> dict:
    """Section 4.6's table for the model of `facts` (if any) and the GPT-2 sizes, as printable rows."""
    from llm.architecture import parameter_rows, parameter_table, size_comparison

    out = {}
    if facts is not None:
        table = parameter_table(_meta_model(facts))
        out["model"] = {"rows": parameter_rows(table), "tied": table.tied, "total": table.total,
                        "total_tied": table.total_tied, "total_untied": table.total_untied}
    out["sizes"] = dict(zip(("columns", "rows"), size_comparison()))
    return out


def _cell(value) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if type(value) is int else str(value)


def _print_table(header: list[str], rows: list[list], left: int) -> None:
    """Columns lined up: the first `left` columns flush left, the numbers flush right."""
    cells = [header] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def _print_params(name: str | None, params: dict) -> None:
    from llm.architecture import memory_mb

    if "model" in params:
        m = params["model"]
        print(f"{name}: parameters and memory (section 4.6; MB = 1024² bytes, as the book)")
        rows = [[c, mod, n, f"{share:.1%}", *mbs] for c, mod, n, share, *mbs in m["rows"]]
        _print_table(["component", "modules", "parameters", "share", "float32 MB", "float16 MB", "int8 MB"], rows, 2)
        if m["total_tied"] is None:
            print("a classification head (section 6.5): weight tying does not apply")
        else:
            print(f"output head {'tied to tok_emb' if m['tied'] else 'separate'}; with weight tying "
                  f"{m['total_tied']:,} ({memory_mb(m['total_tied']):,.2f} MB float32), without "
                  f"{m['total_untied']:,} ({memory_mb(m['total_untied']):,.2f} MB float32)")
        print()
    print("GPT-2 sizes from their configs (nothing downloaded); component rows count a separate head:")
    sizes = params["sizes"]
    _print_table(["", *sizes["columns"]], [[label, *(f"{v:,.1f}" if isinstance(v, float) else v for v in values)]
                                           for label, *values in sizes["rows"]], 1)


def run(args) -> int:
    from pathlib import Path

    from llm.commands import CLIError

    if not args.file and not args.params:
        raise CLIError("name a checkpoint file, a preset or a GPT-2 size (or use --params for GPT-2's sizes)")
    if args.params:
        facts = None
        if args.file:
            facts = _file_info(args.file, args.n_heads) if Path(args.file).exists() else _named_info(args.file)
        params = _params(facts)
        if args.json:
            print(json.dumps(params, indent=2))
        else:
            _print_params(args.file, params)
        return 0
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
