"""Instruct tab (chapter 7): fine-tune a GPT to follow instructions, chat with it, and write the
answers the judge tab scores. Handlers are thin: the work is done by `llm.instruct`; the fine-tuning
job (one job shape of `llm.jobs`) is driven by the one live view of `run_view`, with the recipe that
fits the base (`llm.recipes.instruct_recipe`)."""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import gradio as gr

from llm.config import INFERENCE_PRECISIONS
from llm.limits import current

from .lecture import ADVANCED, CONTROLS, RESULT
from .run_view import comparison_plot, drive, recipe_changes, recipe_fill, recipe_for, run_panel, sentence, wire
from .shared import (DEFAULT_MODEL, SESSION_TTL_S, checkpoint_folder, find_entry, follow, get_model, number,
                     stop_run)

TITLE = "Instruct & chat"

EXPLAIN = """### Chapter 7 · Fine-tuning to follow instructions
Every example of the book's 1,100 instructions becomes one text in the **Alpaca format** (section 7.2):
`Below is an instruction that describes a task…`, `### Instruction:`, an optional `### Input:` and
`### Response:`. Batches are padded with `<|endoftext|>`, the targets are the inputs shifted by one and
every padding token after the first is set to **-100** so the loss ignores it (section 7.3); optionally the
instruction is masked out of the loss too (exercise 7.2). Training uses the same loop as pretraining with the
book's settings (AdamW, lr 5e-5, weight decay 0.1, 2 epochs, batch 8) on 935 records, 55 for validation and
110 for testing (the book's unshuffled split). After every evaluation the model answers a fixed validation
instruction, so you can watch it learn the format.

*The base model is the one picked at the top of the page; the recipe follows it. A pretrained model gets the
book's settings (a small one, like the Wharton GPT, at lr 1e-3); a preset has random weights and gets a
from-scratch recipe (lr 1e-3 with warm-up and cosine decay): it learns the format but not the answers. The book starts from GPT-2 medium (355M). Tick **the same
recipe on a random model** to measure what pretraining buys: both validation losses are shown.*"""

CHAT_NOTE_OK = "✅ **{label}** is instruction-tuned, and its replies to two test questions read as English."
INSTRUCT_TASKS = ("instruct", "lm")
#: Below this many parameters a model is "tiny": it can learn the format, not the knowledge.
TINY_PARAMETERS = 50_000_000
RESPONSES_UPDATE_EVERY_S = 0.5


def _handoff_state(ctx) -> gr.State:
    """The per-session State through which responses go to the judge tab (owned by that tab)."""
    from .judge_tab import responses_state

    return responses_state(ctx)


def _records(source: str, upload, what: str) -> list[dict]:
    """The book's records or an uploaded instruction JSON (validated); problems become gr.Error."""
    from llm.instruct import INSTRUCTION_DATA, load_instruction_file

    if source != "upload":
        return load_instruction_file(INSTRUCTION_DATA)
    if not upload:
        raise gr.Error(f"Upload an instruction JSON file first ({what}): a list of objects with "
                       "'instruction', 'output' and optionally 'input'.")
    try:
        return load_instruction_file(upload)
    except (ValueError, FileNotFoundError) as exc:
        raise gr.Error(f"{Path(upload).name}: {exc}") from None


def check_upload(path) -> str:
    """Describe an uploaded instruction file, or say what is wrong with it."""
    if not path:
        return ""
    try:
        from llm.instruct import load_instruction_file, split_instruction_data

        records = load_instruction_file(path)
    except (ValueError, FileNotFoundError) as exc:
        return f"⚠️ {exc}"
    s = split_instruction_data(records)
    with_input = sum(bool(r["input"]) for r in records)
    return (f"✅ {len(records):,} records ({with_input:,} with an input) → "
            f"{len(s.train):,} train / {len(s.val):,} validation / {len(s.test):,} test")


# --- fine-tuning ---------------------------------------------------------------------------


def _samples_text(samples: list[tuple[int, str]], entry: dict) -> str:
    head = f"Validation instruction: {entry['instruction']}" + (f"\nInput: {entry['input']}" if entry["input"] else "")
    head += f"\nReference answer: {entry['output']}\n"
    lines = [f"step {step:>5}: {text or '(no answer: the model ended at once)'}" for step, text in reversed(samples)]
    return head + "\n" + "\n".join(lines)


def base_recipe(base, session_models=None):
    """(recipe, reason): the book's for a pretrained base, the from-scratch one for random weights."""
    from llm.recipes import instruct_recipe

    return recipe_for(base, session_models, instruct_recipe)


def fill_recipe(base, session_models=None, shown_reason=None):
    """The form's epochs, lr and batch from the base's recipe, and the sentence saying why (no change when
    `shown_reason` already says it: the visitor's edits stay)."""
    recipe, reason = base_recipe(base, session_models)
    return recipe_fill((recipe.epochs, recipe.lr, recipe.batch_size), reason, shown_reason)


def finetune(base, source, upload, epochs, lr, batch_size, max_steps, mask_instructions, keep=False,
             eval_batches=5, compare=False, session_models=None, run_state=None, session_dir=None):
    """Fine-tune the picked model on instructions; streams loss, samples and status; saves a checkpoint.

    compare: then train the same recipe on a random model of the base's shape, measured beside it."""
    from llm.catalog import load_model, random_twin
    from llm.instruct import default_checkpoint_name, finetune_instruct, split_instruction_data

    get_model(base, session_models)  # checks the choice is a model of this lab or session, and available
    entry = find_entry(base, session_models)
    if entry is not None and entry.task == "classifier":
        raise gr.Error(f"{entry.label} is a classifier (a 2-way output head): pick a language model or an "
                       "instruct model as the base.")
    recipe, _ = base_recipe(base, session_models)
    try:
        settings = recipe.with_(
            epochs=number(epochs, "Epochs", int, 1, 10_000), lr=number(lr, "Learning rate"),
            max_steps=number(max_steps, "Max steps", int, 0, 10_000_000) or None,
            batch_size=number(batch_size, "Batch size", int, 1, 65_536), mask_instructions=bool(mask_instructions),
            eval_batches=number(eval_batches, "Evaluation batches", int, 1, 100_000) if eval_batches else None)
        settings.validate()
    except ValueError as exc:
        raise gr.Error(sentence(exc)) from None
    splits = split_instruction_data(_records(source, upload, "to fine-tune on"))
    if not splits.train:
        raise gr.Error("The file has too few records to split 85/5/10: give at least 2.")
    target = checkpoint_folder(keep, session_dir)
    stop = threading.Event()
    t = settings.train
    intro = (f"This run: lr {t.lr:g} ({t.schedule}), {t.epochs} epochs, batch {settings.batch_size} · "
             f"{len(splits.train):,} train / {len(splits.val):,} validation records"
             + (" · instruction masked out of the loss" if mask_instructions else "")
             + f" · {recipe_changes(settings, recipe, base)}")

    def start(twin=False):
        # a private copy: the cached model stays as it is
        model = (random_twin(base) if twin else load_model(base, fresh=True)).model
        job = finetune_instruct(model, splits.train, splits.val, settings, training={
            "base": str(base), "data": "uploaded file" if source == "upload" else "instruction-data.json"})
        current().check_training(sum(p.numel() for p in model.parameters()), job.total_steps)
        return job

    def label(result):
        return f"instruct · {Path(str(base)).name} · {result.steps} steps"

    same, entry_shown = gr.update(), {}
    for frame in drive(start, lambda job: target.folder / default_checkpoint_name(base), intro, stop,
                       label=label, task="instruct", session_models=session_models, in_catalog=target.in_catalog,
                       picker_tasks=INSTRUCT_TASKS, baseline=(lambda: start(twin=True)) if compare else None):
        live, compared = frame.live, comparison_plot(frame.live, frame.baseline)
        if not entry_shown and live.last is not None:
            entry_shown["entry"] = splits.val[0] if splits.val else splits.train[0]
        samples = (_samples_text([(e.step, e.sample) for e in live.samples], entry_shown["entry"])
                   if entry_shown else "")
        if frame.final:
            val = frame.result.metrics.get("val_loss")
            status = frame.status + (f" Validation loss {val:.3f}." if val is not None else "")
            twin_val = frame.baseline_result.metrics.get("val_loss") if frame.baseline_result else None
            if val is not None and twin_val is not None:
                status += (f" A random model of the same shape, same recipe: **{twin_val:.3f}** "
                           f"({frame.baseline_result.steps} steps): pretraining is worth {twin_val - val:+.3f}.")
            status += " It is now selected in the chat below."
            yield (status, live.loss_plot(), live.lr_plot(), compared, samples, str(frame.result.path),
                   frame.session_models, frame.picker, None, target.session_dir)
        else:
            yield (frame.status, live.loss_plot(), live.lr_plot(), compared, samples,
                   None if live.last is None else same, same, same, stop, target.session_dir)


# --- chat ------------------------------------------------------------------------------------

def model_note(choice, session_models=None) -> str:
    """What to expect from the chat model: instruction-tuned, a plain language model, or random weights."""
    entry = find_entry(choice, session_models)
    if entry is None:
        return ""
    if entry.kind == "preset":
        return (f"⚠️ **{entry.label}** has random weights and was never trained: its replies are gibberish. "
                "Fine-tune a model above (or upload an instruct checkpoint such as the book's "
                "`gpt2-medium355M-sft.pth`) to chat with it.")
    if entry.task != "instruct":
        return (f"⚠️ **{entry.label}** is a language model, not instruction-tuned: it continues the prompt "
                "rather than answering it. Fine-tune it above first.")
    try:
        model = get_model(choice, session_models).model
    except gr.Error:
        return f"**{entry.label}** is instruction-tuned."
    from llm.quality import probe_replies

    _, problems = probe_replies(model)
    if problems:
        return (f"⚠️ **{entry.label}** is instruction-tuned, but its replies do not read well yet: "
                f"{'; '.join(problems[:2])}. The model is too small or too briefly trained for clean "
                "answers: fine-tune longer, or start from a larger pretrained base.")
    note = CHAT_NOTE_OK.format(label=entry.label)
    size = sum(p.numel() for p in model.parameters())
    if size < TINY_PARAMETERS:
        note += (f" It is tiny ({size / 1e6:.1f}M parameters, context {model.cfg.context_length}): it can learn the "
                 "answer format, not much knowledge — expect short, often wrong replies.")
    return note


def _text(content) -> str:
    """A chat message's content as plain text (Gradio 6 sends a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text") or "")
    return "" if content is None else str(content)


def chat(message, history, input_text, choice, max_new_tokens, temperature, top_k, precision="fp32",
         session_models=None):
    """One chat turn, streamed: the message (and optional input) become an Alpaca instruction.

    `precision`: the weights the reply is generated with (`llm.generation.inference_model`)."""
    from llm.instruct import chat_prompt_tokens, chat_reply_stream

    if not isinstance(message, str) or not message.strip():
        raise gr.Error("Type a message first: an instruction such as 'Name three primary colors.'")
    ckpt = get_model(choice, session_models, tasks=INSTRUCT_TASKS)
    max_new_tokens = number(max_new_tokens, "Max new tokens", int, 1, current().max_new_tokens)
    top_k = number(top_k, "Top-k", int, 0) or None
    history = [{"role": m["role"], "content": _text(m["content"])} for m in history or []]
    shown_user = message.strip() + (f"\n\n*Input:* {input_text.strip()}" if input_text and input_text.strip() else "")
    history.append({"role": "user", "content": shown_user})
    try:
        _, cropped = chat_prompt_tokens(ckpt.model, message, input_text or "")
        if cropped:
            gr.Warning(f"The prompt is {cropped} tokens longer than the model's context "
                       f"({ckpt.model.cfg.context_length}); its beginning is cut off.")
        stream = chat_reply_stream(ckpt.model, message, input_text or "", max_new_tokens,
                                   number(temperature, "Temperature", float, 0.0), top_k, precision=precision)
        reply = ""
        for reply in stream:
            yield history + [{"role": "assistant", "content": reply}], ""
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    yield history + [{"role": "assistant", "content": reply or "*(no answer: the model ended at once)*"}], ""


# --- responses for judging -------------------------------------------------------------------

def _responses_table(results):
    import pandas as pd

    return pd.DataFrame([[r["instruction"], r["input"], r["output"], r["model_response"]] for r in results],
                        columns=["instruction", "input", "reference (output)", "model_response"])


def respond(choice, source, upload, max_new_tokens, session_models=None, run_state=None):
    """Answer the test instructions (or an uploaded set); streams progress, ends with a JSON to download."""
    from llm.instruct import book_splits, generate_responses, save_responses

    ckpt = get_model(choice, session_models, tasks=INSTRUCT_TASKS)
    max_new_tokens = number(max_new_tokens, "Max new tokens", int, 1, current().max_new_tokens)
    entries = book_splits().test if source != "upload" else _records("upload", upload, "to answer")
    stop = threading.Event()
    same = gr.update()
    yield f"Answering {len(entries)} instructions…", _responses_table([]), None, same, stop
    results, last, progress = [], 0.0, None
    try:
        for progress in generate_responses(ckpt.model, entries, max_new_tokens, stop_event=stop):
            results = progress.results
            if time.perf_counter() - last >= RESPONSES_UPDATE_EVERY_S:
                last = time.perf_counter()
                rate = progress.new_tokens / max(progress.elapsed, 1e-9)
                yield (f"{progress.done} / {progress.total} answered · {rate:.0f} tokens/s",
                       _responses_table(results), None, same, stop)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    if not results:
        yield "⏹ Stopped before the first answer; nothing to save.", _responses_table([]), None, same, None
        return
    name = "instruction-data-with-response.json"
    path = save_responses(Path(tempfile.mkdtemp(prefix="responses-")) / name, results)
    stopped = "⏹ Stopped: " if len(results) < len(entries) else "✅ "
    status = (f"{stopped}{len(results)} of {len(entries)} answered in {progress.elapsed:.0f} s "
              f"({progress.new_tokens / max(progress.elapsed, 1e-9):.0f} tokens/s). "
              "Download the JSON, or open the **Judge** tab: the responses are there as its input.")
    yield status, _responses_table(results), str(path), [dict(r) for r in results], None


# --- layout ----------------------------------------------------------------------------------

def _example_rows(n: int = 8) -> list[list[str]]:
    from llm.alpaca import book_splits  # torch-free: the tab is built at start-up

    return [[e["instruction"], e["input"]] for e in book_splits().test[:n]]


def build(ctx) -> None:
    gr.Markdown(EXPLAIN)
    handoff = _handoff_state(ctx)
    train_state = gr.State(None, time_to_live=SESSION_TTL_S)
    respond_state = gr.State(None, time_to_live=SESSION_TTL_S)
    pending_models = gr.State(None, time_to_live=SESSION_TTL_S)

    with gr.Accordion("Fine-tune (section 7.6)", open=True):
        # The data, the buttons and the recipe beside the run's status, loss and samples (stacked on a phone).
        with gr.Row():
            with gr.Column(scale=3, min_width=300, elem_classes=[CONTROLS]):
                with gr.Row(equal_height=True):
                    source = gr.Radio([("the book's 1,100 instructions", "book"), ("my uploaded JSON", "upload")],
                                      value="book", label="Data", elem_id="inst-data")
                    upload = gr.File(label="Instruction JSON: [{instruction, input, output}, …]",
                                     file_types=[".json"], type="filepath", height=70, elem_id="inst-upload")
                upload_note = gr.Markdown(elem_id="inst-upload-note")
                with gr.Row():
                    train_btn = gr.Button("Fine-tune", variant="primary", elem_id="inst-train")
                    stop_btn = gr.Button("Stop (saves what was trained)", elem_id="inst-stop")
                recipe_md = gr.Markdown(elem_id="inst-recipe")
                # Outside the accordion: a closed accordion's fields are not in the page, and the lecture script
                # fills max steps.
                with gr.Row(elem_classes=[ADVANCED]):
                    epochs = gr.Number(value=2, minimum=1, maximum=10_000, precision=0, label="Epochs",
                                       elem_id="inst-epochs")
                    max_steps = gr.Number(value=0, minimum=0, precision=0, label="Max steps (0: all epochs)",
                                          elem_id="inst-max-steps")
                with gr.Accordion("More training settings: learning rate, batch size, evaluation, loss mask",
                                  open=False, elem_id="inst-settings", elem_classes=[ADVANCED]):
                    with gr.Row():
                        lr = gr.Number(value=5e-5, label="Learning rate (the recipe's)", elem_id="inst-lr")
                        batch_size = gr.Number(value=8, minimum=1, maximum=65_536, precision=0, label="Batch size",
                                               elem_id="inst-batch")
                        eval_batches = gr.Number(value=5, minimum=1, precision=0,
                                                 label="Evaluation batches (book: 5)", elem_id="inst-eval-batches")
                    mask = gr.Checkbox(value=False, label="Mask the instruction out of the loss (exercise 7.2)",
                                       elem_id="inst-mask")
                keep = ctx.keep_checkbox("inst-keep")
                compare = gr.Checkbox(False, label="Then the same recipe on a random model of the same shape, to "
                                      "measure what pretraining buys", elem_id="inst-compare")
            with gr.Column(scale=4, min_width=360, elem_classes=[RESULT]):
                boxes = {}

                def side():
                    boxes["samples"] = gr.Textbox(label="Response to a validation instruction after each evaluation",
                                                  lines=11, interactive=False, elem_id="inst-samples")
                    boxes["checkpoint"] = gr.File(label="instruct checkpoint", interactive=False,
                                                  elem_id="inst-checkpoint")

                panel = run_panel("inst", side, compare=True)

    gr.Markdown("#### Chat (section 7.5) · each message is sent as an Alpaca instruction")
    picker = ctx.model_picker("Chat model (instruction-tuned or language models)", tasks=INSTRUCT_TASKS,
                              elem_id="chat-model", allow_custom_value=True, value=DEFAULT_MODEL)
    note = gr.Markdown(elem_id="chat-note")
    chatbot = gr.Chatbot(label="Chat", height=380, elem_id="chat-box")
    with gr.Row(equal_height=True):
        message = gr.Textbox(label="Instruction", placeholder="e.g. Rewrite the sentence using a simile.",
                             lines=2, scale=3, elem_id="chat-message")
        input_text = gr.Textbox(label="Input (optional)", placeholder="e.g. The car is very fast.", lines=2,
                                scale=2, elem_id="chat-input")
    with gr.Row():
        send_btn = gr.Button("Send", variant="primary", elem_id="chat-send")
        clear_btn = gr.Button("Clear", elem_id="chat-clear")
    with gr.Accordion("Generation settings", open=False):
        with gr.Row():
            max_new_tokens = gr.Slider(1, current().max_new_tokens, value=128, step=1, label="Max new tokens", elem_id="chat-max-tokens")
            temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy, the book's)",
                                    elem_id="chat-temperature")
            top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k (0 = off)", elem_id="chat-top-k")
            weights = gr.Radio(list(INFERENCE_PRECISIONS), value="fp32", elem_id="chat-weights",
                               label="Weights: float32, float16 or int8 (fewer bytes, faster on a CPU)")
    gr.Examples(_example_rows(), [message, input_text], label="Examples from the test split")

    with gr.Accordion("Responses for judging (section 7.7)", open=False):
        gr.Markdown("The chat model answers every test instruction (greedy, as the book does). The result is the "
                    "book's JSON (`instruction`, `input`, `output`, `model_response`), handed to the **Judge** tab.")
        with gr.Row(equal_height=True):
            resp_source = gr.Radio([("the 110 test instructions", "test"), ("my uploaded JSON", "upload")],
                                   value="test", label="Instructions", elem_id="resp-source")
            resp_upload = gr.File(label="Instruction JSON to answer", file_types=[".json"], type="filepath",
                                  height=110, elem_id="resp-upload")
            resp_tokens = gr.Slider(1, current().max_new_tokens, value=256, step=1, label="Max new tokens (book: 256)",
                                    elem_id="resp-max-tokens")
        with gr.Row():
            resp_btn = gr.Button("Generate responses", variant="primary", elem_id="resp-run")
            resp_stop = gr.Button("Stop (keeps the answers so far)", elem_id="resp-stop")
        resp_status = gr.Markdown(elem_id="resp-status")
        resp_file = gr.File(label="responses (JSON)", interactive=False, elem_id="resp-file")
        resp_table = gr.Dataframe(interactive=False, wrap=True, max_height=360, elem_id="resp-table")

    upload.change(check_upload, [upload], [upload_note], api_name="check_instruction_file")
    upload.upload(lambda: "upload", None, [source], api_name=False)
    resp_upload.upload(lambda: "upload", None, [resp_source], api_name=False)
    # Stop (for Generate responses) sets the run's Event: the run ends on its own and keeps what it has.
    ctx.on_model(fill_recipe, [epochs, lr, batch_size, recipe_md], extra_inputs=[recipe_md])
    wire(ctx, train_btn, stop_btn, finetune,
         [ctx.picker, source, upload, epochs, lr, batch_size, max_steps, mask, keep, eval_batches, compare,
          ctx.session_models, train_state, ctx.session_dir],
         [panel.status, panel.loss_plot, panel.lr_plot, panel.compare_plot, boxes["samples"], boxes["checkpoint"],
          pending_models, picker, train_state, ctx.session_dir], train_state, pending_models,
         api_name="finetune_instruct", stop_api="stop_finetune_instruct", register_api="register_instruct")
    follow([ctx.demo.load, picker.change, ctx.session_models.change], model_note, [picker, ctx.session_models],
           [note], api_name=False)
    gr.on([send_btn.click, message.submit], chat,
          [message, chatbot, input_text, picker, max_new_tokens, temperature, top_k, weights, ctx.session_models],
          [chatbot, message], api_name="chat", show_progress_on=[note], concurrency_limit=2)
    clear_btn.click(lambda: ([], "", ""), None, [chatbot, message, input_text], api_name=False)
    resp_btn.click(respond, [picker, resp_source, resp_upload, resp_tokens, ctx.session_models, respond_state],
                   [resp_status, resp_table, resp_file, handoff, respond_state],
                   api_name="respond", show_progress_on=[resp_status], concurrency_limit=1)
    resp_stop.click(stop_run, [respond_state], [resp_status], api_name="stop_respond")
