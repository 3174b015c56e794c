"""Classify tab (chapter 6): fine-tune a GPT into a spam classifier, then label messages and explain why.

The fine-tuning job (`llm.classifier.finetune_spam`, one job shape of `llm.jobs`) is driven by the one
live view of `run_view`; its recipe follows the base (`llm.recipes.spam_recipe`)."""
from __future__ import annotations

import csv
import html
import tempfile
import threading
from pathlib import Path

import gradio as gr

from llm.recipes import spam_pretraining_gain

from .lecture import ADVANCED, CONTROLS, RESULT
from .run_view import comparison_plot, drive, recipe_changes, recipe_fill, recipe_for, run_panel, sentence, wire
from .shared import SESSION_TTL_S, checkpoint_folder, clean_text, get_model, notices_md, number

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

*The recipe follows the base: a pretrained model (GPT-2, a trained checkpoint) gets the book's settings; a
small one (under 50M parameters, like the Wharton GPT) trains every layer at lr 1e-3 for 2 epochs, its token
embeddings 10x faster, since the SMS words it never read start near zero; a preset with random weights gets a from-scratch recipe (all
layers, lr 2e-3, cosine decay, dropout 0.2, 8 epochs), measured to reach 95 % on lab-tiny. The tab says which it
chose; edit freely. Tick **the same recipe on a random model** to see chapter 6's point: after the run, a
model of the same shape with random weights is fine-tuned the same way, and both validation curves and test
accuracies are shown. Try it with the book's last-block recipe on the Wharton GPT: its frozen layers, pretrained
on fiction alone, do no better than random ones (84.7 % against 85.3 %), where every layer trained gets 95.7 %
against 93.3 %.*"""

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
#: Most messages classified in one batch request (the whole SMS collection fits).
MAX_BATCH = 6000
SPAM_COLOUR, HAM_COLOUR = (229, 57, 53), (67, 160, 71)


# --- fine-tuning ------------------------------------------------------------------------

def base_recipe(base, session_models=None):
    """(recipe, reason) for fine-tuning `base`: the book's for a pretrained model, from scratch for random weights."""
    from llm.recipes import spam_recipe

    return recipe_for(base, session_models, spam_recipe)


def fill_recipe(base, session_models=None, shown_reason=None):
    """The form's values (policy, epochs, lr, batch) from the base's recipe, and the sentence saying why
    (no change when `shown_reason` already says it: the visitor's edits stay)."""
    recipe, reason = base_recipe(base, session_models)
    return recipe_fill((recipe.policy, recipe.epochs, recipe.lr, recipe.batch_size), reason, shown_reason)


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


def _result_md(result, twin=None) -> str:
    t = result.training
    lines = [f"**Test accuracy {result.test_acc:.2%}** · training {result.train_acc:.2%} · "
             f"validation {result.val_acc:.2%} (whole sets, after {result.steps} steps, {result.wall_s:.0f} s)",
             f"Trained {t['trainable']:,} of {t['parameters']:,} parameters ({t['policy']}) on the "
             f"{t['data']} data; messages padded to {t['max_length']} tokens ({_truncated(t['num_truncated'])}).",
             "The classifier is now selected in the classifier picker below."]
    if twin is not None:
        lines.insert(1, f"**A random model of the same shape, same recipe: test accuracy {twin.test_acc:.2%}** "
                        f"(training {twin.train_acc:.2%}, {twin.steps} steps{', stopped' if twin.stopped else ''}): "
                        + spam_pretraining_gain(result.test_acc, twin.test_acc, t["policy"]))
    return "\n\n".join(lines)




def accuracy_frame(epochs):
    """The per-epoch accuracies (the book's 5 batches) for the accuracy plot."""
    if not epochs:
        return gr.update()
    import pandas as pd

    rows = [(e.epoch, e.metrics[k], name) for e in epochs
            for k, name in (("train_acc", "train accuracy"), ("val_acc", "validation accuracy"))]
    return pd.DataFrame(rows, columns=["epoch", "accuracy", "kind"]).astype({"epoch": "int64"})


def finetune(base, data, policy, k, rank, epochs, lr, batch_size, max_steps, seed, keep=False, eval_batches=5,
             compare=False, session_models=None, run_state=None, session_dir=None):
    """Fine-tune the picked model on the spam data with its recipe; streams the run, ends with the result.

    compare: then train the same recipe on a random model of the base's shape, measured beside it."""
    from llm.catalog import random_twin
    from llm.classifier import finetune_spam

    get_model(base, session_models)  # checks the choice is a model of this lab or session, and available
    recipe, _ = base_recipe(base, session_models)
    try:
        settings = recipe.with_(
            policy=policy, k=number(k, "k", int, 1, 1000), rank=number(rank, "LoRA rank", int, 1, 4096),
            alpha=number(rank, "LoRA rank", int, 1, 4096), balanced=data != "full",
            epochs=number(epochs, "Epochs", int, 1, 10_000), lr=number(lr, "Learning rate"),
            batch_size=number(batch_size, "Batch size", int, 1, 65_536), seed=number(seed, "Seed", int, 0, 2**63 - 1),
            max_steps=number(max_steps, "Max steps", int, 1, 10_000_000) if max_steps else None,
            eval_batches=number(eval_batches, "Evaluation batches", int, 1, 100_000) if eval_batches else None)
        settings.validate()
    except ValueError as exc:
        raise gr.Error(sentence(exc)) from None
    target = checkpoint_folder(keep, session_dir)
    stop = threading.Event()
    t = settings.train
    trains_embeddings = settings.policy == "all" and t.embedding_lr_scale != 1
    embeddings = f" (token embeddings x{t.embedding_lr_scale:g})" if trains_embeddings else ""
    intro = (f"This run: {settings.policy} trainable, lr {t.lr:g}{embeddings} ({t.schedule}), {t.epochs} epochs, "
             f"batch {settings.batch_size}, {data} data · {recipe_changes(settings, recipe, base)}")

    def start(twin=False):
        from llm.limits import current

        job = finetune_spam(random_twin(base) if twin else base, settings, out=target.folder)
        current().check_training(job.training["parameters"], job.total_steps)
        return job

    def label(result):
        return f"spam classifier · {base} · {settings.policy} · {result.test_acc:.1%} test"

    same = gr.update()
    for frame in drive(start, lambda job: job.out, intro, stop, label=label, task="classifier",
                       session_models=session_models, in_catalog=target.in_catalog, picker_tasks=("classifier",),
                       items="examples", baseline=(lambda: start(twin=True)) if compare else None):
        live, result = frame.live, frame.result
        plots = (live.loss_plot(), live.lr_plot(), accuracy_frame(live.epochs), comparison_plot(live, frame.baseline))
        if result is None:
            yield (frame.status, *plots, "" if live.last is None else same, same, same, same, same, stop,
                   target.session_dir)
        else:
            yield (frame.status, *plots, _result_md(result, frame.baseline_result),
                   confusion_figure(result.confusion, result.labels), str(result.path), frame.session_models,
                   frame.picker, None, target.session_dir)


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


def explanation_html(explanation, labels) -> str:
    """Tokens coloured by their signed contribution to the predicted label: the label's colour where the
    token supports the verdict, the other label's where it argues against it, white where it does nothing."""
    from llm import viz

    label = labels[explanation.target]
    colours = {"spam": SPAM_COLOUR, "ham": HAM_COLOUR}
    own = colours.get(label, SPAM_COLOUR)
    other = next((c for lab, c in colours.items() if lab != label and lab in labels), HAM_COLOUR)
    scale = max((abs(t.delta) for t in explanation.tokens), default=0.0) or 1.0
    chips = []
    for t in explanation.tokens:
        r, g, b = own if t.delta > 0 else other
        alpha = min(1.0, abs(t.delta) / scale) * 0.85
        chips.append(viz.chip(t.piece, f"{t.delta:+.3f}",
                              f"P({label}) falls by {t.delta:+.4f} when this token is replaced by the pad token",
                              f"rgba({r},{g},{b},{alpha:.2f})"))
    name = html.escape(label)
    legend = (f"<div style='font-size:0.85em;opacity:0.8;margin-top:6px'>Verdict <b>{name}</b>, "
              f"P({name}) = {explanation.prob:.3f}. Number under a token: P({name}) with it minus with it replaced "
              f"by the neutral pad token &lt;|endoftext|&gt; (occlusion). "
              f"<span style='background:rgba({','.join(map(str, own))},0.6)'>&nbsp;{name}&nbsp;</span> supports "
              f"the verdict, <span style='background:rgba({','.join(map(str, other))},0.6)'>&nbsp;other&nbsp;</span>"
              " argues against it, white: no effect.</div>")
    return viz.chips_block(chips, "Which tokens made the decision", f"{len(explanation.tokens)} tokens") + legend


def classify(choice, text, session_models=None):
    """Label one message: class probabilities, a truncation warning and the occlusion explanation."""
    from llm.classifier import explain_occlusion, predict

    clf = _classifier(choice, session_models)
    text, notices = clean_text(text, what="message")
    try:
        pred = predict(clf.model, text, clf.max_length, clf.labels)
        explanation = explain_occlusion(clf.model, text, clf.max_length, clf.labels.index(pred.label))
    except ValueError as exc:
        raise gr.Error(sentence(exc)) from None
    if pred.truncated:
        notices.append(pred.warning)
        gr.Warning(pred.warning)
    summary = f"**{pred.label}** ({pred.probs[pred.label]:.1%}) · {pred.num_tokens} tokens"
    return pred.probs, "\n\n".join(filter(None, [notices_md(notices), summary])), \
        explanation_html(explanation, clf.labels)


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
    # What to train, the buttons and the recipe beside the run's status, loss and accuracy (stacked on a phone).
    with gr.Row():
        with gr.Column(scale=4, min_width=300, elem_classes=[CONTROLS]):
            with gr.Row():
                data = gr.Radio([("balanced (the book)", "balanced"), ("full, imbalanced", "full")],
                                value="balanced", label="Data", elem_id="spam-data")
                policy = gr.Dropdown(POLICY_CHOICES, value="last-block", label="Trainable", elem_id="spam-policy")
            with gr.Row():
                k = gr.Slider(1, 48, value=2, step=1, label="k (last-k blocks)", elem_id="spam-k")
                rank = gr.Slider(1, 64, value=16, step=1, label="LoRA rank r (alpha = r)", elem_id="spam-rank")
            with gr.Row():
                train_btn = gr.Button("Fine-tune", variant="primary", elem_id="spam-train")
                stop_btn = gr.Button("Stop (keeps what was trained)", elem_id="spam-stop")
            recipe_md = gr.Markdown(elem_id="spam-recipe")
            # Outside the accordion: a closed accordion's fields are not in the page, and the lecture script fills these.
            with gr.Row(elem_classes=[ADVANCED]):
                epochs = gr.Number(value=5, minimum=1, maximum=10_000, precision=0, label="Epochs",
                                   elem_id="spam-epochs")
                lr = gr.Number(value=5e-5, label="Learning rate (the recipe's)", elem_id="spam-lr")
                max_steps = gr.Number(value=0, minimum=0, precision=0, label="Max steps (0: all epochs)",
                                      elem_id="spam-max-steps")
            with gr.Accordion("More training settings: batch size, evaluation, seed", open=False,
                              elem_id="spam-settings", elem_classes=[ADVANCED]):
                with gr.Row():
                    batch_size = gr.Number(value=8, minimum=1, maximum=65_536, precision=0, label="Batch size",
                                           elem_id="spam-batch")
                    eval_batches = gr.Number(value=5, minimum=1, precision=0, label="Evaluation batches (book: 5)",
                                             elem_id="spam-eval-batches")
                    seed = gr.Number(value=123, precision=0, label="Seed", elem_id="spam-seed")
            keep = ctx.keep_checkbox("spam-keep")
            compare = gr.Checkbox(False, label="Then the same recipe on a random model of the same shape, to "
                                  "measure what pretraining buys", elem_id="spam-compare")
        with gr.Column(scale=3, min_width=360, elem_classes=[RESULT]):
            plots = {}
            panel = run_panel("spam", lambda: plots.update(acc=gr.LinePlot(
                None, x="epoch", y="accuracy", color="kind", title="Accuracy per epoch (the book's 5 batches)",
                y_lim=[0, 1], height=320, elem_id="spam-acc-plot")), compare=True)
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

    ctx.on_model(fill_recipe, [policy, epochs, lr, batch_size, recipe_md], extra_inputs=[recipe_md])
    wire(ctx, train_btn, stop_btn, finetune,
         [ctx.picker, data, policy, k, rank, epochs, lr, batch_size, max_steps, seed, keep, eval_batches, compare,
          ctx.session_models, run_state, ctx.session_dir],
         [panel.status, panel.loss_plot, panel.lr_plot, plots["acc"], panel.compare_plot, result_md, confusion,
          checkpoint,
          pending_models, picker, run_state, ctx.session_dir], run_state, pending_models,
         api_name="finetune_spam", stop_api="stop_finetune", register_api="register_spam_classifier")
    gr.on([classify_btn.click, message.submit], classify, [picker, message, ctx.session_models],
          [probs, note, explanation], api_name="classify", show_progress_on=[note])
    batch_btn.click(classify_many, [picker, lines, upload, ctx.session_models], [table, table_csv, batch_note],
                    api_name="classify_batch", show_progress_on=[batch_note])
