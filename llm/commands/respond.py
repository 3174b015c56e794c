"""`python -m llm respond`: answer the test instructions for the judge (chapter 7.7)."""
from __future__ import annotations

import sys

from llm.commands import add_precision_argument

NAME = "respond"
HELP = "run an instruct model over the 110 test instructions (or a file) and write the book's responses JSON"


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="instruct checkpoint or catalog key")
    parser.add_argument("--data", default="test",
                        help="'test' (the book's 110-record test split) or an instruction JSON file")
    parser.add_argument("--out", default="instruction-data-with-response.json", help="where to write the JSON")
    from llm.bounds import arg_type, max_new_tokens_arg, temperature_arg

    parser.add_argument("--max-new-tokens", type=max_new_tokens_arg(), default=256, help="the book uses 256")
    parser.add_argument("--temperature", type=temperature_arg, default=0.0)
    parser.add_argument("--top-k", type=arg_type("top-k"), default=None)
    parser.add_argument("--limit", type=int, default=None, help="answer only the first N records")
    add_precision_argument(parser)


def run(args) -> int:
    from tqdm import tqdm

    from llm.catalog import load_model
    from llm.instruct import book_splits, generate_responses, load_instruction_file, save_responses

    entries = book_splits().test if args.data == "test" else load_instruction_file(args.data)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be at least 1 (got {args.limit})")
        entries = entries[:args.limit]
    ckpt = load_model(args.model)
    if ckpt.task != "instruct":
        print(f"note: {args.model} is a {ckpt.task} model, not instruction-tuned.", file=sys.stderr)
    results = []
    with tqdm(total=len(entries), unit="instr", desc="responding") as bar:
        try:
            for progress in generate_responses(ckpt.model, entries, args.max_new_tokens,
                                               args.temperature, args.top_k, precision=args.precision):
                results = progress.results
                bar.set_postfix(tok_s=f"{progress.new_tokens / max(progress.elapsed, 1e-9):.1f}")
                bar.update(1)
        except KeyboardInterrupt:
            print(f"\ninterrupted: keeping the {len(results)} responses so far", file=sys.stderr)
    path = save_responses(args.out, results)
    print(f"wrote {len(results)} responses to {path}")
    return 0
