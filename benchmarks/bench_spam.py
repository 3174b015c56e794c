"""Spam classification fine-tuning (chapter 6): accuracy and wall time, printed as JSON.

    python benchmarks/bench_spam.py                   # a lab-size GPT trained from scratch (no weights needed)
    python benchmarks/bench_spam.py --base gpt2-small # the book's runs, when GPT-2 124M weights are present
    python benchmarks/bench_spam.py --base wharton-gpt # the bundled model: the book's recipe against the lab's

From scratch: there are no pretrained weights on these machines, so the model learns
the task from its random initialisation; that needs every layer trainable, a larger
learning rate, dropout and a few more epochs than the book's settings (which assume
pretrained weights). Target: >= 95% test accuracy on the balanced split in <= 5 minutes
on 2 CPU cores.

With --base gpt2-small the script runs the book's configuration unchanged (AdamW lr 5e-5,
weight decay 0.1, 5 epochs, batch 8, last block + final norm + head trainable), then the
same with the last two blocks trainable, and prints the book's reference numbers next to ours.

With a small pretrained base (under `llm.recipes.SMALL_BASE_PARAMETERS`, such as the bundled
Wharton GPT) it runs, each on the base and on its random twin (same shape, random weights):
the book's last-block recipe unchanged, the same at lr 1e-3 (5 epochs, then 15: the longest that
stays under 2 minutes), and `SPAM_SMALL`, the recipe the Classify tab picks for such a base.
Target (issue 15): >= 95 % test accuracy with the book's last-block recipe in <= 2 minutes on
2 cores; "closest" names the best last-block run within the 2 minutes.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from llm.checkpoints import Checkpoint  # noqa: E402
from llm.classifier import finetune_spam  # noqa: E402
from llm.config import get_config  # noqa: E402
from llm.model import GPTModel  # noqa: E402
from llm.recipes import SPAM_SMALL, is_small_base  # noqa: E402

#: Settings that reach >= 95% test accuracy from scratch (found by measuring; see the report).
SCRATCH = {"preset": "lab-tiny", "config_changes": {"drop_rate": 0.2},
           "finetune": {"policy": "all", "lr": 2e-3, "epochs": 8, "batch_size": 8, "schedule": "cosine",
                        "grad_clip": 1.0, "weight_decay": 0.1, "seed": 123}}
BOOK = {"policy": "last-block", "lr": 5e-5, "weight_decay": 0.1, "epochs": 5, "batch_size": 8,
        "eval_every": 50, "eval_iter": 5, "seed": 123}
#: Section 6.7's results with GPT-2 124M (the book's balanced split of 4,825 ham; ours keeps all 4,827).
BOOK_REFERENCE = {"last-block": {"train_acc": 0.9721, "val_acc": 0.9732, "test_acc": 0.9567},
                  "last-2-blocks": {"test_acc": 0.9833}}


def run(base, label: str, out_dir: Path, recipe=None, **settings) -> dict:
    start = time.perf_counter()
    job = finetune_spam(base, recipe, out=out_dir / f"{label}.safetensors", **settings)
    epochs = []
    for event in job:
        if event.kind == "epoch":
            epochs.append({"epoch": event.epoch, "elapsed_s": round(event.elapsed, 1), **event.metrics})
            print(f"[{label}] epoch {event.epoch}: {event.metrics} ({event.elapsed:.0f} s)", file=sys.stderr)
    r = job.finish()
    return {"run": label, "wall_s": round(time.perf_counter() - start, 1), "train_s": r.wall_s,
            "steps": r.steps, "train_acc": round(r.train_acc, 4), "val_acc": round(r.val_acc, 4),
            "test_acc": round(r.test_acc, 4), "confusion_test": r.confusion, "per_epoch": epochs,
            "max_length": r.training["max_length"], "num_truncated": r.training["num_truncated"],
            "trainable": r.training["trainable"], "parameters": r.training["parameters"],
            "settings": {"recipe": recipe.note, **settings} if recipe else settings}


def small_base_runs(base: str, out_dir: Path) -> list[dict]:
    """The book's last-block recipe (as published, then at lr 1e-3) and SPAM_SMALL, each on `base` and on
    a random model of its shape, interleaved so that load from other processes hits both alike."""
    from llm.catalog import random_twin

    recipes = [("book-last-block", None, BOOK), ("book-last-block-lr1e-3", None, {**BOOK, "lr": 1e-3}),
               ("book-last-block-lr1e-3-15-epochs", None, {**BOOK, "lr": 1e-3, "epochs": 15}),
               ("spam-small", SPAM_SMALL, {})]
    runs = []
    for label, recipe, settings in recipes:
        for name, model in (("", base), ("random-", random_twin(base))):
            runs.append(run(model, name + label, out_dir, recipe, **settings))
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="scratch", help="'scratch' (default) or a GPT-2 size such as gpt2-small")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="folder for the checkpoints (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import tempfile

    out_dir = Path(args.out or tempfile.mkdtemp(prefix="bench-spam-"))
    report = {"benchmark": "spam classification (chapter 6)", "data": "balanced: 1,045 / 149 / 300",
              "machine": {"cpu_count": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__, "python": platform.python_version()}}
    if args.base == "scratch":
        cfg = get_config(SCRATCH["preset"]).with_(**SCRATCH["config_changes"])
        torch.manual_seed(123)
        base = Checkpoint(GPTModel(cfg), source=f"{SCRATCH['preset']}-scratch")
        result = run(base, "scratch", out_dir, **SCRATCH["finetune"])
        report.update({"base": "random initialisation (no pretrained weights)", "model": {
            "preset": SCRATCH["preset"], **cfg.to_dict()}, "runs": [result],
            "target": {"test_acc": 0.95, "wall_s": 300},
            "met": {"test_acc": result["test_acc"] >= 0.95, "wall_s": result["wall_s"] <= 300}})
    else:
        from llm.catalog import load_model

        try:
            parameters = load_model(args.base).config.num_parameters()  # a clear message when the weights are not here
        except ValueError as exc:
            print(json.dumps({"base": args.base, "error": str(exc)}, indent=2))
            return 2
        if is_small_base(parameters):
            runs = small_base_runs(args.base, out_dir)
            book = runs[0]
            report["target"] = {"test_acc": 0.95, "wall_s": 120, "recipe": "book-last-block"}
            report["met"] = {"test_acc": book["test_acc"] >= 0.95, "wall_s": book["wall_s"] <= 120}
            in_time = [r for r in runs if r["run"].startswith("book-last-block") and r["wall_s"] <= 120]
            closest = max(in_time, key=lambda r: r["test_acc"], default=None)
            report["closest"] = closest and {key: closest[key] for key in ("run", "test_acc", "val_acc", "wall_s")}
        else:
            runs = [run(args.base, "book-last-block", out_dir, **BOOK),
                    run(args.base, "book-last-2-blocks", out_dir, **{**BOOK, "policy": "last-k", "k": 2})]
        report.update({"base": args.base, "runs": runs, "book_reference": BOOK_REFERENCE})
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
