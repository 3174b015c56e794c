"""Classify tab (chapter 6): fine-tune a GPT into a spam classifier, then label messages and explain why."""
from __future__ import annotations

import csv
import html
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr

from .shared import (SESSION_TTL_S, adopt_session_models, checkpoint_folder, clean_text, get_model, line_frame,
                     notices_md, number, picker_update, register_session_model, saved_where, stop_run)

TITLE = "Classify"

EXPLAIN = """### Chapter 6 · Fine-tuning for classification
A GPT becomes a spam filter by swapping its 50,257-way output head for a **2-way head** (ham, spam) and
training on labelled messages (section 6.5). Because of the causal mask only the **last token** has seen
the whole message, so its two logits are the prediction (section 6.6). The book trains only the last
transformer block, the final norm and the new head (AdamW, lr 5e-5, weight decay 0.1, 5 epochs);
you can also train the head only, the last *k* blocks, everything, or small **LoRA** adapters (appendix E).
Data: the SMS Spam Collection, balanced by undersampling ham as the book does (1,045 / 149 / 300 messages),
or the full imbalanced set (4,827 ham, 747 spam). Messages are padded with `<|endoftext|>` to the longest
training message, capped at the model's context.

*A lab preset has random weights: fine-tune it with **all** layers trainable and a larger learning rate
(e.g. 1e-3); the book's settings assume pretrained GPT-2 weights.*"""

EXAMPLES = [
    ["You are a winner you have been specially selected to receive $1000 cash or a $2000 award."],
    ["Hey, just wanted to check if we're still on for dinner tonight? Let me know!"],
    ["Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121 to receive "
     "entry question(std txt rate)T&C's apply 08452810075over18's"],
    ["Ok lar... Joking wif u oni..."],
    ["URGENT! Your mobile number has been awarded a £2000 prize GUARANTEED. Call 09061790121 now"],
    ["I'll be home in ten minutes, do you need anything from the shop?"],
]
POLICY_CHOICES = [("last block + final norm + head (the book)", "last-block"), ("head only", "head"),
                  ("last k blocks", "last-k"), ("all layers", "all"), ("LoRA adapters (appendix E)", "lora")]
#: Seconds between two live updates of the plots while training.
UPDATE_EVERY_S = 1.0
#: Most messages classified in one batch request (the whole SMS collection fits).
MAX_BATCH = 6000
SPAM_COLOUR, HAM_COLOUR = (229, 57, 53), (67, 160, 71)


# --- fine-tuning ------------------------------------------------------------------------



def confusion_figure(confusion: list[list[int]], labels) -> "go.Figure":
    """The test set's confusion matrix as an annotated heatmap (rows: true label, columns: predicted)."""
    import plotly.graph_objects as go

    text = [[str(n) for n in row] for row in confusion]
    fig = go.Figure(go.Heatmap(z=confusion, x=[f"predicted {lab}" for lab in labels],
                               y=[f"true {lab}" for lab in labels], text=text, texttemplate="%{text}",
                               textfont={"size": 18}, colorscale="Blues", showscale=False,
                               hovertemplate="%{y} · %{x}: %{z}<extra></extra>"))
    fig.update_layout(template="none", title="Test set confusion matrix", height=320,
                      margin=dict(l=90, r=20, t=50, b=40), yaxis=dict(autorange="reversed"))
    return fig


def _truncated(counts) -> str:
    """{'train': 10, 'val': 1, 'test': 4} as '10 train / 1 val / 4 test messages cut'."""
    if not isinstance(counts, dict):
        return f"{counts} messages cut"
    return " / ".join(f"{n} {name}" for name, n in counts.items()) + " messages cut"


def _result_md(result, stopped_note: str = "", in_catalog: bool = False) -> str:
    t = result.training
    lines = [stopped_note,
             f"**Test accuracy {result.test_acc:.2%}** · training {result.train_acc:.2%} · "
             f"validation {result.val_acc:.2%} (whole sets, after {result.steps} steps, {result.wall_s:.0f} s)",
             f"Trained {t['trainable']:,} of {t['parameters']:,} parameters ({t['policy']}) on the "
             f"{t['data']} data; messages padded to {t['max_length']} tokens ({_truncated(t['num_truncated'])}).",
             f"Saved `{Path(result.path).name}` ({saved_where(in_catalog)}) — it is now in the classifier "
             "picker below."]
    return "\n\n".join(filter(None, lines))




def finetune(base, data, policy, k, rank, epochs, lr, batch_size, max_steps, seed, keep=False, session_models=None,
             run_state=None, session_dir=None):
    """Fine-tune the picked model on the spam data; streams plots and status, ends with the result."""
    from llm.classifier import finetune_spam
    from llm.limits import current

    limits = current()
    get_model(base, session_models)  # checks the choice is a model of this lab or session, and available
    settings = dict(policy=policy, k=number(k, "k", int, 1), rank=number(rank, "LoRA rank", int, 1),
                    alpha=number(rank, "LoRA rank", int, 1), balanced=data != "full",
                    epochs=number(epochs, "Epochs", int, 1), lr=number(lr, "Learning rate"),
                    batch_size=number(batch_size, "Batch size", int, 1), seed=number(seed, "Seed", int),
                    max_steps=number(max_steps, "Max steps", int, 1) if max_steps else None)
    target = checkpoint_folder(keep, session_dir)
    stop = threading.Event()
    same = gr.update()
    losses, accs = [], []

    def out(status, result="", confusion=None, file=None, pending=same, picker=same, state=stop):
        return (status, line_frame(losses, "step", "loss"), line_frame(accs, "epoch", "accuracy"), result,
                confusion, file, pending, picker, state, target.session_dir)

    yield out("Preparing the data and the model…")
    try:
        job = finetune_spam(base, out=target.folder, **settings)
        limits.check_training(job.training["parameters"], job.run.total_steps)
    except ValueError as exc:  # bad settings, a model that cannot be loaded (CheckpointError), limits
        raise gr.Error(str(exc)) from None
    t = job.training
    intro = (f"Data: {t['data']} ({t['sizes']['train']:,} / {t['sizes']['val']:,} / {t['sizes']['test']:,}), "
             f"padded to {t['max_length']} tokens ({_truncated(t['num_truncated'])}) · "
             f"training {t['trainable']:,} of {t['parameters']:,} parameters")
    last, event = 0.0, None
    for event in job:
        if event.kind == "eval":
            losses += [(event.step, event.metrics["train_loss"], "train loss"),
                       (event.step, event.metrics["val_loss"], "validation loss")]
        elif event.kind == "epoch":
            accs += [(event.epoch, event.metrics["train_acc"], "train accuracy"),
                     (event.epoch, event.metrics["val_acc"], "validation accuracy")]
        elif event.kind == "done":
            break
        if stop.is_set() or event.elapsed > limits.max_train_seconds:
            break
        if event.kind != "step" or time.perf_counter() - last >= UPDATE_EVERY_S:
            last = time.perf_counter()
            left = f" · about {event.remaining:.0f} s left" if event.remaining else ""
            yield out(f"{intro}\n\nStep **{event.step} / {event.total_steps}** · epoch {event.epoch} · "
                      f"loss {event.train_loss:.3f}{left}")
    stopped = event is not None and event.kind != "done"
    if stopped:
        yield out(f"{intro}\n\n⏹ Stopping: measuring accuracy on the whole sets and saving…")
    result = job.finish(stopped=stopped)
    note = f"⏹ Stopped after {result.steps} of {job.run.total_steps} steps." if result.stopped else ""
    if result.stopped and not stop.is_set():
        note += f" This Space limits a run to {limits.max_train_seconds / 60:.0f} minutes."
    label = f"spam classifier · {t['base']} · {t['policy']} · {result.test_acc:.1%} test"
    session_models = register_session_model(session_models, result.path, label, task="classifier")
    key = str(Path(result.path).resolve())
    yield out(f"{intro}\n\n✅ Done.", _result_md(result, note, target.in_catalog),
              confusion_figure(result.confusion, result.labels), str(result.path), session_models,
              picker_update(session_models, tasks=("classifier",), select=key), None)


# --- classifying ------------------------------------------------------------------------

def _classifier(choice, session_models):
    from llm.classifier import classifier_from_checkpoint

    if not choice:
        raise gr.Error("No classifier picked: fine-tune one above, or upload a classifier checkpoint "
                       "(e.g. the book's review_classifier.pth) at the top of the page.")
    ckpt = get_model(choice, session_models)
    try:
        return classifier_from_checkpoint(ckpt)
    except ValueError as exc:  # CheckpointError: not a classifier
        raise gr.Error(str(exc)) from None


def explanation_html(full: float, tokens, label: str) -> str:
    """Tokens coloured by how much removing each one changes P(label): red raises it, green lowers it."""
    from llm import viz

    scale = max((abs(t.delta) for t in tokens), default=0.0) or 1.0
    chips = []
    for t in tokens:
        r, g, b = SPAM_COLOUR if t.delta > 0 else HAM_COLOUR
        alpha = min(1.0, abs(t.delta) / scale) * 0.85
        chips.append(viz.chip(t.piece, f"{t.delta:+.3f}", f"P({label}) changes by {-t.delta:+.4f} without it",
                              f"rgba({r},{g},{b},{alpha:.2f})"))
    legend = (f"<div style='font-size:0.85em;opacity:0.8;margin-top:6px'>P({html.escape(label)}) = {full:.3f}. "
              f"Number under a token: P({html.escape(label)}) with it minus without it (occlusion). "
              f"<span style='background:rgba({','.join(map(str, SPAM_COLOUR))},0.6)'>&nbsp;red&nbsp;</span> "
              f"pushes towards {html.escape(label)}, "
              f"<span style='background:rgba({','.join(map(str, HAM_COLOUR))},0.6)'>&nbsp;green&nbsp;</span> "
              f"away from it.</div>")
    return viz.chips_block(chips, "Which tokens made the decision", f"{len(tokens)} tokens") + legend


def classify(choice, text, session_models=None):
    """Label one message: class probabilities, a truncation warning and the occlusion explanation."""
    from llm.classifier import explain_occlusion, predict

    clf = _classifier(choice, session_models)
    text, notices = clean_text(text, what="message")
    try:
        pred = predict(clf.model, text, clf.max_length, clf.labels)
        target = len(clf.labels) - 1  # the last label: "spam"
        full, tokens = explain_occlusion(clf.model, text, clf.max_length, target)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    if pred.truncated:
        notices.append(pred.warning)
        gr.Warning(pred.warning)
    summary = f"**{pred.label}** ({pred.probs[pred.label]:.1%}) · {pred.num_tokens} tokens"
    return pred.probs, "\n\n".join(filter(None, [notices_md(notices), summary])), \
        explanation_html(full, tokens, clf.labels[target])


def classify_many(choice, lines, upload, session_models=None):
    """Label many messages (one per line, and/or a CSV/TSV file); a table and a CSV to download."""
    from llm.classifier import classify_batch, read_messages_file

    clf = _classifier(choice, session_models)
    texts = [line for line in (lines or "").splitlines() if line.strip()]
    truth = [""] * len(texts)
    if upload:
        try:
            table = read_messages_file(upload, Path(upload).name)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        texts += table.texts
        truth += table.labels or [""] * len(table.texts)
    if not texts:
        raise gr.Error("Nothing to classify: paste messages (one per line) or upload a CSV/TSV file "
                       "with a 'text' or 'message' column.")
    note = ""
    if len(texts) > MAX_BATCH:
        note = f"⚠️ Only the first {MAX_BATCH:,} of {len(texts):,} messages were classified."
        texts, truth = texts[:MAX_BATCH], truth[:MAX_BATCH]
    predictions = classify_batch(clf.model, texts, clf.max_length, clf.labels)
    header = ["message", "label", *[f"P({lab})" for lab in clf.labels], "truncated"]
    has_truth = any(truth)
    if has_truth:
        header += ["true label", "correct"]
    rows = []
    for text, pred, true in zip(texts, predictions, truth):
        row = [text, pred.label, *[round(pred.probs[lab], 4) for lab in clf.labels], pred.truncated]
        if has_truth:
            row += [true, (true == pred.label) if true else None]
        rows.append(row)
    path = Path(tempfile.mkdtemp(prefix="spam-batch-")) / "predictions.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    counts = {lab: sum(p.label == lab for p in predictions) for lab in clf.labels}
    summary = f"{len(rows):,} messages: " + ", ".join(f"{n:,} {lab}" for lab, n in counts.items())
    if has_truth:
        scored = [r for r in rows if r[-1] is not None]
        summary += f" · accuracy against the file's labels {sum(r[-1] for r in scored) / len(scored):.2%}"
    import pandas as pd

    return pd.DataFrame(rows, columns=header), str(path), "\n\n".join(filter(None, [note, summary]))


# --- layout ---------------------------------------------------------------------------------

def build(ctx) -> None:
    gr.Markdown(EXPLAIN)
    from llm.limits import current

    run_state = gr.State(None, time_to_live=SESSION_TTL_S)
    pending_models = gr.State(None, time_to_live=SESSION_TTL_S)  # see `adopt_session_models`
    if current().describe():
        gr.Markdown(current().describe())
    gr.Markdown("#### Fine-tune · the base model is the one picked at the top of the page")
    with gr.Row():
        data = gr.Radio([("balanced (the book)", "balanced"), ("full, imbalanced", "full")], value="balanced",
                        label="Data", elem_id="spam-data")
        policy = gr.Dropdown(POLICY_CHOICES, value="last-block", label="Trainable", elem_id="spam-policy")
        k = gr.Slider(1, 48, value=2, step=1, label="k (last-k blocks)", elem_id="spam-k")
        rank = gr.Slider(1, 64, value=16, step=1, label="LoRA rank r (alpha = r)", elem_id="spam-rank")
    with gr.Row():
        epochs = gr.Number(value=5, minimum=1, precision=0, label="Epochs", elem_id="spam-epochs")
        lr = gr.Number(value=5e-5, label="Learning rate (book 5e-5; 1e-3 from scratch)", elem_id="spam-lr")
        batch_size = gr.Number(value=8, minimum=1, precision=0, label="Batch size", elem_id="spam-batch")
        max_steps = gr.Number(value=0, minimum=0, precision=0, label="Max steps (0: all epochs)",
                              elem_id="spam-max-steps")
        seed = gr.Number(value=123, precision=0, label="Seed", elem_id="spam-seed")
    keep = ctx.keep_checkbox("spam-keep")
    with gr.Row():
        train_btn = gr.Button("Fine-tune", variant="primary", elem_id="spam-train")
        stop_btn = gr.Button("Stop (keeps what was trained)", elem_id="spam-stop")
    status = gr.Markdown(elem_id="spam-status")
    with gr.Row():
        loss_plot = gr.LinePlot(None, x="step", y="loss", color="kind", title="Loss",
                                height=280, elem_id="spam-loss-plot")
        acc_plot = gr.LinePlot(None, x="epoch", y="accuracy", color="kind",
                               title="Accuracy per epoch (5 batches, as the book)", y_lim=[0, 1], height=280,
                               elem_id="spam-acc-plot")
    with gr.Row():
        with gr.Column():
            result_md = gr.Markdown(elem_id="spam-result")
            checkpoint = gr.File(label="classifier checkpoint", interactive=False, elem_id="spam-checkpoint")
        confusion = gr.Plot(label="confusion matrix", elem_id="spam-confusion")

    gr.Markdown("#### Classify")
    # allow_custom_value: an API caller naming a language model gets the tab's own clear message
    # ("... is a 'lm' model, not a classifier"); `get_model` still accepts only the lab's models.
    picker = ctx.model_picker("Classifier", tasks=("classifier",), elem_id="spam-classifier",
                              allow_custom_value=True)
    with gr.Row():
        with gr.Column(scale=3):
            message = gr.Textbox(label="Message", lines=3, placeholder="Type an SMS…", elem_id="spam-message")
            classify_btn = gr.Button("Classify", variant="primary", elem_id="spam-classify")
            gr.Examples(EXAMPLES, [message], label="Examples (spam and ham)")
        with gr.Column(scale=2):
            probs = gr.Label(label="Prediction", elem_id="spam-label")
            note = gr.Markdown(elem_id="spam-note")
    explanation = gr.HTML(elem_id="spam-explanation")

    with gr.Accordion("Batch: many messages at once", open=False):
        with gr.Row():
            lines = gr.Textbox(label="One message per line", lines=5, elem_id="spam-lines")
            upload = gr.File(label="…or a CSV/TSV with a 'text' or 'message' column", file_types=[".csv", ".tsv",
                             ".txt"], type="filepath", height=130, elem_id="spam-upload")
        batch_btn = gr.Button("Classify all", elem_id="spam-batch-run")
        batch_note = gr.Markdown(elem_id="spam-batch-note")
        table = gr.Dataframe(interactive=False, wrap=True, max_height=420, elem_id="spam-table")
        table_csv = gr.File(label="predictions (CSV)", interactive=False, elem_id="spam-csv")

    train_btn.click(finetune, [ctx.picker, data, policy, k, rank, epochs, lr, batch_size, max_steps, seed, keep,
                               ctx.session_models, run_state, ctx.session_dir],
                    [status, loss_plot, acc_plot, result_md, confusion, checkpoint, pending_models, picker,
                     run_state, ctx.session_dir],
                    api_name="finetune_spam", show_progress_on=[status],
                    concurrency_limit=current().training_concurrency).then(
        adopt_session_models, [pending_models, ctx.session_models], [ctx.session_models],
        api_name="register_spam_classifier")
    # Stop sets the run's Event instead of `cancels=`: the run then ends on its own, measures the
    # test accuracy and saves the model (a cancelled generator could do neither); it also works
    # from gradio_client, which never triggers `cancels=`.
    stop_btn.click(stop_run, [run_state], [status], api_name="stop_finetune")
    gr.on([classify_btn.click, message.submit], classify, [picker, message, ctx.session_models],
          [probs, note, explanation], api_name="classify", show_progress_on=[note])
    batch_btn.click(classify_many, [picker, lines, upload, ctx.session_models], [table, table_csv, batch_note],
                    api_name="classify_batch", show_progress_on=[batch_note])
