"""What every tab shares: the model picker, this session's models, and small UI helpers.

`LabContext` is built once inside the app's `gr.Blocks` and handed to every tab's
`build(ctx)`. It holds:

- `ctx.picker`: the shared model dropdown (value = a catalog key: a preset name,
  a GPT-2 size, or a checkpoint path);
- `ctx.session_models`: a per-session `gr.State` listing the models trained or
  uploaded in THIS session (small dicts, never tensors: the models themselves live
  in `llm.catalog`'s one bounded cache shared by all sessions);
- `ctx.upload`: an upload button for a `.safetensors` or the book's `.pth` checkpoint;
- `ctx.session_dir`: a per-session `gr.State` naming THIS session's folder for the
  checkpoints its training tabs write (a temporary folder, made on first use and
  removed when the session ends). Only what the user asks to keep (`ctx.keep_checkbox`)
  goes to the lab's checkpoints folder, which every session lists.

A tab's handler takes `ctx.picker` and `ctx.session_models` as inputs and calls
`ctx.get_model(choice, session_models, tasks=...)`, which checks the choice and
returns the cached `Checkpoint` (shared, eval mode: never train it in place; use
`llm.catalog.load_model(key, fresh=True)` for a private copy).

A training tab saves into `checkpoint_folder(keep, session_dir)` (and writes the folder
back to `ctx.session_dir`), then adds the file to this session's pickers with
`register_session_model`, writing `ctx.session_models` as an output:

    def on_done(path, session_models):
        return register_session_model(session_models, path, "my lecture model")
    btn.click(on_done, [path_box, ctx.session_models], [ctx.session_models])

Every picker (the shared one and those made by `ctx.model_picker(label, tasks=...)`)
refreshes when the state changes; only this session sees the model.
`ctx.on_model(fn, outputs)` runs `fn(choice, session_models)` on page load and on every
change of the shared picker (e.g. to fit sliders to the model); `ctx.demo` is the Blocks.

Nothing heavy is imported at module import: torch and the catalog load on first use.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from llm.config import GPT2_SIZES, PRESETS
from llm.paths import BUNDLED_KEY, BUNDLED_MODEL, default_model_key

from .errors import as_gr_error, as_sentence, explain_all_errors, explain_errors  # noqa: F401 - for the tabs

#: How long a session's list of models lives on the server after its last use (seconds).
SESSION_TTL_S = 3 * 3600
#: The model picked when the page opens: GPT-2 small where cached, else the bundled Wharton GPT.
DEFAULT_MODEL = default_model_key()
#: Text longer than this is cut before tokenizing, with a notice (chars).
MAX_TEXT_CHARS = 20_000
CHECKPOINT_TYPES = [".safetensors", ".pth"]


# --- this session's models ----------------------------------------------------------

def register_session_model(session_models: list | None, path: str | os.PathLike, label: str,
                           task: str = "lm", kind: str = "session") -> list[dict]:
    """Return a new session list with the checkpoint at `path` added (or relabelled).

    `kind` is "session" for a model trained here and "upload" for an uploaded file.
    Write the result to `ctx.session_models`; every picker of the session refreshes.
    """
    path = str(Path(path).resolve())
    entries = [dict(e) for e in (session_models or []) if e["path"] != path]
    entries.append({"path": path, "label": label, "task": task, "kind": kind})
    return entries


SESSION_FOLDER_PREFIX = "llm-lab-session-"


def session_folder(current_dir) -> Path:
    """This session's folder for checkpoints (made on first use; removed when the session ends).

    Its name carries the server's process id, so that a later start can tell the folders
    of a crashed server from those of one still running (`remove_stale_session_folders`).
    """
    if current_dir and Path(current_dir).is_dir():
        return Path(current_dir)
    return Path(tempfile.mkdtemp(prefix=f"{SESSION_FOLDER_PREFIX}{os.getpid()}-"))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_session_folders(folder: str | os.PathLike | None = None) -> list[Path]:
    """Remove session folders a crashed server left in the temporary folder; return them.

    A folder is stale when the process that made it is gone, or (folders named before
    names carried a process id) when it is older than a session may live.
    """
    import time

    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{SESSION_FOLDER_PREFIX}*"):
        pid_part = path.name[len(SESSION_FOLDER_PREFIX):].split("-", 1)[0]
        try:
            stale = (not _process_alive(int(pid_part))) if pid_part.isdigit() else (
                time.time() - path.stat().st_mtime > SESSION_TTL_S)
        except OSError:
            continue
        if stale and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def remove_folder(folder) -> None:
    """`ctx.session_dir`'s delete callback: the session is over, its checkpoints go (nothing else)."""
    if folder and Path(folder).name.startswith(SESSION_FOLDER_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class SaveTarget:
    folder: Path  # where to save the model
    in_catalog: bool  # the lab's checkpoints folder, listed for every session
    session_dir: str | None  # the value to write back to `ctx.session_dir`


def checkpoint_folder(keep, session_dir) -> SaveTarget:
    """Where a training tab saves its model.

    This session's own folder, unless the user asked to keep the model in the lab's
    checkpoints folder, which every session lists (allowed in a local lab only: on a
    shared Space one visitor's models never reach the others).
    """
    from llm.limits import current
    from llm.paths import checkpoints_dir

    if keep and current().name == "local":
        folder = checkpoints_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return SaveTarget(folder, True, session_dir)
    folder = session_folder(session_dir)
    return SaveTarget(folder, False, str(folder))


def saved_where(in_catalog: bool) -> str:
    """Words for where `checkpoint_folder` put a model."""
    return ("kept in the lab's checkpoints folder, listed for every session" if in_catalog
            else "kept for this session only")


# --- the catalog, seen from the UI ---------------------------------------------------

def _catalog():
    import llm.catalog  # imports torch: only on first use, never at start-up

    return llm.catalog


def _startup_choices() -> list[tuple[str, str]]:
    """Choices known without importing torch; the page replaces them with the catalog's on load."""
    choices = [(f"{BUNDLED_KEY} (trained by the lab on Edith Wharton's fiction)", BUNDLED_KEY)] \
        if BUNDLED_MODEL.is_file() else []
    choices += [(f"{name} (random init, untrained)", name) for name in PRESETS if name not in GPT2_SIZES]
    choices.append(("gpt2-small-random (random init, untrained)", "gpt2-small-random"))
    choices += [(f"{name} (OpenAI GPT-2)", name) for name in GPT2_SIZES]
    return choices


def _entry_label(entry) -> str:
    label = entry.label
    if not entry.available:
        label += f" · unavailable: {entry.reason}" if entry.reason else " · unavailable"
    return label


def model_entries(session_models: list | None = None, tasks: tuple[str, ...] | None = None):
    """The catalog's `ModelEntry`s, this session's files included, filtered by task."""
    from dataclasses import replace

    extra = [(e["path"], e["kind"]) for e in session_models or []]
    labels = {e["path"]: e["label"] for e in session_models or []}
    out = []
    for entry in _catalog().list_models(extra_paths=extra):
        if tasks and entry.task not in tasks:
            continue
        if entry.path in labels and labels[entry.path]:
            entry = replace(entry, label=f"{labels[entry.path]} · {entry.label}")
        out.append(entry)
    return out


def model_choices(session_models: list | None = None, tasks: tuple[str, ...] | None = None):
    """(label, key) pairs for a dropdown: every model, unavailable ones saying why."""
    return [(_entry_label(e), e.key) for e in model_entries(session_models, tasks)]


def picker_update(session_models: list | None, current: str | None = None,
                  tasks: tuple[str, ...] | None = None, select: str | None = None):
    """A dropdown update with fresh choices, keeping `current` (or picking `select`)."""
    choices = model_choices(session_models, tasks)
    keys = [key for _, key in choices]
    value = select if select in keys else current if current in keys else (keys[0] if keys else None)
    return gr.update(choices=choices, value=value)


def get_model(choice: str | None, session_models: list | None = None, tasks: tuple[str, ...] | None = None):
    """The `Checkpoint` for a picker value, loaded once and cached by `llm.catalog`.

    Only catalog keys and this session's own files are accepted, so an API caller
    cannot make the server open an arbitrary path. Problems become a `gr.Error`.
    """
    if not choice:
        raise gr.Error("Pick a model first.")
    catalog = _catalog()
    entries = {e.key: e for e in model_entries(session_models)}
    entry = entries.get(choice)
    if entry is None:
        raise gr.Error(f"{choice!r} is not one of the models of this lab or this session.")
    if not entry.available:
        raise gr.Error(f"{entry.label} is not available: {entry.reason}")
    if tasks and entry.task not in tasks:
        wanted = " or ".join(tasks)
        raise gr.Error(f"{entry.label} is a {entry.task} model; this tab needs a {wanted} model.")
    try:
        return catalog.load_model(choice)
    except (ValueError, FileNotFoundError, OSError) as exc:  # CheckpointError is a ValueError
        raise gr.Error(f"Could not load {entry.label}: {exc}") from None


def hub_line() -> str:
    """Whether the Hugging Face Hub answers (one short request, made only when asked)."""
    reachable, sentence = _catalog().hub_status()
    return f"Hub: {'✅' if reachable else '❌'} {sentence}"


def status_line(session_models: list | None = None, hub: str = "Hub: not checked (press Check Hub)") -> str:
    """Models available, the Hub, the device and torch threads, as one Markdown line."""
    import torch

    entries = model_entries(session_models)
    available = sum(e.available for e in entries)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return (f"**{available}** of {len(entries)} models available · {hub} · device: **{device}** · "
            f"torch threads: **{torch.get_num_threads()}**")


# --- small helpers for tabs ----------------------------------------------------------

def clean_text(text: str | None, limit: int = MAX_TEXT_CHARS, what: str = "text") -> tuple[str, list[str]]:
    """Text ready for a tab: control characters removed, cut to `limit` chars; plus notices.

    Raises `gr.Error` for empty text. Tabs show the notices (and may `gr.Warning` them).
    """
    from llm.introspect import sanitize_text

    try:
        return sanitize_text(text, limit=limit, what=what)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None


def notices_md(notices: list[str]) -> str:
    """Notices as Markdown lines for a tab's status box."""
    return "\n\n".join(f"⚠️ {n}" for n in notices)


def encode_for_model(text: str | None, model, max_tokens: int | None = None, keep: str = "start"):
    """Clean `text`, encode it with GPT-2's tokenizer and fit it to the model's context.

    keep="start" keeps the first tokens (for looking at a text), "end" the last ones
    (for a prompt, as generation crops from the left). Returns (ids, notices).
    """
    from llm.tokenizer import text_to_token_ids

    text, notices = clean_text(text)
    ids = text_to_token_ids(text)
    limit = min(model.cfg.context_length, max_tokens or model.cfg.context_length)
    if len(ids) > limit:
        why = "the model's context length" if limit == model.cfg.context_length else "this view's limit"
        notices.append(f"The text has {len(ids):,} tokens; only the {'first' if keep == 'start' else 'last'} "
                       f"{limit} are used ({why}).")
        ids = ids[:limit] if keep == "start" else ids[-limit:]
    return ids, notices


def find_entry(choice: str | None, session_models: list | None = None):
    """The catalog's `ModelEntry` for a picker value, or None."""
    return next((e for e in model_entries(session_models) if e.key == choice), None)


def random_weights_note(choice: str | None, session_models: list | None = None) -> str:
    """A warning when the model is a randomly initialised preset, else ''."""
    entry = find_entry(choice, session_models)
    if entry is not None and entry.kind == "preset":
        return (f"ℹ️ **{choice}** has *random* weights (a preset nobody trained): its embeddings and "
                "attention show noise, not meaning. Pick a GPT-2 size or a trained checkpoint to see structure.")
    return ""


class LabContext:
    """The shared model picker and this session's models; build it inside `gr.Blocks`."""

    def __init__(self, demo: gr.Blocks):
        self.demo = demo  # tabs may add `ctx.demo.load(...)` events
        self._pickers: list[tuple[gr.Dropdown, tuple[str, ...] | None]] = []
        self.session_models = gr.State([], time_to_live=SESSION_TTL_S)
        self.session_dir = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=remove_folder)
        # One row: picker and the model's info | status line and its buttons (the checkpoint upload is one
        # of them), so the tabs start high on a 1280x720 projector; on a phone the columns stack
        # (llm/ui/lecture.py's CSS).
        with gr.Row(equal_height=False, elem_id="lab-bar"):
            with gr.Column(scale=3, min_width=320):
                self.picker = gr.Dropdown(
                    choices=_startup_choices(), value=DEFAULT_MODEL, label="Model (shared by the tabs)",
                    info="wharton-gpt is trained (bundled); GPT-2 sizes are OpenAI's weights; presets are random, to train.",
                    elem_id="model-picker")
                self.model_info = gr.Markdown(elem_id="model-info")
                self.upload_message = gr.Markdown(elem_id="upload-message")
            with gr.Column(scale=3, min_width=260):
                self.status = gr.Markdown("Loading the model list…", elem_id="lab-status")
                with gr.Row(elem_id="lab-status-buttons"):
                    self.hub_button = gr.Button("Check Hub", size="sm", scale=0, min_width=100, elem_id="check-hub")
                    self.download_button = gr.Button("Download GPT-2 weights", size="sm", scale=0, min_width=180,
                                                     elem_id="download-gpt2")
                    self.upload = gr.UploadButton("Upload .safetensors / .pth",
                                                  file_types=CHECKPOINT_TYPES, size="sm", scale=0, min_width=150,
                                                  elem_id="model-upload")
        self._pickers.append((self.picker, None))

    def model_picker(self, label: str = "Model", tasks: tuple[str, ...] | None = None,
                     elem_id: str | None = None, value: str | None = None, **kwargs) -> gr.Dropdown:
        """A tab's own dropdown limited to `tasks`; it refreshes with this session's models."""
        choices = _startup_choices() if tasks is None or "lm" in tasks else []
        dropdown = gr.Dropdown(choices=choices, value=value if value is not None else
                               (choices[0][1] if choices else None), label=label, elem_id=elem_id, **kwargs)
        self._pickers.append((dropdown, tasks))
        return dropdown

    def keep_checkbox(self, elem_id: str) -> gr.Checkbox:
        """'Also keep the model in the checkpoints folder' (`checkpoint_folder`); shown in a local lab only."""
        from llm.limits import current

        return gr.Checkbox(False, label="Also keep the model in the lab's checkpoints folder (listed for every "
                           "session and after a restart)", visible=current().name == "local", elem_id=elem_id)

    def get_model(self, choice, session_models=None, tasks=None):
        """See `get_model`."""
        return get_model(choice, session_models, tasks)

    def on_model(self, fn, outputs, api_name=False, extra_inputs=()) -> None:
        """Run `fn(choice, session_models, *extra_inputs)` when the page opens, the shared picker changes,
        or this session's models change (a model a run just picked joins the session's list a moment later)."""
        follow([self.demo.load, self.picker.change, self.session_models.change], fn,
               [self.picker, self.session_models, *extra_inputs], outputs, api_name=api_name)

    def finish(self) -> None:
        """Wire the shared events; `build_app` calls this after all tabs are built."""
        demo = self.demo
        pickers = [p for p, _ in self._pickers]
        tasks = [t for _, t in self._pickers]

        def refresh(session_models, *current):
            return [picker_update(session_models, cur, t) for cur, t in zip(current, tasks)]

        def on_load(session_models, *current):
            return [status_line(session_models), *refresh(session_models, *current)]

        def download(choice, session_models, *current):
            message = download_gpt2(choice)
            return [message, status_line(session_models), *refresh(session_models, *current)]

        demo.load(on_load, [self.session_models, *pickers], [self.status, *pickers], api_name=False)
        # the status line counts the models too: a model a run adds must not leave it stale
        self.session_models.change(on_load, [self.session_models, *pickers], [self.status, *pickers], api_name=False)
        self.on_model(model_info, [self.model_info], api_name="model_info")
        self.hub_button.click(lambda s: status_line(s, hub_line()), [self.session_models], [self.status],
                              api_name="check_hub")
        self.download_button.click(download, [self.picker, self.session_models, *pickers],
                                   [self.upload_message, self.status, *pickers], api_name="download_gpt2",
                                   concurrency_limit=1)
        self.upload.upload(upload_checkpoint, [self.upload, self.session_models],
                           [self.session_models, self.picker, self.upload_message], api_name="upload_model")


def model_info(choice, session_models=None) -> str:
    """One line about the picked model (loads it: the first use of a model)."""
    if not choice:
        return ""
    entry = find_entry(choice, session_models)
    if entry is None:  # a model a run has just picked, not yet in the session's list: `on_model` calls again
        return ""
    if not entry.available:
        hint = " Press **Download GPT-2 weights** (needs the Hub)." if entry.kind == "gpt2" else ""
        return f"⚠️ {entry.label} is not available: {entry.reason}.{hint}"
    ckpt = get_model(choice, session_models)
    name = Path(choice).name if entry.path else choice  # a file's name, never the server's folder
    return f"**{name}** · {_catalog().describe(ckpt)}  \n{random_weights_note(choice, session_models)}"


def download_gpt2(choice) -> str:
    """Fetch the picked GPT-2 size from the Hugging Face Hub into the local cache (on request only)."""
    if choice not in GPT2_SIZES:
        raise gr.Error(f"Pick one of the GPT-2 sizes ({', '.join(GPT2_SIZES)}) to download its weights.")
    try:
        ckpt = _catalog().load_model(choice, download=True)
    except (ValueError, OSError) as exc:  # CheckpointError is a ValueError
        raise gr.Error(f"Could not download {choice}: {exc}") from None
    return f"{choice} is ready: {_catalog().describe(ckpt)}."


def upload_checkpoint(path, session_models):
    """Check an uploaded file is a checkpoint, then add it to this session's pickers."""
    if not path:
        return session_models, gr.update(), ""
    name = Path(path).name
    if Path(path).suffix.lower() not in CHECKPOINT_TYPES:
        raise gr.Error(f"{name} is not a checkpoint: upload a .safetensors file or the book's .pth.")
    catalog = _catalog()
    try:
        ckpt = catalog.load_model(path)
    except (ValueError, OSError) as exc:  # CheckpointError is a ValueError
        raise gr.Error(f"{name} is not a usable checkpoint: {exc}") from None
    session_models = register_session_model(session_models, path, "uploaded", ckpt.task, "upload")
    message = (f"Loaded **{name}** ({catalog.describe(ckpt)}); it is now in the model picker "
               "for this session.")
    return session_models, picker_update(session_models, select=str(Path(path).resolve())), message


# --- what the training tabs share -----------------------------------------------------

def number(value, name: str, cast=float, minimum=None, maximum=None):
    """`value` as a finite number (cast) within [minimum, maximum]; otherwise a `gr.Error` naming the field.

    NaN, infinities and numbers beyond the range are refused with the range in the sentence
    (`llm.bounds.check`); with `cast=int` the number must be whole.
    """
    from llm.bounds import Bound, check

    low = -math.inf if minimum is None else minimum
    high = math.inf if maximum is None else maximum
    try:
        return cast(check(name, value, Bound(low, high, integer=cast is int)))
    except ValueError as exc:
        raise gr.Error(as_sentence(str(exc))) from None


def bounded(value, name: str, label: str | None = None):
    """`value` checked against `name`'s bound in `llm.bounds.BOUNDS` (the CLI's too); a `gr.Error` otherwise."""
    from llm.bounds import BOUNDS, check

    try:
        return check(label or name, value, BOUNDS[name])
    except ValueError as exc:
        raise gr.Error(as_sentence(str(exc))) from None


def stop_run(run_state):
    """Ask a run to stop: it ends after the current step and keeps (saves) what it did."""
    import threading

    if isinstance(run_state, threading.Event):
        run_state.set()
        return "⏹ Stopping after this step…"
    return gr.update()


def follow(triggers, fn, inputs, outputs, **kwargs):
    """`gr.on` for a display that follows values: a trigger arriving while it runs runs again after it.

    `gr.on` takes its trigger mode from its first trigger, and a load or a click gives "once", which
    drops a change that comes while the display is still being drawn: after a run, the session's new
    list of models arrives just after its picker's change, and the display would stay stale.
    """
    return gr.on(triggers, fn, inputs, outputs, trigger_mode="always_last", **kwargs)


def adopt_session_models(pending, session_models):
    """Take the session list a finished run produced.

    A training event writes its new list to a `pending` State and its own picker first; this,
    chained with `.then`, then adopts the list. Writing `ctx.session_models` and a picker in the
    same outputs let the session-wide picker refresh read the picker's old value and switch it back.
    """
    return pending if pending is not None else session_models


def line_frame(rows, x: str, y: str, series: str = "kind"):
    """Rows (x, y, series) as a DataFrame for a `gr.LinePlot`, or a no-op update while there are none.

    A LinePlot that is ever sent an empty DataFrame never draws lines afterwards, so plots start
    as None and get data only once there is some.
    """
    if not rows:
        return gr.update()
    import pandas as pd

    return pd.DataFrame(rows, columns=[x, y, series]).astype({x: "float64", y: "float64"})
