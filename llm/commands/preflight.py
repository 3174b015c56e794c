"""`python -m llm preflight`: before a lecture, which demos will run here and how long each takes."""
from __future__ import annotations

import json
import sys

NAME = "preflight"
HELP = ("check this machine before a lecture: models, Ollama, threads and memory, a timed warm-up, "
        "and a ✅/⚠️/❌ line per demo (exit 0 when every core demo can run, 1 otherwise)")


def add_arguments(parser):
    parser.add_argument("--model", default=None,
                        help="the lecture's model (default: the bundled model when present, else the "
                             "lecture preset; env LLM_LAB_LECTURE_MODEL)")
    parser.add_argument("--judge-host", default=None, help="the Ollama server (default: OLLAMA_HOST or "
                        "http://localhost:11434)")
    parser.add_argument("--judge-model", default=None, help="the judge model (default llama3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the lines")


def run(args) -> int:
    from llm.commands import CLIError
    from llm.preflight import run_preflight

    if args.model is not None and not args.model.strip():
        raise CLIError("--model is empty: give a preset, a GPT-2 size or a checkpoint file")
    progress = None if args.json else (lambda msg: print(f"… {msg}", file=sys.stderr, flush=True))
    report = run_preflight(args.model, args.judge_host, args.judge_model, log=progress)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ready else 1
