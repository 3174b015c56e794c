"""The live run view through a real server and gradio_client streaming, printed as JSON.

    python benchmarks/bench_run_view.py            # lecture preset, Stop in all three tabs, a 5 MB text

Measures, per run: seconds from submit to the first update, the largest gap between two streamed
updates while it trains (the view promises one every 0.5 s, whatever the job is doing: steps,
evaluations, samples, saving), and for Stop the seconds from /stop_* until the stream shows the
job stopping and until the final update (saved, registered). Also the first step of a run on a
5 MB text (Wharton's fiction cut to 5 MB): the time to tokenize it, then evaluations bounded to
`eval_batches` batches. Timings depend on the machine and its load; the JSON records both.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream(job, stop=None, stop_after_step: int | None = None):
    """Times of every streamed update; optionally call `stop()` once an update shows a step >= stop_after_step."""
    t0, times, statuses, stop_at = time.perf_counter(), [], [], None
    for update in job:
        now = time.perf_counter() - t0
        times.append(now)
        statuses.append(update[0])
        if stop is not None and stop_at is None and "Step **" in update[0]:
            step = int(update[0].split("Step **")[1].split(" ")[0].replace(",", ""))
            if step >= (stop_after_step or 1):
                stop()
                stop_at = time.perf_counter() - t0
    return times, statuses, stop_at


def summary(times, statuses, stop_at=None) -> dict:
    started = next((t for t, s in zip(times, statuses) if "Step **" in s), None)
    training = [t for t, s in zip(times, statuses) if "Step **" in s or "Stopping" in s or "saving" in s]
    gaps = [b - a for a, b in zip(times, times[1:])]
    out = {"first_update_s": round(times[0], 2), "first_step_shown_s": round(started, 2) if started else None,
           "updates": len(times), "max_gap_s": round(max(gaps), 2) if gaps else None,
           "max_gap_while_training_s": round(max((b - a for a, b in zip(training, training[1:])), default=0), 2),
           "total_s": round(times[-1], 2)}
    if stop_at is not None:
        stopping = next((t for t, s in zip(times, statuses) if t > stop_at and ("Stopping" in s or "Stopped" in s)),
                        None)
        out.update(stop_to_stopping_s=round(stopping - stop_at, 2) if stopping else None,
                   stop_to_final_s=round(times[-1] - stop_at, 2), final=statuses[-1].split("\n\n")[-1][:160])
    return out


def main() -> int:
    os.environ.setdefault("LLM_LAB_CHECKPOINTS", tempfile.mkdtemp(prefix="bench-run-view-"))
    import torch
    from gradio_client import Client, handle_file

    from llm.config import WHARTON_TEXT
    from llm.ui.app import build_app

    demo = build_app()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False)
    report = {"benchmark": "live run view (llm.ui.run_view) through gradio_client",
              "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "load_avg_1min": round(os.getloadavg()[0], 1)}}
    lecture = ["the-verdict.txt", None, "lecture", "lab-tiny", 128, 4, 4, 64, 64, 64, 4, 15, 60, 4e-3, 0.1, 123, 20,
               "Every effort moves you", False, 10]
    # 1. the lecture preset, 60 steps (evaluations at 1, 20, 40, 60 with samples): cadence
    report["pretrain_lecture_60_steps"] = summary(*stream(client.submit(*lecture, api_name="/pretrain")))
    client.predict(api_name="/register_pretrained")
    # 2. Stop in each tab, after the first step shown
    job = client.submit(*lecture[:12], 0, *lecture[13:], api_name="/pretrain")
    report["pretrain_stop"] = summary(*stream(job, lambda: client.predict(api_name="/stop_pretrain"), 3))
    job = client.submit("lab-tiny", "balanced", "all", 2, 4, 2, 2e-3, 8, 0, 123, False, 5, api_name="/finetune_spam")
    report["classify_stop"] = summary(*stream(job, lambda: client.predict(api_name="/stop_finetune"), 3))
    job = client.submit("lab-tiny", "book", None, 2, 1e-3, 8, 0, False, False, 5, api_name="/finetune_instruct")
    report["instruct_stop"] = summary(*stream(job, lambda: client.predict(api_name="/stop_finetune_instruct"), 3))
    # 3. a 5 MB text: first step shown, evaluations bounded to 10 batches
    big = Path(tempfile.mkdtemp()) / "wharton-5mb.txt"
    big.write_bytes(WHARTON_TEXT.read_bytes()[:5_000_000].decode("utf-8", "ignore").encode("utf-8"))
    job = client.submit("upload", handle_file(str(big)), *lecture[2:12], 30, *lecture[13:], api_name="/pretrain")
    report["pretrain_5mb_text_30_steps"] = summary(*stream(job))
    demo.close()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
