"""`python -m llm judge`: score model responses with Llama 3 through Ollama (section 7.8)."""
from __future__ import annotations

import sys

NAME = "judge"
HELP = "score model responses with an Ollama judge (Llama 3 by default), as in section 7.8"


def add_arguments(parser) -> None:
    from llm.bounds import arg_type

    parser.add_argument("--file", help="JSON list or CSV of records with instruction, input, output and "
                                       "response columns (default: the bundled book example, 110 records)")
    parser.add_argument("--key", action="append", metavar="COLUMN",
                        help="response column to score (repeat for two to compare A with B; "
                             "default: every column besides instruction/input/output)")
    parser.add_argument("--model", default="llama3", help="judge model on the server (default llama3)")
    parser.add_argument("--host", help="Ollama server (default: $OLLAMA_HOST or http://localhost:11434)")
    parser.add_argument("--rubric", default="0-100", choices=["0-100", "1-5"],
                        help="the book's 0-100 prompt (default) or a 1-5 rubric")
    parser.add_argument("--parallel", type=arg_type("parallel"), default=4, help="requests at a time, 1-64 (default 4)")
    parser.add_argument("--timeout", type=arg_type("timeout"), default=60.0,
                        help="seconds per reply, 0.1-3600 (default 60)")
    parser.add_argument("--retries", type=arg_type("retries"), default=2,
                        help="retries on transient errors, 0-10 (default 2)")
    parser.add_argument("--repeat", type=arg_type("repeat"), default=1, metavar="K",
                        help="score each response K times and report the judge's spread, 1-100 (default 1)")
    parser.add_argument("--temperature", type=arg_type("judge temperature"), default=0.0,
                        help="judge temperature (default 0, the book's; raise it to see the spread with --repeat)")
    parser.add_argument("--out", help="write the scores to this .json (with the summary) or .csv file")


def run(args) -> int:
    from tqdm import tqdm

    from llm import judge

    entries = judge.load_entries(args.file) if args.file else judge.load_example()
    keys = judge.check_entries(entries, args.key)
    # Fails here, before any progress bar, when the server is down or the model missing.
    model = judge.require_model(args.host, args.model)
    host = judge.resolve_host(args.host)
    total = len(entries) * len(keys) * args.repeat
    print(f"Scoring {len(entries)} records × {', '.join(keys)} with {model} at {host} "
          f"(rubric {args.rubric}, parallel {args.parallel})", file=sys.stderr)
    results, failure = [], None
    with tqdm(total=total, desc="Scoring entries", unit="score", file=sys.stderr) as bar:
        try:
            for result in judge.score_responses(entries, keys, model, host, args.rubric, args.parallel,
                                                args.timeout, args.retries, args.repeat,
                                                temperature=args.temperature):
                results.append(result)
                bar.update(1)
        except judge.JudgeError as exc:  # server or model gone mid-run: keep what was scored
            failure = exc
    summary = judge.summarize(results, keys)
    print(judge.format_summary(summary).replace("**", ""))
    if args.out:
        meta = {"judge_model": model, "host": host, "rubric": args.rubric, "repeat_k": args.repeat,
                "temperature": args.temperature}
        path = judge.save_scores(args.out, entries, results, summary, meta)
        print(f"wrote {path}", file=sys.stderr)
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0
