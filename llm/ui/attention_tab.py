"""Attention tab (chapter 3): attention weights per layer and head, section 3.6 step by step, a logit lens."""
from __future__ import annotations

import threading
from collections import OrderedDict

import gradio as gr

from llm import viz

from .lecture import CONTROLS, RESULT
from .shared import bounded, encode_for_model, follow, get_model, notices_md, random_weights_note

TITLE = "Attention"

EXPLAIN = """### Chapter 3 · Coding attention mechanisms
Every token builds a **query**; every token offers a **key** and a **value**. The attention weights of a
row say how much that token (the query) takes from each earlier token (section 3.4: scores `QKᵀ`,
scaled by `√d_k`, then softmax). The **causal mask** (section 3.5) hides future tokens: the grey cells
above the diagonal, where the weights are exactly 0, and every row sums to 1. GPT-2 runs several
**heads** in parallel in every layer (section 3.6). The step-by-step view computes one head on your
text the way the chapter does. The **logit lens** (below) sends each block's output through the final
norm and output head (chapter 4): what would the model predict if it stopped after that block?"""

EXAMPLES = [
    "Your journey starts with one step",
    "The cat sat on the mat because it was tired.",
    "Every effort moves you",
    "The quick brown fox jumps over the lazy dog, and the dog does not move.",
]
VIEWS = ["one head", "all heads of the layer", "mean of the heads"]
MAX_TOKENS = 64
STEP_TOKENS = 16
LENS_POSITIONS = 16
# Slider bounds wide enough for GPT-2 XL (48 layers, 25 heads); a model's own sizes are checked.
MAX_LAYERS, MAX_HEADS = 48, 25

_cache: OrderedDict = OrderedDict()  # (choice, ids) -> RecordedPass; a few recent inputs
_cache_lock = threading.Lock()


def _records(choice, model, ids, layer: int | None = None):
    """The recorded attention tensors of blocks 0..layer (all when None) for `ids`.

    One `RecordedPass` per input, shared by the Attention and Logit lens requests of a click and
    reused while the layer/head knobs move: each block runs once, and only when first needed.
    """
    from llm.introspect import RecordedPass

    key = (choice, tuple(ids))
    with _cache_lock:
        recorded = _cache.get(key)
        if recorded is None or recorded.model is not model:
            recorded = _cache[key] = RecordedPass(model, ids)
        _cache.move_to_end(key)
        while len(_cache) > 4:
            _cache.popitem(last=False)
    return recorded.through(layer)


def _check_layer_head(model, layer, head):
    cfg = model.cfg
    layer, head = bounded(layer, "layer"), bounded(head, "head")
    if not 0 <= layer < cfg.n_layers:
        raise gr.Error(f"This model has {cfg.n_layers} layers: pick a layer from 0 to {cfg.n_layers - 1}.")
    if not 0 <= head < cfg.n_heads:
        raise gr.Error(f"This model has {cfg.n_heads} heads per layer: pick a head from 0 to {cfg.n_heads - 1}.")
    return layer, head


def attention(choice, text, layer, head, view, session_models=None):
    """Attention weights of `text` for one head, all heads of a layer or their mean, and section 3.6's steps."""
    from llm.introspect import attention_steps
    from llm.tokenizer import token_pieces

    model = get_model(choice, session_models).model
    layer, head = _check_layer_head(model, layer, head)
    if view not in VIEWS:
        raise gr.Error(f"View must be one of: {', '.join(VIEWS)}.")
    ids, notices = encode_for_model(text, model, MAX_TOKENS)
    records = _records(choice, model, ids, layer)
    tokens = [p.text for p in token_pieces(ids)]
    weights = records[layer]["attn_weights"].numpy()  # (heads, tokens, tokens)
    where = f"trf_blocks[{layer}]"
    if view == VIEWS[1]:
        figure = viz.attention_grid(weights, tokens, f"All {weights.shape[0]} heads of {where}")
    elif view == VIEWS[2]:
        figure = viz.attention_heatmap(weights.mean(0), tokens, f"Mean of the heads of {where}")
    else:
        figure = viz.attention_heatmap(weights[head], tokens, f"{where}, head {head}")
    steps = attention_steps(records, layer, head, STEP_TOKENS)
    steps_figure = viz.attention_steps_figure(
        steps, tokens, f"Section 3.6 step by step: {where}, head {head}, first {len(steps['attn_weights'])} "
        f"tokens, d_k = {model.cfg.head_dim}")
    numbers = {"layer": layer, "head": head, "tokens": tokens, "token_ids": ids,
               "weights": [[round(float(w), 5) for w in row] for row in weights[head]]}
    status = "\n\n".join(filter(None, [random_weights_note(choice, session_models), notices_md(notices),
                                       f"{len(ids)} tokens · {model.cfg.n_layers} layers × {model.cfg.n_heads} "
                                       f"heads · d_k = {model.cfg.head_dim}",
                                       _previous_token_note(choice, model, ids)]))
    return status, figure, steps_figure, numbers


def _previous_token_note(choice, model, ids) -> str:
    """Name the heads that look one token back on this text (a trained model has some; random, none)."""
    import numpy as np

    from llm.introspect import previous_token_heads

    if len(ids) < 3:
        return ""
    maps = np.stack([r["attn_weights"].numpy() for r in _records(choice, model, ids)])
    heads = previous_token_heads(maps)
    if not heads:
        return "No **previous-token head** on this text (none puts half its weight on the token just before)."
    shown = ", ".join(f"layer {h.layer} head {h.head} ({h.previous_token:.0%})" for h in heads[:6])
    return (f"**Previous-token heads** (mean weight on the token just before): {shown}. "
            "Pick one above: its map is a bright line just below the diagonal.")


def logit_lens(choice, text, session_models=None):
    """Top next-token guesses after every block, for the last positions of `text`."""
    from llm.introspect import logit_lens as lens
    from llm.tokenizer import token_ids_to_text, token_pieces

    ckpt = get_model(choice, session_models)
    model = ckpt.model
    if ckpt.task == "classifier":
        raise gr.Error("The logit lens needs a language model; this checkpoint's head predicts classes.")
    ids, _ = encode_for_model(text, model, MAX_TOKENS)
    rows = lens(model, ids, top=5, records=_records(choice, model, ids), last_positions=LENS_POSITIONS)
    shown = ids[-LENS_POSITIONS:]
    tokens = [p.text for p in token_pieces(shown)]
    offset = len(ids) - len(shown)

    def pieces_of(token_ids):
        return [token_ids_to_text([i]) for i in token_ids]

    figure = viz.logit_lens_heatmap(rows, tokens, pieces_of,
                                    "Logit lens: top next token after each block (colour = its probability)",
                                    first_position=offset)  # numbered as the table is
    headers = ["after"] + [f"{offset + j}:{viz.visible_whitespace(t)}" for j, t in enumerate(tokens)]
    table = [[f"trf_blocks[{r.layer}]"] + [f"{viz.visible_whitespace(pieces_of([i[0]])[0])} ({p[0]:.2g})"
                                           for i, p in zip(r.top_ids, r.top_probs)] for r in rows]
    numbers = {"positions": list(range(offset, len(ids))),
               "blocks": [{"layer": r.layer, "top_ids": r.top_ids,
                           "top_probs": [[round(q, 5) for q in p] for p in r.top_probs]} for r in rows]}
    return figure, gr.update(value=table, headers=headers), numbers


def _model_sizes(choice, session_models=None):
    """Fit the layer and head sliders to the picked model."""
    try:
        cfg = get_model(choice, session_models).model.cfg
    except gr.Error:
        return gr.update(), gr.update()
    return gr.update(maximum=cfg.n_layers - 1), gr.update(maximum=cfg.n_heads - 1)


def build(ctx) -> None:
    gr.Markdown(EXPLAIN)
    with gr.Row():  # the text, the head to show and the button beside the heat map (stacked on a phone)
        with gr.Column(scale=2, min_width=320, elem_classes=[CONTROLS]):
            text = gr.Textbox(label="Text", value=EXAMPLES[0], lines=2, elem_id="att-text")
            with gr.Row():
                layer = gr.Slider(0, MAX_LAYERS - 1, value=0, step=1, label="layer (trf_blocks index)",
                                  elem_id="att-layer", min_width=150)
                head = gr.Slider(0, MAX_HEADS - 1, value=0, step=1, label="head", elem_id="att-head", min_width=150)
            view = gr.Radio(VIEWS, value=VIEWS[0], label="view", elem_id="att-view")
            run = gr.Button("Show attention", variant="primary", elem_id="att-run")
            gr.Examples(EXAMPLES, inputs=[text], label="Try these")
        with gr.Column(scale=3, min_width=400, elem_classes=[RESULT]):
            status = gr.Markdown(elem_id="att-status")
            heatmap = gr.Plot(label="Attention weights (rows: queries, columns: keys)", elem_id="att-heatmap")
    steps = gr.Plot(label="One head, step by step", elem_id="att-steps")
    with gr.Accordion("Numbers of the selected head", open=False):
        numbers = gr.JSON(elem_id="att-numbers")
    gr.Markdown("#### Logit lens: the model's guess after each block")
    lens_plot = gr.Plot(label="Logit lens", elem_id="lens-plot")
    lens_table = gr.Dataframe(interactive=False, wrap=True, elem_id="lens-table")
    with gr.Accordion("Logit lens numbers (top-5 ids and probabilities)", open=False):
        lens_numbers = gr.JSON(elem_id="lens-numbers")

    inputs = [ctx.picker, text, layer, head, view, ctx.session_models]
    follow([run.click, text.submit, layer.release, head.release, view.change], attention, inputs,
           [status, heatmap, steps, numbers], api_name="attention")
    gr.on([run.click, text.submit], logit_lens, [ctx.picker, text, ctx.session_models],
          [lens_plot, lens_table, lens_numbers], api_name="logit_lens")
    ctx.on_model(_model_sizes, [layer, head])
