"""`python -m llm generate`: stream a model's continuation of a prompt (chapters 4.7 and 5.3)."""
from __future__ import annotations

import codecs
import sys
import time

from llm.commands import add_precision_argument

NAME = "generate"
HELP = "continue a prompt with a model, streaming the text token by token"


def add_arguments(parser):
    from llm.bounds import MIN_TEMPERATURE
    from llm.limits import current

    # Numbers are checked in run() by check_sampling (finite, in range: llm.bounds) and the lab's limit.
    parser.add_argument("--model", required=True,
                        help="a preset (e.g. lab-tiny), a GPT-2 size (gpt2-small) or a checkpoint file")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=50,
                        help=f"how many tokens to add, 1 to {current().max_new_tokens} (the lab's generation limit)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help=f"0 means greedy (the default); else {MIN_TEMPERATURE} to 100")
    parser.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None,
                        help="sample only among the most likely tokens whose probabilities add up to p")
    parser.add_argument("--seed", type=int, default=None, help="makes sampling reproducible (0 to 2^64-1)")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute the whole window for every token instead of using the KV cache")
    add_precision_argument(parser)


class _TokenPrinter:
    """Writes tokens as text as they arrive; a character split across tokens waits for its last byte."""

    def __init__(self, stream):
        from llm.tokenizer import get_tokenizer

        self.stream = stream
        self.encoding = get_tokenizer()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, token_id: int):
        try:
            raw = self.encoding.decode_single_token_bytes(token_id)
        except KeyError:  # a model whose vocabulary is larger than GPT-2's
            raw = f"<{token_id}>".encode()
        self.stream.write(self.decoder.decode(raw))
        self.stream.flush()

    def close(self):
        self.stream.write(self.decoder.decode(b"", final=True) + "\n")
        self.stream.flush()


def run(args) -> int:
    from llm.catalog import load_model
    from llm.generation import check_sampling, crop_prompt, stream_generate
    from llm.tokenizer import ENDOFTEXT, ENDOFTEXT_ID, text_to_token_ids

    from llm.limits import current

    check_sampling(args.temperature, args.top_k, args.top_p, args.max_new_tokens, seed=args.seed)
    if args.max_new_tokens > current().max_new_tokens:
        raise ValueError(f"max new tokens must be at most {current().max_new_tokens:,} (the lab's generation "
                         f"limit), got {args.max_new_tokens:,}")
    ids = text_to_token_ids(args.prompt)
    if not ids:
        raise ValueError("the prompt is empty: give some text to continue")
    checkpoint = load_model(args.model)
    model = checkpoint.model
    if checkpoint.task == "classifier":
        raise ValueError(f"{args.model} is a classifier; generate needs a language model "
                       f"(use `python -m llm classify`)")
    check_sampling(args.temperature, args.top_k, args.top_p, vocab_size=model.cfg.vocab_size)
    ids, cropped = crop_prompt(ids, model.cfg.context_length)
    if cropped:
        print(f"note: the prompt has {len(ids) + cropped} tokens but the model's context is "
              f"{model.cfg.context_length}; the first {cropped} were dropped", file=sys.stderr)

    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    printer = _TokenPrinter(sys.stdout)
    start, count = time.perf_counter(), 0
    tokens = stream_generate(model, ids, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                             eos_id=ENDOFTEXT_ID, use_cache=not args.no_cache, seed=args.seed,
                             precision=args.precision)
    for token in tokens:
        printer.write(token.id)
        count += 1
    printer.close()
    elapsed = time.perf_counter() - start
    ending = f", stopped at {ENDOFTEXT}" if count < args.max_new_tokens else ""
    print(f"{count} tokens in {elapsed:.2f} s ({count / max(elapsed, 1e-9):.1f} tokens/s"
          f"{', no KV cache' if args.no_cache else ''}, {args.precision}){ending}", file=sys.stderr)
    return 0
