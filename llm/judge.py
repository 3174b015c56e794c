"""Scoring model answers with a larger LLM served by Ollama (section 7.8).

The book evaluates its instruction-finetuned GPT-2 by asking Llama 3, served
locally by Ollama, to score each response against the reference answer on a
scale from 0 to 100, with deterministic options (seed 123, temperature 0,
`num_ctx` 2048). This module does the same through the `ollama` client and adds
what an evaluator needs: a preflight check that says what is wrong, a 1-5 rubric,
robust parsing of the judge's reply, parallel requests with timeouts and retries,
repeated scoring to measure the judge's own spread, and a summary comparing two
response columns.

    entries = load_entries("assets/instruction-data-with-response.json")
    results = list(score_responses(entries, ["model_response"], model="llama3"))
    print(format_summary(summarize(results, ["model_response"])))
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import httpx
import ollama

from .alpaca import NESTED_TOO_DEEP
from .paths import ASSETS_DIR

DEFAULT_HOST = "http://localhost:11434"
DEFAULT_MODEL = "llama3"
#: The book's options for a reproducible judge (section 7.8, `query_model`).
BOOK_OPTIONS = {"seed": 123, "temperature": 0, "num_ctx": 2048}
EXAMPLE_FILE = ASSETS_DIR / "instruction-data-with-response.json"
#: Fields of an instruction record that are not model responses.
RECORD_FIELDS = ("instruction", "input", "output")


class JudgeError(ValueError):
    """A problem the user can fix, said in one human sentence."""


class ServerUnavailable(JudgeError):
    """No Ollama server answers at the host (or it stopped answering mid-run)."""


class ModelNotFound(JudgeError):
    """The Ollama server does not have the judge model."""


# --- prompts -------------------------------------------------------------------------

def format_input(entry: dict) -> str:
    """The Alpaca prompt of section 7.2, from `llm.instruct` (imported here, on first use,
    so that the judge, its CLI and the tab start without loading torch)."""
    from .instruct import format_input as alpaca_prompt

    return alpaca_prompt(entry)


@dataclass(frozen=True)
class Rubric:
    """How the judge is asked to score, and which integers its reply may hold."""

    name: str
    low: int
    high: int
    template: str  # formatted with prompt, output, response

    def prompt(self, entry: dict, json_key: str) -> str:
        return self.template.format(prompt=format_input(entry), output=entry["output"],
                                    response=entry[json_key])


RUBRICS = {
    # The book's prompt, word for word (section 7.8, `generate_model_scores`).
    "0-100": Rubric("0-100", 0, 100, (
        "Given the input `{prompt}` and correct output `{output}`, "
        "score the model response `{response}` on a scale from 0 to 100, where 100 is the best score. "
        "Respond with the integer number only.")),
    "1-5": Rubric("1-5", 1, 5, (
        "Given the input `{prompt}` and correct output `{output}`, "
        "score the model response `{response}` on a scale from 1 to 5, where "
        "1 means wrong or irrelevant, 2 mostly wrong, 3 partly correct, "
        "4 correct with minor flaws and 5 fully correct and complete. "
        "Respond with the integer number only.")),
}


def get_rubric(rubric: str | Rubric) -> Rubric:
    if isinstance(rubric, Rubric):
        return rubric
    try:
        return RUBRICS[str(rubric)]
    except KeyError:
        raise JudgeError(f"unknown rubric {rubric!r}: choose one of {', '.join(RUBRICS)}") from None


def judge_prompt(entry: dict, json_key: str, rubric: str | Rubric = "0-100") -> str:
    """The prompt sent to the judge for one record's response in column `json_key`."""
    return get_rubric(rubric).prompt(entry, json_key)


# --- parsing the judge's reply -------------------------------------------------------

_NUMBER = r"(?<![\d.])-?\d+(?:\.\d+)?"
# "85/100", "4 / 5", "85 out of 100"
_FRACTION = re.compile(rf"({_NUMBER})\s*(?:/|out of)\s*(\d+)", re.IGNORECASE)
# "Score: 85", "score of 85", "rating is 4", "I would rate it 90", "scores 85"
_LABELLED = re.compile(rf"\b(?:score[sd]?|rat(?:e|ed|ing))\b(?:\s*(?:is|of|as|=|:|-|it|this|the response)\s*)*"
                       rf"[:=]?\s*({_NUMBER})", re.IGNORECASE)
_ANY_NUMBER = re.compile(_NUMBER)


def _as_int(text: str) -> int | None:
    value = float(text)
    return int(math.floor(value + 0.5)) if math.isfinite(value) else None


def parse_score(reply: str | None, scale: str | Rubric | tuple[int, int] = "0-100") -> int | None:
    """The judge's score in `reply`, or None when the reply holds no usable number.

    Accepts `85`, `Score: 85`, `85/100`, `**85**`, `85 out of 100` and a number in a
    sentence (`4/5` on the 1-5 rubric). A number outside the scale, or a fraction
    over another scale (`8/10` when asked for 0-100), is not a score: None, never 0.
    """
    low, high = scale if isinstance(scale, tuple) else (get_rubric(scale).low, get_rubric(scale).high)
    text = re.sub(r"[*_`#]", "", reply or "")  # markdown emphasis around the number

    def in_scale(value):
        return value if value is not None and low <= value <= high else None

    for numerator, denominator in _FRACTION.findall(text):
        if int(denominator) == high:
            return in_scale(_as_int(numerator))
    text = _FRACTION.sub(" ", text)  # "8/10" is not a score on this scale, nor is its 8
    labelled = _LABELLED.search(text)
    if labelled:
        return in_scale(_as_int(labelled.group(1)))
    for number in _ANY_NUMBER.findall(text):
        if (value := in_scale(_as_int(number))) is not None:
            return value
    return None


# --- the server: host, models, preflight ---------------------------------------------

def operator_host() -> str:
    """The host whoever runs the lab configured: `OLLAMA_HOST`, else http://localhost:11434."""
    return os.environ.get("OLLAMA_HOST", "").strip() or DEFAULT_HOST


def _same_host(a: str, b: str) -> bool:
    def normal(h: str) -> str:
        h = h.strip().lower().rstrip("/")
        return h if "://" in h else f"http://{h}"
    return normal(a) == normal(b)


def resolve_host(host: str | None = None) -> str:
    """`host`, else the `OLLAMA_HOST` environment variable, else http://localhost:11434.

    On a shared Space (`llm.limits.on_spaces`) the judge may contact only the operator's
    host: any other is refused here, before a connection is opened, so a visitor cannot
    make the server reach other ports of its own machine or internal addresses. Locally
    any host goes.
    """
    from .limits import on_spaces

    host = (host or "").strip()
    if len(host) > 2_000:
        raise JudgeError(f"the Ollama host is {len(host):,} characters long; give an address like {DEFAULT_HOST}")
    if host and on_spaces() and not _same_host(host, operator_host()):
        raise JudgeError(f"on this shared Space the judge talks only to the Ollama server its operator set up "
                         f"({operator_host()}); other hosts are refused. Run the lab on your own machine "
                         f"(python app.py) to use another server")
    return host or operator_host()


def check_run_settings(parallel, timeout, retries, repeat_k, temperature=0.0) -> tuple[int, float, int, int, float]:
    """The judge run's numbers checked against `llm.bounds` (finite, in range); a JudgeError says which is wrong."""
    from .bounds import check

    try:
        return (check("parallel", parallel), float(check("timeout", timeout)), check("retries", retries),
                check("repeat", repeat_k), float(check("judge temperature", temperature)))
    except ValueError as exc:
        raise JudgeError(str(exc).rstrip(".")) from None


def make_client(host: str | None = None, timeout: float | None = 60.0) -> ollama.Client:
    """An `ollama.Client` for the host, with `timeout` seconds for each network step."""
    return ollama.Client(host=resolve_host(host), timeout=timeout)


#: Errors after which the same request may well succeed: the server is busy, restarting
#: or dropped the connection.
_TRANSIENT = (httpx.TransportError, ConnectionError, TimeoutError)
#: Errors that mean nothing listens at the host.
_UNREACHABLE = (httpx.ConnectError, ConnectionError)


def _unreachable_message(host: str, exc: Exception | None = None) -> str:
    why = f" ({type(exc).__name__})" if exc is not None else ""
    return (f"No Ollama server answers at {host}{why}. Start it with `ollama serve` "
            f"(install from https://ollama.com), or set the host to where it runs (OLLAMA_HOST).")


def _missing_message(host: str, model: str, available: Sequence[str]) -> str:
    have = f"it has: {', '.join(available)}" if available else "it has no models yet"
    return (f"The Ollama server at {host} has no model '{model}' ({have}). "
            f"Pull it with `ollama pull {model}`.")


def resolve_model(model: str, available: Sequence[str]) -> str | None:
    """The server's name for `model`, or None when the server does not have it.

    `llama3` matches `llama3`, `llama3:latest` or another tag such as `llama3:8b`;
    the default `llama3` also accepts a newer Llama 3 (`llama3.1`, `llama3.2`, ...).
    """
    model = model.strip()
    base, _, tag = model.partition(":")
    if model in available:
        return model
    if tag == "latest" and base in available:
        return base
    if not tag:
        if f"{base}:latest" in available:
            return f"{base}:latest"
        tagged = sorted(name for name in available if name.partition(":")[0] == base)
        if tagged:
            return tagged[0]
        if base == DEFAULT_MODEL:
            newer = sorted(name for name in available if name.startswith(f"{base}."))
            if newer:
                return newer[0]
    return None


def list_models(host: str | None = None, timeout: float = 10.0) -> list[dict]:
    """The server's models (`/api/tags`) as dicts with name, size (bytes) and details.

    Raises `ServerUnavailable` with what to do when no server answers.
    """
    host = resolve_host(host)
    try:
        with make_client(host, timeout) as client:
            listing = client.list()
    except _UNREACHABLE as exc:
        raise ServerUnavailable(_unreachable_message(host, exc)) from None
    except (httpx.HTTPError, ollama.ResponseError) as exc:
        raise ServerUnavailable(f"The server at {host} did not list its models: {exc}. "
                                f"Is it an Ollama server? Check the host.") from None
    return [{"name": m.model, "size": int(m.size or 0),
             "details": m.details.model_dump(exclude_none=True) if m.details else {}}
            for m in listing.models]


def human_size(num_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if num_bytes < 1000 or unit == "TB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return ""


@dataclass
class Preflight:
    """The answer of `check_server`: can the judge run, and if not, what to do."""

    ok: bool
    message: str
    models: list[str] = field(default_factory=list)
    size: int | None = None  # bytes of the judge model on disk
    model: str | None = None  # the server's name for the judge model


def check_server(host: str | None = None, model: str = DEFAULT_MODEL, timeout: float = 10.0) -> Preflight:
    """Is an Ollama server at `host` ready to judge with `model`? Says exactly what is wrong."""
    host = resolve_host(host)
    try:
        listed = list_models(host, timeout)
    except ServerUnavailable as exc:
        return Preflight(False, str(exc))
    names = [m["name"] for m in listed]
    found = resolve_model(model or DEFAULT_MODEL, names)
    if found is None:
        return Preflight(False, _missing_message(host, model or DEFAULT_MODEL, names), names)
    info = next(m for m in listed if m["name"] == found)
    details = dict(info["details"])
    try:  # /api/show knows the context length; the listing is enough if it fails
        with make_client(host, timeout) as client:
            shown = client.show(found)
        details.update(shown.details.model_dump(exclude_none=True) if shown.details else {})
        context = next((v for k, v in (shown.modelinfo or {}).items() if k.endswith(".context_length")), None)
    except (ollama.ResponseError, httpx.HTTPError, ConnectionError):
        context = None
    facts = [human_size(info["size"])] if info["size"] else []
    if details.get("parameter_size"):
        facts.append(f"{details['parameter_size']} parameters")
    if details.get("quantization_level"):
        facts.append(details["quantization_level"])
    if context:
        facts.append(f"context {context}")
    extra = f" ({', '.join(facts)})" if facts else ""
    return Preflight(True, f"Ready: {found}{extra} at {host}.", names, info["size"] or None, found)


def require_model(host: str | None, model: str, timeout: float = 10.0) -> str:
    """The server's name for `model`; raises `ServerUnavailable` or `ModelNotFound` with the fix."""
    host = resolve_host(host)
    names = [m["name"] for m in list_models(host, timeout)]
    found = resolve_model(model, names)
    if found is None:
        raise ModelNotFound(_missing_message(host, model, names))
    return found


# --- asking the judge ----------------------------------------------------------------

def query_model(prompt: str, model: str = DEFAULT_MODEL, host: str | None = None,
                options: dict | None = None, client: ollama.Client | None = None,
                timeout: float | None = 60.0, stream: bool = True) -> str:
    """The judge's reply to one prompt: the book's `query_model` through the `ollama` client.

    Streams the reply as the book does (or asks for it whole with `stream=False`);
    `timeout` bounds the whole reply, not just each read. Errors propagate:
    `ollama.ResponseError` (with `.status_code`), `ConnectionError`, httpx errors,
    `TimeoutError`.
    """
    own_client = client is None
    client = client or make_client(host, timeout)
    messages = [{"role": "user", "content": prompt}]
    options = dict(BOOK_OPTIONS if options is None else options)
    try:
        if not stream:
            return client.chat(model=model, messages=messages, options=options, stream=False).message.content or ""
        deadline = time.monotonic() + timeout if timeout else math.inf
        parts = []
        for chunk in client.chat(model=model, messages=messages, options=options, stream=True):
            parts.append(chunk.message.content or "")
            if time.monotonic() > deadline and not chunk.done:
                raise TimeoutError(f"the reply took longer than {timeout:g} s")
        return "".join(parts)
    finally:
        if own_client:
            client.close()


@dataclass
class JudgeResult:
    """One score (or the reason there is none) for response column `key` of record `index`."""

    index: int
    key: str
    repeat: int  # 0 .. repeat_k - 1
    score: int | None
    raw: str  # the judge's reply, as it came
    error: str | None = None  # parse failure or request error, as a sentence
    attempts: int = 1
    seconds: float = 0.0

    @property
    def status(self) -> str:
        """"ok", "parse failure" (a reply without a usable number) or "error" (no reply)."""
        if self.score is not None:
            return "ok"
        return "parse failure" if self.error and self.error.startswith("parse failure") else "error"


def _describe(exc: Exception, timeout: float | None) -> str:
    if isinstance(exc, ollama.ResponseError):
        return f"server error {exc.status_code}: {exc.error}"
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return f"no reply within {timeout:g} s" if timeout else "timed out"
    if isinstance(exc, _UNREACHABLE):
        return "the server is not reachable"
    return f"{type(exc).__name__}: {exc}"


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, ollama.ResponseError):
        return exc.status_code >= 500 or exc.status_code == 429
    return isinstance(exc, _TRANSIENT)


def _is_missing_model(exc: Exception) -> bool:
    return isinstance(exc, ollama.ResponseError) and exc.status_code == 404


def check_entries(entries: Sequence[dict], response_keys: Sequence[str] | str | None = None,
                  name: str = "the records") -> list[str]:
    """Validate records for judging and return the response columns to score.

    Each record needs `instruction` and `output` (and may have `input`), checked as
    for fine-tuning (`llm.instruct.validate_records`); the response columns are
    `response_keys`, or every other field found in the records.
    """
    from .instruct import validate_records  # the checks of fine-tuning; imports torch on first use

    try:
        validate_records(list(entries) if isinstance(entries, tuple) else entries, name)
    except (ValueError, TypeError) as exc:
        raise JudgeError(str(exc)) from None
    found = response_columns(entries)
    if isinstance(response_keys, str):
        response_keys = [k.strip() for k in response_keys.split(",") if k.strip()]
    keys = list(dict.fromkeys(response_keys or found))
    if not keys:
        raise JudgeError(f"no response column in {name}: add a field such as 'model_response' "
                         f"next to instruction, input and output")
    for key in keys:
        if key in RECORD_FIELDS:
            raise JudgeError(f"'{key}' is part of the instruction record, not a model response")
        lacking = [i for i, e in enumerate(entries) if key not in e]
        if lacking:
            avail = f" Response columns found: {', '.join(found)}." if found else ""
            raise JudgeError(f"{len(lacking)} of {len(entries)} records (first: record {lacking[0]}) "
                             f"have no response column '{key}'.{avail}")
    return keys


def response_columns(entries: Iterable[dict]) -> list[str]:
    """Fields other than instruction/input/output, in order of first appearance."""
    columns: dict[str, None] = {}
    for entry in entries:
        for key in entry:
            if key not in RECORD_FIELDS:
                columns.setdefault(key, None)
    return list(columns)


def score_responses(entries: Sequence[dict], response_keys: Sequence[str] | str | None = None,
                    model: str = DEFAULT_MODEL, host: str | None = None, rubric: str | Rubric = "0-100",
                    parallel: int = 1, timeout: float = 60.0, retries: int = 2, repeat_k: int = 1,
                    stop_event: threading.Event | None = None, *, backoff: float = 0.5,
                    stream: bool = True, temperature: float = 0.0) -> Iterator[JudgeResult]:
    """Score every response with the judge and yield each `JudgeResult` as it arrives.

    Section 7.8's `generate_model_scores`, run `parallel` requests at a time. A request
    that fails on a transient error (5xx, dropped connection, timeout) is retried up to
    `retries` times, waiting `backoff`, 2·`backoff`, ... seconds; the reply is parsed
    with `parse_score`. `repeat_k` > 1 scores each response k times (repeat r uses seed
    123 + r; with temperature 0 the spread shows the server's own nondeterminism).

    Setting `stop_event` ends the run: results so far have been yielded, nothing more
    comes. Raises `ServerUnavailable` / `ModelNotFound` before the first request when
    the server or model is missing; `ModelNotFound` also mid-run on a 404. When the
    server goes away mid-run, the unscored items are yielded as errors and then
    `ServerUnavailable` says so; the results already yielded stay valid.
    """
    rubric = get_rubric(rubric)
    keys = check_entries(entries, response_keys)
    parallel, timeout, retries, repeat_k, temperature = check_run_settings(parallel, timeout, retries, repeat_k,
                                                                           temperature)
    host = resolve_host(host)
    model = require_model(host, model, timeout=min(timeout, 10.0))
    stop = stop_event or threading.Event()
    halt = threading.Event()  # set when the run must end: server gone, model gone, consumer gone
    gone: list[str] = []
    client = make_client(host, timeout)

    def ask(index: int, key: str, repeat: int) -> JudgeResult | None:
        if halt.is_set() or stop.is_set():
            return None
        prompt = rubric.prompt(entries[index], key)
        options = {**BOOK_OPTIONS, "seed": BOOK_OPTIONS["seed"] + repeat, "temperature": temperature}
        start = time.perf_counter()
        for attempt in range(1, retries + 2):
            try:
                raw = query_model(prompt, model, options=options, client=client, timeout=timeout, stream=stream)
                break
            except Exception as exc:  # sorted below: what is worth a retry, what ends the run
                if _is_missing_model(exc):
                    halt.set()
                    raise ModelNotFound(f"The Ollama server at {host} answered that it has no model "
                                        f"'{model}' ({exc.error}). Pull it with `ollama pull {model}` "
                                        f"and run again.") from None
                # halt.wait: a stop or a dead server cuts the backoff short
                if not _is_transient(exc) or attempt > retries or halt.wait(backoff * 2 ** (attempt - 1)):
                    if isinstance(exc, _UNREACHABLE) and not gone:
                        gone.append(_unreachable_message(host, exc))
                        halt.set()
                    times = f" (tried {attempt} times)" if attempt > 1 else ""
                    return JudgeResult(index, key, repeat, None, "", _describe(exc, timeout) + times,
                                       attempt, time.perf_counter() - start)
        score = parse_score(raw, rubric)
        error = None if score is not None else (
            f"parse failure: no score from {rubric.low} to {rubric.high} in the reply")
        return JudgeResult(index, key, repeat, score, raw, error, attempt, time.perf_counter() - start)

    jobs = [(i, key, r) for i in range(len(entries)) for key in keys for r in range(repeat_k)]
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="judge")
    pending = {pool.submit(ask, *job): job for job in jobs}
    scored, unscored = 0, []  # unscored: jobs that never sent a request
    try:
        while pending and not stop.is_set() and not gone:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            # In job order, and a 404's ModelNotFound after the scores that finished with it (kept).
            for future in sorted(done, key=lambda f: (f.exception() is not None, pending[f])):
                job = pending.pop(future)
                if (result := future.result()) is None:  # future.result() re-raises ModelNotFound
                    unscored.append(job)
                else:
                    scored += result.score is not None
                    yield result
        if gone:  # finish the requests in flight, then account for the rest
            for future in pending:
                future.cancel()
            for future, job in pending.items():
                result = None if future.cancelled() else future.result()
                if result is None:
                    unscored.append(job)
                else:
                    scored += result.score is not None
                    yield result
            for index, key, repeat in sorted(unscored):
                yield JudgeResult(index, key, repeat, None, "", "not scored: the server stopped answering", 0)
            raise ServerUnavailable(f"The Ollama server at {host} stopped answering during the run: "
                                    f"{scored} of {len(jobs)} scores were made and are kept; "
                                    f"{len(unscored)} requests were not sent. {gone[0]}")
    finally:
        halt.set()  # workers still waiting on a retry give up; queued ones do nothing
        pool.shutdown(wait=False, cancel_futures=True)
        client.close()


# --- summary -------------------------------------------------------------------------

@dataclass
class ColumnSummary:
    """Scores of one response column: the mean over items, failures, and the judge's spread."""

    key: str
    mean: float | None
    n_scored: int  # items with at least one score
    n_items: int
    parse_failures: int  # replies without a usable number (over all repeats)
    errors: int  # requests that got no reply
    mean_std: float | None = None  # repeat-k: mean over items of the std of their k scores
    mean_range: float | None = None  # repeat-k: mean over items of max - min
    max_range: float | None = None


@dataclass
class PairedDifference:
    """Column `a` minus column `b` on the items both have a score for."""

    a: str
    b: str
    mean_diff: float | None
    std_diff: float | None
    n_pairs: int
    a_better: int
    b_better: int
    ties: int


@dataclass
class JudgeSummary:
    columns: dict[str, ColumnSummary]
    paired: PairedDifference | None
    parse_failures: int
    errors: int
    repeat_k: int

    def to_dict(self) -> dict:
        return asdict(self)


def item_scores(results: Iterable[JudgeResult]) -> dict[tuple[int, str], list[int]]:
    """Scores per (index, key), repeats in order; items whose every request failed map to []."""
    scores: dict[tuple[int, str], list[tuple[int, int | None]]] = {}
    for r in results:
        scores.setdefault((r.index, r.key), []).append((r.repeat, r.score))
    return {item: [s for _, s in sorted(pairs) if s is not None] for item, pairs in scores.items()}


def summarize(results: Sequence[JudgeResult], response_keys: Sequence[str] | None = None) -> JudgeSummary:
    """Mean per response column, paired difference of the first two, failure counts, spread."""
    results = list(results)
    keys = list(response_keys or dict.fromkeys(r.key for r in results))
    per_item = item_scores(results)
    repeat_k = max((r.repeat + 1 for r in results), default=1)
    columns = {}
    for key in keys:
        mine = [r for r in results if r.key == key]
        lists = [s for (i, k), s in per_item.items() if k == key]
        means = [statistics.fmean(s) for s in lists if s]
        spreads = [s for s in lists if len(s) > 1]
        ranges = [max(s) - min(s) for s in spreads]
        columns[key] = ColumnSummary(
            key, statistics.fmean(means) if means else None, len(means), len(lists),
            sum(r.status == "parse failure" for r in mine), sum(r.status == "error" for r in mine),
            statistics.fmean(statistics.pstdev(s) for s in spreads) if spreads else None,
            statistics.fmean(ranges) if ranges else None, max(ranges) if ranges else None)
    paired = None
    if len(keys) >= 2:
        a, b = keys[:2]
        diffs = [statistics.fmean(per_item[(i, a)]) - statistics.fmean(per_item[(i, b)])
                 for (i, k) in per_item if k == a and per_item[(i, a)] and per_item.get((i, b))]
        paired = PairedDifference(
            a, b, statistics.fmean(diffs) if diffs else None,
            statistics.stdev(diffs) if len(diffs) > 1 else None, len(diffs),
            sum(d > 0 for d in diffs), sum(d < 0 for d in diffs), sum(d == 0 for d in diffs))
    return JudgeSummary(columns, paired, sum(c.parse_failures for c in columns.values()),
                        sum(c.errors for c in columns.values()), repeat_k)


def format_summary(summary: JudgeSummary) -> str:
    """The summary as a few lines of Markdown (the CLI prints it, the tab shows it)."""
    lines = []
    for c in summary.columns.values():
        mean = f"{c.mean:.2f}" if c.mean is not None else "n/a"
        line = f"- **{c.key}**: mean score **{mean}** over {c.n_scored} of {c.n_items} items"
        if c.mean_std is not None:
            line += f"; judge spread over {summary.repeat_k} repeats: mean std {c.mean_std:.2f}, " \
                    f"mean range {c.mean_range:.2f}, max range {c.max_range:g}"
        lines.append(line)
    p = summary.paired
    if p is not None:
        if p.mean_diff is None:
            lines.append(f"- **{p.a} − {p.b}**: no item has a score in both columns")
        else:
            std = f" (std {p.std_diff:.2f})" if p.std_diff is not None else ""
            lines.append(f"- **{p.a} − {p.b}**: mean paired difference **{p.mean_diff:+.2f}**{std} over "
                         f"{p.n_pairs} items; {p.a} better on {p.a_better}, {p.b} better on {p.b_better}, "
                         f"ties {p.ties}")
    lines.append(f"- parse failures: {summary.parse_failures}, errors: {summary.errors}")
    return "\n".join(lines)


# --- records in, scores out ----------------------------------------------------------

def load_entries(source: str | os.PathLike) -> list[dict]:
    """Records from a JSON list (the book's format), JSON Lines or a CSV with a header row.

    Values are kept as text; a CSV's empty `input` cell stays "". Raises `JudgeError`
    with what is wrong.
    """
    path = Path(source)
    if not path.is_file():
        raise JudgeError(f"{path}: no such file")
    name = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise JudgeError(f"{name} is not UTF-8 text; save it as UTF-8 JSON or CSV") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows:
            raise JudgeError(f"{name} has no data rows under its header")
        entries = [{k.strip(): (v or "") for k, v in row.items() if k is not None} for row in rows]
    elif path.suffix.lower() == ".jsonl":
        try:
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise JudgeError(f"{name} is not valid JSON Lines: {exc}") from None
        except RecursionError:
            raise JudgeError(NESTED_TOO_DEEP.format(name=name)) from None
    else:
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise JudgeError(f"{name} is not valid JSON: {exc}") from None
        except RecursionError:
            raise JudgeError(NESTED_TOO_DEEP.format(name=name)) from None
        if isinstance(entries, dict):  # a file written by save_scores, or {"data": [...]}
            entries = entries.get("items") or entries.get("data") or entries
        if not isinstance(entries, list):
            raise JudgeError(f"{name} must hold a list of records like "
                             f'[{{"instruction": ..., "input": ..., "output": ..., "model_response": ...}}]')
    check_entries(entries, name=name)
    return [{k: ("" if v is None else v if isinstance(v, str) else str(v)) for k, v in e.items()} for e in entries]


def load_example() -> list[dict]:
    """The book's 110 test instructions with GPT-2 medium's responses (bundled)."""
    return load_entries(EXAMPLE_FILE)


TABLE_COLUMNS = ["index", "column", "instruction", "input", "reference", "response", "score", "scores",
                 "spread", "status", "judge_reply", "error"]


def results_table(entries: Sequence[dict], results: Iterable[JudgeResult]) -> list[dict]:
    """One row per (record, response column) scored so far, in record order.

    `score` is the mean of the item's repeats (the score itself when k = 1), `scores`
    the repeats, `spread` their max - min; `judge_reply` is the first reply.
    """
    grouped: dict[tuple[int, str], list[JudgeResult]] = {}
    for r in results:
        grouped.setdefault((r.index, r.key), []).append(r)
    rows = []
    for (index, key), group in sorted(grouped.items()):
        group.sort(key=lambda r: r.repeat)
        entry = entries[index]
        scores = [r.score for r in group if r.score is not None]
        statuses = {r.status for r in group}
        status = "ok" if statuses == {"ok"} else "/".join(sorted(statuses))
        rows.append({
            "index": index, "column": key, "instruction": entry["instruction"], "input": entry.get("input", ""),
            "reference": entry["output"], "response": entry[key],
            "score": (scores[0] if len(scores) == 1 else round(statistics.fmean(scores), 2)) if scores else None,
            "scores": " ".join(str(s) for s in scores),
            "spread": (max(scores) - min(scores)) if len(scores) > 1 else None,
            "status": status, "judge_reply": group[0].raw,
            "error": next((r.error for r in group if r.error), None),
        })
    return rows


def save_scores(path: str | os.PathLike, entries: Sequence[dict], results: Sequence[JudgeResult],
                summary: JudgeSummary | None = None, meta: dict | None = None) -> Path:
    """Write the results table as CSV (by suffix) or JSON (with the summary and run settings)."""
    path = Path(path)
    rows = results_table(entries, results)
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    else:
        summary = summary or summarize(results)
        payload = {**(meta or {}), "summary": summary.to_dict(), "items": rows}
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    return path
