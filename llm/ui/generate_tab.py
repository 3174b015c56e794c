"""Generate tab (chapters 4-5): streaming text, the next-token distribution and what each knob does."""
from __future__ import annotations

import math
import time

import gradio as gr

from llm import viz
from llm.config import INFERENCE_PRECISIONS
from llm.limits import current

from .lecture import ADVANCED, CONTROLS, RESULT
from .shared import as_gr_error, bounded, encode_for_model, follow, get_model, notices_md, number

TITLE = "Generate"

EXPLAIN = """### Chapters 4–5 · Generating text
A GPT turns a prompt into **logits** for the next token; the softmax turns them into probabilities
(section 4.7). **Greedy** decoding (temperature 0) always takes the most likely token. Section 5.3's
knobs change the choice: **temperature** divides the logits (below 1 sharper, above 1 flatter),
**top-k** keeps only the k most likely tokens, **top-p** keeps the smallest set whose probabilities add
up to p. The chart shows the top-10 next tokens before (blue) and after (orange) the knobs — move them and
watch. The **KV cache** stores each layer's keys and values so a new token does not recompute the whole
prompt. On a CPU one new token reads every weight once, so fewer bytes per weight generate faster:
**float16** (half the bytes, the same greedy tokens in our measurements) or **int8** (a quarter, one scale
per output channel; the same greedy choice as float32 at about 99% of positions, not all) — `benchmarks/bench_generate.py`."""

EXAMPLES = [
    ["Every effort moves you", 30, 0.0, 50, 1.0, 123],
    ["In the heart of the city stood the old library, a relic from a bygone era.", 40, 1.4, 25, 1.0, 123],
    ["The meaning of life is", 40, 0.7, 50, 0.9, 7],
    ["Once upon a time there were four little Rabbits,", 40, 1.0, None, 0.95, 42],
]
NEXT_TOKENS_SHOWN = 10
CACHE_COMPARE_TOKENS = 60


def _sampling(model, temperature, top_k, top_p, max_new_tokens=None):
    """Check the knobs with `check_sampling`; return (temperature, top_k, top_p, notes)."""
    from llm.generation import check_sampling

    top_k = None if top_k in (None, "") else top_k
    top_p = None if top_p in (None, "") else top_p
    temperature = 0.0 if temperature in (None, "") else temperature
    try:  # every knob finite and in range (`llm.bounds`), with the sentences of check_sampling
        check_sampling(temperature, top_k, top_p, max_new_tokens, model.cfg.context_length, model.cfg.vocab_size)
        temperature = float(temperature)
        top_k = None if top_k is None else int(top_k)
        top_p = None if top_p is None else float(top_p)
    except ValueError as exc:
        raise as_gr_error(exc) from None
    notes = []
    if temperature == 0:
        notes.append("Temperature 0 means greedy decoding: always the most likely token "
                     "(top-k, top-p and the seed do not matter).")
    return temperature, top_k, (None if top_p == 1.0 else top_p), notes


def _language_model(choice, session_models):
    ckpt = get_model(choice, session_models)
    if ckpt.task == "classifier":
        raise gr.Error("This checkpoint is a classifier (its head predicts classes, not tokens); "
                       "pick a language model to generate text.")
    return ckpt.model


def generate(choice, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache, coloured,
             precision="fp32", session_models=None):
    """Stream a continuation of `prompt` token by token; yields (text html, stats, details).

    `precision`: "fp32", or "fp16" / "int8" to run a copy of the model with fewer bytes per weight
    (`llm.generation.inference_model`): decoding streams every weight from memory once per token.
    """
    from llm.generation import stream_generate
    from llm.tokenizer import token_ids_to_text, token_pieces

    if precision not in INFERENCE_PRECISIONS:
        raise gr.Error(f"Weights must be one of {', '.join(INFERENCE_PRECISIONS)} (got {precision!r}).")
    model = _language_model(choice, session_models)
    max_new_tokens = number(max_new_tokens, "max new tokens", int, 1, current().max_new_tokens)
    temperature, top_k, top_p, notes = _sampling(model, temperature, top_k, top_p, max_new_tokens)
    ids, notices = encode_for_model(prompt, model, keep="end")
    seed = None if seed in (None, "") else bounded(seed, "seed")
    prompt_text = token_ids_to_text(ids)
    new_ids, probs = [], []
    start = time.perf_counter()
    stream = stream_generate(model, ids, max_new_tokens, temperature, top_k, top_p,
                             use_cache=bool(use_cache), seed=seed, precision=precision)

    def render(done: bool):
        elapsed = time.perf_counter() - start
        rate = len(new_ids) / elapsed if elapsed > 0 else 0.0
        pieces = [p.text for p in token_pieces(new_ids)] if coloured else [token_ids_to_text(new_ids)]
        text_html = viz.probability_text_html(prompt_text, pieces, probs if coloured else [1.0], bool(coloured))
        if coloured:
            text_html += viz.probability_legend()
        state = "done" if done else "generating…"
        if done and len(new_ids) < max_new_tokens:
            state = "stopped at <|endoftext|>"
        stats = (f"**{len(new_ids)}** new tokens · **{rate:.1f} tokens/s** · KV cache "
                 f"{'on' if use_cache else 'off'} · {precision} weights · {state}")
        details = {"prompt_ids": ids, "token_ids": list(new_ids), "probs": [round(p, 5) for p in probs],
                   "tokens_per_s": round(rate, 2), "done": done}
        return text_html, "\n\n".join(filter(None, [notices_md(notices + notes), stats])), details

    for token in stream:
        new_ids.append(token.id)
        probs.append(token.prob)
        yield render(False)
    yield render(True)


def next_token(choice, prompt, temperature, top_k, top_p, session_models=None):
    """The 10 most likely next tokens, with probabilities from the model and after the knobs."""
    from llm.generation import next_token_distribution

    model = _language_model(choice, session_models)
    temperature, top_k, top_p, notes = _sampling(model, temperature, top_k, top_p)
    ids, notices = encode_for_model(prompt, model, keep="end")
    choices = next_token_distribution(model, ids, temperature, top_k, top_p, n=NEXT_TOKENS_SHOWN)
    figure = viz.next_token_bars(choices, f"Next token after “…{prompt.strip()[-40:]}”")
    rows = [[viz.visible_whitespace(c.piece), c.id, _shown(c.prob_model), _shown(c.prob_sampling)]
            for c in choices]
    shown_model = sum(c.prob_model for c in choices)
    shown_sampling = sum(c.prob_sampling for c in choices)
    summary = (f"These {len(choices)} tokens hold {shown_model:.1%} of the model's probability and "
               f"{shown_sampling:.1%} after the knobs.")
    return figure, rows, "\n\n".join(filter(None, [notices_md(notices + notes), summary]))


def _shown(p: float) -> float:
    """A probability cut (not rounded) to 6 decimals, so the shown values never add up to more than 1."""
    return math.floor(p * 1e6) / 1e6


def compare_cache(choice, prompt, max_new_tokens, session_models=None):
    """Greedy generation with and without the KV cache, timed fairly (`llm.cache_speed`): the median
    tokens/s of each, whether the tokens agree, and the speed-up or why there is none here."""
    from llm.cache_speed import compare_kv_cache

    model = _language_model(choice, session_models)
    n = min(number(max_new_tokens, "max new tokens", int, 1, current().max_new_tokens), CACHE_COMPARE_TOKENS,
            model.cfg.context_length)
    ids, notices = encode_for_model(prompt, model, keep="end")
    c = compare_kv_cache(model, ids, n)
    same = "the same tokens ✓" if c.same_tokens else "different tokens (numerical ties)"
    table = (f"| | tokens/s (median of {c.runs}) |\n|---|---|\n| with KV cache | **{c.with_cache:.1f}** |\n"
             f"| without (whole window recomputed each step) | **{c.without_cache:.1f}** |\n\n"
             f"{c.tokens} greedy tokens each after a warm-up; both runs gave {same}. {c.explain()}")
    return "\n\n".join(filter(None, [notices_md(notices), table]))


def build(ctx) -> None:
    gr.Markdown(EXPLAIN)
    with gr.Row():  # the prompt, its buttons and the knobs beside the generated text (stacked on a phone)
        with gr.Column(scale=2, min_width=360, elem_classes=[CONTROLS]):
            prompt = gr.Textbox(label="Prompt", value=EXAMPLES[0][0], lines=2, elem_id="gen-prompt")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="gen-run")
                stop = gr.Button("Stop", elem_id="gen-stop")
            with gr.Row():
                max_new = gr.Slider(1, current().max_new_tokens, value=30, step=1, label="max new tokens",
                                    elem_id="gen-max-new", min_width=160)
                temperature = gr.Number(value=0.0, step=0.1, label="temperature (0 = greedy)",
                                        elem_id="gen-temperature", min_width=120)
            with gr.Row():
                top_k = gr.Number(value=50, precision=0, label="top-k (empty = off)", elem_id="gen-top-k", min_width=100)
                top_p = gr.Number(value=1.0, step=0.05, label="top-p (1 = off)", elem_id="gen-top-p", min_width=100)
                seed = gr.Number(value=123, precision=0, label="seed (empty = random)", elem_id="gen-seed",
                                 min_width=100)
            with gr.Row():
                use_cache = gr.Checkbox(value=True, label="KV cache", elem_id="gen-cache")
                coloured = gr.Checkbox(value=False, label="colour tokens by probability", elem_id="gen-colour")
            weights = gr.Radio(list(INFERENCE_PRECISIONS), value="fp32", elem_id="gen-weights", elem_classes=[ADVANCED],
                               label="weights: float32, float16 or int8 (fewer bytes, faster on a CPU)")
            compare = gr.Button("Compare with / without KV cache", elem_id="gen-compare")
        with gr.Column(scale=3, min_width=400, elem_classes=[RESULT]):
            stats = gr.Markdown(elem_id="gen-stats")
            output = gr.HTML(elem_id="gen-output")
            cache_report = gr.Markdown(elem_id="gen-cache-report")
            with gr.Accordion("Generated token ids and probabilities", open=False):
                details = gr.JSON(elem_id="gen-details")
    gr.Examples(EXAMPLES, inputs=[prompt, max_new, temperature, top_k, top_p, seed], label="Try these")
    gr.Markdown("#### The next-token distribution (updates as you move the knobs)")
    dist_status = gr.Markdown(elem_id="dist-status")
    dist_plot = gr.Plot(label="top-10 next tokens", elem_id="dist-plot")
    dist_table = gr.Dataframe(headers=["token", "id", "p (model)", "p (after knobs)"], interactive=False,
                              elem_id="dist-table")

    event = gr.on([run.click, prompt.submit], generate,
                  [ctx.picker, prompt, max_new, temperature, top_k, top_p, seed, use_cache, coloured, weights,
                   ctx.session_models], [output, stats, details], api_name="generate",
                  show_progress_on=[stats])
    stop.click(None, cancels=[event], api_name=False)
    follow([run.click, prompt.submit, temperature.change, top_k.change, top_p.change, ctx.picker.change],
           next_token, [ctx.picker, prompt, temperature, top_k, top_p, ctx.session_models],
           [dist_plot, dist_table, dist_status], api_name="next_token")
    ctx.picker.change(lambda: "", None, [cache_report], api_name=False)  # a comparison belongs to its model
    compare.click(compare_cache, [ctx.picker, prompt, max_new, ctx.session_models], [cache_report],
                  api_name="compare_cache")
