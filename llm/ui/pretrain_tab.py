"""Pretrain tab (chapter 5): train a GPT on a text and watch it learn.

The learner picks a text (the-verdict, any other bundled `.txt` or an upload) and sees the 90/10 split
and the sliding windows of chapter 2 before starting; picks a model (the lecture preset, the book's
chapter-5 run with a time estimate measured here, the model picked at the top of the page to continue,
or a custom size); presses Start and watches one loss plot, a status line and a timeline of samples.
Stop keeps (saves) what was trained; the result is registered for this session and selected in the
shared picker, so Generate, Attention and Embeddings use it at once. The work is done by
`llm.pretraining` (a job of `llm.jobs`), driven by the one live view of `run_view`; these handlers
only check input and render.
"""
from __future__ import annotations

import functools
import html
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from llm.limits import current

from .lecture import ADVANCED, CONTROLS, RESULT
from .run_view import drive, duration, run_panel, sentence, wire
from .shared import SESSION_TTL_S, checkpoint_folder, follow, get_model, number

TITLE = "Pretrain"

EXPLAIN = """### Chapter 5 · Pretraining on unlabeled data
A GPT learns by predicting the next token of a text. The text is split **90/10** into training and
validation parts (section 5.1.3); each part is cut by the **sliding window** of chapter 2 into inputs of
`max_length` tokens whose targets are the same tokens shifted by one. Every step takes a batch of windows,
measures the **cross-entropy** of the predicted next tokens (section 5.1.2) and lets **AdamW** nudge every
weight (section 5.2; warm-up, cosine decay and gradient clipping from appendix D). At each evaluation the
train and validation losses are measured and the model continues a fixed prompt greedily — watch the
samples turn from noise into the text's prose, and the validation loss stop falling while the training
loss keeps going down: the model starts to memorise (overfit) a short text."""

#: Model choices: (label, value).
MODES = [("lecture preset: 4 layers × 128 wide, loss below 1 in about a minute", "lecture"),
         ("the book's chapter-5 run: 124M shape, context 256 (slow on a CPU)", "book-ch05"),
         ("continue pretraining the Wharton GPT (the lab's bundled model)", "wharton"),
         ("continue training the model picked at the top of the page", "continue"),
         ("custom size", "custom")]
#: Models picked to continue from may be language or instruction-tuned models (same output head).
LM_TASKS = ("lm", "instruct")
#: From this many parameters on, Start first measures the speed here and shows the estimate.
ESTIMATE_FROM_PARAMETERS = 30_000_000
#: Bounds of the custom model's shape (the Space's limits may be lower: see llm.limits).
CUSTOM_BOUNDS = {"emb_dim": (8, 1024), "n_layers": (1, 24), "n_heads": (1, 32), "context": (8, 1024)}
MAX_PROMPT_CHARS = 500
UPLOAD = "upload"


# --- the text ---------------------------------------------------------------------------------

def bundled_texts() -> dict[str, Path]:
    """The plain-text files shipped in assets/ (the-verdict first), by file name."""
    from llm.config import DEFAULT_TEXT

    found = sorted(DEFAULT_TEXT.parent.glob("*.txt"), key=lambda p: (p != DEFAULT_TEXT, p.name))
    return {p.name: p for p in found}


def read_text(source, upload) -> tuple[str, str]:
    """(text, name) of the chosen text; an empty, binary, non-UTF-8 or too large file is a gr.Error."""
    from llm.pretraining import MAX_TEXT_BYTES, load_text

    if source == UPLOAD:
        if not upload:
            raise gr.Error(f"Upload a .txt file first (UTF-8 text, up to {MAX_TEXT_BYTES / 1e6:.0f} MB), "
                           "or pick a bundled text.")
        path = Path(upload)
    else:
        texts = bundled_texts()
        if source not in texts:
            raise gr.Error(f"{source!r} is not a bundled text; choose one of: {', '.join(texts)} or '{UPLOAD}'.")
        path = texts[source]
    try:
        return load_text(path), path.name
    except (ValueError, FileNotFoundError) as exc:
        raise gr.Error(sentence(exc)) from None


@functools.lru_cache(maxsize=4)
def split_token_counts(text: str) -> tuple[int, int]:
    """Tokens in the training (first 90 %) and validation (last 10 %) parts of `text` (section 5.1.3)."""
    from llm.pretraining import split_text
    from llm.tokenizer import text_to_token_ids

    train, val = split_text(text)
    return len(text_to_token_ids(train)), len(text_to_token_ids(val))


def data_preview(source, upload, max_length, stride, batch_size, epochs, max_steps) -> str:
    """The split and the sliding windows the run will use, before it starts; problems as ⚠️ lines."""
    from llm.data import count_windows

    try:
        text, name = read_text(source, upload)
        max_length = number(max_length, "max_length", int, 1)
        stride = number(stride, "Stride", int, 1)
        batch_size = number(batch_size, "Batch size", int, 1)
        epochs = number(epochs, "Epochs", int, 1)
        max_steps = number(max_steps, "Max steps", int, 0)
    except gr.Error as exc:
        return f"⚠️ {exc.message}"
    n_train, n_val = split_token_counts(text)
    train_windows, val_windows = (count_windows(n, max_length, stride) for n in (n_train, n_val))
    batches = train_windows // batch_size  # the training loader drops the last incomplete batch
    lines = [f"**{name}**: {len(text):,} characters → {n_train + n_val:,} tokens · 90/10 split → "
             f"**{n_train:,}** training / **{n_val:,}** validation tokens",
             f"Sliding window (section 2.6): max_length **{max_length}**, stride **{stride}** → "
             f"**{train_windows:,} training windows** ({val_windows:,} validation) → {batches:,} batches of "
             f"{batch_size} per epoch"]
    if batches:
        steps = epochs * batches if not max_steps else min(epochs * batches, max_steps)
        capped = " (capped by max steps)" if max_steps and max_steps < epochs * batches else ""
        lines[-1] += f" → **{steps:,} steps** in {epochs} epochs{capped}, {steps * batch_size * max_length:,} tokens"
    for part, n, windows in (("training", n_train, train_windows), ("validation", n_val, val_windows)):
        if not windows:
            lines.append(f"⚠️ The {part} part has {n:,} tokens, less than one window of {max_length} + 1: "
                         "use a longer text or a smaller max_length.")
    if train_windows and not batches:
        lines.append(f"⚠️ {train_windows} training windows make no full batch of {batch_size}: use a smaller batch.")
    if stride < max_length:
        lines.append("ℹ️ stride < max_length: windows overlap, so the model sees the same tokens more often "
                     "(the book uses stride = max_length).")
    return "  \n".join(lines)


# --- the model --------------------------------------------------------------------------------

def mode_settings(mode: str, random_base: bool = False):
    """The `PretrainSettings` a model choice starts from (the fields of the form are filled with them).

    The recipe follows the base: a new model (or a random preset picked to continue) gets the lecture's
    from-scratch recipe; a pretrained one (GPT-2, the Wharton GPT, a trained checkpoint) small steps.
    """
    from llm.config import SETTINGS

    if mode == "book-ch05":
        return SETTINGS["book-ch05"]
    if mode in ("continue", "wharton") and not random_base:  # small steps, or it forgets what it knew
        return SETTINGS["lecture"].with_(lr=1e-4, min_lr=1e-5, epochs=3, note=CONTINUE_NOTE)
    return SETTINGS["lecture"]


CONTINUE_NOTE = ("the continue recipe for a pretrained model: peak lr 1e-4 (40x below the lecture's), cosine to "
                 "1e-5, 3 epochs — large steps would wipe out what it learnt")


def is_random(mode: str, base, session_models=None) -> bool:
    """Whether the model a run starts from has random weights (a new model, or a preset picked to continue)."""
    from llm.recipes import is_random_base

    from .shared import find_entry

    if mode in ("lecture", "book-ch05", "custom"):
        return True
    if mode == "wharton":
        return False
    entry = find_entry(base, session_models)
    return is_random_base(base, entry.kind if entry is not None else None)


def recipe_line(mode, base, session_models=None) -> str:
    """Which recipe the form holds for this choice, and why."""
    random_base = is_random(mode, base, session_models)
    s = mode_settings(mode, random_base)
    why = ("it starts from random weights" if random_base else "it starts from a pretrained model")
    return (f"Recipe: **{s.note}** — chosen because {why}. Peak lr {s.lr:g} ({s.schedule}), {s.epochs} epochs, "
            f"batch {s.batch_size}; the values below stay editable.")


def model_config(mode, base, emb_dim, n_layers, n_heads, context, session_models=None):
    """The `GPTConfig` of the model a run will train; bad choices become gr.Error."""
    from llm.config import GPTConfig, get_config

    if mode in ("lecture", "book-ch05"):
        return get_config(mode_settings(mode).model)
    if mode == "wharton":
        return bundled_checkpoint().model.cfg
    if mode == "continue":
        return get_model(base, session_models, tasks=LM_TASKS).model.cfg
    if mode != "custom":
        raise gr.Error(f"Unknown model choice {mode!r}; choose one of: {', '.join(v for _, v in MODES)}.")
    names = {"emb_dim": "Embedding width", "n_layers": "Layers", "n_heads": "Attention heads",
             "context": "Context length"}
    values = {key: number(value, names[key], int, *CUSTOM_BOUNDS[key])
              for key, value in zip(names, (emb_dim, n_layers, n_heads, context))}
    try:
        return GPTConfig(context_length=values["context"], emb_dim=values["emb_dim"], n_heads=values["n_heads"],
                         n_layers=values["n_layers"], drop_rate=0.0)
    except ValueError as exc:
        raise gr.Error(f"Custom model: {exc}.") from None


def bundled_checkpoint():
    """The bundled Wharton GPT from the catalog's cache; a plain gr.Error while it is not there yet."""
    from llm.paths import BUNDLED_KEY, BUNDLED_MODEL

    if not BUNDLED_MODEL.is_file():
        raise gr.Error(f"The bundled Wharton GPT is not in this copy of the lab yet ({BUNDLED_MODEL.name} is "
                       "missing from assets/models): train it with `python -m llm pretrain --preset wharton`, or "
                       "pick another model.")
    return get_model(BUNDLED_KEY)


def describe_config(cfg) -> str:
    """'4 layers × 128 wide, 4 heads, context 64 → 13.9M parameters (6.4M in the output head)'."""
    total, head = cfg.num_parameters(), cfg.vocab_size * cfg.emb_dim
    return (f"{cfg.n_layers} layers × {cfg.emb_dim} wide, {cfg.n_heads} heads, context {cfg.context_length} → "
            f"**{total / 1e6:.1f}M parameters** ({head / 1e6:.1f}M of them in the {cfg.vocab_size:,}-way output head)")


def model_preview(mode, base, emb_dim, n_layers, n_heads, context, session_models=None) -> str:
    """One Markdown paragraph about the model the run will train, and what to expect."""
    try:
        cfg = model_config(mode, base, emb_dim, n_layers, n_heads, context, session_models)
    except gr.Error as exc:
        return f"⚠️ {exc.message}"
    line = describe_config(cfg)
    if mode == "continue":
        line = f"Continue **{base}**: {line}. Its weights are copied; the original stays as it is."
    elif mode == "wharton":
        line = (f"Continue the **Wharton GPT** (pretrained by the lab on Edith Wharton's fiction): {line}. "
                "Its weights are copied; the bundled model stays as it is.")
    elif mode != "custom":
        note = mode_settings(mode).note
        line = f"{line}. {note[:1].upper()}{note[1:]}."
    if mode == "book-ch05":
        line += (" On 2 CPU cores the book's loop took about 4.2 s per step (a 10-epoch run ≈ 9.5 minutes): "
                 "press **Estimate time** to measure this machine before starting.")
    limit = current().max_train_parameters
    if cfg.num_parameters() > limit:
        line += f"\n\n⚠️ Beyond this lab's training limit of {limit / 1e6:.0f}M parameters."
    return line + "\n\n" + recipe_line(mode, base, session_models)


def fill_form(mode, base=None, session_models=None):
    """The form's data and optimizer fields for a model choice (its recipe), and whether the custom shape shows."""
    s = mode_settings(mode, is_random(mode, base, session_models))
    return (s.context_length, s.stride, s.batch_size, s.lr, s.weight_decay, s.epochs, s.eval_every,
            s.eval_batches or 0, gr.update(visible=mode == "custom"))


# --- the plan of a run -----------------------------------------------------------------------

@dataclass
class Plan:
    """A checked run: the text, the settings, the model's shape, its data and how many steps."""

    mode: str
    base: str | None
    text: str
    text_name: str
    settings: object  # llm.pretraining.PretrainSettings
    cfg: object  # llm.config.GPTConfig
    data: object  # llm.pretraining.PretrainData
    total_steps: int

    def intro(self) -> str:
        s, d = self.settings, self.data
        what = f"**{self.base}** (continued)" if self.base else f"a new **{self.mode}** model"
        return (f"Training {what}: {self.cfg.num_parameters() / 1e6:.1f}M parameters on **{self.text_name}** · "
                f"{d.train_windows:,} windows of {s.context_length} (stride {s.stride}) → "
                f"{len(d.train_loader):,} batches of {s.batch_size} → {self.total_steps:,} steps · "
                f"AdamW lr {s.lr:g} ({s.schedule}), weight decay {s.weight_decay:g}, seed {s.seed}")


def make_plan(source, upload, mode, base, emb_dim, n_layers, n_heads, context, max_length, stride, batch_size,
              epochs, max_steps, lr, weight_decay, seed, eval_every, prompt, session_models=None,
              eval_batches=None) -> Plan:
    """Check every input of a run and build its loaders; anything wrong becomes a clear gr.Error."""
    from llm.pretraining import make_loaders

    if not isinstance(prompt, str) or not prompt.strip():
        raise gr.Error("Type a prompt for the samples, e.g. 'Every effort moves you'.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise gr.Error(f"The sample prompt has {len(prompt):,} characters; use at most {MAX_PROMPT_CHARS}.")
    base_settings = mode_settings(mode, is_random(mode, base, session_models))
    lr = number(lr, "Learning rate")  # TrainConfig.validate explains a bad one
    if eval_batches is not None:  # 0: the whole loaders (slow on a long text)
        batches = number(eval_batches, "Evaluation batches", int, 0, 100_000)
        base_settings = base_settings.with_(eval_batches=batches or None)
    settings = base_settings.with_(
        context_length=number(max_length, "max_length (window length)", int, 1, 100_000),
        stride=number(stride, "Stride", int, 1, 100_000), batch_size=number(batch_size, "Batch size", int, 1, 65_536),
        epochs=number(epochs, "Epochs", int, 1, 10_000),
        max_steps=number(max_steps, "Max steps", int, 0, 10_000_000) or None,
        lr=lr, min_lr=base_settings.min_lr * lr / base_settings.lr if lr > 0 else 0.0,
        weight_decay=number(weight_decay, "Weight decay", float, 0, 10), seed=number(seed, "Seed", int, 0, 2**63 - 1),
        eval_every=number(eval_every, "Evaluate every", int, 1, 10_000_000), prompt=prompt)
    if mode in ("continue", "custom", "wharton"):  # recorded in the training facts; the shape is its config
        settings = settings.with_(model={"continue": str(base), "custom": "custom", "wharton": "wharton-gpt"}[mode])
    try:
        config = settings.train_config()  # validates lr, weight decay, epochs...
    except ValueError as exc:
        raise gr.Error(sentence(exc)) from None
    cfg = model_config(mode, base, emb_dim, n_layers, n_heads, context, session_models)
    if settings.context_length > cfg.context_length:
        raise gr.Error(f"max_length {settings.context_length} is beyond the model's context length of "
                       f"{cfg.context_length} tokens: use at most {cfg.context_length}, or a model with a "
                       "longer context.")
    text, name = read_text(source, upload)
    try:
        data = make_loaders(text, settings.context_length, settings.stride, settings.batch_size, settings.seed)
        total_steps = config.total_steps(len(data.train_loader))
        current().check_training(cfg.num_parameters(), total_steps)
    except ValueError as exc:
        raise gr.Error(sentence(exc)) from None
    return Plan(mode, base if mode == "continue" else ("wharton-gpt" if mode == "wharton" else None), text, name,
                settings, cfg, data, total_steps)


@functools.lru_cache(maxsize=16)
def measured_seconds(cfg, batch_size: int, context: int, steps: int, forwards: int) -> float:
    """`estimate_seconds` (real AdamW steps timed here), remembered for the same shape and run."""
    from llm.pretraining import estimate_seconds

    return estimate_seconds(cfg, batch_size, context, steps, forwards)


def estimate_line(plan: Plan) -> str:
    """How long the planned run takes here, measured from real steps of its model (section 5.2's loop)."""
    from llm.pretraining import eval_forwards

    s = plan.settings
    forwards = eval_forwards(s, plan.data, plan.total_steps)
    seconds = measured_seconds(plan.cfg, s.batch_size, s.context_length, plan.total_steps, forwards)
    return (f"⏱ Measured on this machine (real AdamW steps of this model, batch {s.batch_size} × "
            f"{s.context_length} tokens): about **{duration(seconds)}** for {plan.total_steps:,} steps and "
            f"{forwards:,} evaluation batches, without the samples.")


def estimate(*args) -> str:
    """The Estimate button: check the run like Start does, then time a few of its steps here."""
    return estimate_line(make_plan(*args))


# --- the run ----------------------------------------------------------------------------------

def _inline(text: str) -> str:
    """Escaped text on one line: a newline shows as ↵ (an early model often writes nothing but newlines)."""
    return html.escape(text).replace("\n", "<span style='opacity:.55'>↵</span>")


def timeline_html(prompt: str, samples: list[dict]) -> str:
    """The samples taken at each evaluation, newest first, in a scrollable box."""
    if not samples:
        return ("<div id='pt-timeline-empty' style='padding:8px;opacity:.7'>The model continues the prompt "
                "at every evaluation; its samples appear here, newest first.</div>")
    items = []
    for s in reversed(samples):
        val = f" · validation loss {s['val_loss']:.3f}" if s.get("val_loss") is not None else ""
        items.append(
            "<div class='pt-sample' style='padding:6px 8px;border-bottom:1px solid rgba(128,128,128,.3)'>"
            f"<div style='font-size:.85em;opacity:.75'>step {s['step']:,} · {s['seen']:,} tokens seen{val}</div>"
            f"<div style='overflow-wrap:anywhere'><b>{html.escape(prompt)}</b>{_inline(s['text'])}</div></div>")
    return ("<div class='pt-timeline' style='max-height:360px;overflow-y:auto;border:1px solid "
            "rgba(128,128,128,.3);border-radius:6px'>" + "".join(items) + "</div>")


def result_md(losses: dict) -> str:
    from llm.pretraining import perplexity

    train, val = losses.get("train_loss"), losses.get("val_loss")
    lines = []
    if val is not None and math.isfinite(val):
        lines.append(f"**Validation perplexity {perplexity(val):,.1f}** (loss {val:.3f}) · training perplexity "
                     f"{perplexity(train):,.1f} (loss {train:.3f})")
    lines.append("Perplexity = exp(loss): the model is as unsure about the next token as a uniform choice "
                 "among that many tokens (section 5.1.2); an untrained model is near 50,257.")
    lines.append("The model is now **selected in the model picker at the top**: try it in **Generate**, "
                 "**Attention** and **Embeddings**.")
    return "\n\n".join(lines)


def fresh_model(plan: Plan):
    """A model that belongs to this run only: never the catalog's shared cached one."""
    import torch

    from llm.catalog import load_model
    from llm.model import GPTModel

    if plan.base is not None:
        return load_model(plan.base, fresh=True).model.requires_grad_(True)  # a private copy
    if plan.mode == "custom":
        torch.manual_seed(plan.settings.seed)
        return GPTModel(plan.cfg)
    return None  # `pretrain` builds the preset's model from the seed


def pretrain_run(source, upload, mode, base, emb_dim, n_layers, n_heads, context, max_length, stride, batch_size,
                 epochs, max_steps, lr, weight_decay, seed, eval_every, prompt, keep=False, eval_batches=None,
                 session_models=None, run_state=None, session_dir=None):
    """Train, streaming (status, loss plot, learning rate, samples); save, register and select the model."""
    from llm.pretraining import pretrain

    target = checkpoint_folder(keep, session_dir)
    stop = threading.Event()
    same = gr.update()
    # at once, before the text is read and tokenized (seconds for a text of several MB)
    yield ("Reading and tokenizing the text…", same, same, same, same, same, same, same, stop, target.session_dir)
    plan = make_plan(source, upload, mode, base, emb_dim, n_layers, n_heads, context, max_length, stride,
                     batch_size, epochs, max_steps, lr, weight_decay, seed, eval_every, prompt, session_models,
                     eval_batches)
    intro = plan.intro()
    if plan.cfg.num_parameters() >= ESTIMATE_FROM_PARAMETERS:
        intro += "\n\n" + estimate_line(plan)

    def start():
        return pretrain(plan.text, plan.settings, model=fresh_model(plan), data=plan.data, text_name=plan.text_name)

    def path_for(job):
        return target.folder / f"pretrained-{plan.mode}-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"

    def label(result):
        val = result.metrics.get("val_loss")
        return (f"pretrained · {plan.mode} · {plan.text_name} · {result.steps} steps"
                + (f" · val loss {val:.2f}" if val is not None and math.isfinite(val) else ""))

    for frame in drive(start, path_for, intro, stop, label=label, task="lm", session_models=session_models,
                       in_catalog=target.in_catalog):
        live = frame.live
        samples = [{"step": e.step, "seen": e.seen, "text": e.sample, "val_loss": e.metrics.get("val_loss")}
                   for e in live.samples]
        if frame.final:
            yield (frame.status, live.loss_plot(), live.lr_plot(), timeline_html(prompt, samples),
                   result_md(frame.result.metrics), str(frame.result.path), frame.session_models, frame.picker,
                   None, target.session_dir)
        else:
            yield (frame.status, live.loss_plot(), live.lr_plot(), timeline_html(prompt, samples), "" if
                   live.last is None else same, None if live.last is None else same, same, same, stop,
                   target.session_dir)


# --- layout -----------------------------------------------------------------------------------

def build(ctx) -> None:
    from llm.config import DEFAULT_PROMPT, MAX_TEXT_BYTES

    limits = current()
    gr.Markdown(EXPLAIN)
    if limits.describe():
        gr.Markdown(limits.describe(), elem_id="pt-limits")
    run_state = gr.State(None, time_to_live=SESSION_TTL_S)
    pending_models = gr.State(None, time_to_live=SESSION_TTL_S)  # see `adopt_session_models`
    lecture = mode_settings("lecture")
    texts = list(bundled_texts())

    # The text, the model and Start beside the run's status, loss and samples (stacked on a phone);
    # what Start will train, the sample prompt and the training settings follow the buttons.
    with gr.Row():
        with gr.Column(scale=2, min_width=300, elem_classes=[CONTROLS]):
            with gr.Row(equal_height=True):
                source = gr.Radio([(f"bundled: {name}", name) for name in texts] + [("my uploaded .txt", UPLOAD)],
                                  value=texts[0] if texts else UPLOAD, label="1 · Training text", elem_id="pt-source",
                                  scale=3)
                upload = gr.File(label=f"Upload a .txt (UTF-8 text, up to {MAX_TEXT_BYTES / 1e6:.0f} MB)",
                                 file_types=[".txt"], type="filepath", height=70, elem_id="pt-upload", scale=2,
                                 min_width=180)
            mode = gr.Radio(MODES, value="lecture", label="2 · Model", elem_id="pt-mode")
            with gr.Row(visible=False, elem_id="pt-custom") as custom_row:
                emb_dim = gr.Slider(*CUSTOM_BOUNDS["emb_dim"], value=128, step=8, label="Embedding width (emb_dim)",
                                    elem_id="pt-emb-dim")
                n_layers = gr.Slider(*CUSTOM_BOUNDS["n_layers"], value=4, step=1, label="Layers", elem_id="pt-layers")
                n_heads = gr.Slider(*CUSTOM_BOUNDS["n_heads"], value=4, step=1, label="Heads (divide the width)",
                                    elem_id="pt-heads")
                context = gr.Slider(*CUSTOM_BOUNDS["context"], value=64, step=8, label="Context length",
                                    elem_id="pt-context")
            with gr.Row():
                start_btn = gr.Button("Start", variant="primary", elem_id="pt-start", min_width=120)
                stop_btn = gr.Button("Stop (saves what was trained)", elem_id="pt-stop", scale=2)
                estimate_btn = gr.Button("Estimate time on this machine", elem_id="pt-estimate", scale=2)
            # Outside the accordion: a closed accordion's fields are not in the page, and the lecture script fills these.
            with gr.Row(elem_classes=[ADVANCED]):
                epochs = gr.Number(value=lecture.epochs, precision=0, minimum=1, maximum=10_000, label="Epochs",
                                   elem_id="pt-epochs")
                max_steps = gr.Number(value=0, precision=0, minimum=0, label="Max steps (0: all epochs)",
                                      elem_id="pt-max-steps")
            data_md = gr.Markdown(elem_id="pt-data")
            model_md = gr.Markdown(elem_id="pt-model")
            prompt = gr.Textbox(value=DEFAULT_PROMPT, label="Sample prompt (continued greedily at every evaluation)",
                                elem_id="pt-prompt", max_length=MAX_PROMPT_CHARS)
            keep = ctx.keep_checkbox("pt-keep")
            with gr.Accordion("More training settings: sliding window, batch, learning rate, evaluation, seed",
                              open=False, elem_id="pt-settings", elem_classes=[ADVANCED]):
                with gr.Row():
                    max_length = gr.Number(value=lecture.context_length, precision=0, minimum=1,
                                           label="max_length (tokens per window)", elem_id="pt-max-length")
                    stride = gr.Number(value=lecture.stride, precision=0, minimum=1, label="stride",
                                       elem_id="pt-stride")
                    batch_size = gr.Number(value=lecture.batch_size, precision=0, minimum=1, maximum=65_536,
                                           label="Batch size", elem_id="pt-batch")
                with gr.Row():
                    lr = gr.Number(value=lecture.lr, label="Peak learning rate", elem_id="pt-lr")
                    weight_decay = gr.Number(value=lecture.weight_decay, label="Weight decay", elem_id="pt-wd")
                    eval_every = gr.Number(value=lecture.eval_every, precision=0, minimum=1,
                                           label="Evaluate every (steps)", elem_id="pt-eval-every")
                    eval_batches = gr.Number(value=lecture.eval_batches or 0, precision=0, minimum=0,
                                             label="Evaluation batches (0: all — slow on a long text)",
                                             elem_id="pt-eval-batches")
                    seed = gr.Number(value=lecture.seed, precision=0, label="Seed", elem_id="pt-seed")
        with gr.Column(scale=1, min_width=360, elem_classes=[RESULT]):
            boxes = {}
            panel = run_panel("pt", lambda: boxes.update(timeline=gr.HTML(timeline_html(DEFAULT_PROMPT, []),
                                                                          label="Samples, newest first",
                                                                          elem_id="pt-samples")))
            result = gr.Markdown(elem_id="pt-result")
            checkpoint = gr.File(label="checkpoint (.safetensors)", interactive=False, elem_id="pt-checkpoint")

    plan_inputs = [source, upload, mode, ctx.picker, emb_dim, n_layers, n_heads, context, max_length, stride,
                   batch_size, epochs, max_steps, lr, weight_decay, seed, eval_every, prompt]
    data_inputs = [source, upload, max_length, stride, batch_size, epochs, max_steps]
    model_inputs = [mode, ctx.picker, emb_dim, n_layers, n_heads, context, ctx.session_models]
    follow([ctx.demo.load] + [c.change for c in data_inputs], data_preview, data_inputs, [data_md],
           api_name="pretrain_data", show_progress="hidden")
    follow([ctx.demo.load, mode.change, ctx.picker.change, ctx.session_models.change, emb_dim.change,
            n_layers.change, n_heads.change, context.change], model_preview, model_inputs, [model_md],
           api_name="pretrain_model", show_progress="hidden")
    gr.on([mode.change, ctx.picker.change], fill_form, [mode, ctx.picker, ctx.session_models],
          [max_length, stride, batch_size, lr, weight_decay, epochs, eval_every, eval_batches, custom_row],
          api_name=False)
    upload.upload(lambda: UPLOAD, None, [source], api_name=False)
    # Start and Estimate share one concurrency group: a measurement never overlaps a run, and a
    # run waits in the queue (its place shown in the status) while another visitor trains.
    wire(ctx, start_btn, stop_btn, pretrain_run,
         plan_inputs + [keep, eval_batches, ctx.session_models, run_state, ctx.session_dir],
         [panel.status, panel.loss_plot, panel.lr_plot, boxes["timeline"], result, checkpoint, pending_models,
          ctx.picker, run_state, ctx.session_dir], run_state, pending_models,
         api_name="pretrain", stop_api="stop_pretrain", register_api="register_pretrained", concurrency_id="pretrain")
    estimate_btn.click(estimate, plan_inputs + [ctx.session_models, eval_batches], [panel.status],
                       api_name="estimate_pretrain", show_progress_on=[panel.status], concurrency_id="pretrain",
                       concurrency_limit=limits.training_concurrency)
