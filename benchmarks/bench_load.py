"""Visitors arrive together: 8 gradio_client sessions at once while one training job runs.

`python app.py` starts in a child process under the Space's limits (`LLM_LAB_LIMITS=spaces`:
queue of 16, one training run at a time). One session starts a spam fine-tuning run
(lab-tiny, --train-steps steps); meanwhile --sessions sessions each send --requests
requests in turn: a 20-token generation, an attention map and a classification (with a
small classifier made beforehand by `python -m llm finetune-spam`, in the lab's
checkpoints folder). Printed as JSON: requests/s, median and p95 latency per kind, the
peak resident memory of the server (VmHWM, children included), whether every request
completed and the training run finished, and how long the training took.

    python benchmarks/bench_load.py [--sessions 8] [--requests 6] [--train-steps 60] [--quick]

tests/test_load.py runs the same code with small counts and asserts completion and bounded memory.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # gradio_client reads it: no telemetry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from app_process import AppProcess, free_port  # noqa: E402

MODEL = "lab-tiny"
PROMPT = "Every effort moves you"


def make_classifier(folder: Path) -> Path:
    """A one-step lab-tiny spam classifier in `folder` (the CLI, as a user would make one)."""
    out = folder / "spam-lab-tiny.safetensors"
    subprocess.run([sys.executable, "-m", "llm", "finetune-spam", "--base", MODEL, "--trainable", "head",
                    "--max-steps", "1", "--eval-batches", "1", "--batch-size", "8", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def run_load(workdir: Path, sessions: int = 8, requests: int = 6, train_steps: int = 60) -> dict:
    from gradio_client import Client

    checkpoints = workdir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    classifier = make_classifier(checkpoints)
    port = free_port()
    app = AppProcess(workdir / "app", args=["--host", "127.0.0.1", "--port", str(port)], port=port,
                     env={"LLM_LAB_LIMITS": "spaces", "LLM_LAB_CHECKPOINTS": str(checkpoints),
                          "HF_HOME": str(workdir / "hf"), "SYSTEM": None})
    try:
        startup_s = app.wait_until_up(limit=900)
        idle = app.memory_mb()
        peak = {"mb": idle["peak_mb"]}
        stop_sampling = threading.Event()

        def sample_memory():
            while not stop_sampling.wait(0.25):
                if app.alive():
                    peak["mb"] = max(peak["mb"], app.memory_mb()["peak_mb"])

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()

        trainer = Client(app.url, verbose=False)
        training_start = time.perf_counter()
        training = trainer.submit(MODEL, "balanced", "head", 1, 4, 1, 1e-3, 8, train_steps, 123, False, 1,
                                  api_name="/finetune_spam")
        kinds = {
            "generate": lambda c: c.predict(MODEL, PROMPT, 20, 0.0, 50, 1.0, 123, True, False, api_name="/generate"),
            "attention": lambda c: c.predict(MODEL, "Your journey starts with one step", 0, 0, "one head",
                                             api_name="/attention"),
            "classify": lambda c: c.predict(str(classifier.resolve()), "WINNER! Claim your free prize now",
                                            api_name="/classify"),
        }
        latencies: dict[str, list[float]] = {k: [] for k in kinds}
        failures: list[str] = []
        lock = threading.Lock()

        def visitor(index: int):
            client = Client(app.url, verbose=False)
            names = list(kinds)
            for n in range(requests):
                kind = names[(index + n) % len(names)]
                start = time.perf_counter()
                try:
                    kinds[kind](client)
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    with lock:
                        failures.append(f"{kind}: {type(exc).__name__}: {str(exc)[:200]}")
                    continue
                with lock:
                    latencies[kind].append(time.perf_counter() - start)

        load_start = time.perf_counter()
        threads = [threading.Thread(target=visitor, args=(i,)) for i in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        load_s = time.perf_counter() - load_start
        training_running_during_load = not training.done()
        try:
            training.result(timeout=1800)
            training_ok, training_error = True, ""
        except Exception as exc:  # noqa: BLE001
            training_ok, training_error = False, f"{type(exc).__name__}: {str(exc)[:200]}"
        training_s = time.perf_counter() - training_start
        stop_sampling.set()
        sampler.join()
        peak["mb"] = max(peak["mb"], app.memory_mb()["peak_mb"]) if app.alive() else peak["mb"]
        every = [x for values in latencies.values() for x in values]
        return {
            "sessions": sessions, "requests_per_session": requests, "train_steps": train_steps,
            "completed": len(every), "failed": len(failures), "failures": failures[:5],
            "requests_per_s": round(len(every) / load_s, 2), "load_seconds": round(load_s, 1),
            "p95_latency_s": round(percentile(every, 0.95), 2),
            "median_latency_s": round(statistics.median(every), 2) if every else None,
            "per_kind": {k: {"n": len(v), "median_s": round(statistics.median(v), 2) if v else None,
                             "p95_s": round(percentile(v, 0.95), 2)} for k, v in latencies.items()},
            "training_ok": training_ok, "training_error": training_error,
            "training_running_during_load": training_running_during_load, "training_seconds": round(training_s, 1),
            "startup_seconds": round(startup_s, 1), "idle_rss_mb": idle["rss_mb"], "peak_rss_mb": peak["mb"],
            "server_alive": app.alive(),
        }
    finally:
        app.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8, choices=range(1, 33), metavar="1-32")
    parser.add_argument("--requests", type=int, default=6, choices=range(1, 101), metavar="1-100")
    parser.add_argument("--train-steps", type=int, default=60, choices=range(1, 3001), metavar="1-3000")
    parser.add_argument("--quick", action="store_true", help="3 requests per session, 20 training steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.train_steps = 3, 20
    with tempfile.TemporaryDirectory(prefix="bench-load-") as folder:
        result = run_load(Path(folder), args.sessions, args.requests, args.train_steps)
    print(json.dumps(result, indent=1))
    return 0 if result["failed"] == 0 and result["training_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
