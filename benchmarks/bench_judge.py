"""Wall time to score the bundled 110 responses against the fake Ollama server.

Each reply takes `--delay` seconds (default 0.1 s, a stand-in for the judge's
generation time), so the run time shows how well parallel requests hide latency.
Target: parallel 4 at least 3x faster than parallel 1. Prints JSON.

    python benchmarks/bench_judge.py [--delay 0.1] [--parallel 1 4]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from llm import judge  # noqa: E402
from ollama_fake import FakeOllama, Reply  # noqa: E402


def time_run(entries, parallel: int, delay: float) -> dict:
    with FakeOllama(reply=lambda request, n: Reply("85", delay=delay)) as fake:
        start = time.perf_counter()
        results = list(judge.score_responses(entries, ["model_response"], host=fake.url, parallel=parallel))
        seconds = time.perf_counter() - start
        assert fake.problems == [], fake.problems
    scored = sum(r.score is not None for r in results)
    return {"parallel": parallel, "seconds": round(seconds, 3), "scored": scored,
            "scores_per_s": round(scored / seconds, 2), "requests": len(fake.requests)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.1, help="seconds per reply (default 0.1)")
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args(argv)
    entries = judge.load_example()
    runs = [time_run(entries, p, args.delay) for p in args.parallel]
    base = runs[0]["seconds"]
    for run in runs:
        run["speedup_vs_first"] = round(base / run["seconds"], 2)
    report = {"benchmark": "judge", "items": len(entries), "reply_delay_s": args.delay,
              "ideal_serial_s": round(len(entries) * args.delay, 2), "runs": runs,
              "target": "parallel 4 >= 3x faster than parallel 1",
              "machine": {"python": platform.python_version(), "cpu": platform.machine()}}
    if {1, 4} <= set(args.parallel):
        by = {r["parallel"]: r["seconds"] for r in runs}
        report["speedup_4_vs_1"] = round(by[1] / by[4], 2)
        report["target_met"] = report["speedup_4_vs_1"] >= 3.0
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
