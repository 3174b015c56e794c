"""Model tab speed: seconds to compute and draw every view of the tab for a new 64-token text on the 124M shape.

Prints JSON. The model (`gpt2-small-random`: GPT-2 small's shape, random weights, no download) is
loaded first and not timed. Each run takes a text the tab has not seen (so nothing is reused from
the trace cache) and calls the tab's handlers in the order a click runs them: the flow, the
picked stage (the attention of the last token in the last block: the blocks up to it run), layer
norm, GELU, the residual stream (all blocks), then the parameter table and the shortcut
experiment. The figures are built (plotly) but not sent: Gradio's transport is not in the figure.
A second timing per run asks for the output head's stage on the same text (the cached trace:
only final_norm and out_head for one position run). The reference, timed in the same runs on the
same texts: one plain `model(in_idx)` forward pass (fast attention, logits for all 64 positions),
the least any view that needs every block could cost; on a shared, loaded machine the ratio
`whole_tab / forward` says more than the seconds.

    python benchmarks/bench_model_tab.py [--runs 5 | --quick] [--model gpt2-small-random] [--tokens 64]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

WORDS = ("every effort moves you forward one step at a time while the lab reads the book and builds a model "
         "that learns from text about painters studios and quiet afternoons in the city").split()


def new_text(run: int, tokens: int) -> str:
    """A text of exactly `tokens` GPT-2 tokens, different for every run."""
    from llm.tokenizer import text_to_token_ids, token_ids_to_text

    words = [WORDS[(run * 7 + i * 3) % len(WORDS)] for i in range(tokens * 2)]
    return token_ids_to_text(text_to_token_ids(" ".join(words))[:tokens])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="gpt2-small-random")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="2 runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 2

    import torch

    from llm.ui import model_tab as tab
    from llm.ui.shared import get_model

    began = time.perf_counter()
    cfg = get_model(args.model).model.cfg
    load_s = time.perf_counter() - began
    last_block = cfg.n_layers - 1
    tab.shortcut(5, 123)  # warm up imports (plotly, the tokenizer) outside the timings

    views = {
        "flow": lambda text: tab.flow(args.model, text, last_block, args.tokens - 1, "att"),
        "stage_att_last_block": lambda text: tab.stage_view(args.model, text, last_block, args.tokens - 1, "att"),
        "layer_norm": lambda text: tab.layer_norm(args.model, text, last_block),
        "gelu": lambda text: tab.gelu(args.model, text, last_block),
        "residual_stream": lambda text: tab.residual(args.model, text),
        "parameters": lambda text: tab.parameters(args.model),
        "shortcut": lambda text: tab.shortcut(5, 123),
    }
    from llm.tokenizer import text_to_token_ids

    model = get_model(args.model).model
    per_view = {name: [] for name in views}
    totals, head_stage, forward = [], [], []
    for run in range(args.runs):
        text = new_text(run, args.tokens)
        idx = torch.tensor([text_to_token_ids(text)])
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(idx)
        forward.append(time.perf_counter() - t0)
        start = time.perf_counter()
        for name, view in views.items():
            t0 = time.perf_counter()
            view(text)
            per_view[name].append(time.perf_counter() - t0)
        totals.append(time.perf_counter() - start)
        t0 = time.perf_counter()
        tab.stage_view(args.model, text, last_block, args.tokens - 1, "next")
        head_stage.append(time.perf_counter() - t0)

    result = {
        "benchmark": "model_tab",
        "model": args.model,
        "shape": {"n_layers": cfg.n_layers, "emb_dim": cfg.emb_dim, "n_heads": cfg.n_heads},
        "tokens": args.tokens,
        "runs": args.runs,
        "torch_threads": torch.get_num_threads(),
        "load_s": round(load_s, 3),
        "whole_tab_s": {"median": round(statistics.median(totals), 3), "min": round(min(totals), 3),
                        "max": round(max(totals), 3)},
        "per_view_median_s": {name: round(statistics.median(ts), 4) for name, ts in per_view.items()},
        "head_stage_on_seen_text_s": round(statistics.median(head_stage), 4),
        "reference_forward_s": round(statistics.median(forward), 3),
        "whole_tab_over_forward": round(statistics.median(t / f for t, f in zip(totals, forward)), 2),
        "target_s": 0.5,
        "target_met": statistics.median(totals) < 0.5,
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
