"""The chapter 7 instruction data without torch: the Alpaca prompt format (section 7.2),
loading and validating instruction records, and the book's 85/5/10 split.

Kept apart from `llm.instruct` (batching, fine-tuning, chat), which imports torch, so the
app can show examples from the data at start-up without loading torch. `llm.instruct`
re-exports everything here.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from .paths import ASSETS_DIR

INSTRUCTION_DATA = ASSETS_DIR / "instruction-data.json"
PREAMBLE = ("Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request.")
RESPONSE_HEADER = "\n\n### Response:\n"
RESPONSE_KEYS = ("instruction", "input", "output", "model_response")


# --- Prompt format (section 7.2) -------------------------------------------------------

def format_input(entry: dict) -> str:
    """The instruction part of the book's Alpaca-style prompt (section 7.2)."""
    instruction_text = (
        f"{PREAMBLE}"
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry.get("input") else ""
    return instruction_text + input_text


def format_response(entry: dict) -> str:
    """The response part that follows `format_input` in a training example."""
    return f"{RESPONSE_HEADER}{entry['output']}"


def response_prompt(entry: dict) -> str:
    """The prompt used to ask a model for a response: the instruction part and the response header.

    The book prompts with `format_input(entry)` alone and lets the model write the
    `### Response:` header itself; ending the prompt with the header (which every
    training example contains at this place) makes the answer start at once.
    `extract_response` copes with both.
    """
    return format_input(entry) + RESPONSE_HEADER


# --- Data: loading, validating and splitting (section 7.2) ------------------------------

def validate_records(data, name: str = "the data") -> list[dict]:
    """Check instruction records and return them normalised ({instruction, input, output}).

    Each record must be an object with a non-empty string `instruction`, a string
    `output` and optionally a string `input`. The ValueError names the first few
    problems and the index of each offending record.
    """
    if not isinstance(data, list):
        raise ValueError(f"{name} must be a JSON list of records like "
                         '{"instruction": ..., "input": ..., "output": ...}, '
                         f"but it is a JSON {_json_type(data)}")
    if not data:
        raise ValueError(f"{name} is an empty list: it needs at least one instruction record")
    problems, records = [], []
    for i, rec in enumerate(data):
        problem = _record_problem(rec)
        if problem:
            problems.append(f"record {i}: {problem}")
        else:
            records.append({"instruction": rec["instruction"], "input": rec.get("input") or "",
                            "output": rec["output"]})
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{name} has {len(problems)} invalid record{'s' * (len(problems) > 1)}: "
                         + "; ".join(problems[:3]) + more)
    return records


def _json_type(value) -> str:
    return {dict: "object", str: "string", list: "list", bool: "boolean",
            type(None): "null"}.get(type(value), "number")


def _record_problem(rec) -> str | None:
    if not isinstance(rec, dict):
        return f"is a JSON {_json_type(rec)}, not an object with 'instruction' and 'output'"
    if "instruction" not in rec:
        return "has no 'instruction' field"
    if not isinstance(rec["instruction"], str) or not rec["instruction"].strip():
        return "'instruction' must be a non-empty string"
    if "output" not in rec:
        return "has no 'output' field"
    if not isinstance(rec["output"], str):
        return f"'output' must be a string, not a JSON {_json_type(rec['output'])}"
    if rec.get("input") is not None and not isinstance(rec["input"], str):
        return f"'input' must be a string, not a JSON {_json_type(rec['input'])}"
    return None


#: What a file of lists inside lists (200 KB of `[[[...]]]`) gets instead of Python's RecursionError.
NESTED_TOO_DEEP = ("{name} is nested too deeply to read (lists or objects inside each other hundreds of levels "
                   "deep); an instruction file is a flat JSON list of records with instruction, input and output")


def load_instruction_file(source: str | Path | bytes = INSTRUCTION_DATA) -> list[dict]:
    """Read and validate an instruction JSON file (a path, or the bytes of an upload)."""
    if isinstance(source, (bytes, bytearray)):
        name, raw = "the uploaded file", bytes(source)
    else:
        path = Path(source)
        name = path.name
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ValueError(f"{path} is a folder, not an instruction JSON file") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not UTF-8 text; upload a JSON file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{name} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise ValueError(NESTED_TOO_DEEP.format(name=name)) from None
    return validate_records(data, name)


@dataclass
class InstructionSplits:
    train: list[dict]
    val: list[dict]
    test: list[dict]


def split_instruction_data(data: list[dict], train_frac: float = 0.85, test_frac: float = 0.10,
                           seed: int | None = None) -> InstructionSplits:
    """Split as section 7.2 does: first 85% train, next 10% test, the remaining 5% validation.

    The book does not shuffle: 1,100 records → 935 train, 110 test (records 935-1044),
    55 validation. With a `seed` the records are shuffled (random.Random(seed)) first.
    """
    if not 0 < train_frac < 1 or not 0 <= test_frac < 1 or train_frac + test_frac > 1:
        raise ValueError(f"train and test fractions must be in (0, 1) and add up to at most 1 "
                         f"(got {train_frac}, {test_frac})")
    data = list(data)
    if seed is not None:
        random.Random(seed).shuffle(data)
    train_portion = int(len(data) * train_frac)
    test_portion = int(len(data) * test_frac)
    return InstructionSplits(train=data[:train_portion],
                             val=data[train_portion + test_portion:],
                             test=data[train_portion:train_portion + test_portion])


def book_splits(seed: int | None = None) -> InstructionSplits:
    """The bundled 1,100-record dataset split as in the book (935 / 55 / 110)."""
    return split_instruction_data(load_instruction_file(INSTRUCTION_DATA), seed=seed)
