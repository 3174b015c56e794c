"""`python -m llm download gpt2-small`: fetch OpenAI's GPT-2 weights into the Hugging Face cache."""
from __future__ import annotations

NAME = "download"
HELP = "download OpenAI's GPT-2 weights (gpt2-small, -medium, -large, -xl) from the Hugging Face Hub"


def add_arguments(parser):
    parser.add_argument("size", help="gpt2-small, gpt2-medium, gpt2-large or gpt2-xl (also: gpt2, 124M, ...)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for the Hub before giving up (default 5)")


def run(args) -> int:
    from llm.checkpoints import cached_gpt2_path, download_gpt2, gpt2_size, inspect_checkpoint

    size = gpt2_size(args.size)
    already = cached_gpt2_path(size)
    path = already or download_gpt2(size, timeout=args.timeout)  # CheckpointError -> message, exit 2
    info = inspect_checkpoint(path, n_heads=None)
    print(f"{size}: {'already here' if already else 'downloaded'} at {path} "
          f"({info.num_parameters / 1e6:.1f}M parameters)")
    return 0
