"""How good is a language model's text? Held-out loss (section 5.1) and simple checks of output.

`text_loss` is the book's cross-entropy over a whole text in non-overlapping windows:
the figure the bundled model is judged by (held-out Wharton paragraphs, *The Verdict*).
`english_share` and `reply_problems` look at generated text the way a reader would:
are the words real words, does the reply stop cleanly instead of repeating itself?
The chat tab shows its ✅ only when `reply_problems` finds nothing.
"""
from __future__ import annotations

import re
from functools import lru_cache

import torch

from .paths import ASSETS_DIR

WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
#: Texts whose words count as known English: the bundled corpus and the instruction answers.
VOCABULARY_TEXTS = ("wharton-fiction.txt", "instruction-data.json", "the-verdict.txt")


def text_loss(model, text: str, batch_size: int = 8, max_windows: int | None = None) -> float:
    """Mean cross-entropy per token of `text`, in windows of the model's context (section 5.1.2).

    Windows do not overlap (stride = context), so every token is predicted once, from
    up to a full context before it; `max_windows` caps the work (evenly spread).
    """
    from torch.utils.data import DataLoader

    from .data import GPTDatasetV1
    from .pretraining import calc_loss_loader
    from .tokenizer import text_to_token_ids

    ids = text_to_token_ids(text)
    context = min(model.cfg.context_length, max(1, len(ids) - 1))
    dataset = GPTDatasetV1(ids, max_length=context, stride=context)
    if len(dataset) == 0:
        raise ValueError(f"the text has {len(ids)} tokens: too short to measure a loss on")
    if max_windows is not None and len(dataset) > max_windows:
        step = len(dataset) / max_windows
        dataset = torch.utils.data.Subset(dataset, [int(i * step) for i in range(max_windows)])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return calc_loss_loader(loader, model)


def held_out_windows(window: int = 128, per_text: int = 16) -> list[list[int]]:
    """Token windows of text no lab model was trained on: the-verdict's validation part (its last
    10%) and the Wharton corpus's held-out paragraphs (every 20th, the bundled model's split).

    `per_text` windows of `window` tokens from each, spread over the text; used to compare a
    model's fp16/int8 copy with its float32 self (`llm.generation.teacher_forced_agreement`).
    """
    from .pretraining import load_text, split_text
    from .tokenizer import text_to_token_ids

    verdict = load_text(ASSETS_DIR / "the-verdict.txt")
    held_out = split_text(load_text(ASSETS_DIR / "wharton-fiction.txt"), holdout_every=20)[1]
    windows = []
    for text in (verdict[int(len(verdict) * 0.9):], held_out[:400_000]):
        ids = text_to_token_ids(text)
        step = max(window // 2, (len(ids) - window) // per_text)
        windows += [ids[i:i + window] for i in range(0, len(ids) - window + 1, step)][:per_text]
    return windows


@lru_cache(maxsize=4)
def known_words(names: tuple[str, ...] = VOCABULARY_TEXTS) -> frozenset[str]:
    """Lower-cased words of bundled English texts (`names` in assets/; about 40,000 for the default)."""
    words = set()
    for name in names:
        path = ASSETS_DIR / name
        if path.is_file():
            words.update(w.lower() for w in WORD.findall(path.read_text(encoding="utf-8")))
    return frozenset(words)


def english_share(text: str, names: tuple[str, ...] = VOCABULARY_TEXTS) -> float:
    """Share of the words of `text` that occur in the bundled English texts `names` (0.0 for no words)."""
    words = [w.lower() for w in WORD.findall(text)]
    if not words:
        return 0.0
    vocabulary = known_words(names)
    return sum(w in vocabulary for w in words) / len(words)


def repeated_ngram(text: str, n: int = 4, times: int = 3) -> str | None:
    """An n-word phrase said `times` times or more (the loop of a small greedy model), or None."""
    words = [w.lower() for w in WORD.findall(text)]
    counts: dict[tuple, int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= times:
            return " ".join(gram)
    return None


def reply_problems(reply: str, min_english: float = 0.9) -> list[str]:
    """What is wrong with a chat reply, as sentences for the learner; [] when it reads well."""
    problems = []
    if not WORD.search(reply or ""):
        return ["the reply has no words"]
    share = english_share(reply)
    if share < min_english:
        problems.append(f"only {share:.0%} of its words are English words")
    loop = repeated_ngram(reply)
    if loop:
        problems.append(f"it repeats itself (\u201c{loop}\u201d three times or more)")
    if not reply.rstrip().endswith((".", "!", "?", '"', "'", ")")):
        problems.append("it stops mid-sentence")
    return problems


#: Two instructions of the book's test split, asked to decide the chat tab's ✅.
PROBE_INSTRUCTIONS = ("Rewrite the sentence using a simile.\n\nThe car is very fast.",
                      "What is the capital of Italy?")


@lru_cache(maxsize=3)  # the catalog keeps 3 models loaded: each is asked once, not at every picker change
def probe_replies(model, max_new_tokens: int = 60) -> tuple[list[str], list[str]]:
    """Ask an instruction model two questions (greedy); return (replies, problems found in them).

    The chat tab shows its ✅ only when `problems` is empty: the replies are English and end cleanly.
    """
    from .instruct import chat_reply

    replies, problems = [], []
    for message in PROBE_INSTRUCTIONS:
        instruction, _, input_text = message.partition("\n\n")
        reply = chat_reply(model, instruction, input_text, max_new_tokens=max_new_tokens)
        replies.append(reply)
        problems += [f"to \u201c{instruction}\u201d {p}" for p in reply_problems(reply)]
    return replies, problems
