"""`python -m llm pretrain`: train a GPT on a text file (chapter 5) with a progress bar.

Writes the checkpoint (`--out`), the loss curve as CSV and as a self-contained plotly
HTML page next to it, and prints the final sample. Ctrl-C stops after the current
step and saves a resumable checkpoint; `--resume` continues it exactly.
(No PNG: neither matplotlib nor kaleido is installed here; the HTML page works offline.)

Under `torchrun --nproc_per_node=N -m llm pretrain ...` the same command trains on N
processes with DistributedDataParallel (`llm.distributed`): --batch-size is per process,
only rank 0 prints, draws and writes the checkpoint, and Ctrl-C stops every rank after the
same step.
"""
from __future__ import annotations

import csv
import sys
from dataclasses import replace
from pathlib import Path

NAME = "pretrain"
HELP = "pretrain a GPT on a text file (chapter 5): progress bar, loss curve (CSV + HTML), final sample"


def add_arguments(parser):
    from llm.pretraining import DEFAULT_PROMPT, DEFAULT_TEXT, SETTINGS
    parser.add_argument("--text", default=None, help=f"UTF-8 text file (default: the preset's own text, "
                                                     f"else {DEFAULT_TEXT.name})")
    parser.add_argument("--preset", default="lecture", choices=sorted(SETTINGS),
                        help="settings: 'lecture' (about a minute), 'book-ch05' (the book's 124M run) or "
                             "'wharton' (the bundled model: Wharton's fiction, about an hour)")
    parser.add_argument("--model", default=None, help="model shape preset instead of the settings' own "
                                                       "(e.g. lab-tiny, lab-small, gpt2-small)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--context", type=int, help="window length (max_length) in tokens")
    parser.add_argument("--stride", type=int, help="window stride (default: the context)")
    parser.add_argument("--eval-every", type=int, help="evaluate every N steps")
    parser.add_argument("--eval-batches", type=int,
                        help="batches per evaluation (default: the preset's; 0: the whole loaders)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (gradient accumulation)")
    parser.add_argument("--precision", choices=("fp32", "bf16"),
                        help="bf16: mixed precision (autocast) on CUDA GPUs; refused on a CPU")
    parser.add_argument("--prompt", default=None, help=f"sample prompt (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--resume", default=None, help="resumable checkpoint to continue from")
    parser.add_argument("--out", default=None, help="checkpoint to write (default: "
                                                    "checkpoints/pretrained-<preset>.safetensors)")
    parser.add_argument("--estimate", action="store_true",
                        help="only time a few steps here and print how long the run would take")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines instead)")
    parser.add_argument("--resumable", action="store_true",
                        help="keep optimizer and loop state in the final checkpoint too, so a finished run "
                             "can be continued (--resume with a larger --max-steps or --epochs)")


def curve_paths(out: Path) -> tuple[Path, Path]:
    stem = out.name.removesuffix(".safetensors")
    return out.with_name(stem + ".loss.csv"), out.with_name(stem + ".loss.html")


def write_curve(history: list[dict], csv_path: Path, html_path: Path) -> None:
    """The loss curve of section 5.2 (train and validation loss against tokens seen) as CSV and HTML."""
    from llm.pretraining import loss_rows
    rows = loss_rows(history)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["step"])
        writer.writeheader()
        writer.writerows(rows)
    import plotly.graph_objects as go
    fig = go.Figure()
    x = [r["tokens_seen"] for r in rows]
    for key, name in (("train_loss", "training loss"), ("val_loss", "validation loss")):
        if any(r.get(key) is not None for r in rows):
            fig.add_trace(go.Scatter(x=x, y=[r.get(key) for r in rows], mode="lines+markers", name=name))
    fig.update_layout(title="Pretraining loss", xaxis_title="tokens seen", yaxis_title="cross-entropy loss",
                      template="plotly_white")
    fig.write_html(html_path, include_plotlyjs=True)  # self-contained: opens offline


def run(args) -> int:
    """Under torchrun: one process of several (`llm.distributed.run_command`)."""
    from llm import distributed

    return distributed.run_command(train_command, args)


def train_command(args) -> int:
    from llm import distributed
    from llm.commands import follow
    from llm.paths import ASSETS_DIR, checkpoints_dir
    from llm.pretraining import (DEFAULT_TEXT, eval_forwards, estimate_seconds, get_settings, load_text,
                                 perplexity, pretrain)

    settings = get_settings(args.preset)
    if args.text is None:
        args.text = str(ASSETS_DIR / settings.text) if settings.text else str(DEFAULT_TEXT)
    text = load_text(args.text)
    overrides = dict(epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, batch_size=args.batch_size,
                     context_length=args.context, stride=args.stride or args.context, eval_every=args.eval_every,
                     seed=args.seed, prompt=args.prompt, grad_accum=args.grad_accum, precision=args.precision)
    train = settings.train
    if args.eval_batches is not None:
        train = replace(train, eval_batches=args.eval_batches or None)
    if args.max_steps and not args.epochs:  # --max-steps alone decides the length of the run
        train = replace(train, epochs=None)
    settings = replace(settings, train=train, **({"model": args.model} if args.model else {}))
    job = pretrain(text, settings, resume=args.resume, text_name=Path(args.text).name, **overrides)
    run_, settings = job.run, job.settings
    out = Path(args.out) if args.out else checkpoints_dir() / f"pretrained-{args.preset}.safetensors"
    print(f"data: {job.data.summary()}")
    print(f"model: {settings.model} shape, {sum(p.numel() for p in job.model.parameters()):,} parameters; "
          f"{run_.total_steps} steps (starting at {run_.state.step}); memory {job.memory.describe()}")
    if distributed.is_distributed():
        world = distributed.world_size()
        print(f"distributed: {world} processes ({run_.model.device.type}), batch {settings.batch_size} per "
              f"process x {settings.grad_accum} micro-batches = {world * settings.batch_size * settings.grad_accum}"
              f" windows per step; each process trains on its share ({len(run_.train_loader)} batches per epoch)")
    if args.estimate:
        left = run_.total_steps - run_.state.step
        seconds = estimate_seconds(job.model.cfg, settings.batch_size, settings.context_length, left,
                                   eval_forwards(settings, job.data, left))
        print(f"estimate: about {seconds / 60:.1f} minutes for {left} steps on this machine "
              f"(timed from real steps; evaluation included)")
        return 0

    print("training: Ctrl-C stops after the current step and saves a resumable checkpoint", flush=True)
    interrupted = follow(job, settings.prompt, no_progress=args.no_progress, desc="pretraining")
    result = job.finish(out, resumable=interrupted or args.resumable)
    if not distributed.is_main():
        return 130 if interrupted else 0
    csv_path, html_path = curve_paths(out)
    write_curve(run_.history, csv_path, html_path)
    print(f"loss curve: {csv_path} and {html_path} (no PNG: matplotlib/kaleido are not installed)")
    if interrupted:
        print(f"stopped at step {result.steps}; resumable checkpoint: {out}\n"
              f"continue with: python -m llm pretrain --text {args.text} --preset {args.preset} --resume {out}",
              file=sys.stderr)
        return 130
    val, last = result.metrics.get("val_loss"), job.last_event
    print(f"done: {result.steps} steps, {result.seen:,} tokens in {result.elapsed:.1f} s; "
          f"train loss {result.metrics.get('train_loss', last.train_loss):.3f}"
          + (f", val loss {val:.3f} (perplexity {perplexity(val):.1f})" if val is not None else ""))
    print(f"checkpoint: {out}")
    print(f"sample: {settings.prompt}{last.sample}")
    return 0
