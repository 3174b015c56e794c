"""Lab app speed: seconds from `python app.py` to the first HTTP 200, and the Attention tab's API time.

Prints JSON. Start-up is compared with a bare 8-tab Gradio app measured in the same run (the
reference: what Gradio alone costs on this machine). The Attention call uses the 124M shape with
random weights (`gpt2-small-random`) and 64 tokens, timed through `gradio_client` like any API
user (which adds up to ~0.1 s of 50 ms polling sleeps) and through Gradio's plain REST route.
Each new text makes the model run again; it runs the blocks up to the layer looked at
(`llm.introspect.RecordedPass`), so the REST figures also time a new text seen in its last layer
(all 12 blocks): the worst case, alone and as a click sends it, with the logit lens's request.

    python benchmarks/bench_ui.py [--runs 3] [--calls 5] [--attention-only]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BARE_APP = """
import gradio as gr
with gr.Blocks() as demo:
    for i in range(8):
        with gr.Tab(f"tab {i}"):
            t = gr.Textbox()
            gr.Button("go").click(lambda x: x, t, t)
demo.launch(server_name="127.0.0.1", server_port=int(__import__("sys").argv[1]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_200(url: str, proc: subprocess.Popen, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no HTTP 200 from {url} within {limit} s")


def start(cmd: list[str], port: int) -> tuple[subprocess.Popen, float]:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_200(f"http://127.0.0.1:{port}/", proc)
    return proc, time.perf_counter() - began


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def startup_seconds(cmd_for_port, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        port = free_port()
        proc, seconds = start(cmd_for_port(port), port)
        stop(proc)
        times.append(round(seconds, 2))
    return times


def call_http(base: str, api_name: str, data: list) -> float:
    """One call through Gradio's REST route (POST, then read the SSE answer); seconds taken.

    This is what the server costs without gradio_client, which polls its queue with 50 ms sleeps.
    """
    began = time.perf_counter()
    request = urllib.request.Request(f"{base}gradio_api/call/{api_name}", json.dumps({"data": data}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{base}gradio_api/call/{api_name}/{event_id}", timeout=60) as response:
        body = response.read().decode()
    if "event: complete" not in body:
        raise RuntimeError(f"{api_name} failed: {body[:300]}")
    return time.perf_counter() - began


def click_with_lens(base: str, data: list) -> float:
    """One Attention-tab click on a new text: the attention and logit-lens requests at once, as the
    browser sends them (they share one recorded forward pass); seconds until both have answered."""
    began = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(call_http, base, "attention", data), pool.submit(call_http, base, "logit_lens", data[:2])]
        for call in calls:
            call.result()
    return time.perf_counter() - began


def attention_seconds(calls: int) -> dict:
    from gradio_client import Client

    port = free_port()
    proc, _ = start([sys.executable, "app.py", "--port", str(port)], port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        words = "the a of and to in is was it that for on with as his he at by".split()

        def text(seed: int) -> str:  # 64 GPT-2 tokens, different for every call
            return " ".join(words[(seed * 7 + i * 3) % len(words)] for i in range(64))

        began = time.perf_counter()
        first = client.predict("gpt2-small-random", text(0), 0, 0, "one head", api_name="/attention")
        first_s = time.perf_counter() - began
        assert len(first[3]["token_ids"]) == 64
        base = f"http://127.0.0.1:{port}/"
        http_new, http_knob, http_last, with_lens, floor = [], [], [], [], []
        for n in range(100, 100 + calls):
            # a new text looked at in its last layer: all 12 blocks run (the worst case)
            http_last.append(call_http(base, "attention", ["gpt2-small-random", text(n + 50), 11, 0, "one head"]))
            with_lens.append(click_with_lens(base, ["gpt2-small-random", text(n + 80), 11, 0, "one head"]))
            http_new.append(call_http(base, "attention", ["gpt2-small-random", text(n), 1, 2, "one head"]))
            http_knob.append(call_http(base, "attention", ["gpt2-small-random", text(n), 4, 5, "one head"]))
            floor.append(call_http(base, "tokenize", ["hi"]))
        new_text, knob = [], []
        for n in range(1, calls + 1):
            began = time.perf_counter()
            client.predict("gpt2-small-random", text(n), n % 12, n % 12, "one head", api_name="/attention")
            new_text.append(time.perf_counter() - began)
            began = time.perf_counter()  # same text, another head: the recorded tensors are reused
            client.predict("gpt2-small-random", text(n), (n + 3) % 12, (n + 5) % 12, "one head",
                           api_name="/attention")
            knob.append(time.perf_counter() - began)
        return {"model": "gpt2-small-random (124M shape, random weights)", "tokens": 64,
                "first_call_s_incl_model_load": round(first_s, 2),
                "gradio_client": {"new_text_median_s": round(statistics.median(new_text), 3),
                                  "knob_change_median_s": round(statistics.median(knob), 3)},
                "http_rest": {"new_text_median_s": round(statistics.median(http_new), 3),
                              "new_text_last_layer_median_s": round(statistics.median(http_last), 3),
                              "new_text_last_layer_with_logit_lens_median_s": round(statistics.median(with_lens), 3),
                              "knob_change_median_s": round(statistics.median(http_knob), 3),
                              "trivial_endpoint_floor_s": round(statistics.median(floor), 3)},
                "gradio_client_new_text_all_s": [round(t, 3) for t in new_text]}
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="start-ups of each app")
    parser.add_argument("--calls", type=int, default=5, help="Attention API calls")
    parser.add_argument("--attention-only", action="store_true", help="leave out the start-up timings")
    args = parser.parse_args()
    if args.attention_only:
        print(json.dumps({"attention_api": attention_seconds(args.calls),
                          "load_average_1min": round(os.getloadavg()[0], 2)}, indent=2))
        return
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(BARE_APP)
    try:
        bare = startup_seconds(lambda port: [sys.executable, f.name, str(port)], args.runs)
    finally:
        os.unlink(f.name)
    lab = startup_seconds(lambda port: [sys.executable, "app.py", "--port", str(port)], args.runs)
    result = {
        "startup_to_http_200_s": {"lab_app_median": statistics.median(lab), "lab_app_all": lab,
                                  "bare_8_tab_gradio_median": statistics.median(bare), "bare_all": bare},
        "attention_api": attention_seconds(args.calls),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
