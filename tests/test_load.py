"""Visitors arrive together (benchmarks/bench_load.py with small counts): every request completes while a
training run goes on, the training run finishes, the server stays alive and its memory bounded."""
import sys
from pathlib import Path

import pytest

pytest.importorskip("gradio_client")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

#: The server's peak resident memory with lab-tiny models and one training run (≈ 0.6 GB measured).
PEAK_RSS_LIMIT_MB = 2_500


def test_sessions_at_once_during_training_all_complete(tmp_path):
    from bench_load import run_load

    result = run_load(tmp_path, sessions=4, requests=3, train_steps=5)
    assert result["failed"] == 0, result["failures"]
    assert result["completed"] == 4 * 3
    assert result["training_ok"], result["training_error"]
    assert result["server_alive"]
    assert result["peak_rss_mb"] < PEAK_RSS_LIMIT_MB, result
