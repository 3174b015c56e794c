"""Hostile and careless input, as strangers send it to a Space: a sweep over every endpoint.

`python app.py` runs in a child process under the Space's limits (`LLM_LAB_LIMITS=spaces`)
and `gradio_client` sends each case below: out-of-range, non-finite and absurd numbers,
empty, huge and binary text, files that lie (checkpoints whose config does not match their
tensors, a pickle renamed `.safetensors`, 200 KB of nested JSON), unknown models, hosts a
visitor should not make the server contact. Per input the test asserts:

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
    owner: str | None = None  # an issue whose fix this case waits for


NAN, INF = float("nan"), float("inf")
BAD_FLOATS = [NAN, INF, -INF, 1e308, -1e308, 1e-300, -1.0, "abc", None]
BAD_COUNTS = [0, -1, 10**9, 2**70, NAN, INF, 1e308, "ten", None]
TEXTS = ["", "   ", "\x00\x01\x02", "a" * 200_000, "<|endoftext|>" * 3_000, "🤖" * 5_000, None, 12345]
MODELS = ["nonexistent", "/etc/passwd", "../../../etc/shadow", "", None, "gpt2-xl", "http://169.254.169.254/"]
M = "lab-tiny"
ISSUE_19 = "issue 19 (training bounds, memory estimate)"


def _vary(endpoint: str, base: list, index: int, values, what: str, owner=None) -> list[Case]:
    cases = []
    for value in values:
        args = list(base)
        args[index] = value
        cases.append(Case(endpoint, tuple(args), f"{what}={_short(value)}", owner))
    return cases


def _short(value) -> str:
    if isinstance(value, File):
        return value.name
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:10]}…({len(text)} chars)"


def build_cases() -> list[Case]:
    c: list[Case] = []
    # --- chapter 2: tokens and embeddings
    c += _vary("/tokenize", ["x"], 0, TEXTS + [["a", "list"], {"a": 1}], "text")
    base = ["Every effort moves you forward", 4, 1]
    c += _vary("/sliding_window", base, 0, TEXTS[:4], "text")
    c += _vary("/sliding_window", base, 1, BAD_COUNTS, "max_length")
    c += _vary("/sliding_window", base, 2, BAD_COUNTS, "stride")
    base = [M, "Every effort moves you", "king, queen"]
    c += _vary("/embeddings", base, 0, MODELS, "choice")
    c += _vary("/embeddings", base, 1, TEXTS[:6], "text")
    c += _vary("/embeddings", base, 2, ["", ",,,,", "w," * 5_000, "x" * 100_000, None], "words")
    base = [M, "king", 5]
    c += _vary("/neighbours", base, 1, ["", "x" * 100_000, None, "\x00"], "word")
    c += _vary("/neighbours", base, 2, BAD_COUNTS, "k")
    # --- chapter 3: attention
    base = [M, "Your journey starts with one step", 0, 0, "one head"]
    c += _vary("/attention", base, 0, MODELS[:4], "choice")
    c += _vary("/attention", base, 1, TEXTS[:6], "text")
    c += _vary("/attention", base, 2, [-1, 1000, NAN, INF, 1e308, 2**70, "x"], "layer")
    c += _vary("/attention", base, 3, [-1, 1000, NAN, INF, 2**70], "head")
    c += _vary("/attention", base, 4, ["bogus", "", None], "view")
    base = [M, "Your journey starts with one step"]
    c += _vary("/logit_lens", base, 0, MODELS[:4], "choice")
    c += _vary("/logit_lens", base, 1, TEXTS[:6], "text")
    # --- chapters 4-5: generation
    base = [M, "Every effort moves you", 3, 0.0, 50, 1.0, 123, True, False, "fp32"]
    c += _vary("/generate", base, 0, MODELS[:5], "choice")
    c += _vary("/generate", base, 1, TEXTS[:6], "prompt")
    c += _vary("/generate", base, 2, BAD_COUNTS + [10**6, 257], "max_new_tokens")
    c += _vary("/generate", base[:3] + [1.0] + base[4:], 3, BAD_FLOATS + [1e6, -INF], "temperature")
    c += _vary("/generate", base[:3] + [1.0] + base[4:], 4, [0, -1, 10**9, 2**70, -(2**70), NAN], "top_k")
    c += _vary("/generate", base[:3] + [1.0] + base[4:], 5, [0, -0.5, 1.5, NAN, INF, 1e-300], "top_p")
    c += _vary("/generate", base[:3] + [1.0] + base[4:], 6, [-1, 2**64, 2**70, -(2**70), 10**30, NAN], "seed")
    c += _vary("/generate", base, 7, ["yes", None], "use_cache")
    c += _vary("/generate", base, 9, ["int3", True, None], "precision")
    base = [M, "Every effort moves you", 1.0, 50, 0.9]
    c += _vary("/next_token", base, 1, TEXTS[:4], "prompt")
    c += _vary("/next_token", base, 2, BAD_FLOATS + [1e6], "temperature")
    c += _vary("/next_token", base, 3, [0, -1, 10**9, 2**70, NAN], "top_k")
    c += _vary("/next_token", base, 4, [0, -0.5, 1.5, NAN, INF], "top_p")
    base = [M, "Every effort moves you", 5]
    c += _vary("/compare_cache", base, 2, BAD_COUNTS, "max_new_tokens")
    c += _vary("/compare_cache", base, 1, TEXTS[:3], "prompt")
    # --- chapter 5: pretraining (settings checked before a run; runs are one step)
    base = ["the-verdict.txt", None, 64, 64, 4, 1, 1]
    c += _vary("/pretrain_data", base, 2, [0, -1, 10**9, 2**70], "max_length")
    c += _vary("/pretrain_data", base, 3, [0, -1, 10**9], "stride")
    c += _vary("/pretrain_data", base, 4, [0, -1, 10**9], "batch_size")
    c += _vary("/pretrain_data", base, 5, [0, -1, 10**9], "epochs")
    c += _vary("/pretrain_data", base, 6, [-1, 10**12], "max_steps")
    c += _vary("/pretrain_data", ["upload"] + base[1:], 1,
               [File("binary.txt"), File("empty.txt"), File("nul.txt"), File("nested-list.json"), None], "upload")
    base = ["custom", M, 64, 2, 4, 64]
    c += _vary("/pretrain_model", base, 2, [0, -1, 10**6, NAN, 2**70], "emb_dim")
    c += _vary("/pretrain_model", base, 3, [0, -1, 10**4, NAN], "n_layers")
    c += _vary("/pretrain_model", base, 4, [0, -1, 3, 10**4], "n_heads")
    c += _vary("/pretrain_model", base, 5, [0, -1, 10**7, NAN], "context")
    c += _vary("/pretrain_model", base, 0, ["bogus", None], "mode")
    #         source, upload, mode, base, emb, layers, heads, ctx, max_len, stride, batch, epochs, steps, lr, wd, seed, eval, prompt, keep
    base = ["the-verdict.txt", None, "custom", M, 64, 2, 4, 32, 32, 32, 2, 1, 1, 4e-3, 0.1, 123, 1, "Every", False]
    c += _vary("/pretrain", base, 10, [0, 10**9], "batch_size", ISSUE_19)
    c += _vary("/pretrain", base, 11, [0, 10**9], "epochs", ISSUE_19)
    c += _vary("/pretrain", base, 12, [-1, 10**12], "max_steps", ISSUE_19)
    c += _vary("/pretrain", base, 13, [NAN, INF, -1.0, 1e308], "lr")
    c += _vary("/pretrain", base, 14, [NAN, -1.0, 1e308], "weight_decay")
    c += _vary("/pretrain", base, 15, [2**70, -1], "seed")
    c += _vary("/pretrain", base, 16, [0, -1, 10**12], "eval_every")
    c += _vary("/pretrain", base, 4, [10**6, 0], "emb_dim", ISSUE_19)
    c += _vary("/pretrain", base, 7, [10**7, 0], "context", ISSUE_19)
    c += _vary("/pretrain", base, 17, ["x" * 100_000, None], "prompt")
    c += _vary("/estimate_pretrain", base[:-1], 10, [0, 10**9, NAN], "batch_size")
    c += _vary("/estimate_pretrain", base[:-1], 4, [10**6, NAN], "emb_dim")
    c += _vary("/estimate_pretrain", base[:-1], 7, [10**7, -1], "context")
    # --- chapter 6: classification
    #       base, data, policy, k, rank, epochs, lr, batch, steps, seed, keep
    base = [M, "balanced", "head", 1, 4, 1, 1e-3, 8, 1, 123, False]
    c += _vary("/finetune_spam", base, 0, MODELS[:4], "base")
    c += _vary("/finetune_spam", base, 1, ["bogus", None], "data")
    c += _vary("/finetune_spam", base, 2, ["bogus", None], "policy")
    c += _vary("/finetune_spam", base[:2] + ["last-k"] + base[3:], 3, [0, -1, 1000, NAN, 2**70], "k")
    c += _vary("/finetune_spam", base[:2] + ["lora"] + base[3:], 4, [0, -1, 10**6, NAN, 2**70], "rank")
    c += _vary("/finetune_spam", base, 5, [0, -1, 10**9], "epochs", ISSUE_19)
    c += _vary("/finetune_spam", base, 6, [NAN, INF, -1.0, 1e308], "lr")
    c += _vary("/finetune_spam", base, 7, [0, -1, 10**9], "batch_size", ISSUE_19)
    c += _vary("/finetune_spam", base, 8, [-1, 10**12], "max_steps", ISSUE_19)
    c += _vary("/finetune_spam", base, 9, [2**70, -1, NAN], "seed")
    c += _vary("/classify", [None, "Win a prize"], 0, [M, "bogus", None, "/etc/passwd"], "choice")
    c += _vary("/classify", [None, "Win a prize"], 1, TEXTS[:5], "text")
    c += _vary("/classify_batch", [None, "a\nb", None], 2,
               [File("binary.txt"), File("nul.txt"), File("nested-list.json"), File("empty.txt"), File("lines.txt")],
               "upload")
    c += _vary("/classify_batch", [M, "a\nb", None], 1, ["", "\n" * 100_000, "x\n" * 50_000], "lines")
    # --- chapter 7: instruction fine-tuning, responses, the judge
    instruction_files = [File(n) for n in ("nested-list.json", "nested-object.json", "nested-record.json",
                                           "binary.json", "empty.json", "not-a-list.json", "numbers.json",
                                           "wrong-keys.json", "huge-strings.json", "random.safetensors")]
    c += _vary("/check_instruction_file", [None], 0, instruction_files + [None], "path")
    #       base, source, upload, epochs, lr, batch, steps, mask, keep
    base = [M, "book", None, 1, 1e-3, 2, 1, False, False]
    c += _vary("/finetune_instruct", base[:1] + ["upload"] + base[2:], 2, instruction_files[:5], "upload")
    c += _vary("/finetune_instruct", base, 0, MODELS[:4], "base")
    c += _vary("/finetune_instruct", base, 3, [0, -1, 10**9], "epochs", ISSUE_19)
    c += _vary("/finetune_instruct", base, 4, [NAN, INF, -1.0], "lr")
    c += _vary("/finetune_instruct", base, 5, [0, -1, 10**9], "batch_size", ISSUE_19)
    c += _vary("/finetune_instruct", base, 6, [-1, 10**12], "max_steps", ISSUE_19)
    history = []
    base = ["Name a colour.", history, "", M, 4, 0.0, 0]
    c += _vary("/chat", base, 0, TEXTS[:6], "message")
    c += _vary("/chat", base, 1, [[{"role": "user", "content": "x" * 100_000}], "not a list", None], "history")
    c += _vary("/chat", base, 3, MODELS[:4], "choice")
    c += _vary("/chat", base, 4, BAD_COUNTS, "max_new_tokens")
    c += _vary("/chat", base, 5, [NAN, INF, -1.0, 1e308, 1e-300], "temperature")
    c += _vary("/chat", base, 6, [-1, 10**9, 2**70, NAN], "top_k")
    base = [M, "upload", File("good.json"), 2]
    c += _vary("/respond", base, 2, instruction_files[:5] + [None], "upload")
    c += _vary("/respond", base, 3, BAD_COUNTS, "max_new_tokens")
    c += _vary("/respond", base, 0, MODELS[:4], "choice")
    hosts = ["http://169.254.169.254/latest/meta-data", "http://127.0.0.1:22", "http://10.0.0.1:11434",
             "file:///etc/passwd", "gopher://localhost:70", "x" * 10_000, "http://[::1]:7860", "localhost:0"]
    c += _vary("/check", ["", "llama3"], 0, hosts, "host")
    c += _vary("/check", ["", "llama3"], 1, ["", "x" * 10_000, None], "model")
    c += _vary("/records", ["upload", None, "model_response", "(none)"], 1,
               [File(n) for n in ("nested-list.json", "nested-object.json", "nested-lines.jsonl", "binary.json",
                                  "empty.json", "numbers.json", "junk.csv", "header-only.csv", "wide.csv",
                                  "good.json", "huge-strings.json")], "upload")
    c += _vary("/records", ["bogus", None, "model_response", "(none)"], 0, ["bogus", None, "chat"], "source")
    #      host, model, rubric, parallel, repeat, timeout, temperature, source, upload, a, b
    base = ["", "llama3", "0-100", 2, 1, 5, 0.0, "example", None, "model_response", "(none)"]
    c += _vary("/score", base, 0, hosts[:5], "host")
    c += _vary("/score", base, 2, ["bogus", None], "rubric")
    c += _vary("/score", base, 3, [0, -1, 1000, NAN, INF], "parallel")
    c += _vary("/score", base, 4, [0, -1, 1000, NAN], "repeat_k")
    c += _vary("/score", base, 5, [0, -1, 1e308, NAN, INF, 10**9], "timeout")
    c += _vary("/score", base, 6, [NAN, INF, -1.0, 1e308], "temperature")
    c += _vary("/score", base[:7] + ["upload"] + base[8:], 8,
               [File("nested-list.json"), File("binary.json"), File("junk.csv")], "upload")
    c += _vary("/score", base, 9, ["no_such_column", "", None], "column_a")
    # --- the shared picker, upload and hub buttons
    c += _vary("/model_info", [M], 0, MODELS + ["a" * 10_000], "choice")
    c += _vary("/download_gpt2", ["lab-tiny", "lab-tiny", None, "lab-tiny"], 0, ["bogus", "lab-tiny", None], "choice")
    checkpoints = ["empty.safetensors", "random.safetensors", "pickle-renamed.safetensors", "pickle.pth", "text.pth",
                   "huge-header.safetensors", "lying-shape.safetensors", "notes.txt.safetensors", "wrong-type.txt",
                   "context-200k-lie.safetensors", "context-8192-lie.safetensors", "width-lie.safetensors",
                   "layers-lie.safetensors", "context-200k.safetensors", "valid-tiny.safetensors"]
    c += _vary("/upload_model", [None], 0, [File(n) for n in checkpoints] + [None], "path")
    for name in ("/check_hub", "/register_pretrained", "/stop_pretrain", "/register_spam_classifier", "/stop_finetune",
                 "/register_instruct", "/stop_finetune_instruct", "/stop_respond", "/stop"):
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


def run_case(client, case: Case, files: dict[str, Path], timeout: float = CASE_TIMEOUT_S) -> tuple[str, str]:
    """(outcome, detail): outcome is "ok", "clear", "generic", "traceback" or "timeout"."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    args = [handle_file(str(files[a.name])) if isinstance(a, File) else a for a in case.args]
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
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ValueError) and ("not valid JSON" in str(exc) or "Out of range float" in str(exc)):
            return "client", text[:300]  # the client itself cannot send this value (e.g. NaN)
        return "generic", text[:300]
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
        self.tally: Counter = Counter()
        self.records: list[dict] = []

    def endpoints(self) -> set[str]:
        return set(self.client.view_api(return_format="dict", print_info=False)["named_endpoints"])

    def run(self, case: Case) -> dict:
        start = time.perf_counter()
        if not self.app.alive():
            record = {"outcome": "crash", "detail": "the server had already died"}
        else:
            outcome, detail = run_case(self.client, case, self.files)
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
def test_hostile_input_gets_a_sentence_and_the_server_survives(sweep, case, request):
    if case.owner:
        request.applymarker(pytest.mark.xfail(reason=f"waits for {case.owner}", strict=False))
    record = sweep.run(case)
    assert record["outcome"] in ("ok", "clear", "client"), record
    assert sweep.app.alive(), sweep.app.log()[-2000:]
    assert record["rss_mb"] < RSS_LIMIT_MB, record


if __name__ == "__main__":  # the counts per outcome, for the issue's before/after note
    import tempfile

    sweep = Sweep(Path(tempfile.mkdtemp(prefix="bad-inputs-")))
    try:
        missing = sweep.endpoints() - {c.endpoint for c in CASES}
        for i, case in enumerate(CASES):
            record = sweep.run(case)
            if record["outcome"] not in ("ok", "clear", "client") or "-v" in sys.argv:
                print(f"{i:3d} {record['outcome']:9s} {case.endpoint} {case.label}: {record['detail'][:160]}",
                      file=sys.stderr, flush=True)
        print(json.dumps({"cases": len(CASES), "endpoints_without_cases": sorted(missing), "counts": dict(sweep.tally),
                          "peak_rss_mb": max(r["peak_mb"] for r in sweep.records if r["peak_mb"] == r["peak_mb"]),
                          "seconds": round(sum(r["seconds"] for r in sweep.records), 1)}))
    finally:
        sweep.close()
