"""One live run view for the three training tabs (Pretrain, Classify, Instruct).

Any `llm.jobs.TrainingJob` is driven the same way from a Gradio generator event: the job runs in
a worker thread and pulls its own events; this view wakes every `POLL_S`, and yields an update
at least every `UPDATE_EVERY_S` — so an evaluation, a text sample or the final measurement never
freezes the page — with the same status line, the same live plots (every step's loss, raw and
smoothed, the evaluations on top, and the learning-rate schedule), the same Stop (the job ends at
its next micro-batch: `TrainingJob.request_stop`), the same time limit, the same messages, the
same saving into the session's folder and the same registration of the new model.

A tab builds the panel with `run_panel(prefix)`, writes a handler that checks its inputs and
calls `drive(...)` with a `start()` that builds the job and a `render(frame)` that turns a
`Frame` into its outputs, and wires Start/Stop with `wire(...)`.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import gradio as gr

from llm.limits import current

from .shared import (adopt_session_models, picker_update, register_session_model, saved_where, stop_run)

#: Seconds between two updates of the page while a job runs (an update is never further apart than this
#: plus one poll).
UPDATE_EVERY_S = 0.5
POLL_S = 0.1
#: Weight of the newest step in the smoothed loss (an exponential moving average).
SMOOTHING = 0.1
#: Most raw step points drawn; longer runs draw every k-th step (the smoothed curve keeps every step's weight).
MAX_POINTS = 1500
#: The two series of the comparison plot: the picked base, and a random model of its shape.
PRETRAINED, RANDOM = "the picked base", "random weights, same shape"
#: The colours of the loss plot's series.
LOSS_COLOURS = {"step loss": "#90caf9", "smoothed": "#1565c0", "train loss (evaluation)": "#ef6c00",
                "validation loss (evaluation)": "#2e7d32"}


def duration(seconds: float | None) -> str:
    """Seconds as '45 s', '9:31 min' or '2.5 h' ('…' while unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "…"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d} min"
    return f"{seconds / 3600:.1f} h"


def sentence(exc: Exception) -> str:
    """A library's message as a sentence: capitalised (unless it starts with a file name), with a full stop."""
    text = str(exc).strip()
    first = text.split(" ", 1)[0]
    if text and "." not in first and "/" not in first:
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def recipe_fill(values: tuple, reason: str, shown_reason: str | None) -> tuple:
    """A training form's values and the sentence naming its recipe; no change when that sentence is the one
    shown already, so that a run adding its model to the session (which re-runs the fill) keeps the edits."""
    if reason == shown_reason:
        return tuple(gr.update() for _ in range(len(values) + 1))
    return (*values, reason)


def recipe_changes(settings, recipe, base) -> str:
    """What a run changed in its base's recipe (the form names the recipe itself), for the run's status."""
    changed = settings.changes_from(recipe)
    return f"the recipe for {base}" + (f", changed here: {changed}" if changed else ", unchanged")


def recipe_for(base, session_models, choose: Callable):
    """(recipe, reason) for training `base`: `choose(random_base, parameters)` is `llm.recipes.spam_recipe`
    or `instruct_recipe`; the base counts as random when the catalog lists it as a preset, and its
    parameters are counted when it is available (the picker has loaded it already)."""
    from llm.recipes import is_random_base, recipe_reason

    from .shared import find_entry, get_model

    entry = find_entry(base, session_models)
    random_base = is_random_base(base, entry.kind if entry is not None else None)
    parameters = None
    if entry is not None and entry.available and not random_base:
        parameters = get_model(base, session_models).model.cfg.num_parameters()
    recipe = choose(random_base, parameters)
    return recipe, recipe_reason(random_base, entry.label if entry is not None else str(base), recipe)


# --- what a run has shown so far -----------------------------------------------------------------

@dataclass
class Live:
    """Every step's loss and learning rate, the evaluations, epochs and samples of one run so far."""

    total_steps: int = 0
    steps: list = field(default_factory=list)  # (step, loss, smoothed, lr)
    evals: list = field(default_factory=list)  # eval events
    epochs: list = field(default_factory=list)  # epoch events
    last: object = None  # the latest event

    def add(self, event) -> None:
        self.last = event
        self.total_steps = event.total_steps
        if event.kind == "step":
            prev = self.steps[-1][2] if self.steps else event.train_loss
            smooth = prev + SMOOTHING * (event.train_loss - prev) if math.isfinite(event.train_loss) else prev
            self.steps.append((event.step, event.train_loss, smooth, event.lr))
        elif event.kind == "eval":
            self.evals.append(event)
        elif event.kind == "epoch":
            self.epochs.append(event)

    @property
    def samples(self) -> list:
        return [e for e in self.evals if e.sample is not None]

    def _thinned(self) -> list:
        k = max(1, math.ceil(len(self.steps) / MAX_POINTS))
        return self.steps[::k] if k == 1 or self.steps[-1:] == self.steps[::k][-1:] else self.steps[::k] + self.steps[-1:]

    def loss_plot(self):
        """The loss plot's update: step loss, smoothed, and the evaluations, on axes that fit from the start.

        Drawn from the first evaluation on (right after step 1): the browser fixes the plot's series
        at its first data, so a first frame without evaluation points would hide them for good.
        """
        if not self.steps or not self.evals:
            return gr.update()
        import pandas as pd

        rows = []
        for step, loss, smooth, _ in self._thinned():
            rows += [(step, loss, "step loss"), (step, smooth, "smoothed")]
        for e in self.evals:
            for key, name in (("train_loss", "train loss (evaluation)"), ("val_loss", "validation loss (evaluation)")):
                if key in e.metrics and math.isfinite(e.metrics[key]):
                    rows.append((e.step, e.metrics[key], name))
        frame = pd.DataFrame(rows, columns=["step", "loss", "kind"]).astype({"step": "int64", "loss": "float64"})
        finite = frame["loss"][frame["loss"].map(math.isfinite)]
        top = float(finite.max()) if len(finite) else 1.0
        return gr.update(value=frame, x_lim=[0, max(self.total_steps, 1)], y_lim=[0, math.ceil(top * 1.05 * 10) / 10])

    def lr_plot(self):
        """The learning rate of every step (warm-up, then the schedule)."""
        if not self.steps:
            return gr.update()
        import pandas as pd

        frame = pd.DataFrame([(s, lr, "learning rate") for s, _, _, lr in self._thinned()],
                             columns=["step", "lr", "kind"]).astype({"step": "int64", "lr": "float64"})
        return gr.update(value=frame, x_lim=[0, max(self.total_steps, 1)])


@dataclass
class Frame:
    """One update of a run's view: the status line, what was seen so far and, at the end, the result."""

    status: str
    live: Live
    result: object = None  # llm.jobs.JobResult, in the final frame
    session_models: object = None  # the session's new model list, in the final frame
    picker: object = None  # the picker update selecting the new model, in the final frame
    baseline: Live | None = None  # the same recipe on a random model of the same shape, if asked for
    baseline_result: object = None  # its measured (unsaved) JobResult, in the final frame

    @property
    def final(self) -> bool:
        return self.result is not None


def status_line(intro: str, event, items: str = "tokens") -> str:
    """The live line: step, items seen, loss, learning rate, speed, elapsed and remaining time."""
    if event is None:
        return f"{intro}\n\nStarting…"
    return (f"{intro}\n\nStep **{event.step:,} / {event.total_steps:,}** · epoch {event.epoch} · "
            f"**{event.seen:,}** {items} seen · loss {event.train_loss:.3f} · lr {event.lr:.2e} · "
            f"{event.tokens_per_s:,.0f} {items}/s · elapsed {duration(event.elapsed)} · "
            f"remaining ≈ {duration(event.remaining)}")


def ending_line(result, stopped_by_user: bool, limit_s: float, items: str = "tokens") -> str:
    """The one ending message of every tab: done, stopped, or stopped by the time limit."""
    if not result.stopped:
        rate = result.seen / result.elapsed if result.elapsed else 0.0
        return (f"✅ Done: {result.steps:,} steps, {result.seen:,} {items} in {duration(result.elapsed)} "
                f"({rate:,.0f} {items}/s).")
    line = f"⏹ Stopped after {result.steps:,} of {result.total_steps:,} steps; what was trained is saved."
    if not stopped_by_user:
        line += f" This lab limits a run to {duration(limit_s)}."
    return line


# --- driving a job ---------------------------------------------------------------------------------

def _work(start: Callable, finish: Callable, stop: threading.Event, out: queue.Queue) -> None:
    """The worker thread: build the job, pull its events, then `finish(job)` (measure, and save)."""
    try:
        job = start()
        out.put(("job", job))
        for event in job:
            out.put(("event", event))
            if stop.is_set():
                break
        out.put(("finishing", None))
        out.put(("result", finish(job)))
    except Exception as exc:  # noqa: BLE001  (handed to the page as a sentence, never a traceback)
        out.put(("error", exc))


def _follow(start: Callable, finish: Callable, intro: str, stop: threading.Event, live: Live, deadline: float,
            items: str):
    """Run one job in a worker thread; yield ("status", text) every `UPDATE_EVERY_S`, then ("result", result)."""
    q = queue.Queue()
    worker = threading.Thread(target=_work, args=(start, finish, stop, q), daemon=True, name="training-job")
    job, phase, last_yield, finished = None, "Preparing the data and the model…", 0.0, False
    worker.start()
    try:
        while True:
            try:
                kind, value = q.get(timeout=POLL_S)
            except queue.Empty:
                kind, value = None, None
            if job is not None and (stop.is_set() or time.perf_counter() > deadline):
                stop.set()
                job.request_stop()
            if kind == "job":
                job, phase = value, None
            elif kind == "event":
                live.add(value)
                phase = None
            elif kind == "finishing":
                steps = live.last.step if live.last is not None else 0
                phase = (f"⏹ Stopping after step {steps:,}: measuring and saving…" if stop.is_set()
                         else "Measuring the final model and saving…")
            elif kind == "error":
                raise gr.Error(sentence(value)) if isinstance(value, (ValueError, FileNotFoundError)) else value
            elif kind == "result":
                finished = True
                yield "result", value
                return
            now = time.perf_counter()
            if now - last_yield >= UPDATE_EVERY_S or kind in ("job", "finishing"):
                last_yield = now
                text = f"{intro}\n\n{phase}" if phase else status_line(intro, live.last, items)
                if stop.is_set() and phase is None:
                    text += "\n\n⏹ Stopping…"
                yield "status", text
    finally:  # the page went away or the event was cancelled: let the job end and save by itself
        if not finished:
            stop.set()
            if job is not None:
                job.request_stop()


def drive(start: Callable, path_for: Callable, intro: str, stop: threading.Event, *, label: Callable,
          task: str, session_models, in_catalog: bool, picker_tasks=None, items: str = "tokens",
          baseline: Callable | None = None):
    """Run a job, yielding `Frame`s: at once, then every `UPDATE_EVERY_S`, then the result.

    start() builds the `TrainingJob` (a ValueError becomes a gr.Error sentence); path_for(job) names
    its checkpoint; label(result) names the model in the pickers, where it is registered for this
    session and selected. Setting `stop` (the Stop button) ends the job at its next micro-batch; so
    does the lab's time limit. Closing the generator (a cancelled event) stops the job too.
    baseline(), when given, builds the same recipe's job on a random model of the base's shape
    (`llm.catalog.random_twin`): it runs after the job unless that was stopped, and is measured,
    not saved; its view is `frame.baseline` and its result `frame.baseline_result`.
    """
    limit = current().max_train_seconds
    started = time.perf_counter()
    live = Live()
    yield Frame(f"{intro}\n\nPreparing the data and the model…", live)
    for kind, value in _follow(start, lambda job: job.finish(path_for(job)), intro, stop, live, started + limit, items):
        if kind == "status":
            yield Frame(value, live)
    result = value
    by_limit = time.perf_counter() - started > limit
    user_stop = stop.is_set() and not by_limit
    ending = f"{ending_line(result, user_stop, limit, items)} Saved `{result.path.name}` ({saved_where(in_catalog)})."
    twin, twin_result = None, None
    if baseline is not None and not stop.is_set():
        twin = Live()
        twin_intro = (f"{intro}\n\n{ending}\n\n**Now the same recipe on a random model of the same shape**, "
                      "to see what pretraining bought (measured, not saved):")
        for kind, value in _follow(baseline, lambda job: job.measure(), twin_intro, stop, twin, started + limit,
                                   items):
            if kind == "status":
                yield Frame(value, live, baseline=twin)
        twin_result = value
    models = register_session_model(session_models, result.path, label(result), task=task)
    key = str(result.path.resolve())
    yield Frame(f"{intro}\n\n{ending}", live, result, models, picker_update(models, tasks=picker_tasks, select=key),
                baseline=twin, baseline_result=twin_result)


# --- the panel and its wiring ------------------------------------------------------------------------

def comparison_plot(live: Live, twin: Live | None):
    """Validation loss at every evaluation of the run and of its random twin (same recipe, same shape)."""
    if twin is None or not twin.evals:
        return gr.update()
    import pandas as pd

    rows = [(e.step, e.metrics["val_loss"], name) for name, run in ((PRETRAINED, live), (RANDOM, twin))
            for e in run.evals if math.isfinite(e.metrics.get("val_loss", math.nan))]
    frame = pd.DataFrame(rows, columns=["step", "validation loss", "base"]).astype({"step": "int64"})
    return gr.update(value=frame, visible=True, x_lim=[0, max(live.total_steps, twin.total_steps, 1)])


@dataclass
class RunPanel:
    status: gr.Markdown
    loss_plot: gr.LinePlot
    lr_plot: gr.LinePlot
    compare_plot: gr.LinePlot | None  # with `run_panel(compare=True)`


def run_panel(prefix: str, extra: Callable | None = None, compare: bool = False) -> RunPanel:
    """The status line, the live loss plot and (folded) the learning-rate plot; `extra()` lays out a
    tab's own view (samples, accuracy) beside the loss plot, or below it where the panel is narrow.
    `compare` adds the (hidden until used) plot of `comparison_plot`."""
    status = gr.Markdown(elem_id=f"{prefix}-status")
    with gr.Row():
        loss_plot = gr.LinePlot(None, x="step", y="loss", color="kind", color_map=LOSS_COLOURS,
                                title="Loss at every step",
                                x_title="optimizer step", y_title="cross-entropy loss", height=320,
                                elem_id=f"{prefix}-loss-plot", scale=3, min_width=420)
        if extra is not None:
            with gr.Column(scale=2):
                extra()
    compare_plot = gr.LinePlot(None, x="step", y="validation loss", color="base",
                               color_map={PRETRAINED: "#2e7d32", RANDOM: "#757575"}, height=260, visible=False,
                               title="Pretraining pays: the same recipe from pretrained and from random weights",
                               x_title="optimizer step", elem_id=f"{prefix}-compare-plot") if compare else None
    with gr.Accordion("Learning-rate schedule (appendix D)", open=False):
        lr_plot = gr.LinePlot(None, x="step", y="lr", color="kind", height=200, x_title="optimizer step",
                              y_title="learning rate", elem_id=f"{prefix}-lr-plot")
    return RunPanel(status, loss_plot, lr_plot, compare_plot)


def wire(ctx, start_btn, stop_btn, handler, inputs, outputs, run_state, pending, *, api_name: str,
         stop_api: str, register_api: str, concurrency_id: str | None = None) -> None:
    """Start and Stop of a training tab, the same in every tab.

    Stop sets the run's Event instead of `cancels=`: the job then ends at its next micro-batch,
    measures and saves what it trained and registers it (a cancelled generator could do neither),
    and calls from gradio_client can stop it too. The new model reaches the session in two steps
    (`adopt_session_models`): the run selects it in its picker, then `.then` adopts the list.
    """
    start_btn.click(handler, inputs, outputs, api_name=api_name, show_progress_on=[outputs[0]],
                    concurrency_id=concurrency_id or api_name,
                    concurrency_limit=current().training_concurrency).then(
        adopt_session_models, [pending, ctx.session_models], [ctx.session_models], api_name=register_api)
    stop_btn.click(stop_run, [run_state], [outputs[0]], api_name=stop_api)
