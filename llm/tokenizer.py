"""Tokenizers of chapter 2: GPT-2's byte-pair encoding and the book's simple regex tokenizer.

The GPT-2 encoding is built from the bundled `assets/gpt2.tiktoken` so that it works
offline (`tiktoken.get_encoding("gpt2")` would download its vocabulary).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import tiktoken
from tiktoken.load import load_tiktoken_bpe

from .paths import ASSETS_DIR

ENDOFTEXT = "<|endoftext|>"
ENDOFTEXT_ID = 50256
UNK = "<|unk|>"
# GPT-2's pre-tokenizer pattern, as tiktoken writes it for the `gpt2` encoding.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


@lru_cache(maxsize=1)
def get_tokenizer() -> tiktoken.Encoding:
    """GPT-2's BPE tokenizer (section 2.5), loaded from the bundled vocabulary."""
    ranks = load_tiktoken_bpe(str(ASSETS_DIR / "gpt2.tiktoken"))
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: ENDOFTEXT_ID},
        explicit_n_vocab=50257,
    )


def text_to_token_ids(text: str) -> list[int]:
    """Encode text as the book does, with `<|endoftext|>` allowed as the special token."""
    return get_tokenizer().encode(text, allowed_special={ENDOFTEXT})


def token_ids_to_text(ids) -> str:
    """Decode token ids; bytes that do not form valid UTF-8 become U+FFFD, as in tiktoken."""
    return get_tokenizer().decode([int(i) for i in ids])


@dataclass(frozen=True)
class TokenPiece:
    """One token as a learner should see it: its id, its raw bytes and a readable label."""

    id: int
    raw: bytes
    text: str  # the piece decoded, or a byte notation like <0xF0 0x9F> when it is not valid UTF-8
    partial: bool  # True when the token is a fragment of a multi-byte character
    special: bool


def token_pieces(ids) -> list[TokenPiece]:
    """The text piece behind every token id, never hiding partial UTF-8 bytes behind `�`."""
    enc = get_tokenizer()
    pieces = []
    for i in ids:
        i = int(i)
        if i == ENDOFTEXT_ID:
            pieces.append(TokenPiece(i, ENDOFTEXT.encode(), ENDOFTEXT, False, True))
            continue
        raw = enc.decode_single_token_bytes(i)
        text = raw.decode("utf-8", errors="surrogateescape")
        partial = any("\udc80" <= ch <= "\udcff" for ch in text)
        if partial:  # show each stray byte as <0xNN> instead of a silent U+FFFD
            text = "".join(f"<0x{ord(ch) - 0xDC00:02X}>" if "\udc80" <= ch <= "\udcff" else ch for ch in text)
        pieces.append(TokenPiece(i, raw, text, partial, False))
    return pieces


# --- The book's simple tokenizer (sections 2.2-2.4) ---------------------------------

_SPLIT = re.compile(r'([,.:;?_!"()\']|--|\s)')
_JOIN = re.compile(r'\s+([,.:?!"()\'])')


def simple_split(text: str) -> list[str]:
    """Split text into words and punctuation as in section 2.2."""
    return [item.strip() for item in _SPLIT.split(text) if item.strip()]


def build_vocab(text: str) -> dict[str, int]:
    """Vocabulary of section 2.3-2.4: sorted unique tokens, then `<|endoftext|>` and `<|unk|>`."""
    all_tokens = sorted(set(simple_split(text)))
    all_tokens.extend([ENDOFTEXT, UNK])
    return {token: integer for integer, token in enumerate(all_tokens)}


class SimpleTokenizerV2:
    """The book's regex tokenizer that maps unknown words to `<|unk|>` (section 2.4)."""

    def __init__(self, vocab: dict[str, int]):
        self.str_to_int = vocab
        self.int_to_str = {i: s for s, i in vocab.items()}

    def tokenize(self, text: str) -> list[str]:
        return [item if item in self.str_to_int else UNK for item in simple_split(text)]

    def encode(self, text: str) -> list[int]:
        return [self.str_to_int[s] for s in self.tokenize(text)]

    def decode(self, ids) -> str:
        text = " ".join(self.int_to_str[int(i)] for i in ids)
        return _JOIN.sub(r"\1", text)


@lru_cache(maxsize=1)
def verdict_simple_tokenizer() -> SimpleTokenizerV2:
    """The simple tokenizer with its vocabulary built from "The Verdict", as in the book."""
    return SimpleTokenizerV2(build_vocab((ASSETS_DIR / "the-verdict.txt").read_text(encoding="utf-8")))
