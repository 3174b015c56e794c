"""Model tab (chapter 4): the GPT as a flow with live shapes, parameters and memory, the chapter's experiments.

Layout and rendering only: the numbers come from `llm.architecture`, the pictures from `llm.viz_model`.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache

import gradio as gr

from .shared import encode_for_model, follow, get_model, notices_md, number, random_weights_note

TITLE = "Model"

EXPLAIN = """### Chapter 4 · Implementing a GPT model from scratch
Your text goes through the GPT the chapter assembles: **token ids → token + position embeddings →
transformer blocks** (layer norm → masked multi-head attention → shortcut add → layer norm →
feed-forward 4× wider with GELU → shortcut add; section 4.5) **→ final layer norm → output head →
next-token probabilities**. Every stage shows its module name in the book's code, the shape of its
tensor for *your* text and this model, and the section that builds it. Pick a stage (the numbers on
the left) to see its values at one token. Dropout is off while looking (`model.eval()`)."""

MAX_TOKENS = 64
MAX_LAYERS = 48  # GPT-2 XL; the picked model's own count is checked
STAGE_LABELS = {"ids": "in_idx", "tok_emb": "tok_emb", "pos_emb": "pos_emb", "embed": "drop_emb",
                "norm1": "norm1", "att": "att", "shortcut1": "+ shortcut", "norm2": "norm2",
                "ff_expand": "ff.layers[0]", "gelu": "GELU", "ff": "ff.layers[2]", "block_out": "+ shortcut",
                "final_norm": "final_norm", "out_head": "out_head", "next": "softmax"}
STAGE_CHOICES = [(f"{n} {label}", key) for n, (key, label) in enumerate(STAGE_LABELS.items(), 1)]
PARAM_HEADERS = ["component", "book modules", "parameters", "share", "float32 MB", "float16 MB", "int8 MB"]


@contextlib.contextmanager
def _sentences():
    """The core's ValueErrors (a block or token out of range, ...) become the lab's error boxes."""
    try:
        yield
    except ValueError as exc:
        raise gr.Error(str(exc)) from None


@lru_cache(maxsize=2)
def _cached_trace(model, ids: tuple):
    from llm.architecture import ModelTrace

    return ModelTrace(model, ids)


def _trace(choice, text, session_models):
    """(checkpoint, `ModelTrace` of the text, notices); one trace per recent (model, text), shared by the views."""
    ckpt = get_model(choice, session_models)
    ids, notices = encode_for_model(text, ckpt.model, MAX_TOKENS)
    with _sentences():
        return ckpt, _cached_trace(ckpt.model, tuple(ids)), notices


def _pieces(ckpt):
    """ids -> text pieces; a classifier's class ids -> its labels."""
    from llm.architecture import is_classifier
    from llm.tokenizer import token_pieces

    if is_classifier(ckpt.model):
        labels = ckpt.labels or []
        return lambda ids: [labels[i] if i < len(labels) else f"class {i}" for i in ids]
    return lambda ids: [p.text for p in token_pieces(ids)]


def _tokens(trace) -> list[str]:
    from llm.tokenizer import token_pieces

    return [p.text for p in token_pieces(trace.ids)]


def flow(choice, text, block, token, stage, session_models=None):
    """The model as a flow of stages with this text's shapes; also moves the token slider onto the text."""
    from llm import viz_model
    from llm.architecture import flow_stages

    ckpt, trace, notices = _trace(choice, text, session_models)
    model, cfg = ckpt.model, ckpt.model.cfg
    with _sentences():
        block = trace.check_block(number(block, "block", int))
        stages = flow_stages(cfg, trace.num_tokens, block, model.out_head.out_features)
    note = "Dropout (drop_emb, drop_shortcut) is the identity while looking; it only acts in training."
    status = "\n\n".join(filter(None, [random_weights_note(choice, session_models), notices_md(notices),
                                       f"{trace.num_tokens} token{'s' if trace.num_tokens > 1 else ''} · {cfg.n_layers} transformer blocks · "
                                       f"emb_dim {cfg.emb_dim} · {cfg.n_heads} heads · context {cfg.context_length}"]))
    shapes = [{"key": s.key, "module": s.module, "shape": list(s.shape), "section": s.section} for s in stages]
    # The slider keeps its range (a maximum set per text would make Gradio refuse a later, longer text's
    # positions); its value moves onto the text's last token when beyond it, before the stage view reads it.
    token_update = gr.update(value=min(number(token, "token", int, 0), trace.num_tokens - 1))
    return (status, viz_model.flow_html(stages, cfg.n_layers, block, stage, note), shapes, token_update)


def stage_view(choice, text, block, token, stage, session_models=None):
    """One stage's numbers at one token: a picture and a small table."""
    from llm import viz_model
    from llm.architecture import flow_stages

    ckpt, trace, _ = _trace(choice, text, session_models)
    with _sentences():
        block = trace.check_block(number(block, "block", int))
        numbers = trace.stage_numbers(stage, block, number(token, "token", int))
    info = {s.key: s for s in flow_stages(ckpt.model.cfg, trace.num_tokens, block, ckpt.model.out_head.out_features)}
    pieces_of = _pieces(ckpt)
    figure = viz_model.stage_figure(numbers, info[stage], _tokens(trace)[numbers.token], pieces_of)
    if numbers.top_logits is not None:
        rows = [[r + 1, pieces_of([i])[0], i, round(logit, 4), round(p, 5)] for r, (i, logit, p) in
                enumerate(zip(numbers.top_ids, numbers.top_logits, numbers.top_probs))]
        table = gr.update(value=rows, headers=["rank", "token", "id", "logit", "probability"])
    elif numbers.vector is None:
        table = gr.update(value=[[numbers.token, pieces_of(numbers.top_ids)[0], numbers.top_ids[0]]],
                          headers=["position", "token", "id"])
    else:
        v = numbers.vector
        rows = [["values", len(v)], ["mean", round(float(v.mean()), 5)], ["std", round(float(v.std()), 5)],
                ["min", round(float(v.min()), 5)], ["max", round(float(v.max()), 5)],
                ["L2 norm", round(float((v ** 2).sum() ** 0.5), 4)],
                ["first 8", ", ".join(f"{x:.4f}" for x in v[:8])]]
        table = gr.update(value=rows, headers=["statistic", "value"])
    return figure, table


def parameters(choice, session_models=None):
    """Section 4.6 for the picked model (counted on its tensors) and for GPT-2's sizes (from configs)."""
    from llm.architecture import DTYPES, memory_mb, parameter_rows, parameter_table, size_comparison

    ckpt = get_model(choice, session_models)
    table = parameter_table(ckpt.model)
    rows = [[c, m, f"{n:,}", f"{share:.1%}", *(f"{mb:,.2f}" for mb in mbs)]
            for c, m, n, share, *mbs in parameter_rows(table)]
    if table.tieable:
        tying = (f"Weight tying (the head shares `tok_emb.weight`): **{table.total_tied:,}** parameters "
                 f"({memory_mb(table.total_tied):,.2f} MB in float32) with it, **{table.total_untied:,}** "
                 f"({memory_mb(table.total_untied):,.2f} MB) without. This model's head is "
                 f"{'tied' if table.tied else 'separate'}.")
    else:
        tying = (f"This head predicts {ckpt.model.out_head.out_features} classes (section 6.5): "
                 "weight tying does not apply.")
    summary = (f"**{choice}**: {table.total:,} parameters as loaded. {tying} Memory = parameters × bytes per "
               "parameter (4, 2, 1), in the book's MB of 1024² bytes; int8 adds one scale per row when quantized.")
    columns, size_rows = size_comparison()
    shown = [[label] + [f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" if type(v) is int else str(v).lower()
                        for v in values] for label, *values in size_rows]
    totals = {r[0]: r[1:] for r in size_rows}
    numbers = {"total": table.total, "tied": table.tied, "total_tied": table.total_tied,
               "total_untied": table.total_untied, "components": {r.component: r.count for r in table.rows},
               "memory_mb": {d: round(memory_mb(table.total, d), 3) for d in DTYPES},
               "gpt2_sizes": {name: {"untied": u, "tied": t} for name, u, t in
                              zip(columns, totals["total, separate head"], totals["total, tied head"])}}
    return (summary, gr.update(value=rows, headers=PARAM_HEADERS),
            gr.update(value=shown, headers=["", *columns]), numbers)


def layer_norm(choice, text, block, session_models=None):
    """Section 4.2: mean and variance per token before and after norm1 of the chosen block."""
    from llm import viz_model
    from llm.architecture import layer_norm_stats

    _, trace, _ = _trace(choice, text, session_models)
    with _sentences():
        block = trace.check_block(number(block, "block", int))
        stats = layer_norm_stats(trace, block)
    figure = viz_model.layer_norm_figure(stats, _tokens(trace), f"Layer normalization at trf_blocks[{block}].norm1")
    summary = (f"Normalized: mean within ±{abs(stats['normalized_mean']).max():.1e} of 0, variance "
               f"{stats['normalized_var'].min():.4f}–{stats['normalized_var'].max():.4f} (about 1) for every token. "
               f"Then the learned `scale` (mean {stats['scale'].mean():.3f}) and `shift` (mean "
               f"{stats['shift'].mean():.3f}) move them: the output's variance is "
               f"{stats['output_var'].min():.4g} to {stats['output_var'].max():.4g}.")
    return figure, summary


def gelu(choice, text, block, session_models=None):
    """Section 4.3: GELU next to ReLU, and the share of the block's feed-forward activations GELU leaves negative."""
    from llm import viz_model
    from llm.architecture import feed_forward_activations, gelu_relu_curves

    _, trace, _ = _trace(choice, text, session_models)
    with _sentences():
        block = trace.check_block(number(block, "block", int))
        acts = feed_forward_activations(trace, block)
    figure = viz_model.gelu_figure(gelu_relu_curves(), acts, f"GELU in trf_blocks[{block}].ff for your text")
    summary = (f"Of the {acts['count']:,} activations after GELU in `trf_blocks[{block}].ff.layers[1]`, "
               f"**{acts['negative_share']:.1%}** are negative ({acts['pre_negative_share']:.1%} of the inputs were). "
               f"ReLU would set every input ≤ 0 ({acts['zero_share_relu']:.1%} of them) to exactly 0.")
    return figure, summary


def shortcut(num_layers, seed):
    """Section 4.4: the toy network's mean |gradient| per layer, without and with shortcut connections."""
    from llm import viz_model
    from llm.architecture import shortcut_gradients

    num_layers = number(num_layers, "number of layers", int, 2, 20)
    seed = number(seed, "seed", int, 0, 2**31 - 1)
    sizes = [3] * num_layers + [1]
    without = shortcut_gradients(False, sizes, seed)
    with_ = shortcut_gradients(True, sizes, seed)
    first, last = next(iter(without)), list(without)[-1]
    ratio = [g[last] / max(g[first], 1e-30) for g in (without, with_)]
    summary = (f"layer_sizes {sizes}, input [[1., 0., -1.]], target [[0.]], `torch.manual_seed({seed})`, MSE loss, one "
               f"backward pass. Last layer ÷ first layer mean gradient: **{ratio[0]:,.1f}×** without shortcuts "
               f"(the gradient vanishes on the way back), **{ratio[1]:,.1f}×** with them.")
    figure = viz_model.shortcut_figure(without, with_, "Mean |gradient| per layer (section 4.4)")
    return figure, summary, {"without": without, "with": with_}


def residual(choice, text, session_models=None):
    """Section 4.5: the norm of every token's hidden state after each block (the residual stream)."""
    from llm import viz_model

    _, trace, _ = _trace(choice, text, session_models)
    norms = trace.residual_norms()
    figure = viz_model.residual_figure(norms, _tokens(trace), "‖hidden state‖ after each block")
    numbers = {"rows": ["embeddings"] + [f"trf_blocks[{i}]" for i in range(norms.shape[0] - 1)],
               "norms": [[round(float(x), 4) for x in row] for row in norms]}
    return figure, numbers


def _fit_sliders(choice, session_models=None):
    """The block slider spans the picked model's blocks (back to block 0 for a new model)."""
    try:
        cfg = get_model(choice, session_models).model.cfg
    except gr.Error:
        return gr.update()
    return gr.update(maximum=max(1, cfg.n_layers - 1), value=0)  # maximum > minimum, even for one block


def build(ctx) -> None:
    gr.Markdown(EXPLAIN)
    text = gr.Textbox(label="Text", value="Every effort moves you", lines=2, elem_id="mdl-text")
    with gr.Row():
        block = gr.Slider(0, MAX_LAYERS - 1, value=0, step=1, label="transformer block to open (trf_blocks index)",
                          elem_id="mdl-block")
        token = gr.Slider(0, MAX_TOKENS - 1, value=MAX_TOKENS - 1, step=1, label="token position (at most the last)",
                          elem_id="mdl-token")
    run = gr.Button("Show the model", variant="primary", elem_id="mdl-run")
    status = gr.Markdown(elem_id="mdl-status")
    with gr.Row():
        with gr.Column(scale=4):
            flow_box = gr.HTML(elem_id="mdl-flow")
        with gr.Column(scale=5):
            stage = gr.Radio(STAGE_CHOICES, value="att", label="stage (numbers as in the flow)", elem_id="mdl-stage")
            stage_plot = gr.Plot(label="The stage at the chosen token", elem_id="mdl-stage-plot")
            stage_table = gr.Dataframe(interactive=False, elem_id="mdl-stage-table")
    with gr.Accordion("Shapes of every stage", open=False):
        shapes = gr.JSON(elem_id="mdl-shapes")

    gr.Markdown("#### Parameters and memory (section 4.6)")
    params_md = gr.Markdown(elem_id="mdl-params-summary")
    params_table = gr.Dataframe(interactive=False, wrap=True, elem_id="mdl-params")
    gr.Markdown("GPT-2's four sizes, counted from their configs (nothing downloaded):")
    sizes_table = gr.Dataframe(interactive=False, max_height=900, elem_id="mdl-sizes")
    with gr.Accordion("Parameter numbers", open=False):
        params_json = gr.JSON(elem_id="mdl-params-json")

    gr.Markdown("#### The chapter's experiments, on your text")
    with gr.Row():
        ln_plot = gr.Plot(label="Layer normalization (section 4.2)", elem_id="mdl-layernorm")
        gelu_plot = gr.Plot(label="GELU (section 4.3)", elem_id="mdl-gelu")
    with gr.Row():
        ln_md = gr.Markdown(elem_id="mdl-layernorm-summary")
        gelu_md = gr.Markdown(elem_id="mdl-gelu-summary")
    res_plot = gr.Plot(label="Residual stream (section 4.5)", elem_id="mdl-residual")
    with gr.Accordion("Residual stream numbers", open=False):
        res_json = gr.JSON(elem_id="mdl-residual-json")

    gr.Markdown("#### Shortcut connections (section 4.4): the chapter's deep toy network")
    with gr.Row():
        depth = gr.Slider(2, 20, value=5, step=1, label="layers (layer_sizes = [3] × layers + [1])",
                          elem_id="mdl-depth")
        seed = gr.Number(123, precision=0, label="torch.manual_seed", elem_id="mdl-seed")
        sc_run = gr.Button("Run one backward pass", elem_id="mdl-shortcut-run")
    sc_md = gr.Markdown(elem_id="mdl-shortcut-summary")
    sc_plot = gr.Plot(label="Gradients with and without shortcuts", elem_id="mdl-shortcut")
    with gr.Accordion("Gradient numbers", open=False):
        sc_json = gr.JSON(elem_id="mdl-shortcut-json")

    view = [ctx.picker, text, block, token, stage, ctx.session_models]
    text_block = [ctx.picker, text, block, ctx.session_models]
    flow_out = [status, flow_box, shapes, token]
    (gr.on([run.click, text.submit, block.release], flow, view, flow_out, api_name="model_flow")
     .then(stage_view, view, [stage_plot, stage_table], api_name="model_stage")
     .then(layer_norm, text_block, [ln_plot, ln_md], api_name="model_layernorm")
     .then(gelu, text_block, [gelu_plot, gelu_md], api_name="model_gelu")
     .then(residual, [ctx.picker, text, ctx.session_models], [res_plot, res_json], api_name="model_residual"))
    (follow([token.release, stage.change], flow, view, flow_out, api_name=False)
     .then(stage_view, view, [stage_plot, stage_table], api_name=False))
    gr.on([ctx.demo.load, sc_run.click], shortcut, [depth, seed], [sc_plot, sc_md, sc_json],
          api_name="model_shortcut")
    ctx.on_model(parameters, [params_md, params_table, sizes_table, params_json], api_name="model_parameters")
    ctx.on_model(_fit_sliders, [block])
