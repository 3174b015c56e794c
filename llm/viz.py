"""Pictures for the lab: plotly figures and small HTML renderings (no Gradio here).

Every function takes plain data (lists, NumPy arrays, the dataclasses of
`llm.introspect` and `llm.generation`) and returns a `plotly.graph_objects.Figure` or
an HTML string, so the CLI, notebooks and tests can use them too.
"""
from __future__ import annotations

import copy
import html
import math
from functools import lru_cache

import numpy as np
import plotly.graph_objects as go

# Pastel colours that tell neighbouring tokens apart (and stay readable with dark text).
CHIP_COLOURS = ["#fde2a7", "#c8e6c9", "#bbdefb", "#f8bbd0", "#d1c4e9", "#ffccbc", "#b2ebf2", "#f0f4c3"]
MARGIN = dict(l=50, r=20, t=60, b=40)


# --- HTML: token chips ---------------------------------------------------------------

def visible_whitespace(text: str) -> str:
    """Spaces as ·, newlines as ↵ and tabs as → so a learner sees them inside tokens."""
    return text.replace(" ", "·").replace("\n", "↵").replace("\t", "→")


CHIP_CSS = """<style>
.token-chips .tok{display:inline-flex;flex-direction:column;align-items:center;margin:2px 1px;padding:1px 4px;
border-radius:4px;color:#1a1a1a}
.token-chips .tok .t{white-space:pre;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
.token-chips .tok .i{font-size:0.68em;opacity:0.75}
.token-chips .tok.special{background:#37474f!important}
.token-chips .tok.special .t,.token-chips .tok.special .i{color:#fff!important}
.token-chips .tok.unk{background:#ef9a9a!important;color:#b71c1c;font-weight:600}
.token-chips .tok.partial{border:1px dashed #8d6e63}
</style>"""


def chip(label: str, sub: str = "", title: str = "", colour: str = CHIP_COLOURS[0], kind: str = "") -> str:
    """One token as a coloured box: its text (whitespace made visible) with `sub` (its id) below.

    `kind` is "special", "unk" or "partial" (a piece of a character's UTF-8 bytes); see CHIP_CSS.
    """
    text = html.escape(visible_whitespace(label)) or "&nbsp;"
    return (f'<span class="tok {kind}" title="{html.escape(title)}" style="background:{colour}">'
            f'<span class="t">{text}</span><span class="i">{html.escape(sub)}</span></span>')


def chips_block(chips: list[str], heading: str = "", counts: str = "") -> str:
    """A titled row of chips (with the chip styles, so the HTML stands on its own)."""
    head = (f"<div style='font-weight:600;margin:6px 0 2px'>{html.escape(heading)}"
            f"<span style='font-weight:400;opacity:0.7;margin-left:8px'>{html.escape(counts)}</span></div>")
    return f"{CHIP_CSS}{head if heading else ''}<div class='token-chips' style='line-height:1.2'>{''.join(chips)}</div>"


def gpt2_chips(pieces) -> list[str]:
    """Chips for GPT-2 BPE tokens (`llm.tokenizer.TokenPiece`); byte fragments get a dashed border."""
    out = []
    for n, p in enumerate(pieces):
        kind = "special" if p.special else "partial" if p.partial else ""
        title = f"id {p.id} · bytes {p.raw.hex(' ')}" + (" · part of a multi-byte character" if p.partial else "")
        out.append(chip(p.text, str(p.id), title, CHIP_COLOURS[n % len(CHIP_COLOURS)], kind))
    return out


def simple_chips(tokens) -> list[str]:
    """Chips for the book's SimpleTokenizerV2 tokens (`llm.introspect.SimpleToken`); unknown words in red."""
    out = []
    for n, t in enumerate(tokens):
        if t.unknown:
            out.append(chip(f"{t.text}→<|unk|>", str(t.id), f"'{t.text}' is not in the-verdict's vocabulary",
                            kind="unk"))
        else:
            kind = "special" if t.text == "<|endoftext|>" else ""
            out.append(chip(t.text, str(t.id), f"id {t.id}", CHIP_COLOURS[n % len(CHIP_COLOURS)], kind))
    return out


def char_chips(text: str, limit: int = 2000) -> list[str]:
    """One chip per character (Unicode code point), with its code point below."""
    return [chip(ch, f"U+{ord(ch):04X}", f"U+{ord(ch):04X} · {len(ch.encode('utf-8'))} UTF-8 byte(s)",
                 CHIP_COLOURS[n % len(CHIP_COLOURS)]) for n, ch in enumerate(text[:limit])]


def prob_colour(p: float) -> str:
    """Red (unlikely) through yellow to green (likely) for a probability in [0, 1]."""
    p = min(max(p, 0.0), 1.0)
    hue = int(120 * p)
    return f"hsl({hue}, 75%, 80%)"


def probability_text_html(prompt: str, pieces: list[str], probs: list[float], coloured: bool) -> str:
    """The prompt followed by the generated pieces, each coloured by the probability it had."""
    body = [f"<span style='opacity:0.65'>{html.escape(prompt)}</span>"]
    for piece, p in zip(pieces, probs):
        if coloured:
            body.append(f"<span title='p = {p:.3f}' style='background:{prob_colour(p)};border-radius:3px'>"
                        f"{html.escape(piece)}</span>")
        else:
            body.append(html.escape(piece))
    return ("<div class='generated' style='white-space:pre-wrap;font-family:ui-monospace,monospace;"
            f"line-height:1.6;padding:8px'>{''.join(body)}</div>")


def probability_legend() -> str:
    stops = "".join(f"<span style='background:{prob_colour(p)};padding:0 6px'>{p:.1f}</span>"
                    for p in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
    return f"<div style='font-size:0.8em'>probability of each generated token: {stops}</div>"


# --- figures -------------------------------------------------------------------------
# Figures are built from plain dicts with plotly's validation skipped: our dicts are fixed
# and known to be valid, and validation costs 5-10x the rest (the Attention tab has a
# 0.3 s budget for a 124M model).

@lru_cache(maxsize=1)
def _template() -> dict:
    """plotly_white as a dict (unvalidated figures are not expanded from template names)."""
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


@lru_cache(maxsize=8)
def _scale(name: str) -> list:
    """A named colour scale as explicit stops (plotly.js reads some names reversed)."""
    import plotly.colors as pc

    family = pc.diverging if hasattr(pc.diverging, name) else pc.sequential
    return pc.make_colorscale(getattr(family, name))


def _figure(traces: list[dict], layout: dict) -> go.Figure:
    for trace in traces:
        if isinstance(trace.get("colorscale"), str):
            trace["colorscale"] = _scale(trace["colorscale"])
    return go.Figure(data=traces, layout={"template": _template(), "margin": MARGIN, **layout}, _validate=False)


@lru_cache(maxsize=32)
def _grid_layout(rows: int, cols: int, titles: tuple[str, ...], hspace: float, vspace: float) -> dict:
    from plotly.subplots import make_subplots

    return make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=hspace,
                         vertical_spacing=vspace).to_dict()["layout"]


def _grid(rows: int, cols: int, titles, hspace: float, vspace: float, **axes) -> dict:
    """A subplot layout (cached, copied); `axes` keyword dicts are applied to every x/y axis."""
    layout = copy.deepcopy(_grid_layout(rows, cols, tuple(titles), hspace, vspace))
    for key, axis in layout.items():
        if key.startswith("xaxis"):
            axis.update(axes.get("xaxes", {}))
        elif key.startswith("yaxis"):
            axis.update(axes.get("yaxes", {}))
    return layout


def _axes(n: int) -> dict:
    """Trace keys that put a trace in the n-th subplot (0-based, row by row)."""
    return {"xaxis": "x" if n == 0 else f"x{n + 1}", "yaxis": "y" if n == 0 else f"y{n + 1}"}


def _labels(tokens: list[str], start: int = 0) -> list[str]:
    """Unique axis labels (plotly merges equal category names): prefix the position (from `start`)."""
    return [f"{i}:{visible_whitespace(t)}" for i, t in enumerate(tokens, start)]


def _causal(n: int) -> np.ndarray:
    return np.triu(np.ones((n, n), dtype=bool), k=1)


def _weights_traces(weights: np.ndarray, labels: list[str], show_scale: bool, where: dict | None = None):
    """Attention weights (NaN where masked) over a grey layer that names the masked cells on hover."""
    masked = _causal(weights.shape[-1])
    where = where or {}
    return [
        {"type": "heatmap", "name": "causal mask", "z": np.where(masked, 1.0, np.nan), "x": labels, "y": labels,
         "showscale": False,
         "colorscale": [[0, "#e0e0e0"], [1, "#e0e0e0"]], "hoverongaps": False,
         "hovertemplate": "query %{y}<br>key %{x}<br>masked: a future token<extra></extra>", **where},
        {"type": "heatmap", "name": "attention weights", "z": np.where(masked, np.nan, weights).astype(np.float32),
         "x": labels, "y": labels,
         "colorscale": "Blues", "zmin": 0, "zmax": 1, "showscale": show_scale, "hoverongaps": False,
         "colorbar": {"title": {"text": "weight"}},
         "hovertemplate": "query %{y}<br>key %{x}<br>weight %{z:.4f}<extra></extra>", **where},
    ]


def attention_heatmap(weights: np.ndarray, tokens: list[str], title: str) -> go.Figure:
    """Queries down, keys across; the causal mask's cells (above the diagonal) drawn grey."""
    labels = _labels(tokens)
    size = max(360, min(720, 22 * len(labels) + 160))
    return _figure(_weights_traces(np.asarray(weights), labels, True),
                   {"title": {"text": title}, "height": size, "xaxis": {"title": {"text": "key (attended to)"}},
                    "yaxis": {"title": {"text": "query"}, "autorange": "reversed"}})


def attention_grid(weights: np.ndarray, tokens: list[str], title: str) -> go.Figure:
    """All heads of one layer, (heads, tokens, tokens), as small heatmaps."""
    heads = weights.shape[0]
    cols = min(4, heads)
    rows = math.ceil(heads / cols)
    labels = _labels(tokens)
    traces = []
    for h in range(heads):
        traces += _weights_traces(weights[h], labels, h == 0, _axes(h))
    layout = _grid(rows, cols, [f"head {h}" for h in range(heads)], 0.03, 0.08 / max(1, rows / 3),
                   xaxes={"showticklabels": False}, yaxes={"showticklabels": False, "autorange": "reversed"})
    return _figure(traces, {**layout, "title": {"text": title}, "height": 230 * rows + 80})


STEP_TITLES = [
    ("queries", "Q = x W_query"), ("keys", "K = x W_key"), ("attn_scores", "QKᵀ"),
    ("scaled_scores", "QKᵀ / √d_k"), ("masked_scores", "causal mask (−∞)"),
    ("attn_weights", "softmax → weights"), ("values", "V = x W_value"), ("context", "weights × V"),
]
_PER_DIMENSION = ("queries", "keys", "values", "context")  # (tokens, d_k); the others are (tokens, tokens)


def attention_steps_figure(steps: dict[str, np.ndarray], tokens: list[str], title: str) -> go.Figure:
    """Section 3.6 for one head as eight small matrices; hover shows every value."""
    labels = _labels(tokens[: steps["attn_weights"].shape[0]])
    traces = []
    for n, (name, _) in enumerate(STEP_TITLES):
        z = np.array(steps[name], dtype=np.float64)
        trace = {"type": "heatmap", "y": labels, "showscale": False, **_axes(n)}
        if name in _PER_DIMENSION:
            cols = [f"d{j}" for j in range(z.shape[1])]
            trace.update(z=z.astype(np.float32), x=cols, colorscale="RdBu", zmid=0,
                         hovertemplate="%{y}<br>%{x}: %{z:.4f}<extra>" + name + "</extra>")
        else:
            masked = _causal(z.shape[0])
            text = [["masked → −∞" if masked[i, j] and name == "masked_scores" else
                     "masked → 0" if masked[i, j] and name == "attn_weights" else f"{z[i, j]:.4f}"
                     for j in range(z.shape[1])] for i in range(z.shape[0])]
            if name in ("masked_scores", "attn_weights"):  # masked cells drawn grey (the background)
                z = np.where(masked, np.nan, z)
            colours = {"colorscale": "Blues", "zmin": 0, "zmax": 1} if name == "attn_weights" else \
                {"colorscale": "RdBu", "zmid": 0}
            trace.update(z=z.astype(np.float32), x=labels, text=text, **colours,
                         hovertemplate="query %{y}<br>key %{x}<br>%{text}<extra>" + name + "</extra>")
        traces.append(trace)
    layout = _grid(2, 4, [t for _, t in STEP_TITLES], 0.06, 0.16, xaxes={"showticklabels": False},
                   yaxes={"autorange": "reversed", "tickfont": {"size": 8}})
    for n in range(8):
        if n % 4:
            layout[f"yaxis{n + 1}"]["showticklabels"] = False
    return _figure(traces, {**layout, "title": {"text": title}, "height": 560, "plot_bgcolor": "#e0e0e0"})


def embedding_heatmaps(views: dict[str, np.ndarray], tokens: list[str], max_dims: int = 128) -> go.Figure:
    """Token, positional and input embeddings (section 2.8) side by side; one row per token."""
    labels = _labels(tokens)
    names = [("token", "token embeddings"), ("position", "+ positional embeddings"), ("input", "= input embeddings")]
    shown = views["input"][:, :max_dims]
    limit = max(float(np.abs(shown).max()), 1e-6)
    traces = []
    for n, (key, _) in enumerate(names):
        z = views[key][:, :max_dims].astype(np.float32)
        traces.append({"type": "heatmap", "z": z, "x": [f"dim {j}" for j in range(z.shape[1])], "y": labels,
                       "colorscale": "RdBu", "zmid": 0, "zmin": -limit, "zmax": limit, "showscale": n == 2,
                       "hovertemplate": "%{y}<br>%{x}: %{z:.3f}<extra>" + key + "</extra>", **_axes(n)})
    layout = _grid(1, 3, [t for _, t in names], 0.04, 0.1, xaxes={"showticklabels": False},
                   yaxes={"autorange": "reversed", "tickfont": {"size": 9}})
    layout["yaxis2"]["showticklabels"] = layout["yaxis3"]["showticklabels"] = False
    dims = views["token"].shape[1]
    return _figure(traces, {**layout, "height": max(320, min(900, 18 * len(tokens) + 140)),
                            "title": {"text": f"Embedding vectors (first {shown.shape[1]} of {dims} dimensions)"}})


def pca_scatter(coords: np.ndarray, labels: list[str], groups: list[str], explained: tuple[float, float],
                title: str) -> go.Figure:
    """A 2-D map of embedding vectors; hover names each point, colour tells its group."""
    traces = []
    for group in dict.fromkeys(groups):
        idx = [i for i, g in enumerate(groups) if g == group]
        traces.append({"type": "scatter", "x": coords[idx, 0], "y": coords[idx, 1], "mode": "markers+text",
                       "name": group, "text": [visible_whitespace(labels[i]) for i in idx],
                       "textposition": "top center", "marker": {"size": 9},
                       "hovertemplate": "%{text}<br>(%{x:.2f}, %{y:.2f})<extra>" + group + "</extra>"})
    return _figure(traces, {"title": {"text": title}, "height": 520,
                            "xaxis": {"title": {"text": f"PC 1 ({explained[0]:.0%} of variance)"}},
                            "yaxis": {"title": {"text": f"PC 2 ({explained[1]:.0%} of variance)"}}})


def next_token_bars(choices, title: str = "Next-token distribution") -> go.Figure:
    """Top tokens with their probability from the model and after temperature/top-k/top-p (section 5.3)."""
    labels = [f"{repr(c.piece)[1:-1] or '∅'} ({c.id})" for c in choices]
    traces = [
        {"type": "bar", "name": "model (softmax of logits)", "x": labels, "y": [c.prob_model for c in choices],
         "marker": {"color": "#90caf9"}, "hovertemplate": "%{x}<br>model: %{y:.4f}<extra></extra>"},
        {"type": "bar", "name": "after temperature / top-k / top-p", "x": labels,
         "y": [c.prob_sampling for c in choices], "marker": {"color": "#ef6c00"},
         "hovertemplate": "%{x}<br>after the knobs: %{y:.4f}<extra></extra>"},
    ]
    # A random model spreads its probability thinly (about 1/50,257 each) while the knobs renormalise
    # the few tokens they keep: on a linear axis the model's bars would be invisible beside them.
    model_top = max((c.prob_model for c in choices), default=0.0)
    sampled_top = max((c.prob_sampling for c in choices), default=0.0)
    yaxis = {"title": {"text": "probability"}}
    if 0 < model_top < 0.05 * sampled_top:
        yaxis = {"title": {"text": "probability (log scale: the model's are tiny)"}, "type": "log"}
    return _figure(traces, {"title": {"text": title}, "barmode": "group", "height": 380, "yaxis": yaxis,
                            "legend": {"orientation": "h", "y": 1.02, "x": 0}})


def logit_lens_heatmap(rows, tokens: list[str], pieces_of, title: str, first_position: int = 0) -> go.Figure:
    """Blocks down, positions across: colour = probability of the top token, text = that token.

    `rows` are `llm.introspect.LensRow`s; `pieces_of(ids)` turns token ids into text pieces;
    `tokens` sit at positions `first_position`, `first_position + 1`, ... of the input.
    """
    z = np.array([[probs[0] for probs in row.top_probs] for row in rows])
    text = [[visible_whitespace(pieces_of([ids[0]])[0]) for ids in row.top_ids] for row in rows]
    hover = [[f"after trf_blocks[{row.layer}], at '{visible_whitespace(tokens[j])}':<br>" +
              "<br>".join(f"{visible_whitespace(p)}: {q:.3f}" for p, q in zip(pieces_of(ids), probs))
              for j, (ids, probs) in enumerate(zip(row.top_ids, row.top_probs))] for row in rows]
    trace = {"type": "heatmap", "z": z, "x": _labels(tokens, first_position),
             "y": [f"trf_blocks[{row.layer}]" for row in rows],
             "text": text, "texttemplate": "%{text}", "textfont": {"size": 10}, "customdata": hover,
             "hovertemplate": "%{customdata}<extra></extra>", "colorscale": "Greens", "zmin": 0, "zmax": 1,
             "colorbar": {"title": {"text": "p(top)"}}}
    return _figure([trace], {"title": {"text": title}, "height": max(260, 36 * len(rows) + 140),
                             "xaxis": {"title": {"text": "input position"}}, "yaxis": {"autorange": "reversed"}})
