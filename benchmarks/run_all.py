"""Run every `benchmarks/bench_*.py` one after another and print one JSON summary.

Each script runs in its own process (one at a time, so they do not compete for the
cores), with `--quick` where the script has that flag, unless --full is given. The
summary maps each script to its JSON result (or its error) and its wall time, and is
also written to benchmarks/results/latest.json.

    python benchmarks/run_all.py [--full] [--only app ui] [--timeout 1800]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latest.json"


def scripts(only=None) -> list[Path]:
    """The benchmark scripts, by name; `only` keeps those named (with or without `bench_`)."""
    found = sorted(HERE.glob("bench_*.py"))
    if only:
        wanted = {name.removeprefix("bench_").removesuffix(".py") for name in only}
        found = [p for p in found if p.stem.removeprefix("bench_") in wanted]
    return found


def supports_quick(script: Path) -> bool:
    """Whether the script's argparse has a --quick flag."""
    return '"--quick"' in script.read_text()


def last_json(text: str):
    """The JSON value that ends the script's output (scripts may print other lines before it)."""
    decoder = json.JSONDecoder()
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n" and text[i + 1:i + 2] in "{["]
    for start in starts:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if not text[end:].strip():
            return value
    raise ValueError("no JSON at the end of the output")


def run_script(script: Path, args: list[str], timeout: float) -> dict:
    """Run one script; its result or error, and its wall time."""
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), *args], cwd=HERE.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the script's own children too (apps it started)
        proc.communicate()
        return {"args": args, "seconds": round(time.perf_counter() - began, 1),
                "error": f"timed out after {timeout:.0f} s"}
    summary = {"args": args, "seconds": round(time.perf_counter() - began, 1)}
    if proc.returncode != 0:
        tail = "\n".join((err or out).strip().splitlines()[-15:])
        return {**summary, "error": f"exit code {proc.returncode}: {tail}"}
    try:
        return {**summary, "result": last_json(out)}
    except ValueError as exc:
        return {**summary, "error": f"{exc}: {out.strip()[-500:]}"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="run every script with its defaults (no --quick)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these scripts (e.g. app ui)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per script (default 1800)")
    args = parser.parse_args(argv)
    chosen = scripts(args.only)
    if not chosen:
        parser.error(f"no benchmark matches {args.only}; there are: "
                     + ", ".join(p.stem for p in scripts()))
    began = time.perf_counter()
    summary = {"scripts": {}, "quick": not args.full, "python": platform.python_version(),
               "cpu_count": os.cpu_count(), "load_average_1min_at_start": round(os.getloadavg()[0], 2)}
    for script in chosen:
        flags = ["--quick"] if not args.full and supports_quick(script) else []
        print(f"running {script.name} {' '.join(flags)}".rstrip(), file=sys.stderr, flush=True)
        summary["scripts"][script.stem] = run_script(script, flags, args.timeout)
    summary["total_seconds"] = round(time.perf_counter() - began, 1)
    summary["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
