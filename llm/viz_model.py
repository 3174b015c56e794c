"""Pictures for chapter 4 (the Model tab): the GPT as a flow, one stage's numbers, the chapter's experiments.

Plain data in (the dataclasses and arrays of `llm.architecture`), a plotly figure or an HTML
string out, no Gradio; built like `llm.viz`'s figures (unvalidated dicts, one template).
"""
from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go

from .viz import _axes, _figure, _grid, _labels, visible_whitespace

#: A stage's vector is drawn as a grid this many values wide; longer ones are cut (said in the title).
FOLD_WIDTH = 32
MAX_VALUES = 2048
PART_COLOURS = {"input": "#e3f2fd", "block": "#fff3e0", "output": "#e8f5e9"}

FLOW_CSS = """<style>
.gpt-flow{font-family:ui-sans-serif,system-ui,sans-serif;font-size:13px;color:#1a1a1a;max-width:560px}
.gpt-flow .st{display:grid;grid-template-columns:26px 1fr auto;align-items:center;gap:6px;border:1px solid #cfd8dc;
border-radius:6px;padding:3px 8px;margin:0}
.gpt-flow .st.sel{outline:3px solid #ef6c00;outline-offset:-1px}
.gpt-flow .n{font-weight:700;color:#546e7a;text-align:right}
.gpt-flow .t{font-weight:600}
.gpt-flow .m{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:11.5px;color:#37474f}
.gpt-flow .s{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;white-space:nowrap;text-align:right}
.gpt-flow .sec{font-size:11px;color:#78909c;white-space:nowrap;text-align:right}
.gpt-flow .ar{text-align:center;color:#90a4ae;line-height:14px;font-size:12px}
.gpt-flow .blk{border:2px dashed #ffb74d;border-radius:8px;padding:4px 6px 6px;margin:2px 0}
.gpt-flow .blk .h{font-size:12px;color:#e65100;font-weight:600;margin-bottom:2px}
.gpt-flow .note{font-size:11.5px;color:#546e7a;margin-top:6px}
</style>"""


def _stage_box(n: int, stage, selected: bool) -> str:
    shape = "(" + ", ".join(f"{s:,}" for s in stage.shape) + ")"
    return (f"<div class='st{' sel' if selected else ''}' style='background:{PART_COLOURS[stage.part]}' "
            f"title='section {html.escape(stage.section)}'><span class='n'>{n}</span>"
            f"<span><span class='t'>{html.escape(stage.title)}</span><br><span class='m'>{html.escape(stage.module)}"
            f"</span></span><span><span class='s'>{shape}</span><br><span class='sec'>§{html.escape(stage.section)}"
            "</span></span></div>")


def flow_html(stages, n_layers: int, block: int, selected: str | None = None, note: str = "") -> str:
    """The GPT of figure 4.15 top to bottom: numbered stages with module names, shapes and sections;
    the opened transformer block framed, with how many blocks repeat it."""
    parts, in_block = [FLOW_CSS, "<div class='gpt-flow'>"], False
    for n, stage in enumerate(stages, 1):
        if stage.part == "block" and not in_block:
            parts.append(f"<div class='ar'>↓ into trf_blocks[0] … trf_blocks[{n_layers - 1}], "
                         f"{n_layers} block{'s' if n_layers > 1 else ''} in a row</div><div class='blk'><div class='h'>"
                         f"transformer block trf_blocks[{block}] (section 4.5; every block has these stages)</div>")
            in_block = True
        elif stage.part != "block" and in_block:
            parts.append("</div><div class='ar'>↓ after the last block</div>")
            in_block = False
        elif n > 1:
            arrow = "↓ ⤶ add the block's input (shortcut)" if stage.key in ("shortcut1", "block_out") else "↓"
            parts.append(f"<div class='ar'>{arrow}</div>")
        parts.append(_stage_box(n, stage, stage.key == selected))
    if note:
        parts.append(f"<div class='note'>{html.escape(note)}</div>")
    parts.append("</div>")
    return "".join(parts)


def _fold(vector: np.ndarray) -> tuple[np.ndarray, int]:
    """The first MAX_VALUES values as rows of FOLD_WIDTH (NaN-padded); also how many are shown."""
    shown = min(len(vector), MAX_VALUES)
    rows = math.ceil(shown / FOLD_WIDTH)
    grid = np.full(rows * FOLD_WIDTH, np.nan, dtype=np.float32)
    grid[:shown] = vector[:shown]
    return grid.reshape(rows, FOLD_WIDTH), shown


def _vector_trace(vector: np.ndarray, where: dict | None = None) -> tuple[dict, int]:
    grid, shown = _fold(vector)
    limit = max(float(np.nanmax(np.abs(grid))), 1e-6)
    index = (np.arange(grid.size).reshape(grid.shape)).astype(np.int32)
    return {"type": "heatmap", "z": grid, "customdata": index, "colorscale": "RdBu", "zmid": 0,
            "zmin": -limit, "zmax": limit, "hoverongaps": False, "colorbar": {"title": {"text": "value"}},
            "hovertemplate": "dim %{customdata}: %{z:.4f}<extra></extra>", **(where or {})}, shown


def stage_figure(numbers, stage, token_text: str, pieces_of) -> go.Figure:
    """One stage at one token: its vector as a grid of values, the attention row per head for `att`,
    the top logits or probabilities for the head; `pieces_of(ids)` turns ids into text."""
    at = f"{stage.module} at token {numbers.token} '{visible_whitespace(token_text)}'"
    if numbers.top_logits is not None:
        probs = stage.key == "next"
        values = numbers.top_probs if probs else numbers.top_logits
        labels = [f"{visible_whitespace(p)} ({i})" for p, i in zip(pieces_of(numbers.top_ids), numbers.top_ids)]
        trace = {"type": "bar", "orientation": "h", "x": values, "y": labels, "marker": {"color": "#66bb6a"},
                 "hovertemplate": "%{y}: %{x:.4f}<extra></extra>"}
        what = "probability" if probs else "logit"
        return _figure([trace], {"title": {"text": f"{at}: the {len(values)} largest ({what})"},
                                 "height": 120 + 26 * len(values), "yaxis": {"autorange": "reversed"},
                                 "xaxis": {"title": {"text": what}}})
    if numbers.vector is None:  # token ids: the id and its text
        piece = visible_whitespace(pieces_of(numbers.top_ids)[0])
        return _figure([], {"title": {"text": f"in_idx[0, {numbers.token}] = {numbers.top_ids[0]} ('{piece}')"},
                            "height": 120, "xaxis": {"visible": False}, "yaxis": {"visible": False}})
    size = len(numbers.vector)
    if numbers.attention is not None:
        heads, keys = numbers.attention.shape
        layout = _grid(1, 2, ["attention weights of this token (query) per head", "att output (out_proj)"],
                       0.12, 0.1, yaxes={"autorange": "reversed"})
        weights = {"type": "heatmap", "z": numbers.attention.astype(np.float32), "x": list(range(keys)),
                   "y": [f"head {h}" for h in range(heads)], "colorscale": "Blues", "zmin": 0, "zmax": 1,
                   "showscale": False, "hovertemplate": "%{y}, key %{x}: %{z:.4f}<extra></extra>", **_axes(0)}
        vector, shown = _vector_trace(numbers.vector, _axes(1))
        traces = [weights, vector]
        layout["xaxis"]["title"] = {"text": "key position (later ones are masked)"}
    else:
        vector, shown = _vector_trace(numbers.vector)
        traces, layout = [vector], {"yaxis": {"autorange": "reversed", "title": {"text": f"row of {FOLD_WIDTH}"}}}
    cut = f"first {shown:,} of {size:,}" if shown < size else f"{size:,}"
    rows = math.ceil(shown / FOLD_WIDTH)
    return _figure(traces, {**layout, "title": {"text": f"{at}: {cut} values"},
                            "height": max(260, min(640, 12 * rows + 160))})


def layer_norm_figure(stats: dict[str, np.ndarray], tokens: list[str], title: str) -> go.Figure:
    """Per token: mean (left) and variance (right) entering norm1, normalized, and after scale and shift."""
    labels = _labels(tokens)
    series = [("input", "block input x", "#90a4ae"), ("normalized", "(x − mean) / √(var + eps)", "#1e88e5"),
              ("output", "norm1(x): × scale + shift", "#ef6c00")]
    traces = []
    for n, stat in enumerate(("mean", "var")):
        for key, name, colour in series:
            traces.append({"type": "scatter", "mode": "lines+markers", "x": labels, "y": stats[f"{key}_{stat}"],
                           "name": name, "legendgroup": key, "showlegend": n == 0, "line": {"color": colour},
                           "hovertemplate": "%{x}: %{y:.4f}<extra>" + name + "</extra>", **_axes(n)})
    layout = _grid(1, 2, ["mean per token", "variance per token"], 0.08, 0.1, xaxes={"tickfont": {"size": 9}})
    return _figure(traces, {**layout, "title": {"text": title}, "height": 400,
                            "legend": {"orientation": "h", "y": -0.3, "x": 0}})


def gelu_figure(curves: dict[str, np.ndarray], acts: dict, title: str, bins: int = 60) -> go.Figure:
    """Left: GELU and ReLU (figure 4.8). Right: the block's inputs to GELU; the red ones (x < 0) come out
    of GELU slightly negative, where ReLU would give exactly 0."""
    traces = [
        {"type": "scatter", "mode": "lines", "x": curves["x"], "y": curves["gelu"], "name": "GELU",
         "line": {"color": "#1e88e5", "width": 3}, **_axes(0)},
        {"type": "scatter", "mode": "lines", "x": curves["x"], "y": curves["relu"], "name": "ReLU",
         "line": {"color": "#90a4ae", "dash": "dash"}, **_axes(0)},
    ]
    pre = acts["pre"]
    low, high = float(pre.min()), float(max(pre.max(), pre.min() + 1e-6))
    counts, edges = np.histogram(pre, bins=np.linspace(low, high, bins + 1))
    centres = (edges[:-1] + edges[1:]) / 2
    traces.append({"type": "bar", "x": centres, "y": counts, "name": "inputs to GELU (red: output < 0)",
                   "marker": {"color": np.where(centres < 0, "#e53935", "#43a047").tolist()},
                   "hovertemplate": "x ≈ %{x:.3f}: %{y} values<extra></extra>", **_axes(1)})
    layout = _grid(1, 2, ["GELU vs ReLU", f"GELU inputs: {acts['negative_share']:.1%} < 0 (outputs < 0)"],
                   0.08, 0.1)
    return _figure(traces, {**layout, "title": {"text": title}, "height": 380, "bargap": 0,
                            "legend": {"orientation": "h", "y": -0.2, "x": 0}})


def shortcut_figure(without: dict[str, float], with_: dict[str, float], title: str) -> go.Figure:
    """Mean |gradient| per layer of the toy network, without and with shortcuts, on a log scale."""
    names = list(without)
    traces = [
        {"type": "bar", "name": "without shortcuts", "x": names, "y": [without[n] for n in names],
         "marker": {"color": "#e53935"}, "hovertemplate": "%{x}: %{y:.3g}<extra>without</extra>"},
        {"type": "bar", "name": "with shortcuts", "x": names, "y": [with_[n] for n in names],
         "marker": {"color": "#1e88e5"}, "hovertemplate": "%{x}: %{y:.3g}<extra>with</extra>"},
    ]
    return _figure(traces, {"title": {"text": title}, "barmode": "group", "height": 380,
                            "yaxis": {"type": "log", "title": {"text": "mean |gradient| (log scale)"}},
                            "xaxis": {"title": {"text": "layer (first → last)"}},
                            "legend": {"orientation": "h", "y": 1.02, "x": 0}})


def residual_figure(norms: np.ndarray, tokens: list[str], title: str) -> go.Figure:
    """The residual stream: ‖hidden state‖ of every token (across) after every block (down)."""
    rows = ["embeddings"] + [f"after trf_blocks[{i}]" for i in range(norms.shape[0] - 1)]
    trace = {"type": "heatmap", "z": norms.astype(np.float32), "x": _labels(tokens), "y": rows,
             "colorscale": "Viridis", "colorbar": {"title": {"text": "L2 norm"}},
             "hovertemplate": "%{y}<br>token %{x}<br>norm %{z:.3f}<extra></extra>"}
    return _figure([trace], {"title": {"text": title}, "height": max(300, min(900, 20 * len(rows) + 160)),
                             "yaxis": {"autorange": "reversed"}, "xaxis": {"tickfont": {"size": 9}}})
