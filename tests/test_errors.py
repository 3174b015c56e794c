"""Bad input gets a sentence, everywhere: bounds, library errors, streams, uploads, the judge host, the CLI.

The sweep in tests/test_bad_inputs.py sends hundreds of inputs to the running app; these
are the fast, direct checks of each mechanism behind it.
"""
from __future__ import annotations

import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llm import judge
from llm.bounds import BOUNDS, check, check_temperature

ROOT = Path(__file__).resolve().parent.parent


# --- every number has a lower and an upper bound -------------------------------------------

@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_every_bound_refuses_non_finite_and_out_of_range_with_the_range(name):
    bound = BOUNDS[name]
    assert math.isfinite(bound.low) and math.isfinite(bound.high), "every number needs both bounds"
    assert check(name, bound.low) == bound.low and check(name, bound.high) == bound.high
    step = 1 if bound.integer else abs(bound.high) * 1e-3 + 1e-9
    for bad in (float("nan"), float("inf"), -float("inf"), 1e308, bound.low - step, bound.high + step,
                "abc", None, ""):
        with pytest.raises(ValueError) as error:
            check(name, bad)
        message = str(error.value)
        assert message.startswith(f"{name} must be") and "between" in message, message
    if bound.integer:
        with pytest.raises(ValueError, match="whole number"):
            check(name, bound.low + 0.5)


def test_temperature_is_greedy_zero_or_at_least_a_hundredth():
    assert check_temperature(0) == 0 and check_temperature(0.01) == 0.01
    for bad in (1e-300, 0.001, -1, 1e308, float("nan")):
        with pytest.raises(ValueError, match=r"temperature must be 0 \(greedy\) or between 0.01 and 100"):
            check_temperature(bad)


def test_seeds_are_64_bit():
    assert check("seed", 2**64 - 1) == 2**64 - 1
    for bad in (2**64, -1, 2**70):
        with pytest.raises(ValueError, match="seed must be a whole number between 0 and"):
            check("seed", bad)


# --- library errors become sentences, also after a stream started --------------------------

def test_as_gr_error_gives_every_failure_a_sentence():
    gr = pytest.importorskip("gradio")
    from llm.ui.shared import as_gr_error

    cases = [ValueError("top-k must be between 1 and 50257"), RecursionError("maximum recursion depth"),
             MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 160 GB"),
             KeyError("x"), OverflowError("int too large"), ZeroDivisionError("division by zero"),
             FileNotFoundError(2, "No such file"), TypeError("unsupported operand")]
    for exc in cases:
        message = str(as_gr_error(exc, "scoring").message)
        assert len(message) > 20 and message[0].isupper() and message.rstrip()[-1] in ".)", (exc, message)
    assert "nested too deeply" in str(as_gr_error(RecursionError()).message)
    assert "more memory" in str(as_gr_error(MemoryError()).message)
    same = gr.Error("kept as it is")
    assert as_gr_error(same) is same


@pytest.fixture(scope="module")
def failing_stream_url():
    """A Blocks app whose streaming event yields once, then fails with a library error."""
    gr = pytest.importorskip("gradio")
    from llm.ui.shared import explain_all_errors

    def stream(text):
        yield f"started {text}"
        raise ValueError("the judge server stopped answering mid-run")

    with gr.Blocks() as demo:
        box, out = gr.Textbox(), gr.Textbox()
        box.submit(stream, [box], [out], api_name="stream")
    explain_all_errors(demo)
    from app_process import free_port

    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


def test_an_error_after_a_stream_started_reaches_gradio_client_with_its_sentence(failing_stream_url):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    job = Client(failing_stream_url, verbose=False).submit("x", api_name="/stream")
    with pytest.raises(AppError, match="The judge server stopped answering mid-run"):
        job.result(timeout=60)


def test_an_error_after_a_stream_started_reaches_rest_callers_with_its_sentence(failing_stream_url):
    import json
    import urllib.request

    request = urllib.request.Request(failing_stream_url + "gradio_api/call/stream", method="POST",
                                     data=json.dumps({"data": ["x"]}).encode(),
                                     headers={"Content-Type": "application/json"})
    event_id = json.loads(urllib.request.urlopen(request, timeout=30).read())["event_id"]
    body = urllib.request.urlopen(failing_stream_url + f"gradio_api/call/stream/{event_id}", timeout=60).read().decode()
    assert "event: generating" in body and "started x" in body
    assert "event: error" in body and "The judge server stopped answering mid-run." in body, body


# --- uploads are checked before anything is allocated ---------------------------------------

@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from hostile_files import make_hostile_files

    return make_hostile_files(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("name, words", [
    ("context-200k-lie.safetensors", "context_length 200,000 (at most 32,768)"),
    ("context-200k.safetensors", "context_length 200,000"),
    ("layers-lie.safetensors", "n_layers 100,000"),
    ("width-lie.safetensors", "emb_dim 65,536"),
    ("context-8192-lie.safetensors", "does not fit the model"),
    ("pickle-renamed.safetensors", "not a PyTorch file"),
    ("pickle.pth", "refused without running them"),
    ("lying-shape.safetensors", "not a readable .safetensors file"),
    ("huge-header.safetensors", "not a readable .safetensors file"),
    ("empty.safetensors", "empty"),
])
def test_a_lying_or_broken_checkpoint_is_refused_before_allocating(hostile, name, words):
    from llm.checkpoints import CheckpointError, load_any_checkpoint

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB, the peak so far
    with pytest.raises(CheckpointError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_any_checkpoint(hostile[name])
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew_mb < 200, f"refusing {name} raised the peak memory by {grew_mb:.0f} MB"


def test_a_checkpoint_that_tells_the_truth_still_loads(hostile):
    from llm.checkpoints import load_any_checkpoint

    assert load_any_checkpoint(hostile["valid-tiny.safetensors"]).model.cfg.emb_dim == 4


def test_attention_masks_are_cut_to_the_tokens_at_hand(tiny_cfg):
    from llm.model import GPTModel

    big = GPTModel(tiny_cfg.with_(context_length=200_000, emb_dim=8, n_heads=2, n_layers=1, vocab_size=16))
    assert sum(b.numel() for b in big.buffers()) == 0, "no context² buffer"
    att = big.trf_blocks[0].att
    book = torch.triu(torch.ones(12, 12), diagonal=1).bool()
    assert torch.equal(att.causal_mask(0, 12, 12), book)
    assert torch.equal(att.causal_mask(5, 3, 8), book[5:8, :8])


def test_deeply_nested_json_gets_a_sentence(hostile):
    from llm.alpaca import load_instruction_file

    for name in ("nested-list.json", "nested-object.json", "nested-record.json"):
        with pytest.raises(ValueError, match="nested too deeply"):
            load_instruction_file(hostile[name])
        with pytest.raises(judge.JudgeError, match="nested too deeply"):
            judge.load_entries(hostile[name])
    with pytest.raises(judge.JudgeError, match="nested too deeply"):
        judge.load_entries(hostile["nested-lines.jsonl"])


# --- the judge's host on a Space ------------------------------------------------------------

def test_on_a_space_the_judge_contacts_only_the_operators_host(monkeypatch):
    import socket

    monkeypatch.setenv("LLM_LAB_LIMITS", "spaces")
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    opened = []
    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: (opened.append(address),
                                                                         real_connect(self, address))[1])
    for host in ("http://169.254.169.254/latest", "http://127.0.0.1:22", "10.0.0.1:11434", "x" * 5000):
        with pytest.raises(judge.JudgeError, match="only to the Ollama server its operator set up|characters long"):
            judge.check_server(host)
        with pytest.raises(judge.JudgeError):
            list(judge.score_responses(judge.load_example()[:1], host=host))
    assert opened == [], "no connection may be opened for a visitor's host"
    assert judge.resolve_host("127.0.0.1:9/") == "127.0.0.1:9/"  # the operator's own host, spelled differently
    assert judge.resolve_host("") == "http://127.0.0.1:9"


def test_locally_the_judge_host_is_free(monkeypatch):
    monkeypatch.setenv("LLM_LAB_LIMITS", "local")
    assert judge.resolve_host("http://192.0.2.5:11434") == "http://192.0.2.5:11434"


# --- session folders a crash left behind ----------------------------------------------------

def test_stale_session_folders_are_removed_at_start_up(tmp_path):
    pytest.importorskip("gradio")
    from llm.ui.shared import SESSION_FOLDER_PREFIX, remove_stale_session_folders, session_folder

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    crashed = tmp_path / f"{SESSION_FOLDER_PREFIX}{dead.pid}-abc"
    live = tmp_path / f"{SESSION_FOLDER_PREFIX}{os.getpid()}-def"
    old = tmp_path / f"{SESSION_FOLDER_PREFIX}ghi"  # named before folders carried a process id
    recent = tmp_path / f"{SESSION_FOLDER_PREFIX}jkl"
    other = tmp_path / "somebody-else"
    for folder in (crashed, live, old, recent, other):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
    os.utime(old, (time.time() - 10 * 24 * 3600,) * 2)
    removed = remove_stale_session_folders(tmp_path)
    assert sorted(removed) == sorted([crashed, old])
    assert live.exists() and recent.exists() and other.exists() and not crashed.exists()
    made = session_folder(None)
    try:
        assert made.name.startswith(f"{SESSION_FOLDER_PREFIX}{os.getpid()}-")
    finally:
        made.rmdir()


# --- the CLI: exit 2 with `error: ...`, never a traceback -----------------------------------

@pytest.mark.parametrize("argv, words", [
    (["judge", "--parallel", "0"], "parallel must be a whole number between 1 and 64"),
    (["judge", "--timeout", "-1"], "timeout must be a finite number between 0.1 and 3600"),
    (["judge", "--repeat", "0"], "repeat must be a whole number between 1 and 100"),
    (["judge", "--timeout", "1e308"], "timeout must be"),
    (["generate", "--model", "lab-tiny", "--prompt", "x", "--max-new-tokens", "1000000"], "max new tokens must be"),
    (["generate", "--model", "lab-tiny", "--prompt", "x", "--temperature", "1e-300"], "temperature must be 0"),
    (["generate", "--model", "lab-tiny", "--prompt", "x", "--temperature", "nan"], "temperature must be 0"),
    (["generate", "--model", "lab-tiny", "--prompt", "x", "--seed", str(2**70)], "seed must be"),
    (["generate", "--model", "HOSTILE/context-200k-lie.safetensors", "--prompt", "x"], "context_length 200,000"),
    (["generate", "--model", "HOSTILE/pickle-renamed.safetensors", "--prompt", "x"], "not a PyTorch file"),
    (["judge", "--file", "HOSTILE/nested-list.json"], "nested too deeply"),
])
def test_cli_refuses_with_exit_2_and_a_sentence(hostile, argv, words):
    folder = str(Path(hostile["valid-tiny.safetensors"]).parent)
    argv = [a.replace("HOSTILE", folder) for a in argv]
    env = {**os.environ, "LLM_LAB_LIMITS": "local", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "llm", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: " in done.stderr and words in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
