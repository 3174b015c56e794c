"""Training speed of the one loop, printed as JSON (chapter 5).

1. tokens/s of `llm.training.train` against the book's own loop structure
   (`train_model_simple` of section 5.2: plain AdamW over all parameters, no schedule,
   no clipping, the loss from the whole logits tensor) re-created below, on three shapes:
   "lecture" (ctx 64, batch 4), "wharton" (the bundled model's: ctx 128, batch 8, tied
   head) and "book-ch05" (the 124M shape, ctx 256, batch 2), all on the-verdict. Same model
   class, same batches, one step of each loop in turn so that load from other processes
   hits all alike. A third loop, ours with the book's loss ("ours_plain_loss"), separates
   what the chunked loss (`llm.loss`) buys from what the fused AdamW step buys. The peak
   memory of each loop is measured in a fresh process each (--skip-memory to leave out).
2. Wall time for the "lecture" settings to bring the-verdict's training loss (evaluated
   over the whole training loader, model in eval mode) below 1.0 (--lecture-run).

    python benchmarks/bench_train.py [--steps 4] [--rounds 2] [--shapes lecture wharton book-ch05]
        [--skip-memory] [--lecture-run] [--lecture-overrides '{"lr": 3e-3}'] [--lecture-model '{"emb_dim": 128}']
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from llm.config import get_config  # noqa: E402
from llm.model import GPTModel  # noqa: E402
from llm.pretraining import (DEFAULT_TEXT, get_settings, lm_loss, load_text, make_loaders,  # noqa: E402
                             pretrain)
from llm.training import TrainConfig, train  # noqa: E402


#: (model preset, context, batch) of each measured shape: the lecture settings, the bundled
#: model's settings and the book's chapter-5 run.
SHAPES = {"lecture": ("lecture", 64, 4), "wharton": ("wharton", 128, 8), "book-ch05": ("book-ch05", 256, 2)}
LOOPS = ("book", "ours", "ours_plain_loss")


def book_calc_loss_batch(input_batch, target_batch, model, device):
    """The book's `calc_loss_batch` (section 5.1.2) as printed: the whole logits tensor, then cross-entropy."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def book_steps(model, train_loader, optimizer, device):
    """The inner loop of the book's `train_model_simple` (section 5.2), one optimizer step per `next()`."""
    model.train()
    while True:
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = book_calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            yield


def book_lm_loss(model, batch):
    return book_calc_loss_batch(*batch, model, "cpu"), batch[1].numel()


def our_steps(model, data, loss_fn=lm_loss):
    """Our loop on the same data with the book-ch05 settings, one optimizer step per `next()`."""
    config = TrainConfig(lr=4e-4, weight_decay=0.1, epochs=None, max_steps=10 ** 6, schedule="constant",
                         grad_clip=None, eval_every=10 ** 7, eval_batches=1)
    # evaluate= a no-op: compare training steps only (the book's evaluation is left out on its side too)
    run = train(model, data.train_loader, None, loss_fn, config, evaluate=lambda m: {})
    while True:
        if next(run).kind == "step":
            yield


def make_loop(name: str, shape: str, text: str):
    """A fresh model (same init for every loop) and the step generator of loop `name` on `shape`."""
    preset, context, batch = SHAPES[shape]
    data = make_loaders(text, context, context, batch, seed=123)
    torch.manual_seed(123)
    model = GPTModel(get_config(preset))
    if name == "book":
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
        return book_steps(model, data.train_loader, optimizer, "cpu")
    return our_steps(model, data, lm_loss if name == "ours" else book_lm_loss)


def status_mb(key: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MB; VmHWM, unlike ru_maxrss, is not inherited."""
    status = open("/proc/self/status").read().splitlines()
    return int(next(line for line in status if line.startswith(key + ":")).split()[1]) / 1024


def memory_child(loop: str, shape: str) -> None:
    """In a fresh process: three steps of `loop` on `shape`; print the peak RSS above the RSS before them."""
    text = load_text(DEFAULT_TEXT)
    steps = make_loop(loop, shape, text)
    before = status_mb("VmRSS")
    for _ in range(3):
        next(steps)
    peak = status_mb("VmHWM")
    print(json.dumps({"peak_rss_mb": round(peak, 1), "training_mb": round(peak - before, 1)}))


def memory_figures(shape: str) -> dict:
    figures = {}
    for loop in LOOPS:
        out = subprocess.run([sys.executable, __file__, "--memory-child", loop, shape], capture_output=True,
                             text=True, check=True)
        figures[loop] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def bench_shape(shape: str, text: str, steps: int, rounds: int, memory: bool) -> dict:
    """Step by step in turn: the book's loop, ours, ours with the book's loss; each has its own model."""
    preset, context, batch = SHAPES[shape]
    cfg = get_config(preset)
    tokens_per_step = batch * context
    loops = {name: make_loop(name, shape, text) for name in LOOPS}
    results = {name: [] for name in loops}
    for step in range(steps * rounds + 1):
        for name, loop in loops.items():
            t = time.perf_counter()
            next(loop)
            if step:  # the first step warms up allocations
                results[name].append(time.perf_counter() - t)
    out = {}
    for name, times in results.items():
        per_step = sorted(times)[len(times) // 2]
        out[name] = {"median_s_per_step": round(per_step, 3), "tokens_per_s": round(tokens_per_step / per_step, 1),
                     "steps_timed": len(times), "all_s": [round(t, 3) for t in times]}
    # Per-step ratios of neighbouring steps cancel the slow drifts of a shared machine.
    for name in ("ours", "ours_plain_loss"):
        paired = sorted(b / o for b, o in zip(results["book"], results[name]))
        out[f"speedup_{name}_vs_book"] = round(out[name]["tokens_per_s"] / out["book"]["tokens_per_s"], 3)
        out[f"speedup_{name}_vs_book_paired_median"] = round(paired[len(paired) // 2], 3)
    out["config"] = {"model": preset, "batch_size": batch, "context": context, "tie_weights": cfg.tie_weights,
                     "emb_dim": cfg.emb_dim, "n_layers": cfg.n_layers, "parameters": cfg.num_parameters(),
                     "logits_mb_per_batch": round(tokens_per_step * cfg.vocab_size * 4 / 1e6, 1)}
    if memory:
        out["memory"] = memory_figures(shape)
    return out


def bench_lecture(text: str, overrides: dict, model_changes: dict, target: float = 1.0,
                  max_seconds: float = 240.0) -> dict:
    """Wall seconds until the full-train-loader loss is below `target` with the lecture settings."""
    settings = get_settings("lecture").with_(**overrides)
    cfg = settings.model_config().with_(**model_changes)
    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    model = GPTModel(cfg)
    job = pretrain(text, settings, model=model)
    job.run.sample = None  # sampling is for people; the clock measures training and evaluation
    reached, last, curve = None, None, []
    for event in job.run:
        if event.kind == "eval":
            last = event
            loss = event.metrics["train_loss"]
            curve.append((event.step, round(time.perf_counter() - t0, 1), round(loss, 3)))
            if loss < target and reached is None:
                reached = time.perf_counter() - t0
                break
        if time.perf_counter() - t0 > max_seconds:
            break
    return {"seconds_to_train_loss_below_1": round(reached, 1) if reached else None,
            "target_s": 60, "steps": last.step, "total_steps": last.total_steps, "tokens_seen": last.seen,
            "tokens_per_s": round(last.tokens_per_s, 1), "final_eval": last.metrics,
            "curve_step_s_loss": curve, "settings": asdict(settings), "model": cfg.to_dict(),
            "parameters": cfg.num_parameters()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps of each loop per round (book config)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shapes", nargs="*", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--lecture-run", action="store_true", help="also time the lecture run to loss < 1")
    parser.add_argument("--lecture-overrides", default="{}", help="JSON of PretrainSettings fields")
    parser.add_argument("--lecture-model", default="{}", help="JSON of GPTConfig changes")
    parser.add_argument("--memory-child", nargs=2, metavar=("LOOP", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(*args.memory_child)
    text = load_text(DEFAULT_TEXT)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "load_average_at_start": os.getloadavg()}
    for shape in args.shapes:
        result[shape] = bench_shape(shape, text, args.steps, args.rounds, not args.skip_memory)
    if args.lecture_run:
        result["lecture_run"] = bench_lecture(text, json.loads(args.lecture_overrides),
                                              json.loads(args.lecture_model))
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
