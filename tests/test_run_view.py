"""The one job shape (llm.jobs) and the one live view (llm.ui.run_view) that drives it.

Each of the three tasks runs through `drive` the same way; the view keeps updating while a job
is busy in a long evaluation; Stop ends a job in the middle of a step. Timings through a real
server (gaps between updates, first-update and stop latency) are measured by
benchmarks/bench_run_view.py, not asserted here.
"""
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("gradio")

from llm.checkpoints import Checkpoint, load_checkpoint  # noqa: E402
from llm.config import DEFAULT_TEXT  # noqa: E402
from llm.jobs import JobResult  # noqa: E402
from llm.model import GPTModel  # noqa: E402
from llm.training import EVENT_KINDS, TrainEvent  # noqa: E402
from llm.ui.run_view import Live, drive  # noqa: E402


def _drive(job_factory, tmp_path, task, items="tokens", stop=None):
    stop = stop or threading.Event()
    frames = list(drive(job_factory, lambda job: tmp_path / f"{task}.safetensors", "intro", stop,
                        label=lambda r: f"{task} model", task=task, session_models=[], in_catalog=False,
                        items=items))
    return frames


def _pretrain_job(tiny_cfg):
    from llm.pretraining import load_text, pretrain

    return lambda: pretrain(load_text(DEFAULT_TEXT), "lecture", model=GPTModel(tiny_cfg), context_length=32,
                            max_steps=4, epochs=None, eval_every=2, eval_batches=1, sample_tokens=3)


def _spam_job(tiny_cfg, tmp_path):
    from llm.classifier import finetune_spam

    return lambda: finetune_spam(Checkpoint(GPTModel(tiny_cfg.with_(context_length=8)), source="tiny.safetensors"),
                                 out=tmp_path, policy="head", lr=1e-3, epochs=1, max_steps=4, batch_size=64,
                                 eval_every=2, eval_batches=1)


def _instruct_job(tiny_cfg):
    from llm.alpaca import book_splits
    from llm.instruct import finetune_instruct

    data = book_splits().train
    return lambda: finetune_instruct(GPTModel(tiny_cfg), data[:8], data[8:12], max_steps=4, epochs=None,
                                     batch_size=4, eval_every=2, eval_batches=1, sample_tokens=3)


@pytest.mark.parametrize("task", ["lm", "classifier", "instruct"])
def test_each_task_runs_through_the_one_protocol_and_view(task, tiny_cfg, tmp_path):
    factory = {"lm": lambda: _pretrain_job(tiny_cfg), "classifier": lambda: _spam_job(tiny_cfg, tmp_path),
               "instruct": lambda: _instruct_job(tiny_cfg)}[task]()
    frames = _drive(factory, tmp_path, task)
    assert frames[0].status.endswith("Preparing the data and the model…") and frames[0].result is None
    final = frames[-1]
    result = final.result
    assert isinstance(result, JobResult) and not result.stopped and result.steps == 4 and result.task == task
    assert [s[0] for s in final.live.steps] == [1, 2, 3, 4]  # every step reached the view
    assert {e.kind for e in final.live.evals} == {"eval"} and all(e.kind in EVENT_KINDS for e in final.live.evals)
    ckpt = load_checkpoint(result.path)
    assert ckpt.task == task and ckpt.training["steps"] == 4 and ckpt.training["stopped"] is False
    assert "✅ Done: 4 steps" in final.status and final.session_models[-1]["task"] == task
    assert final.picker["value"] == str(Path(result.path).resolve())


class SlowJob:
    """A job shaped like llm.jobs.TrainingJob whose evaluation takes `eval_s` and whose steps check Stop
    between 'micro-batches' of `micro_s` each."""

    def __init__(self, steps=6, eval_s=0.0, micro_s=0.02, micro_per_step=1):
        self.steps, self.eval_s, self.micro_s, self.micro = steps, eval_s, micro_s, micro_per_step
        self._stop, self.last_event, self.done_steps = False, None, 0

    def request_stop(self):
        self._stop = True

    def __iter__(self):
        start = time.perf_counter()
        for step in range(1, self.steps + 1):
            for _ in range(self.micro):
                if self._stop:
                    return
                time.sleep(self.micro_s)
            self.done_steps = step
            event = TrainEvent("step", step, self.steps, 1, step * 10, 1.0 / step, {}, 1e-3, 100.0,
                               time.perf_counter() - start)
            self.last_event = event
            yield event
            if step == 1 and self.eval_s:
                time.sleep(self.eval_s)  # one long evaluation
                yield TrainEvent("eval", 1, self.steps, 1, 10, 1.0, {"train_loss": 1.0, "val_loss": 1.1})
        self.last_event = TrainEvent("done", self.steps, self.steps, 1, self.steps * 10, 0.1)
        yield self.last_event

    def finish(self, path):
        Path(path).write_bytes(b"")
        return JobResult(Path(path), "lm", {"val_loss": 1.0}, self.done_steps, self.steps, self.done_steps * 10,
                         0.1, self.last_event is None or self.last_event.kind != "done")


def test_the_view_keeps_updating_through_a_long_evaluation(tmp_path):
    seen = []
    for frame in drive(lambda: SlowJob(steps=3, eval_s=2.5), lambda job: tmp_path / "slow.safetensors", "intro",
                       threading.Event(), label=lambda r: "slow", task="lm", session_models=[],
                       in_catalog=False):
        seen.append((time.perf_counter(), len(frame.live.steps), frame.final))
    during_eval = [t for t, steps, _ in seen if steps == 1]
    # updates every UPDATE_EVERY_S (0.5 s) while the job sits in its 2.5 s evaluation
    assert len(during_eval) >= 3, seen
    assert seen[-1][2]


def test_stop_ends_a_job_in_the_middle_of_a_long_step(tmp_path):
    stop = threading.Event()
    job = SlowJob(steps=5, micro_s=0.05, micro_per_step=400)  # a step of 20 s, checking Stop every 0.05 s
    frames = []
    for frame in drive(lambda: job, lambda j: tmp_path / "stopped.safetensors", "intro", stop,
                       label=lambda r: "stopped", task="lm", session_models=[], in_catalog=False):
        frames.append(frame)
        if len(frames) == 3:
            stop.set()  # what the Stop button does
    result = frames[-1].result
    assert result.stopped and result.steps == 0 and job.done_steps == 0
    assert "⏹ Stopped after 0 of 5 steps; what was trained is saved." in frames[-1].status


def test_the_loss_plot_has_every_step_smoothed_and_axes_from_the_first_point():
    live = Live()
    live.add(TrainEvent("step", 1, 100, 1, 256, 10.94, {}, 1e-4))
    assert live.loss_plot() == {"__type__": "update"}  # not before the first evaluation (its series would be lost)
    live.add(TrainEvent("eval", 1, 100, 1, 256, 10.94, {"train_loss": 10.9, "val_loss": 10.95}, 1e-4))
    update = live.loss_plot()
    assert update["x_lim"] == [0, 100] and update["y_lim"][0] == 0 and update["y_lim"][1] >= 10.94
    frame = update["value"]
    assert list(frame["kind"]) == ["step loss", "smoothed", "train loss (evaluation)", "validation loss (evaluation)"]
    assert frame["step"].dtype == "int64"
    for step in range(2, 101):
        live.add(TrainEvent("step", step, 100, 1, 256 * step, 10.94 - step * 0.05, {}, 1e-4))
    smoothed = [s for _, _, s, _ in live.steps]
    assert smoothed[-1] > live.steps[-1][1]  # the moving average lags behind a falling loss


def test_training_run_stops_between_micro_batches_and_resumes_exactly(tiny_cfg):
    """`TrainRun.request_stop` drops an unfinished step's micro-batches: the weights are those after the
    last whole step and the position in the epoch is given back."""
    from llm.pretraining import lm_loss, make_loaders, load_text
    from llm.training import TrainConfig, train

    data = make_loaders(load_text(DEFAULT_TEXT), 16, batch_size=2)
    torch.manual_seed(0)
    run = train(GPTModel(tiny_cfg), data.train_loader, None, lm_loss,
                TrainConfig(lr=1e-3, epochs=None, max_steps=5, grad_accum=3, eval_every=99))
    events = []
    for event in run:
        events.append(event)
        if event.kind == "step" and event.step == 2:
            run.request_stop()
    assert [e.step for e in events if e.kind == "step"] == [1, 2] and events[-1].kind != "done"
    assert run.state.batch_in_epoch == 6 and all(p.grad is None for p in run.model.parameters())


def test_a_run_adding_its_model_to_the_session_keeps_the_form_as_edited():
    """The recipe fill runs again when the session's models change (after every run); the form then keeps
    the visitor's values, and only a base with another recipe sentence refills it (both training tabs)."""
    from llm.paths import BUNDLED_KEY
    from llm.recipes import SPAM_SCRATCH, SPAM_SMALL
    from llm.ui import classify_tab, instruct_tab

    *values, reason = classify_tab.fill_recipe(BUNDLED_KEY)
    assert values == [SPAM_SMALL.policy, SPAM_SMALL.epochs, SPAM_SMALL.lr, SPAM_SMALL.batch_size]
    unchanged = classify_tab.fill_recipe(BUNDLED_KEY, None, reason)
    assert len(unchanged) == 5 and all(u == {"__type__": "update"} for u in unchanged)
    *values, other = classify_tab.fill_recipe("lab-tiny", None, reason)
    assert values[:3] == [SPAM_SCRATCH.policy, SPAM_SCRATCH.epochs, SPAM_SCRATCH.lr] and other != reason
    *_, reason = instruct_tab.fill_recipe(BUNDLED_KEY)
    assert all(u == {"__type__": "update"} for u in instruct_tab.fill_recipe(BUNDLED_KEY, None, reason))
