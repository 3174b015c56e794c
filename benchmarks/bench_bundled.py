"""The bundled Wharton GPT's quality: held-out cross-entropy on Wharton and on *The Verdict*.

Prints one JSON object: the file and its size, the losses of the bundled (int4-stored) model,
of the same weights before int4 rounding where the float32 training checkpoint is at hand
(`--fp32 checkpoints/pretrained-wharton-fp32.safetensors`), and of the same shape with random
weights (the starting point), plus a greedy sample. Lower is better; target: the-verdict <= 5.0.

    python benchmarks/bench_bundled.py [--fp32 PATH] [--windows N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def losses(model, held_out: str, verdict: str, windows: int | None) -> dict:
    from llm.quality import text_loss
    return {"wharton_heldout_loss": round(text_loss(model, held_out, max_windows=windows), 4),
            "the_verdict_loss": round(text_loss(model, verdict), 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", default=None, help="float32 checkpoint of the same run, to price the int4 storage")
    parser.add_argument("--windows", type=int, default=None, help="held-out windows to use (default: all 770)")
    args = parser.parse_args(argv)

    import torch

    from llm.catalog import PRESET_SEED, load_model
    from llm.checkpoints import load_any_checkpoint
    from llm.config import DEFAULT_PROMPT, DEFAULT_TEXT, PRESETS, WHARTON_TEXT
    from llm.generation import generate_text
    from llm.model import GPTModel
    from llm.paths import BUNDLED_KEY, BUNDLED_MODEL
    from llm.pretraining import load_text, split_text

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    _, held_out = split_text(load_text(WHARTON_TEXT), holdout_every=20)
    verdict = load_text(DEFAULT_TEXT)
    t = time.perf_counter()
    bundled = load_model(BUNDLED_KEY)
    out = {"file": str(BUNDLED_MODEL.relative_to(BUNDLED_MODEL.parents[2])), "file_bytes": BUNDLED_MODEL.stat().st_size,
           "parameters": sum(p.numel() for p in bundled.model.parameters()), "config": bundled.config.to_dict(),
           "load_s": round(time.perf_counter() - t, 3), "training": bundled.training,
           "bundled_file": losses(bundled.model, held_out, verdict, args.windows)}
    if args.fp32:
        out["same_run_fp32"] = losses(load_any_checkpoint(args.fp32).model.eval(), held_out, verdict, args.windows)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PRESET_SEED)
        random = GPTModel(PRESETS["wharton"]).eval()
    out["random_init"] = losses(random, held_out, verdict, args.windows)
    out["greedy_sample"] = DEFAULT_PROMPT + generate_text(bundled.model, DEFAULT_PROMPT, max_new_tokens=30,
                                                          temperature=0.0, eos_id=None)
    out["threads"] = torch.get_num_threads()
    out["loadavg"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
