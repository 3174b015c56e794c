"""The lecture script: chapters 2-7 as steps a presenter clicks through (assets/lecture.json).

A script is a small JSON file:

    {"title": "...", "model": "$LECTURE",
     "steps": [{"tab": "tokenize", "title": "Text becomes tokens (ch. 2)",
                "inputs": {"tok-text": "Hello, do you like tea?"}, "run": "tok-run",
                "point": "what to point at while it runs",
                "expect": {"id": "tok-status", "text": "GPT-2 tokens"}}, ...]}

`tab` is a tab's id (its module name without `_tab`), `inputs` maps the elem_ids of that
tab's inputs to values, `run` is the elem_id of the button to press, `expect` (optional)
names an element and a text it shows (or a CSS selector inside it that appears) once the
step is done (the browser test waits for it). A step may set `"model"`: the shared picker's value for it; "$LECTURE" stands for the
lecture's model (`llm.preflight.lecture_model_key`: the bundled model when it is here).
Env LLM_LAB_LECTURE_SCRIPT names another script file. Nothing here imports Gradio.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .paths import ASSETS_DIR

LECTURE_FILE = ASSETS_DIR / "lecture.json"
ENV_SCRIPT = "LLM_LAB_LECTURE_SCRIPT"
LECTURE_MODEL = "$LECTURE"
MAX_STEPS = 100
MAX_TEXT = 2000  # characters of any one string in a script


@dataclass(frozen=True)
class Step:
    tab: str
    title: str
    point: str
    run: str | None = None
    inputs: dict = field(default_factory=dict)
    model: str | None = None
    expect: dict | None = None

    def to_dict(self) -> dict:
        return {"tab": self.tab, "title": self.title, "point": self.point, "run": self.run,
                "inputs": dict(self.inputs), "model": self.model, "expect": self.expect}


@dataclass(frozen=True)
class Script:
    title: str
    minutes: float
    steps: tuple[Step, ...]
    source: str


class ScriptError(ValueError):
    """A lecture script that cannot be used; the message says where and what to fix."""


def _text(value, where: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise ScriptError(f"{where} must be a non-empty string of at most {MAX_TEXT} characters")
    return value


def _step(raw, n: int, model: str) -> Step:
    where = f"step {n}"
    if not isinstance(raw, dict):
        raise ScriptError(f"{where} must be an object with tab, title, point (and inputs, run)")
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, dict):
        raise ScriptError(f"{where}: inputs must map element ids to values")
    for key, value in inputs.items():
        if not isinstance(value, (str, int, float, bool)) or (isinstance(value, str) and len(value) > MAX_TEXT):
            raise ScriptError(f"{where}: the value of input {key!r} must be a string (at most {MAX_TEXT} "
                              "characters), a number or true/false")
    expect = raw.get("expect")
    if expect is not None and not (isinstance(expect, dict) and _text(expect.get("id"), f"{where}: expect.id")
                                   and len(expect) == 2 and isinstance(expect.get("text", expect.get("selector")), str)):
        raise ScriptError(f"{where}: expect must be {{\"id\": ..., \"text\": ...}} or {{\"id\": ..., \"selector\": ...}}")
    step_model = _text(raw.get("model"), f"{where}: model", optional=True)
    return Step(tab=_text(raw.get("tab"), f"{where}: tab"), title=_text(raw.get("title"), f"{where}: title"),
                point=_text(raw.get("point"), f"{where}: point"), run=_text(raw.get("run"), f"{where}: run",
                                                                             optional=True),
                inputs=dict(inputs), model=model if step_model == LECTURE_MODEL else step_model, expect=expect)


def script_path() -> Path:
    return Path(os.environ.get(ENV_SCRIPT) or LECTURE_FILE)


def load_script(path=None, model: str | None = None) -> Script:
    """Read and check a lecture script; "$LECTURE" models become `model` (default: the lecture's model)."""
    path = Path(path) if path else script_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScriptError(f"{path}: no such lecture script") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScriptError(f"{path.name} is not a readable JSON file: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list) or not raw["steps"]:
        raise ScriptError(f"{path.name} must be an object with a non-empty list of steps")
    if len(raw["steps"]) > MAX_STEPS:
        raise ScriptError(f"{path.name} has {len(raw['steps'])} steps; a script may have at most {MAX_STEPS}")
    if model is None:
        from .preflight import lecture_model_key

        model = lecture_model_key()
    minutes = raw.get("minutes", 15)
    if not isinstance(minutes, (int, float)) or not 1 <= minutes <= 240:
        raise ScriptError(f"{path.name}: minutes must be a number between 1 and 240")
    steps = tuple(_step(s, i + 1, model) for i, s in enumerate(raw["steps"]))
    return Script(_text(raw.get("title", "Lecture"), "title"), float(minutes), steps, str(path))


def element_ids(script: Script) -> set[str]:
    """Every elem_id the script fills, presses or waits for (a test checks the app has them)."""
    ids = set()
    for step in script.steps:
        ids.update(step.inputs)
        if step.run:
            ids.add(step.run)
        if step.expect:
            ids.add(step.expect["id"])
    return ids
