"""Subcommands of `python -m llm`, one module each (see llm/__main__.py), and what they share:
`CLIError`, and `follow(job)`, the one terminal progress loop of the three training commands
(pretrain, finetune-spam, finetune-instruct): a progress bar over the steps, a line per
evaluation and per epoch, and Ctrl-C as "stop after this step" (every rank at once under torchrun).

    interrupted = follow(job, prompt="Every effort moves you")
    result = job.finish(out, resumable=interrupted)
"""
from __future__ import annotations

import sys


class CLIError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2.

    It lives here, not in `llm/__main__.py`, because under `python -m llm` that module
    runs as `__main__` and a class imported from `llm.__main__` would be a different one.
    """


def event_line(event, prompt: str = "") -> str:
    """One evaluation or epoch as a log line, with the sample (if any) on the next line."""
    metrics = " ".join(f"{k}={v:.4f}" if k.endswith("acc") else f"{k}={v:.3f}" for k, v in event.metrics.items()
                       if isinstance(v, (int, float)))
    where = f"epoch {event.epoch}" if event.kind == "epoch" else f"step {event.step}/{event.total_steps} epoch {event.epoch}"
    line = f"{where} seen {event.seen:,}: {metrics}"
    if event.sample is not None:
        line += f"\n  sample: {prompt}{event.sample[:300]!r}"
    return line


def follow(job, prompt: str = "", no_progress: bool = False, desc: str = "training") -> bool:
    """Pull every event of `job`, showing progress; return True when Ctrl-C stopped it early.

    Only rank 0 prints under torchrun; every rank checks the stop request at the same points.
    """
    from tqdm import tqdm

    from llm import distributed

    main = distributed.is_main()
    bar = tqdm(total=job.total_steps, initial=job.run.state.step, unit="step", desc=desc,
               disable=no_progress or not main, file=sys.stderr)

    def say(text: str) -> None:
        if not main:
            return
        bar.write(text) if not no_progress else print(text, flush=True)

    with distributed.stop_request() as stop_asked:
        try:
            for event in job:
                if event.kind == "step":
                    bar.update(1)
                    bar.set_postfix(loss=f"{event.train_loss:.3f}", lr=f"{event.lr:.1e}",
                                    items_s=f"{event.tokens_per_s:.0f}", refresh=False)
                elif event.kind in ("eval", "epoch"):
                    say(event_line(event, prompt))
                if stop_asked():
                    break
        finally:
            bar.close()
    interrupted = not job.finished
    if interrupted and main:
        print(f"stopped after step {job.run.state.step}: measuring and saving what was trained", file=sys.stderr)
    return interrupted


def add_precision_argument(parser) -> None:
    """`--precision fp32|fp16|int8`: the weights generation or classification runs with
    (`llm.generation.inference_model`), shared by generate, chat, respond and classify."""
    from llm.config import INFERENCE_PRECISIONS

    parser.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="fp32",
                        help="weights to run with: fp32 as trained; fp16 (float16 blocks) or int8 (int8 blocks "
                             "and head, per-channel scales) read fewer bytes per token and are faster on a CPU; "
                             "fp16 gave the same greedy tokens, int8 the same greedy choice at about 99%% of positions")
