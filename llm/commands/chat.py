"""`python -m llm chat --model <checkpoint>`: talk to an instruction-tuned model in the terminal (chapter 7)."""
from __future__ import annotations

import sys

from llm.commands import add_precision_argument

NAME = "chat"
HELP = "chat with an instruction-tuned model in the terminal (each message is an Alpaca instruction)"
EXIT_WORDS = {"exit", "quit", ":q"}


def add_arguments(parser):
    parser.add_argument("--model", required=True,
                        help="instruct checkpoint (.safetensors, the book's gpt2-medium355M-sft.pth) or a catalog key")
    parser.add_argument("--input", default="", help="an Input section added to every message (optional)")
    from llm.bounds import arg_type, max_new_tokens_arg, temperature_arg

    parser.add_argument("--max-new-tokens", type=max_new_tokens_arg(), default=256)
    parser.add_argument("--temperature", type=temperature_arg, default=0.0, help="0 = greedy (the book's setting)")
    parser.add_argument("--top-k", type=arg_type("top-k"), default=None)
    parser.add_argument("--seed", type=arg_type("seed"), default=None)
    add_precision_argument(parser)


def run(args) -> int:
    from llm.catalog import load_model
    from llm.instruct import chat_prompt_tokens, chat_reply_stream

    ckpt = load_model(args.model)
    model = ckpt.model
    if ckpt.task != "instruct":
        print(f"note: {args.model} is a {ckpt.task} model, not instruction-tuned; expect rambling.",
              file=sys.stderr)
    print("Type an instruction and press Enter; 'exit' or Ctrl-D quits.", file=sys.stderr)
    while True:
        try:
            message = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if message.strip().lower() in EXIT_WORDS:
            return 0
        if not message.strip():
            continue
        _, cropped = chat_prompt_tokens(model, message, args.input)
        if cropped:
            print(f"note: the prompt is {cropped} tokens longer than the model's context; "
                  "its beginning is cut off.", file=sys.stderr)
        shown = ""
        sys.stdout.write("model> ")
        for reply in chat_reply_stream(model, message, args.input, args.max_new_tokens,
                                       args.temperature, args.top_k, args.seed, precision=args.precision):
            if reply.startswith(shown):
                sys.stdout.write(reply[len(shown):])
            else:  # a held-back character changed the tail: rewrite the line
                sys.stdout.write("\r\033[Kmodel> " + reply)
            shown = reply
            sys.stdout.flush()
        sys.stdout.write("\n" if shown else "(no answer)\n")
