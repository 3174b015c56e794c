"""Every number a visitor or a command line gives: its lower and upper bound, and why.

A number from outside (a form field, an API call, a flag) is checked once, up front, by
`check(name, value)`: it must be a number, finite, whole where counts are meant, and
inside its range; otherwise a `ValueError` whose sentence names the field and its range:

    >>> check("temperature", float("nan"))
    ValueError: temperature must be a finite number between 0 and 100 (got nan).

The same table serves the app (`llm.ui.shared.number`) and the CLI (`arg_type(name)` for
argparse, which prints `error: argument --x: ...` and exits 2), so both refuse alike.
Bounds that depend on a model (top-k up to its vocabulary, a layer below its depth) are
checked where the model is known; limits that depend on where the lab runs (generation
length on a Space) live in `llm.limits`. Nothing here imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    low: float
    high: float
    integer: bool = False
    why: str = ""  # the reason for the range, for readers of this table (and the report)

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a finite number"
        if math.isinf(self.low) and math.isinf(self.high):
            return kind
        if math.isinf(self.high):
            return f"{kind} of at least {_fmt(self.low)}"
        if math.isinf(self.low):
            return f"{kind} of at most {_fmt(self.high)}"
        return f"{kind} between {_fmt(self.low)} and {_fmt(self.high)}"


def _fmt(x: float) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        x = int(x)
    return f"{x:,}" if isinstance(x, int) and abs(x) >= 10_000 else f"{x:g}" if isinstance(x, float) else str(x)


#: name -> Bound. Names are the words the UI and the CLI show.
BOUNDS: dict[str, Bound] = {
    # generation (chapter 5.3)
    "temperature": Bound(0.0, 100.0, why="0 is greedy; above ~10 the distribution is already flat, so 100 only "
                                          "stops absurd values (1e308 divides every logit to 0)"),
    "top-k": Bound(1, 1_000_000, True, why="at most the vocabulary (checked against the model too)"),
    "top-p": Bound(1e-6, 1.0, why="a probability mass; below 1e-6 it keeps one token anyway"),
    "seed": Bound(0, 2**64 - 1, True, why="torch.manual_seed takes 64-bit seeds"),
    "max new tokens": Bound(1, 100_000, True, why="a hard ceiling; the lab's limit (llm.limits) is lower"),
    # looking inside (chapters 2-4)
    "k": Bound(1, 1_000, True, why="neighbours shown; more do not fit on a page"),
    "max length": Bound(1, 100_000, True, why="a sliding window's tokens; the text is cut to 20,000 chars"),
    "stride": Bound(1, 100_000, True, why="as max length"),
    "layer": Bound(0, 1_000, True, why="below the model's depth (checked against the model too)"),
    "head": Bound(0, 1_000, True, why="below the model's heads (checked against the model too)"),
    # classification fine-tuning (chapter 6; the last-k policy's k is checked against the model's depth there)
    "LoRA rank": Bound(1, 1_024, True, why="the rank of A and B; above the model's width it adds nothing"),
    # the judge (section 7.8)
    "parallel": Bound(1, 64, True, why="requests at once to one Ollama server; more only queue there"),
    "repeat": Bound(1, 100, True, why="scores per response to measure the judge's spread"),
    "timeout": Bound(0.1, 3_600.0, why="seconds per reply; an hour is far beyond any judge reply"),
    "retries": Bound(0, 10, True, why="retries of a failed request"),
    "judge temperature": Bound(0.0, 2.0, why="Ollama's useful range; 0 is the book's"),
}


def check(name: str, value, bound: Bound | None = None):
    """`value` as an int or float within `name`'s bound; else a ValueError that says what is allowed."""
    bound = bound or BOUNDS[name]
    shown = repr(value) if isinstance(value, str) else value
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError(f"{name} must be {bound.describe()} (got {'nothing' if value in (None, '') else shown}).")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be {bound.describe()} (got {shown}).") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be {bound.describe()} (got {shown}).")
    if bound.integer:
        if isinstance(value, int):
            number = value  # exact, even beyond 2**53
        elif not number.is_integer():
            raise ValueError(f"{name} must be {bound.describe()} (got {shown}).")
        else:
            number = int(number)
    if not bound.low <= number <= bound.high:
        raise ValueError(f"{name} must be {bound.describe()} (got {shown}).")
    return number


#: The smallest positive temperature: below it, logits divided by it overflow float32 (1e-300 gives inf - inf = NaN).
MIN_TEMPERATURE = 0.01


def check_temperature(value, name: str = "temperature", bound: Bound | None = None) -> float:
    """0 (greedy) or a temperature between MIN_TEMPERATURE and the bound's top."""
    bound = bound or BOUNDS["temperature"]
    sentence = f"{name} must be 0 (greedy) or between {MIN_TEMPERATURE} and {_fmt(bound.high)} (got {value})."
    try:
        value = float(check(name, value, bound))
    except ValueError:
        raise ValueError(sentence) from None
    if 0 < value < MIN_TEMPERATURE:
        raise ValueError(sentence)
    return value


def check_optional(name: str, value, bound: Bound | None = None):
    """`check`, with None and "" meaning "not set" (returned as None)."""
    return None if value is None or value == "" else check(name, value, bound)


def arg_type(name: str, bound: Bound | None = None):
    """An argparse `type=` that checks `name`'s bound (argparse then exits 2 with the sentence)."""
    import argparse

    def parse(text: str):
        try:
            value = int(text) if (bound or BOUNDS[name]).integer and text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {(bound or BOUNDS[name]).describe()} "
                                             f"(got {text!r}).") from None
        try:
            return check(name, value, bound)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def temperature_arg(text: str) -> float:
    """argparse type for a sampling temperature: 0 or MIN_TEMPERATURE-100 (`check_temperature`)."""
    import argparse

    try:
        return check_temperature(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def max_new_tokens_arg():
    """argparse type for a generation length: 1 to the lab's limit (`llm.limits`, 1,024 locally)."""
    import argparse

    from .limits import current

    most = current().max_new_tokens

    def parse(text: str) -> int:
        try:
            return check("max new tokens", int(text) if text.strip().lstrip("+-").isdigit() else float(text),
                         Bound(1, most, integer=True))
        except ValueError:
            raise argparse.ArgumentTypeError(f"max new tokens must be at least 1 and at most {most:,} "
                                             f"(the lab's generation limit), got {text}") from None

    parse.__name__ = "max new tokens"
    return parse
