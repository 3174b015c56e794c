"""The lab app's start-up time and memory, printed as JSON.

1. Seconds from `python app.py` (a subprocess on a free port) to the first HTTP 200, median
   of --runs, next to a bare 8-tab Gradio app started the same way in the same run (what
   Gradio alone costs on this machine).
2. Peak resident memory (VmHWM in /proc/<pid>/status, children included) of the app process:
   idle after start-up, after the picker's model-info endpoint loaded the 124M model, and
   after a 20-token generation with it, all through `gradio_client` like any API user.
   GPT-2's weights are not available offline, so the model is `gpt2-small-random` (the
   124M shape with random weights: the same memory). The reference is the same model
   loaded and run in a bare Python process (torch and `llm` only, no Gradio), measured
   in the same run, and the size of the model's float32 parameters.

    python benchmarks/bench_app.py [--runs 3] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # gradio_client reads it: no telemetry

from bench_ui import BARE_APP, ROOT, free_port, start, startup_seconds, stop  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
import app_process  # noqa: E402  (the tests' process helpers: memory of a process tree)

MODEL = "gpt2-small-random"
PROMPT = "Every effort moves you"
NEW_TOKENS = 20
#: The same model loaded and run without the app: torch and `llm` only.
REFERENCE = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from llm.catalog import load_model
from llm.generation import stream_generate
from llm.tokenizer import text_to_token_ids
model = load_model({MODEL!r}).model
list(stream_generate(model, text_to_token_ids({PROMPT!r}), {NEW_TOKENS}, 0.0, None, None, use_cache=True, seed=123))
print(sum(p.numel() * p.element_size() for p in model.parameters()))
"""


def memory_mb(pid: int) -> dict:
    """Peak (VmHWM) and current (VmRSS) resident memory of `pid` and its children, in MB."""
    memory = app_process.memory_mb(pid)
    return {"peak_mb": memory["peak_mb"], "current_mb": memory["rss_mb"],
            "processes": len(app_process.process_tree(pid))}


def app_memory() -> dict:
    """The app's memory idle, after loading the 124M model, and after generating with it."""
    from gradio_client import Client

    port = free_port()
    proc, _ = start([sys.executable, "app.py", "--port", str(port)], port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        idle = memory_mb(proc.pid)
        info = client.predict(MODEL, api_name="/model_info")
        assert MODEL in info, info
        loaded = memory_mb(proc.pid)
        job = client.submit(MODEL, PROMPT, NEW_TOKENS, 0.0, 50, 1.0, 123, True, False, api_name="/generate")
        list(job)
        tokens = len(job.outputs()[-1][2]["token_ids"])
        generated = memory_mb(proc.pid)
        return {"idle_after_startup": idle, "after_model_info_loads_124m": loaded,
                f"after_generating_{tokens}_tokens": generated}
    finally:
        stop(proc)


def reference_memory() -> dict:
    """Peak memory of a bare Python process that loads and runs the same model."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(REFERENCE + "print(open('/proc/self/status').read())\n")
    try:
        out = subprocess.run([sys.executable, f.name], capture_output=True, text=True, check=True, cwd=ROOT,
                             env=dict(os.environ, HF_HUB_OFFLINE="1")).stdout
    finally:
        os.unlink(f.name)
    param_bytes, *status = out.splitlines()
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return {"bare_python_peak_mb": round(peak_kb / 1024, 1),
            "float32_parameters_mb": round(int(param_bytes) / 2**20, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="start-ups of each app (median)")
    parser.add_argument("--quick", action="store_true", help="one start-up of each app")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(BARE_APP)
    try:
        bare = startup_seconds(lambda port: [sys.executable, f.name, str(port)], runs)
    finally:
        os.unlink(f.name)
    lab = startup_seconds(lambda port: [sys.executable, "app.py", "--port", str(port)], runs)
    memory = app_memory()
    reference = reference_memory()
    peak = max(m["peak_mb"] for m in memory.values())
    result = {
        "startup_to_http_200_s": {"lab_app_median": statistics.median(lab), "lab_app_all": lab,
                                  "bare_8_tab_gradio_median": statistics.median(bare), "bare_all": bare},
        "app_memory_mb": memory,
        "peak_rss_with_124m_mb": peak,
        "reference_same_model_without_app_mb": reference,
        "app_overhead_mb": round(peak - reference["bare_python_peak_mb"], 1),
        "model": f"{MODEL} (124M shape, random weights)",
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
