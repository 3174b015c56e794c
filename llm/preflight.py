"""Before a lecture: which demos of chapters 2-7 will run on this machine, and how long each takes.

`run_preflight()` looks at what is here (the models of `llm.catalog`: cached GPT-2 sizes,
the bundled model, trained checkpoints; an Ollama server with the judge model of section
7.8; torch threads and free memory), then runs a short, timed warm-up on the model the
lecture uses — one recorded attention pass (chapter 3), 30 generated tokens (section 5.3)
and a few real training steps (sections 5.2 and 6.7) — and scales those timings to each
demo: the lecture preset trained to a loss below 1, a spam fine-tune, a 200-token
generation on every available model and judging 110 answers. The warm-up loads the
lecture's models into the catalog's shared cache, so the first click in front of the
audience does not wait for a load.

Each demo becomes a `Check` with a status (ok / warn / fail), a reason and a fix.
`Report.ready` is true when every core demo (every tab but the judge) can run; the CLI
(`python -m llm preflight`) exits 0 then, 1 otherwise. Nothing here imports Gradio.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import DEFAULT_PROMPT, DEFAULT_TEXT, SETTINGS
from .paths import BUNDLED_KEY, BUNDLED_MODEL
from .recipes import SPAM_SMALL

ICONS = {"ok": "✅", "warn": "⚠️", "fail": "❌"}
#: Optimizer steps the lecture settings need on the-verdict before an evaluation (every 20 steps)
#: shows a training loss below 1: 140, measured by benchmarks/bench_preflight.py (seed 123).
LECTURE_STEPS_TO_LOSS_1 = 140
#: The spam fine-tune of the lecture (Classify tab, section 6.7): the tab's recipe for the lecture's
#: bundled model (`llm.recipes.SPAM_SMALL`) cut to the lecture script's one epoch of at most 60 steps.
SPAM_DEMO = SPAM_SMALL.with_(epochs=1, max_steps=60, eval_batches=5)
GENERATE_TOKENS = 200
WARMUP_TOKENS = 30
WARMUP_STEPS = 3
JUDGE_ANSWERS = 110
#: A demo slower than this (seconds) is flagged: the audience waits.
SLOW_S = {"attention": 5.0, "pretrain": 240.0, "spam": 180.0, "generate": 60.0, "judge": 900.0}
#: Models larger than this are not timed (loading GPT-2 XL just to time it costs minutes);
#: their generation time is scaled from a timed model by parameter count.
TIME_UP_TO_PARAMS = 400e6
ENV_MODEL = "LLM_LAB_LECTURE_MODEL"


@dataclass
class Check:
    """One line of the preflight: a demo (or a fact) with its status, reason and fix."""

    name: str
    status: str  # "ok", "warn" or "fail"
    reason: str
    fix: str = ""
    seconds: float | None = None  # predicted time of the demo, when it is one
    core: bool = True  # the judge is not core: the lecture runs without it

    def line(self) -> str:
        fix = f" — fix: {self.fix}" if self.fix and self.status != "ok" else ""
        return f"{ICONS[self.status]} {self.name}: {self.reason}{fix}"


@dataclass
class Report:
    lecture_model: str
    models: list[dict]
    threads: int
    cpus: int
    free_bytes: int | None
    warmup: dict  # seconds of each warm-up part
    checks: list[Check] = field(default_factory=list)
    predictions: dict = field(default_factory=dict)  # demo -> predicted seconds

    @property
    def ready(self) -> bool:
        """Every core demo can run (warnings allowed); the judge does not count."""
        return all(c.status != "fail" for c in self.checks if c.core)

    def lines(self) -> list[str]:
        free = f"{self.free_bytes / 1e9:.1f} GB free" if self.free_bytes is not None else "free memory unknown"
        head = [f"Machine: {self.cpus} CPUs, torch threads {self.threads}, {free}",
                f"Lecture model: {self.lecture_model}",
                "Warm-up: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.warmup.items())]
        verdict = ("Ready: every core demo can run." if self.ready else
                   "Not ready: a core demo cannot run (see ❌ above).")
        return head + [c.line() for c in self.checks] + [verdict]

    def markdown(self) -> str:
        return "  \n".join(self.lines())

    def to_json(self) -> dict:
        out = asdict(self)
        out["ready"] = self.ready
        return out


# ---------------------------------------------------------------- the machine

def lecture_model_key(requested: str | None = None) -> str:
    """The model the lecture uses: `requested`, else env LLM_LAB_LECTURE_MODEL, else the bundled
    model when it is here, else the random `lecture` preset (the lecture then trains it)."""
    from . import catalog

    wanted = requested or os.environ.get(ENV_MODEL)
    keys = {e.key: e for e in catalog.list_models()}
    if wanted:
        return wanted
    if BUNDLED_KEY in keys and keys[BUNDLED_KEY].available:
        return BUNDLED_KEY
    if BUNDLED_MODEL.is_file():
        return str(BUNDLED_MODEL)
    return "lecture"


# ---------------------------------------------------------------- timing

def _timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def time_attention(model, text: str = DEFAULT_PROMPT) -> float:
    """One recorded attention pass through every block (the Attention tab, chapter 3)."""
    from .introspect import attention_records
    from .tokenizer import text_to_token_ids

    ids = text_to_token_ids(text)[: model.cfg.context_length]
    return _timed(lambda: attention_records(model, ids))[0]


def time_tokens(model, n: int = WARMUP_TOKENS, prompt: str = DEFAULT_PROMPT) -> float:
    """Seconds per generated token (greedy, KV cache, no early stop): the median over `n` tokens,
    so a burst of load from other programs does not skew it."""
    import statistics

    import torch

    from .generation import stream_generate
    from .tokenizer import text_to_token_ids

    ids = text_to_token_ids(prompt)
    n = max(2, min(n, model.cfg.context_length - len(ids)))
    with torch.inference_mode():
        list(stream_generate(model, ids, 2, eos_id=None))  # untimed: first-call allocations
        times, last = [], time.perf_counter()
        for _ in stream_generate(model, ids, n, eos_id=None):
            now = time.perf_counter()
            times.append(now - last)
            last = now
    return statistics.median(times[1:])  # the first includes the prompt's prefill


def time_forward(model, tokens: int) -> float:
    """One forward pass over `tokens` tokens (a prefill of the KV cache)."""
    import torch

    x = torch.zeros((1, max(1, min(tokens, model.cfg.context_length))), dtype=torch.long)
    with torch.inference_mode():
        model(x)  # untimed: first-call allocations
        return _timed(lambda: model(x))[0]


def predict_generation(per_token: float, prefill: float, context_length: int, prompt_tokens: int,
                       new_tokens: int = GENERATE_TOKENS) -> float:
    """Seconds for `new_tokens` tokens with the KV cache of `llm.generation.stream_generate`: one
    step per token, plus a prefill of half the window each time the window fills up."""
    overflow = prompt_tokens + new_tokens - context_length
    refills = math.ceil(overflow / max(1, context_length // 2)) if overflow > 0 else 0
    return per_token * new_tokens + prefill * (1 + refills)


def time_pretrain_steps(steps: int = WARMUP_STEPS) -> tuple[float, float]:
    """(seconds per training step, seconds per evaluation batch) of the lecture settings on the
    real data (the Pretrain tab, section 5.2): `steps` timed AdamW steps after an untimed one."""
    from .pretraining import estimate_seconds

    s = SETTINGS["lecture"]
    cfg = s.model_config()
    step = estimate_seconds(cfg, s.batch_size, s.context_length, 1, timed_steps=steps)
    both = estimate_seconds(cfg, s.batch_size, s.context_length, 0, eval_forwards=1, timed_steps=1)
    return step, both


def predict_pretrain(step_s: float, eval_s: float, sample_token_s: float,
                     steps: int = LECTURE_STEPS_TO_LOSS_1) -> float:
    """Seconds for the lecture settings to bring the-verdict's training loss below 1: the steps,
    the evaluations on the way (every `eval_every` steps, all batches) and their text samples."""
    from .pretraining import load_text, make_loaders

    s = SETTINGS["lecture"]
    data = make_loaders(load_text(DEFAULT_TEXT), s.context_length, s.stride, s.batch_size, s.seed)
    evals = 1 + steps // s.eval_every  # at step 1, then every eval_every steps (llm.training)
    forwards = evals * (len(data.train_loader) + len(data.val_loader))  # eval_batches None: all of them
    return step_s * steps + eval_s * forwards + evals * s.sample_tokens * sample_token_s


def time_spam_steps(base: str, steps: int = WARMUP_STEPS) -> tuple[float, float, object]:
    """(median seconds per fine-tuning step, seconds per forward-only batch, the run) of the
    lecture's spam demo on `base` (section 6.7)."""
    import statistics
    import tempfile

    import torch

    from .classifier import finetune_spam

    run = finetune_spam(base, SPAM_DEMO, out=tempfile.gettempdir(), max_steps=steps + 1)
    times, last = [], time.perf_counter()
    for event in run:
        if event.kind == "step":
            now = time.perf_counter()
            if event.step > 1:
                times.append(now - last)
            last = now
            if event.step > steps:
                break
        elif event.kind in ("eval", "epoch"):
            last = time.perf_counter()  # an evaluation is not a step
    run._events.close()
    run.run.close()
    inputs, _ = next(iter(run.loaders.test_loader))
    run.model.eval()
    with torch.no_grad():
        run.model(inputs)  # untimed: first-call allocations
        forward, _ = _timed(lambda: run.model(inputs))
    return (statistics.median(times) if times else 0.0), forward, run


def predict_spam(step_s: float, forward_s: float, run) -> float:
    """Seconds of the spam demo: its steps, the evaluations every 50 steps, and at the end the
    accuracy on the full train, validation and test sets (forward-only batches)."""
    loaders = run.loaders
    steps = min(SPAM_DEMO.max_steps, len(loaders.train_loader) * SPAM_DEMO.epochs)
    evals = 1 + steps // SPAM_DEMO.eval_every
    forward_batches = (evals * 2 * SPAM_DEMO.eval_batches + len(loaders.train_loader) +
                       len(loaders.val_loader) + len(loaders.test_loader))
    return step_s * steps + forward_batches * forward_s


# ---------------------------------------------------------------- the checks

def _model_facts(entries) -> tuple[list[dict], list[Check]]:
    from .config import GPT2_SIZES

    facts = [{"key": e.key, "label": e.label, "kind": e.kind, "task": e.task, "available": e.available,
              "reason": e.reason} for e in entries if e.kind != "preset"]
    cached = [e.key for e in entries if e.kind == "gpt2" and e.available]
    checks = []
    if cached:
        checks.append(Check("GPT-2 weights", "ok", f"cached: {', '.join(cached)}"))
    else:
        checks.append(Check("GPT-2 weights", "warn", f"none of {', '.join(GPT2_SIZES)} is cached, so the "
                            "tabs use the bundled or lab-trained models",
                            "python -m llm download gpt2-small (needs the Hugging Face Hub), before the lecture"))
    bundled = any(e.key == BUNDLED_KEY or e.path == str(BUNDLED_MODEL) for e in entries if e.available) \
        or BUNDLED_MODEL.is_file()
    if bundled:
        checks.append(Check("Bundled model", "ok", f"{BUNDLED_MODEL.name} is here"))
    else:
        checks.append(Check("Bundled model", "warn", f"{BUNDLED_MODEL.relative_to(BUNDLED_MODEL.parents[2])} "
                            "is missing: generation shows an untrained model's gibberish until one is trained",
                            "python -m llm pretrain --preset wharton, or pull the repository's assets again"))
    trained = [e for e in entries if e.kind in ("local", "session", "upload")]
    usable = [e for e in trained if e.available]
    tasks = sorted({e.task for e in usable})
    checks.append(Check("Trained checkpoints", "ok" if usable or not trained else "warn",
                        f"{len(usable)} usable in the checkpoints folder" + (f" ({', '.join(tasks)})" if tasks else "")
                        + (f", {len(trained) - len(usable)} unreadable" if len(usable) < len(trained) else ""),
                        "remove or re-save the unreadable files"))
    return facts, checks


def judge_check(host: str | None, model: str, answers: int = JUDGE_ANSWERS) -> tuple[Check, float | None]:
    """Ollama reachable and the judge model pulled; if so, one real scoring request timed and scaled."""
    from . import judge

    pre = judge.check_server(host, model, timeout=5.0)
    if not pre.ok:
        fix = f"ollama pull {model}" if pre.models else f"start `ollama serve`, then `ollama pull {model}`"
        return Check(f"Judge ({answers} answers, section 7.8)", "fail", pre.message, fix, core=False), None
    entries = judge.load_entries(judge.EXAMPLE_FILE)
    key = next(k for k in entries[0] if k not in judge.RECORD_FIELDS)
    prompt = judge.judge_prompt(entries[0], key)
    try:
        one, _ = _timed(lambda: judge.query_model(prompt, pre.model, host=judge.resolve_host(host), timeout=120))
    except Exception as exc:  # noqa: BLE001 - any failure of the one request is the answer here
        return Check(f"Judge ({answers} answers, section 7.8)", "fail", f"{pre.message} but a scoring request "
                     f"failed: {exc}", "check the server's log (ollama serve)", core=False), None
    seconds = one * answers
    status = "ok" if seconds <= SLOW_S["judge"] else "warn"
    return Check(f"Judge ({answers} answers, section 7.8)", status,
                 f"{pre.message} One answer took {one:.2f} s: about {_duration(seconds)} for {answers} "
                 "(one request at a time)", "score fewer answers (the Judge tab's example has 110) or use a "
                 "smaller judge model", seconds, core=False), seconds


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _timed_check(name: str, seconds: float, slow: float, what: str, fix: str) -> Check:
    status = "ok" if seconds <= slow else "warn"
    return Check(name, status, f"{what}: about {_duration(seconds)} predicted"
                 + ("" if status == "ok" else f" (over {_duration(slow)})"), fix, seconds)


def run_preflight(lecture_model: str | None = None, judge_host: str | None = None, judge_model: str | None = None,
                  generate_models: list[str] | None = None, log=None) -> Report:
    """Look, warm up, predict. `log(str)` (optional) hears each phase as it starts."""
    import torch

    from . import catalog, judge

    say = log or (lambda _msg: None)
    say("looking at the models, Ollama and this machine")
    entries = catalog.list_models()
    facts, checks = _model_facts(entries)
    from .jobs import free_memory

    free = free_memory()
    key = lecture_model_key(lecture_model)
    report = Report(key, facts, torch.get_num_threads(), os.cpu_count() or 1, free, {})
    warm = report.warmup

    say(f"warm-up on {key}: loading it")
    try:
        load_s, ckpt = _timed(lambda: catalog.load_model(key))
    except (ValueError, OSError) as exc:  # CheckpointError is a ValueError
        checks.append(Check("Lecture model", "fail", f"{key} does not load: {exc}",
                            f"pick another model with --model or {ENV_MODEL}"))
        report.checks = checks
        return report
    warm["load"] = load_s
    model = ckpt.model
    if free is not None and free < 2 * sum(p.numel() * p.element_size() for p in model.parameters()):
        checks.append(Check("Memory", "fail", f"only {free / 1e9:.1f} GB free, less than twice the lecture "
                            "model's size", "close other programs or use a smaller model"))

    say("warm-up: one attention pass (chapter 3)")
    time_attention(model)  # untimed: first-call allocations
    warm["attention pass"] = time_attention(model)
    checks.append(_timed_check("Tokenize · Embeddings · Attention (ch. 2-3)", warm["attention pass"],
                               SLOW_S["attention"], "one recorded attention pass", "use a smaller model"))

    say(f"warm-up: {WARMUP_TOKENS} generated tokens (section 5.3)")
    per_token = time_tokens(model)
    warm[f"{WARMUP_TOKENS} tokens"] = per_token * WARMUP_TOKENS

    say(f"warm-up: {WARMUP_STEPS} training steps of the lecture preset (section 5.2)")
    step_s, eval_s = time_pretrain_steps()
    warm[f"{WARMUP_STEPS} pretraining steps"] = step_s * WARMUP_STEPS
    lecture_gen = per_token if key == "lecture" else time_tokens(catalog.load_model("lecture").model)
    seconds = predict_pretrain(step_s, eval_s, lecture_gen)
    report.predictions["pretrain"] = seconds
    checks.append(_timed_check("Pretrain: lecture preset to loss < 1 (ch. 5)", seconds, SLOW_S["pretrain"],
                               f"{LECTURE_STEPS_TO_LOSS_1} steps on the-verdict", "close other programs; "
                               "in the lecture, stop the run once the samples read like English"))

    say(f"warm-up: {WARMUP_STEPS} spam fine-tuning steps on {key} (section 6.7)")
    try:
        spam_step, spam_forward, run = time_spam_steps(key)
        warm[f"{WARMUP_STEPS} fine-tuning steps"] = spam_step * WARMUP_STEPS
        seconds = predict_spam(spam_step, spam_forward, run)
        report.predictions["spam"] = seconds
        checks.append(_timed_check("Classify: spam fine-tune (ch. 6)", seconds, SLOW_S["spam"],
                                   f"{SPAM_DEMO.max_steps} steps of batch {SPAM_DEMO.batch_size} and the "
                                   "accuracy on every set", "lower the max steps in the Classify tab"))
    except (ValueError, OSError, RuntimeError) as exc:
        checks.append(Check("Classify: spam fine-tune (ch. 6)", "fail", f"the fine-tune does not start: {exc}",
                            "pick another base model"))

    say(f"predicting {GENERATE_TOKENS}-token generations")
    checks += _generation_checks(entries, key, model, per_token, generate_models, report)

    judge_model = judge_model or judge.DEFAULT_MODEL
    say(f"asking Ollama for {judge_model}")
    check, seconds = judge_check(judge_host, judge_model)
    if seconds is not None:
        report.predictions["judge"] = seconds
    checks.append(check)
    report.checks = checks
    return report


def _generation_checks(entries, key, model, per_token, generate_models, report) -> list[Check]:
    """A 200-token generation on the lecture model and on every available trained or GPT-2 model."""
    from .tokenizer import text_to_token_ids

    prompt_tokens = len(text_to_token_ids(DEFAULT_PROMPT))
    wanted = generate_models if generate_models is not None else [
        e.key for e in entries if e.available and e.task in ("lm", "instruct") and e.kind != "preset"]
    wanted = [key] + [k for k in wanted if k != key]
    timed = {key: (per_token, time_forward(model, model.cfg.context_length // 2), model.cfg,
                   sum(p.numel() for p in model.parameters()))}
    checks = []
    for name in wanted:
        entry = next((e for e in entries if e.key == name), None)
        label = Path(name).name if entry is None or entry.kind != "gpt2" else name
        try:
            if name not in timed:
                timed[name] = _time_or_scale(name, entry, timed[key])
        except (ValueError, OSError, RuntimeError) as exc:
            checks.append(Check(f"Generate: {GENERATE_TOKENS} tokens on {label}", "fail", f"does not load: {exc}",
                                "remove or re-save the file", core=name == key))
            continue
        tok, prefill, cfg, _ = timed[name]
        seconds = predict_generation(tok, prefill, cfg.context_length, prompt_tokens)
        report.predictions[f"generate {name}"] = seconds
        checks.append(_timed_check(f"Generate: {GENERATE_TOKENS} tokens on {label} (ch. 4-5)", seconds,
                                   SLOW_S["generate"], f"{tok * 1000:.0f} ms a token",
                                   "use the float16 option or a smaller model"))
        checks[-1].core = name == key  # another model that is slow or broken does not stop the lecture
    return checks


def _time_or_scale(name, entry, reference):
    """(per-token s, prefill s, config, parameters) of a model: timed when it is small enough to load
    quickly, else scaled from the reference by parameter count (read from the file's header)."""
    from . import catalog
    from .checkpoints import inspect_checkpoint
    from .config import PRESETS

    if entry is not None and entry.kind == "gpt2":
        cfg = PRESETS[name]
        params = cfg.num_parameters(tied_head=True)
    else:
        info = inspect_checkpoint(name)
        cfg, params = info.config, info.num_parameters
    if params <= TIME_UP_TO_PARAMS:
        model = catalog.load_model(name).model
        return (time_tokens(model), time_forward(model, cfg.context_length // 2), cfg, params)
    ref_tok, ref_prefill, ref_cfg, ref_params = reference
    scale = params / ref_params
    return (ref_tok * scale, ref_prefill * scale * (cfg.context_length / ref_cfg.context_length), cfg, params)
