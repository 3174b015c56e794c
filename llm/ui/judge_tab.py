"""Judge tab (section 7.8): score model answers with Llama 3 served by Ollama.

The handlers are thin: `llm.judge` checks the server, sends the book's prompt with
its deterministic options, parses the replies and summarises them.

Hand-off from the chat tab: `responses_state(ctx)` returns ONE per-session
`gr.State` shared by both tabs (created by whichever tab asks first). The chat tab
writes a list of records in the book's format (instruction, input, output,
model_response, ...) to it as an event output; this tab then offers "From the chat
tab" as its input and selects it.
"""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import gradio as gr

from llm import judge
from llm.limits import on_spaces

from .lecture import ADVANCED, CONTROLS, RESULT
from .shared import SESSION_TTL_S

TITLE = "Judge"

EXPLAIN = """### Section 7.8 · Scoring answers with a larger LLM
The book evaluates its fine-tuned GPT-2 by asking **Llama 3**, served locally by
[Ollama](https://ollama.com), to score each response against the reference answer from 0 to 100
(*"Respond with the integer number only"*), with deterministic options (seed 123, temperature 0,
`num_ctx` 2048). Start a server with `ollama serve` and `ollama pull llama3`, press **Check**, pick
the responses to score, then **Score**. Replies without a usable number count as parse failures (never
as 0). Compare two response columns to get the paired difference A − B; **repeat** scores each item k
times (seeds 123, 124, …) to show how much the judge itself varies — at temperature 0 only the server's
own nondeterminism shows, so raise the judge temperature to see sampling spread."""

SOURCES = [("Bundled example: the book's 110 GPT-2 medium answers", "example"),
           ("Uploaded JSON / CSV file", "upload"),
           ("Responses from the chat tab", "chat")]
NO_COLUMN = "(none)"
SHOWN_COLUMNS = ["index", "column", "score", "scores", "spread", "status", "instruction", "reference",
                 "response", "judge_reply", "error"]
UPDATE_EVERY_S = 0.4  # how often the table and histogram are resent while scores arrive


def responses_state(ctx) -> gr.State:
    """The per-session `gr.State` through which the chat tab hands records to this tab."""
    state = getattr(ctx, "judge_responses", None)
    if state is None:
        state = gr.State(None, time_to_live=SESSION_TTL_S)
        ctx.judge_responses = state
    return state


# --- handlers ------------------------------------------------------------------------

def check(host, model):
    """Preflight: is there a server at `host` with the judge model? Fills the model dropdown."""
    result = judge.check_server(host, (model or judge.DEFAULT_MODEL).strip())
    icon = "✅" if result.ok else "⚠️"
    value = result.model or model or judge.DEFAULT_MODEL  # the server's name once found
    choices = list(dict.fromkeys([*result.models, value]))
    return f"{icon} {result.message}", gr.update(choices=choices, value=value)


def load_records(source, upload, handoff) -> list[dict]:
    """The records of the chosen input; problems become a `gr.Error` with what to do."""
    try:
        if source == "upload":
            if not upload:
                raise gr.Error("Upload a JSON or CSV file first (instruction, input, output and a response column).")
            return judge.load_entries(upload)
        if source == "chat":
            if not handoff:
                raise gr.Error("The chat tab has not handed over any responses yet: generate responses "
                               "for the test set there and send them to the judge.")
            judge.check_entries(handoff, name="the chat tab's responses")
            return list(handoff)
        return judge.load_example()
    except (ValueError, FileNotFoundError) as exc:  # JudgeError is a ValueError
        raise gr.Error(str(exc)) from None


def describe_records(source, upload, handoff, current_a=None, current_b=None):
    """How many records the input holds and its response columns (fills the A/B dropdowns)."""
    if source == "upload" and not upload:
        return "Upload a file to score.", gr.update(choices=[], value=None), gr.update(choices=[NO_COLUMN], value=NO_COLUMN)
    if source == "chat" and not handoff:
        return ("No responses from the chat tab yet.", gr.update(choices=[], value=None),
                gr.update(choices=[NO_COLUMN], value=NO_COLUMN))
    entries = load_records(source, upload, handoff)
    columns = judge.response_columns(entries)
    a = current_a if current_a in columns else columns[0]
    # a second response column is compared with the first unless the user picked another
    b = current_b if current_b in columns and current_b != a else (columns[1] if len(columns) > 1 else NO_COLUMN)
    info = (f"**{len(entries)}** records · response columns: "
            f"{', '.join(f'`{c}`' for c in columns)}")
    return info, gr.update(choices=columns, value=a), gr.update(choices=[NO_COLUMN, *columns], value=b)


def on_upload(path, handoff, current_a, current_b):
    """A file was uploaded (or removed): select it as the input and describe it."""
    source = "upload" if path else "example"
    return (gr.update(value=source), *describe_records(source, path, handoff, current_a, current_b))


def example_info() -> str:
    import json

    entries = json.loads(judge.EXAMPLE_FILE.read_text(encoding="utf-8"))
    return f"**{len(entries)}** records · response columns: `model_response`"


def from_chat(handoff):
    """The chat tab handed records over: switch the input to them."""
    return gr.update(value="chat") if handoff else gr.update()


def score_histogram(rows: list[dict], rubric: judge.Rubric):
    """Scores per response column as overlaid histograms, one bar per scale step (plotly)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    size = 5 if rubric.high - rubric.low > 10 else 1
    columns = list(dict.fromkeys(r["column"] for r in rows))
    for column in columns:
        scores = [r["score"] for r in rows if r["column"] == column and r["score"] is not None]
        fig.add_trace(go.Histogram(x=scores, name=column, opacity=0.75 if len(columns) > 1 else 1.0,
                                   xbins=dict(start=rubric.low - size / 2, end=rubric.high + size / 2, size=size)))
    fig.update_layout(template="plotly_white", barmode="overlay", height=320, margin=dict(l=50, r=20, t=50, b=40),
                      title=f"Judge scores ({rubric.name})", xaxis_title="score", yaxis_title="responses",
                      xaxis_range=[rubric.low - size, rubric.high + size], showlegend=len(columns) > 1)
    return fig


def _table(rows: list[dict], repeat_k: int = 1):
    import pandas as pd

    shown = SHOWN_COLUMNS if repeat_k > 1 else [c for c in SHOWN_COLUMNS if c not in ("scores", "spread")]
    frame = pd.DataFrame(rows, columns=judge.TABLE_COLUMNS)[shown]
    return frame.astype(object).where(frame.notna(), "")


def _progress_line(done, total, results, start, note=""):
    elapsed = time.perf_counter() - start
    failures = sum(r.status == "parse failure" for r in results)
    errors = sum(r.status == "error" for r in results)
    rate = f" · {done / elapsed:.1f} scores/s" if elapsed > 0 and done else ""
    line = f"**{done} / {total}** scored{rate} · parse failures: **{failures}** · errors: **{errors}**"
    return f"{line}\n\n{note}" if note else line


def score(host, model, rubric, parallel, repeat_k, timeout, temperature, source, upload, handoff,
          column_a, column_b, run_state=None, progress=gr.Progress()):
    """Score the responses, streaming (progress, summary, table, histogram, csv, json, state)."""
    entries = load_records(source, upload, handoff)
    keys = [k for k in (column_a, column_b) if k and k != NO_COLUMN]
    try:
        keys = judge.check_entries(entries, keys or None)[:2]
        rubric = judge.get_rubric(rubric)
        parallel, timeout, _, repeat_k, temperature = judge.check_run_settings(parallel, timeout, 2, repeat_k,
                                                                               temperature)
        # before any progress: a missing server or model is a plain error with the fix
        model = judge.require_model(host, (model or judge.DEFAULT_MODEL).strip())
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
    stop = threading.Event()
    total = len(entries) * len(keys) * repeat_k
    results, start, last = [], time.perf_counter(), 0.0
    same = gr.update()
    yield _progress_line(0, total, results, start, f"Scoring with **{model}**…"), same, same, same, same, same, stop
    note = ""
    stream = judge.score_responses(entries, keys, model, host, rubric, parallel, timeout, 2,
                                   repeat_k, stop, temperature=temperature)
    try:
        for result in stream:
            results.append(result)
            progress((len(results), total), desc="Scoring")
            if time.perf_counter() - last >= UPDATE_EVERY_S:
                last = time.perf_counter()
                rows = judge.results_table(entries, results)
                yield (_progress_line(len(results), total, results, start),
                       judge.format_summary(judge.summarize(results, keys)), _table(rows, repeat_k),
                       score_histogram(rows, rubric), same, same, stop)
        if stop.is_set():
            note = "⏹ Stopped: the scores so far are kept."
    except judge.JudgeError as exc:  # the server or the model went away mid-run
        note = f"⚠️ {exc}"
    rows = judge.results_table(entries, results)
    summary = judge.summarize(results, keys)
    folder = Path(tempfile.mkdtemp(prefix="judge-scores-"))
    meta = {"judge_model": model, "host": judge.resolve_host(host), "rubric": rubric.name,
            "repeat_k": repeat_k, "temperature": temperature}
    csv_path = judge.save_scores(folder / "scores.csv", entries, results, summary)
    json_path = judge.save_scores(folder / "scores.json", entries, results, summary, meta)
    note = note or f"✅ Done in {time.perf_counter() - start:.1f} s."
    yield (_progress_line(len(results), total, results, start, note), judge.format_summary(summary),
           _table(rows, repeat_k), score_histogram(rows, rubric), str(csv_path), str(json_path), None)


def stop_scoring(run_state):
    """Stop the run: it ends at the next score and keeps the scores so far."""
    if isinstance(run_state, threading.Event):
        run_state.set()
        return "⏹ Stopping…"
    return gr.update()


# --- layout --------------------------------------------------------------------------

def build(ctx) -> None:
    gr.Markdown(EXPLAIN)
    handoff = responses_state(ctx)
    run_state = gr.State(None, time_to_live=SESSION_TTL_S)
    # The server, the responses and Score beside the scores (stacked on a phone); the scoring
    # settings and the columns to compare follow the buttons.
    with gr.Row():
        with gr.Column(scale=4, min_width=300, elem_classes=[CONTROLS]):
            with gr.Row():
                # On a shared Space only the operator's host is allowed (`judge.resolve_host`): shown, not editable.
                host = gr.Textbox(value=judge.resolve_host(), label="Ollama host (OLLAMA_HOST)", scale=1,
                                  interactive=not on_spaces(), elem_id="judge-host", min_width=160)
                model = gr.Dropdown(choices=[judge.DEFAULT_MODEL], value=judge.DEFAULT_MODEL, allow_custom_value=True,
                                    label="Judge model (from the server's list after Check)", scale=1,
                                    elem_id="judge-model", min_width=160)
                check_btn = gr.Button("Check", scale=0, min_width=90, elem_id="judge-check")
            server_status = gr.Markdown("Press **Check** to see whether the server and model are ready.",
                                        elem_id="judge-server-status")
            with gr.Row(equal_height=True):
                source = gr.Radio(SOURCES, value="example", label="Responses to score", scale=3,
                                  elem_id="judge-source")
                upload = gr.File(label="JSON or CSV: instruction, input, output + response columns",
                                 file_types=[".json", ".csv", ".jsonl"], type="filepath", height=70, scale=2,
                                 elem_id="judge-upload", min_width=180)
            with gr.Row():
                score_btn = gr.Button("Score", variant="primary", elem_id="judge-score")
                stop_btn = gr.Button("Stop (keeps the scores)", elem_id="judge-stop")
            with gr.Row(equal_height=True):
                records_info = gr.Markdown(example_info(), elem_id="judge-records")
                column_a = gr.Dropdown(["model_response"], value="model_response", label="response column A",
                                       allow_custom_value=True,
                                       elem_id="judge-column-a")
                column_b = gr.Dropdown([NO_COLUMN], value=NO_COLUMN, label="column B (optional, to compare)",
                                       allow_custom_value=True,
                                       elem_id="judge-column-b")
            with gr.Accordion("Scoring settings: scale, parallel requests, repeats, timeout, temperature",
                              open=False, elem_id="judge-settings", elem_classes=[ADVANCED]):
                with gr.Row():
                    rubric = gr.Radio(["0-100", "1-5"], value="0-100", label="Scale (0-100 is the book's prompt)",
                                      elem_id="judge-rubric")
                    parallel = gr.Slider(1, 16, value=4, step=1, label="requests in parallel", elem_id="judge-parallel")
                    repeat_k = gr.Slider(1, 10, value=1, step=1, label="repeat each score k times",
                                         elem_id="judge-repeat")
                with gr.Row():
                    timeout = gr.Number(value=60, label="timeout per reply (s)", minimum=1, elem_id="judge-timeout")
                    temperature = gr.Number(value=0.0, minimum=0, step=0.1, label="judge temperature (0 = the book's)",
                                            elem_id="judge-temperature")
        with gr.Column(scale=3, min_width=360, elem_classes=[RESULT]):
            progress_md = gr.Markdown(elem_id="judge-progress")
            summary_md = gr.Markdown(elem_id="judge-summary")
            histogram = gr.Plot(label="score histogram", elem_id="judge-histogram")
            with gr.Row():
                csv_file = gr.File(label="scores (CSV)", interactive=False, elem_id="judge-csv", min_width=160)
                json_file = gr.File(label="scores (JSON)", interactive=False, elem_id="judge-json", min_width=160)
    table = gr.Dataframe(headers=SHOWN_COLUMNS, interactive=False, wrap=True, max_height=500,
                         elem_id="judge-table")

    check_btn.click(check, [host, model], [server_status, model], api_name="check")
    describe_inputs = [source, upload, handoff, column_a, column_b]
    describe_outputs = [records_info, column_a, column_b]
    source.change(describe_records, describe_inputs, describe_outputs, api_name="records")
    upload.change(on_upload, [upload, handoff, column_a, column_b], [source, *describe_outputs], api_name=False)
    handoff.change(from_chat, [handoff], [source], api_name=False)
    # Stop sets the run's Event rather than `cancels=`: the run then ends on its own and still
    # yields the final table and the downloads (and calls from gradio_client can stop it too).
    score_btn.click(score, [host, model, rubric, parallel, repeat_k, timeout, temperature, source, upload,
                            handoff, column_a, column_b, run_state],
                    [progress_md, summary_md, table, histogram, csv_file, json_file, run_state],
                    api_name="score", show_progress_on=[progress_md], concurrency_limit=4)
    stop_btn.click(stop_scoring, [run_state], [progress_md], api_name="stop")
