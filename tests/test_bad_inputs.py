"""Hostile and careless input, as strangers send it to a Space: a sweep over every endpoint.

`python app.py` runs in a child process under the Space's limits (`LLM_LAB_LIMITS=spaces`)
and `gradio_client` sends each case below: out-of-range, non-finite and absurd numbers,
empty, huge and binary text, files that lie (checkpoints whose config does not match their
tensors, a pickle renamed `.safetensors`, 200 KB of nested JSON), unknown models, hosts a
visitor should not make the server contact. Values go by parameter name over the endpoint's
defaults (read from the running app's API info); NaN and Infinity, which gradio_client will not
encode, go through the REST API as JSON literals, as any other HTTP client sends them. Per
input the test asserts:

- the reply is a valid result, or an error whose message is a sentence (not "Error", not
  empty, not the "verbose error reporting" placeholder, no traceback);
- the server is still alive;
- its resident memory stays under `RSS_LIMIT_MB`.

The endpoint list comes from the running app's API info, and a test checks that every
endpoint has cases, so a new endpoint cannot slip past the sweep. Training cases run at most
one step. The child runs with an address-space limit (`ADDRESS_SPACE_BYTES`) as a safety net
for the test machine: an allocation that would take the machine down fails instead (and
shows up here as a generic error, which still fails the case).

Counting outcomes: `python tests/test_bad_inputs.py` runs the sweep without pytest and
prints the counts per outcome as JSON.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_process import ROOT, AppProcess, free_port  # noqa: E402

sys.path.insert(1, str(ROOT))  # `llm` when run as a script

gradio_client = pytest.importorskip("gradio_client")

#: A generous bound for the server holding lab-sized models (idle ≈ 400 MB).
RSS_LIMIT_MB = 3_000
#: The child's address-space limit: far above what the app needs, far below what kills a CI machine.
ADDRESS_SPACE_BYTES = 8 * 2**30
#: Seconds one case may take before it counts as hanging.
CASE_TIMEOUT_S = 120
GENERIC = ("", "error", "none", "null")
#: Script mode on an older app (`--lenient`): cases for endpoints or parameters it lacks are skipped.
LENIENT = "--lenient" in sys.argv
VERBOSE_PLACEHOLDER = "has not enabled verbose error reporting"


@dataclass(frozen=True)
class File:
    """A hostile file by name (tests/hostile_files.py), uploaded when the case runs."""
    name: str


@dataclass(frozen=True)
class Case:
    endpoint: str
    args: tuple
    label: str
    owner: str | None = None  # the issue whose fix this case checks, when not issue 14


NAN, INF = float("nan"), float("inf")
BAD_FLOATS = [NAN, INF, -INF, 1e308, -1e308, 1e-300, -1.0, "abc", None]
BAD_COUNTS = [0, -1, 10**9, 2**70, NAN, INF, 1e308, "ten", None]
TEXTS = ["", "   ", "\x00\x01\x02", "a" * 200_000, "<|endoftext|>" * 3_000, "🤖" * 5_000, None, 12345]
MODELS = ["nonexistent", "/etc/passwd", "../../../etc/shadow", "", None, "gpt2-xl", "http://169.254.169.254/"]
M = "lab-tiny"
ISSUE_19 = "issue 19 (training bounds, memory estimate)"  # landed: these cases pass


def _vary(endpoint: str, base: dict, field: str, values, owner=None) -> list[Case]:
    """One case per value of `field`; the other parameters are `base`'s, else the endpoint's defaults."""
    return [Case(endpoint, tuple({**base, field: value}.items()), f"{field}={_short(value)}", owner)
            for value in values]


def _short(value) -> str:
    if isinstance(value, File):
        return value.name
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:10]}…({len(text)} chars)"


def build_cases() -> list[Case]:
    c: list[Case] = []
    # --- chapter 2: tokens and embeddings
    c += _vary("/tokenize", {}, "text", TEXTS + [["a", "list"], {"a": 1}])
    base = {"text": "Every effort moves you forward", "max_length": 4, "stride": 1}
    c += _vary("/sliding_window", base, "text", TEXTS[:4])
    c += _vary("/sliding_window", base, "max_length", BAD_COUNTS)
    c += _vary("/sliding_window", base, "stride", BAD_COUNTS)
    base = {"choice": M, "text": "Every effort moves you", "words": "king, queen"}
    c += _vary("/embeddings", base, "choice", MODELS)
    c += _vary("/embeddings", base, "text", TEXTS[:6])
    c += _vary("/embeddings", base, "words", ["", ",,,,", "w," * 5_000, "x" * 100_000, None])
    base = {"choice": M, "word": "king", "k": 5}
    c += _vary("/neighbours", base, "word", ["", "x" * 100_000, None, "\x00"])
    c += _vary("/neighbours", base, "k", BAD_COUNTS)
    # --- chapter 3: attention
    base = {"choice": M, "text": "Your journey starts with one step", "layer": 0, "head": 0, "view": "one head"}
    c += _vary("/attention", base, "choice", MODELS[:4])
    c += _vary("/attention", base, "text", TEXTS[:6])
    c += _vary("/attention", base, "layer", [-1, 1000, NAN, INF, 1e308, 2**70, "x"])
    c += _vary("/attention", base, "head", [-1, 1000, NAN, INF, 2**70])
    c += _vary("/attention", base, "view", ["bogus", "", None])
    base = {"choice": M, "text": "Your journey starts with one step"}
    c += _vary("/logit_lens", base, "choice", MODELS[:4])
    c += _vary("/logit_lens", base, "text", TEXTS[:6])
    # --- chapter 4: the model, stage by stage
    base = {"choice": M, "text": "Every effort moves you", "block": 0, "token": 0}
    for name in ("/model_flow", "/model_stage"):
        c += _vary(name, base, "block", [-1, 10**6, NAN, "x"])
        c += _vary(name, base, "token", [-1, 10**9, INF])
        c += _vary(name, base, "stage", ["bogus", None])
        c += _vary(name, base, "text", TEXTS[:3])
    for name in ("/model_layernorm", "/model_gelu"):
        c += _vary(name, {"choice": M, "text": "Every effort", "block": 0}, "block", [-1, 10**6, NAN])
    c += _vary("/model_residual", {"choice": M, "text": "x"}, "text", TEXTS[:4])
    c += _vary("/model_residual", {"choice": M, "text": "x"}, "choice", MODELS[:3])
    c += _vary("/model_shortcut", {}, "num_layers", [0, -1, 10**6, NAN])
    c += _vary("/model_shortcut", {}, "seed", [-1, 2**70, NAN])
    c += _vary("/model_parameters", {}, "choice", MODELS[:4])
    # --- chapters 4-5: generation
    base = {"choice": M, "prompt": "Every effort moves you", "max_new_tokens": 3, "temperature": 1.0}
    c += _vary("/generate", base, "choice", MODELS[:5])
    c += _vary("/generate", base, "prompt", TEXTS[:6])
    c += _vary("/generate", base, "max_new_tokens", BAD_COUNTS + [10**6, 257])
    c += _vary("/generate", base, "temperature", BAD_FLOATS + [1e6, -INF])
    c += _vary("/generate", base, "top_k", [0, -1, 10**9, 2**70, -(2**70), NAN])
    c += _vary("/generate", base, "top_p", [0, -0.5, 1.5, NAN, INF, 1e-300])
    c += _vary("/generate", base, "seed", [-1, 2**64, 2**70, -(2**70), 10**30, NAN])
    c += _vary("/generate", base, "use_cache", ["yes", None])
    c += _vary("/generate", base, "precision", ["fp64", None])
    base = {"choice": M, "prompt": "Every effort moves you", "temperature": 1.0, "top_k": 50, "top_p": 0.9}
    c += _vary("/next_token", base, "prompt", TEXTS[:4])
    c += _vary("/next_token", base, "temperature", BAD_FLOATS + [1e6])
    c += _vary("/next_token", base, "top_k", [0, -1, 10**9, 2**70, NAN])
    c += _vary("/next_token", base, "top_p", [0, -0.5, 1.5, NAN, INF])
    base = {"choice": M, "prompt": "Every effort moves you", "max_new_tokens": 5}
    c += _vary("/compare_cache", base, "max_new_tokens", BAD_COUNTS)
    c += _vary("/compare_cache", base, "prompt", TEXTS[:3])
    # --- chapter 5: pretraining (settings checked before a run; runs are one step)
    base = {"source": "the-verdict.txt", "max_length": 64, "stride": 64, "batch_size": 4, "epochs": 1, "max_steps": 1}
    c += _vary("/pretrain_data", base, "max_length", [0, -1, 10**9, 2**70])
    c += _vary("/pretrain_data", base, "stride", [0, -1, 10**9])
    c += _vary("/pretrain_data", base, "batch_size", [0, -1, 10**9])
    c += _vary("/pretrain_data", base, "epochs", [0, -1, 10**9])
    c += _vary("/pretrain_data", base, "max_steps", [-1, 10**12])
    c += _vary("/pretrain_data", {**base, "source": "upload"}, "upload",
               [File("binary.txt"), File("empty.txt"), File("nul.txt"), File("nested-list.json"), None])
    base = {"mode": "custom", "base": M, "emb_dim": 64, "n_layers": 2, "n_heads": 4, "context": 64}
    c += _vary("/pretrain_model", base, "emb_dim", [0, -1, 10**6, NAN, 2**70])
    c += _vary("/pretrain_model", base, "n_layers", [0, -1, 10**4, NAN])
    c += _vary("/pretrain_model", base, "n_heads", [0, -1, 3, 10**4])
    c += _vary("/pretrain_model", base, "context", [0, -1, 10**7, NAN])
    c += _vary("/pretrain_model", base, "mode", ["bogus", None])
    base = {"source": "the-verdict.txt", "mode": "custom", "base": M, "emb_dim": 64, "n_layers": 2, "n_heads": 4,
            "context": 32, "max_length": 32, "stride": 32, "batch_size": 2, "epochs": 1, "max_steps": 1,
            "eval_every": 1, "prompt": "Every", "eval_batches": 1}
    c += _vary("/pretrain", base, "batch_size", [0, 10**9], ISSUE_19)
    c += _vary("/pretrain", base, "epochs", [0, 10**9], ISSUE_19)
    c += _vary("/pretrain", base, "max_steps", [-1, 10**12], ISSUE_19)
    c += _vary("/pretrain", base, "lr", [NAN, INF, -1.0, 1e308])
    c += _vary("/pretrain", base, "weight_decay", [NAN, -1.0, 1e308])
    c += _vary("/pretrain", base, "seed", [2**70, -1])
    c += _vary("/pretrain", base, "eval_every", [0, -1, 10**12])
    c += _vary("/pretrain", base, "emb_dim", [10**6, 0], ISSUE_19)
    c += _vary("/pretrain", base, "context", [10**7, 0], ISSUE_19)
    c += _vary("/pretrain", base, "prompt", ["x" * 100_000, None])
    # the estimate takes the same inputs, unnamed
    estimate = {"param_0": "the-verdict.txt", "param_2": "custom", "param_3": M, "param_4": 64, "param_5": 2,
                "param_6": 4, "param_7": 32, "param_8": 32, "param_9": 32, "param_10": 2, "param_11": 1, "param_12": 1}
    c += _vary("/estimate_pretrain", estimate, "param_10", [0, 10**9, NAN])
    c += _vary("/estimate_pretrain", estimate, "param_4", [10**6, NAN])
    c += _vary("/estimate_pretrain", estimate, "param_7", [10**7, -1])
    # --- chapter 6: classification
    base = {"base": M, "data": "balanced", "policy": "head", "k": 1, "rank": 4, "epochs": 1, "lr": 1e-3,
            "batch_size": 8, "max_steps": 1, "eval_batches": 1}
    c += _vary("/finetune_spam", base, "base", MODELS[:4])
    c += _vary("/finetune_spam", base, "data", ["bogus", None])
    c += _vary("/finetune_spam", base, "policy", ["bogus", None])
    c += _vary("/finetune_spam", {**base, "policy": "last-k"}, "k", [0, -1, 1000, NAN, 2**70])
    c += _vary("/finetune_spam", {**base, "policy": "lora"}, "rank", [0, -1, 10**6, NAN, 2**70])
    c += _vary("/finetune_spam", base, "epochs", [0, -1, 10**9], ISSUE_19)
    c += _vary("/finetune_spam", base, "lr", [NAN, INF, -1.0, 1e308])
    c += _vary("/finetune_spam", base, "batch_size", [0, -1, 10**9], ISSUE_19)
    c += _vary("/finetune_spam", base, "max_steps", [-1, 10**12], ISSUE_19)
    c += _vary("/finetune_spam", base, "seed", [2**70, -1, NAN])
    c += _vary("/classify", {"text": "Win a prize"}, "choice", [M, "bogus", None, "/etc/passwd"])
    c += _vary("/classify", {"choice": None}, "text", TEXTS[:5])
    c += _vary("/classify_batch", {"lines": "a\nb"}, "upload",
               [File("binary.txt"), File("nul.txt"), File("nested-list.json"), File("empty.txt"), File("lines.txt")])
    c += _vary("/classify_batch", {"choice": M}, "lines", ["", "\n" * 100_000, "x\n" * 50_000])
    # --- chapter 7: instruction fine-tuning, responses, the judge
    instruction_files = [File(n) for n in ("nested-list.json", "nested-object.json", "nested-record.json",
                                           "binary.json", "empty.json", "not-a-list.json", "numbers.json",
                                           "wrong-keys.json", "huge-strings.json", "random.safetensors")]
    c += _vary("/check_instruction_file", {}, "path", instruction_files + [None])
    base = {"base": M, "source": "book", "epochs": 1, "lr": 1e-3, "batch_size": 2, "max_steps": 1, "eval_batches": 1}
    c += _vary("/finetune_instruct", {**base, "source": "upload"}, "upload", instruction_files[:5])
    c += _vary("/finetune_instruct", base, "base", MODELS[:4])
    c += _vary("/finetune_instruct", base, "epochs", [0, -1, 10**9], ISSUE_19)
    c += _vary("/finetune_instruct", base, "lr", [NAN, INF, -1.0])
    c += _vary("/finetune_instruct", base, "batch_size", [0, -1, 10**9], ISSUE_19)
    c += _vary("/finetune_instruct", base, "max_steps", [-1, 10**12], ISSUE_19)
    base = {"message": "Name a colour.", "history": [], "input_text": "", "choice": M, "max_new_tokens": 4,
            "temperature": 0.0, "top_k": 0}
    c += _vary("/chat", base, "message", TEXTS[:6])
    c += _vary("/chat", base, "history", [[{"role": "user", "content": "x" * 100_000}], "not a list", None])
    c += _vary("/chat", base, "choice", MODELS[:4])
    c += _vary("/chat", base, "max_new_tokens", BAD_COUNTS)
    c += _vary("/chat", base, "temperature", [NAN, INF, -1.0, 1e308, 1e-300])
    c += _vary("/chat", base, "top_k", [-1, 10**9, 2**70, NAN])
    base = {"choice": M, "source": "upload", "upload": File("good.json"), "max_new_tokens": 2}
    c += _vary("/respond", base, "upload", instruction_files[:5] + [None])
    c += _vary("/respond", base, "max_new_tokens", BAD_COUNTS)
    c += _vary("/respond", base, "choice", MODELS[:4])
    hosts = ["http://169.254.169.254/latest/meta-data", "http://127.0.0.1:22", "http://10.0.0.1:11434",
             "file:///etc/passwd", "gopher://localhost:70", "x" * 10_000, "http://[::1]:7860", "localhost:0"]
    c += _vary("/check", {"model": "llama3"}, "host", hosts)
    c += _vary("/check", {"host": ""}, "model", ["", "x" * 10_000, None])
    c += _vary("/records", {"source": "upload"}, "upload",
               [File(n) for n in ("nested-list.json", "nested-object.json", "nested-lines.jsonl", "binary.json",
                                  "empty.json", "numbers.json", "junk.csv", "header-only.csv", "wide.csv",
                                  "good.json", "huge-strings.json")])
    c += _vary("/records", {}, "source", ["bogus", None, "chat"])
    base = {"host": "", "parallel": 2, "repeat_k": 1, "timeout": 5}
    c += _vary("/score", base, "host", hosts[:5])
    c += _vary("/score", base, "rubric", ["bogus", None])
    c += _vary("/score", base, "parallel", [0, -1, 1000, NAN, INF])
    c += _vary("/score", base, "repeat_k", [0, -1, 1000, NAN])
    c += _vary("/score", base, "timeout", [0, -1, 1e308, NAN, INF, 10**9])
    c += _vary("/score", base, "temperature", [NAN, INF, -1.0, 1e308])
    c += _vary("/score", {**base, "source": "upload"}, "upload",
               [File("nested-list.json"), File("binary.json"), File("junk.csv")])
    c += _vary("/score", base, "column_a", ["no_such_column", "", None])
    # --- the shared picker, upload and hub buttons, the lecture
    c += _vary("/model_info", {}, "choice", MODELS + ["a" * 10_000])
    c += _vary("/download_gpt2", {}, "choice", ["bogus", "lab-tiny", None])
    checkpoints = ["empty.safetensors", "random.safetensors", "pickle-renamed.safetensors", "pickle.pth", "text.pth",
                   "huge-header.safetensors", "lying-shape.safetensors", "notes.txt.safetensors", "wrong-type.txt",
                   "context-200k-lie.safetensors", "context-8192-lie.safetensors", "width-lie.safetensors",
                   "layers-lie.safetensors", "context-200k.safetensors", "valid-tiny.safetensors"]
    c += _vary("/upload_model", {}, "path", [File(n) for n in checkpoints] + [None])
    for name in ("/check_hub", "/register_pretrained", "/stop_pretrain", "/register_spam_classifier", "/stop_finetune",
                 "/register_instruct", "/stop_finetune_instruct", "/stop_respond", "/stop", "/lecture_next",
                 "/lecture_back", "/lecture_check"):
        c.append(Case(name, (), "no input"))
    return c


CASES = build_cases()


# --- running one case ------------------------------------------------------------------------

def _message_problem(message: str) -> str | None:
    """Why an error message does not tell the visitor anything, or None when it is a sentence."""
    text = (message or "").strip()
    if text.lower() in GENERIC or VERBOSE_PLACEHOLDER in text:
        return "generic"
    if "Traceback (most recent call last)" in text or 'File "' in text:
        return "traceback"
    if len(text) < 12:
        return "generic"
    return None


def _arguments(case: Case, params: dict[str, list[tuple[str, object]]], files: dict[str, Path], upload):
    """The case's values by parameter name over the endpoint's defaults, in the endpoint's order."""
    names = [name for name, _ in params[case.endpoint]]
    given = dict(case.args)
    unknown = set(given) - set(names)
    if LENIENT:  # counting outcomes on an older version of the app: its parameters may differ
        given = {k: v for k, v in given.items() if k in names}
    else:
        assert not unknown, f"{case.endpoint} has no parameter {sorted(unknown)}; it takes {names}"
    values = [given.get(name, default) for name, default in params[case.endpoint]]
    return [upload(files[v.name]) if isinstance(v, File) else v for v in values]


def _rest_call(url: str, endpoint: str, values: list, timeout: float) -> tuple[str, str]:
    """The REST API (`/gradio_api/call/...`) with NaN and Infinity sent as JSON literals, which
    gradio_client refuses to encode but any other HTTP client sends."""
    import urllib.request

    body = json.dumps({"data": values}, allow_nan=True).encode()
    request = urllib.request.Request(f"{url}gradio_api/call{endpoint}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        event_id = json.loads(urllib.request.urlopen(request, timeout=30).read())["event_id"]
        text = urllib.request.urlopen(f"{url}gradio_api/call{endpoint}/{event_id}", timeout=timeout).read().decode()
    except OSError as exc:
        return "generic", f"REST call failed: {exc}"
    events = [block for block in text.split("\n\n") if block.strip()]
    last = events[-1] if events else ""
    if last.startswith("event: complete"):
        return "ok", last[:200]
    data = last.partition("data:")[2].strip()
    try:
        message = json.loads(data) if data else None
    except ValueError:
        message = data
    if isinstance(message, dict):
        message = message.get("error") or message.get("message")
    problem = _message_problem(message if isinstance(message, str) else "")
    return (problem or "clear"), f"(REST) {message}"[:300]


def run_case(client, case: Case, files: dict[str, Path], params, url: str,
             timeout: float = CASE_TIMEOUT_S) -> tuple[str, str]:
    """(outcome, detail): outcome is "ok", "clear", "generic", "traceback" or "timeout"."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    args = _arguments(case, params, files, lambda path: handle_file(str(path)))
    if any(isinstance(v, float) and not math.isfinite(v) for v in args):
        return _rest_call(url, case.endpoint, args, timeout)  # gradio_client cannot encode NaN / Infinity
    job = client.submit(*args, api_name=case.endpoint)
    try:
        result = job.result(timeout=timeout)
    except AppError as exc:
        problem = _message_problem(str(exc))
        return (problem or "clear"), str(exc)[:300]
    except TimeoutError:
        try:
            job.cancel()
        except Exception:  # noqa: BLE001 - a server too busy to take the cancel
            pass
        return "timeout", f"no answer within {timeout} s"
    except Exception as exc:  # noqa: BLE001 - the client's own failures (the server went away, ...)
        return "generic", f"{type(exc).__name__}: {exc}"[:300]
    return "ok", repr(result)[:200]


class Sweep:
    """The app in a child process under the Space's limits, a client, the files and the tally."""

    def __init__(self, workdir: Path):
        from hostile_files import make_hostile_files

        self.files = make_hostile_files(workdir / "files")
        env = {"LLM_LAB_LIMITS": "spaces", "LLM_LAB_CHECKPOINTS": str(workdir / "checkpoints"),
               "HF_HOME": str(workdir / "hf"), "OLLAMA_HOST": "http://127.0.0.1:9", "SYSTEM": None,
               "GRADIO_SERVER_NAME": None, "GRADIO_SERVER_PORT": None}
        port = free_port()
        self.app = AppProcess(workdir / "app", env=env, args=["--host", "127.0.0.1", "--port", str(port)], port=port,
                              address_space_bytes=ADDRESS_SPACE_BYTES)
        self.app.wait_until_up(limit=900)  # a loaded CI machine can take minutes
        self.client = gradio_client.Client(self.app.url, verbose=False)
        info = self.client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        self.params = {name: [(p["parameter_name"], p.get("parameter_default")) for p in endpoint["parameters"]]
                       for name, endpoint in info.items()}
        self.tally: Counter = Counter()
        self.records: list[dict] = []

    def endpoints(self) -> set[str]:
        return set(self.params)

    def run(self, case: Case) -> dict:
        start = time.perf_counter()
        if not self.app.alive():
            record = {"outcome": "crash", "detail": "the server had already died"}
        else:
            outcome, detail = run_case(self.client, case, self.files, self.params, self.app.url)
            if not self.app.alive():
                outcome, detail = "crash", f"the server died: {self.app.log()[-500:]}"
            record = {"outcome": outcome, "detail": detail}
        memory = self.app.memory_mb() if self.app.alive() else {"rss_mb": math.nan, "peak_mb": math.nan}
        record.update(endpoint=case.endpoint, label=case.label, owner=case.owner, seconds=round(time.perf_counter() - start, 2),
                      **memory)
        self.tally[record["outcome"]] += 1
        self.records.append(record)
        return record

    def close(self) -> None:
        self.app.stop()


# --- pytest ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    s = Sweep(tmp_path_factory.mktemp("bad-inputs"))
    yield s
    s.close()
    summary = {"counts": dict(s.tally), "cases": len(s.records),
               "peak_rss_mb": max((r["peak_mb"] for r in s.records if not math.isnan(r["peak_mb"])), default=0)}
    out = Path(__file__).parent / "artifacts"
    out.mkdir(exist_ok=True)
    (out / "bad_inputs.json").write_text(json.dumps({**summary, "records": s.records}, indent=1))
    print("\nhostile-input sweep:", json.dumps(summary))


def test_the_sweep_covers_every_endpoint_with_300_inputs(sweep):
    endpoints = sweep.endpoints()
    covered = {case.endpoint for case in CASES}
    assert endpoints <= covered, f"endpoints without hostile-input cases: {sorted(endpoints - covered)}"
    assert covered <= endpoints, f"cases for endpoints that no longer exist: {sorted(covered - endpoints)}"
    assert len(CASES) >= 300


@pytest.mark.parametrize("case", CASES, ids=[f"{c.endpoint}:{c.label}" for c in CASES])
def test_hostile_input_gets_a_sentence_and_the_server_survives(sweep, case):
    record = sweep.run(case)
    assert record["outcome"] in ("ok", "clear"), record
    assert sweep.app.alive(), sweep.app.log()[-2000:]
    assert record["rss_mb"] < RSS_LIMIT_MB, record


if __name__ == "__main__":  # the counts per outcome, for the issue's before/after note
    import tempfile

    sweep = Sweep(Path(tempfile.mkdtemp(prefix="bad-inputs-")))
    try:
        missing = sweep.endpoints() - {c.endpoint for c in CASES}
        for i, case in enumerate(CASES):
            if LENIENT and case.endpoint not in sweep.params:
                sweep.tally["no such endpoint"] += 1
                continue
            record = sweep.run(case)
            if record["outcome"] not in ("ok", "clear") or "-v" in sys.argv:
                print(f"{i:3d} {record['outcome']:9s} {case.endpoint} {case.label}: {record['detail'][:160]}",
                      file=sys.stderr, flush=True)
        print(json.dumps({"cases": len(CASES), "endpoints_without_cases": sorted(missing), "counts": dict(sweep.tally),
                          "peak_rss_mb": max(r["peak_mb"] for r in sweep.records if r["peak_mb"] == r["peak_mb"]),
                          "seconds": round(sum(r["seconds"] for r in sweep.records), 1)}))
    finally:
        sweep.close()
