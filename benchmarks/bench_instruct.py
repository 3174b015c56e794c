"""Instruction fine-tuning and response speed on this machine (chapter 7), printed as JSON.

1. Seconds per training step (batch 8, the book's settings, through `finetune_instruct`
   and the one training loop) for a lab-size model and for the 124M GPT-2 shape with
   random weights, and the epoch time extrapolated from them (935 training records →
   116 steps per epoch, drop_last as in the book). The first step is a warm-up and not
   counted; evaluations and samples are turned off while timing.
2. Tokens per second of `generate_responses` over the 110 test instructions with the
   lab model (greedy, new tokens capped by --max-new-tokens).

    python benchmarks/bench_instruct.py [--lab lab-small] [--steps 6] [--big-steps 3]
                                        [--max-new-tokens 32] [--skip-124m]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm.config import get_config  # noqa: E402
from llm.instruct import BOOK_BATCH_SIZE, book_splits, finetune_instruct, generate_responses  # noqa: E402
from llm.model import GPTModel  # noqa: E402


def time_steps(cfg_name: str, steps: int, splits) -> dict:
    """Median seconds per optimizer step over `steps` steps after one warm-up step."""
    cfg = get_config(cfg_name)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    run = finetune_instruct(model, splits.train, splits.val[:8], epochs=None, max_steps=steps + 1, eval_every=10**9,
                            eval_batches=1, batch_size=BOOK_BATCH_SIZE)
    # The final evaluation (after the last step) is not part of a step: time step events only.
    times, last, tokens = [], time.perf_counter(), []
    for event in run:
        now = time.perf_counter()
        if event.kind == "step":
            if event.step > 1:
                times.append(now - last)
                tokens.append(event.seen)
            last = now
        elif event.kind == "eval":
            last = time.perf_counter()
        if event.kind == "step" and event.step == steps + 1:
            run.close()
            break
    steps_per_epoch = len(run.train_loader)
    per_step = statistics.median(times)
    return {"config": cfg_name, "parameters": sum(p.numel() for p in model.parameters()),
            "context_length": cfg.context_length, "allowed_max_length": run.allowed_max_length,
            "timed_steps": len(times), "seconds_per_step": round(per_step, 3),
            "steps_per_epoch": steps_per_epoch,
            "seconds_per_epoch_extrapolated": round(per_step * steps_per_epoch, 1),
            "book_run_2_epochs_minutes_extrapolated": round(2 * per_step * steps_per_epoch / 60, 1)}


def time_responses(cfg_name: str, entries, max_new_tokens: int) -> dict:
    torch.manual_seed(123)
    model = GPTModel(get_config(cfg_name)).eval()
    last = None
    for last in generate_responses(model, entries, max_new_tokens=max_new_tokens):
        pass
    return {"config": cfg_name, "instructions": last.done, "max_new_tokens": max_new_tokens,
            "new_tokens": last.new_tokens, "seconds": round(last.elapsed, 2),
            "tokens_per_s": round(last.new_tokens / last.elapsed, 1),
            "seconds_per_instruction": round(last.elapsed / last.done, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="lab-small", help="lab preset for the small model")
    parser.add_argument("--steps", type=int, default=6, help="timed steps for the lab model")
    parser.add_argument("--big-steps", type=int, default=3, help="timed steps for the 124M shape")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--skip-124m", action="store_true")
    args = parser.parse_args(argv)
    splits = book_splits()
    result = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "load_average": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__},
              "batch_size": BOOK_BATCH_SIZE, "train_records": len(splits.train),
              "training": [time_steps(args.lab, args.steps, splits)]}
    if not args.skip_124m:
        result["training"].append(time_steps("gpt2-small", args.big_steps, splits))
    result["responses"] = time_responses(args.lab, splits.test, args.max_new_tokens)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
