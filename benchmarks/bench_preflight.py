"""Preflight predictions against the real demos, on this machine, printed as JSON.

    python benchmarks/bench_preflight.py [--model KEY] [--skip-pretrain]

For each demo the preflight's warm-up is taken and its prediction made, then the demo is run
for real straight after (prediction and measurement back to back, under the same load from
whatever else runs on the machine): the lecture preset trained on the-verdict until the
training loss is below 1 (minutes on 2 busy cores; --skip-pretrain leaves it out), the spam
fine-tune demo, and a 200-token generation on the lecture model. Prints predicted and
measured seconds and their ratio; the preflight aims to be within 30%.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from llm import catalog, preflight  # noqa: E402
from llm.config import DEFAULT_PROMPT, DEFAULT_TEXT  # noqa: E402


def measure_pretrain() -> tuple[float, int]:
    """Seconds and steps until an evaluation shows the training loss below 1 (the Pretrain tab's view)."""
    from llm.pretraining import load_text, pretrain

    t = time.perf_counter()
    job = pretrain(load_text(DEFAULT_TEXT), "lecture")
    for event in job:
        if event.kind == "eval" and event.metrics.get("train_loss", 9) < 1.0:
            job.run.close()
            return time.perf_counter() - t, event.step
    return time.perf_counter() - t, -1


def measure_spam(base: str) -> float:
    from llm.classifier import finetune_spam

    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        job = finetune_spam(base, preflight.SPAM_DEMO, out=out)
        for _ in job:
            pass
        job.finish(Path(out) / "spam.safetensors")  # the tab's last stage: accuracy on the whole sets, saved
        return time.perf_counter() - t


def measure_generation(model) -> float:
    from llm.generation import stream_generate
    from llm.tokenizer import text_to_token_ids

    ids = text_to_token_ids(DEFAULT_PROMPT)
    with torch.inference_mode():
        t = time.perf_counter()
        n = len(list(stream_generate(model, ids, preflight.GENERATE_TOKENS, eos_id=None)))
    assert n == preflight.GENERATE_TOKENS
    return time.perf_counter() - t


def row(name, predicted, measured, **extra):
    return {"demo": name, "predicted_s": round(predicted, 2), "measured_s": round(measured, 2),
            "ratio": round(predicted / measured, 3), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--skip-pretrain", action="store_true")
    args = parser.parse_args()
    key = preflight.lecture_model_key(args.model)
    model = catalog.load_model(key).model
    rows = []

    from llm.tokenizer import text_to_token_ids

    per_token = preflight.time_tokens(model)
    prefill = preflight.time_forward(model, model.cfg.context_length // 2)
    predicted = preflight.predict_generation(per_token, prefill, model.cfg.context_length,
                                             len(text_to_token_ids(DEFAULT_PROMPT)))
    rows.append(row(f"generate 200 tokens on {key}", predicted, measure_generation(model)))

    step_s, forward_s, run = preflight.time_spam_steps(key)
    rows.append(row(f"spam fine-tune on {key}", preflight.predict_spam(step_s, forward_s, run), measure_spam(key)))

    if not args.skip_pretrain:
        step_s, eval_s = preflight.time_pretrain_steps()
        lecture = catalog.load_model("lecture").model
        predicted = preflight.predict_pretrain(step_s, eval_s, preflight.time_tokens(lecture))
        seconds, steps = measure_pretrain()
        rows.append(row("pretrain lecture preset to loss < 1", predicted, seconds, steps_measured=steps,
                        steps_assumed=preflight.LECTURE_STEPS_TO_LOSS_1))
    print(json.dumps({"machine": platform.machine(), "threads": torch.get_num_threads(), "model": key,
                      "within_30pct": all(0.7 <= r["ratio"] <= 1.3 for r in rows), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
