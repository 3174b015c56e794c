"""What the KV cache saves, measured so that noise cannot invert the lesson (chapter 4's generation loop
with the cache of the book's bonus material).

Without the cache every new token runs the model over the whole window again; with it only the new
token passes through the blocks, reading the stored keys and values. `compare_kv_cache` times both
the fair way: one untimed warm-up run of each, then several timed runs alternating the two (so a
burst of load on a shared machine hits both), at least `MIN_TOKENS` tokens each, and the median
rate of each. When the cache does not help — a tiny model over a few tokens spends its time in the
output head and Python, not in attention — `CacheComparison.explain()` says why instead of
reporting a speed-up below 1 as if it were a result.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from .generation import stream_generate

#: Fewer new tokens than this make the comparison mostly noise.
MIN_TOKENS = 32
#: Timed runs of each kind (the median is reported).
REPEATS = 3
#: Below this ratio the two rates are within the noise of a shared CPU: "no clear difference".
CLEAR_SPEEDUP = 1.15


@dataclass(frozen=True)
class CacheComparison:
    tokens: int  # new tokens per run
    prompt_tokens: int
    with_cache: float  # median tokens/s
    without_cache: float
    runs: int  # timed runs of each kind
    same_tokens: bool
    parameters: int
    context_length: int

    @property
    def speedup(self) -> float:
        return self.with_cache / self.without_cache if self.without_cache else float("inf")

    def explain(self) -> str:
        """One or two sentences: the speed-up, or why there is none on this model and text."""
        window = min(self.prompt_tokens + self.tokens, self.context_length)
        if self.speedup >= CLEAR_SPEEDUP:
            return (f"The cache is **×{self.speedup:.1f}** faster here (median of {self.runs} runs each): without it "
                    f"every new token recomputes all {window} positions of the window. The saving grows with the "
                    "model and the length of the text.")
        why = (f"this model is small ({self.parameters / 1e6:.1f}M parameters) and the window short ({window} tokens "
               f"of context {self.context_length}), so each step's time goes to the {self.parameters / 1e6:.0f}M-"
               "weight output head and Python overhead, which the cache does not save; recomputing a short window "
               "costs little")
        return (f"**No clear speed-up here** ({self.with_cache:.0f} vs {self.without_cache:.0f} tokens/s, median of "
                f"{self.runs} runs each, within the noise of this machine): {why}. Try a larger model (GPT-2) or "
                "more new tokens: the work without the cache grows with the square of the text's length.")


def _rate(model, ids: list[int], n: int, use_cache: bool) -> tuple[float, list[int]]:
    start = time.perf_counter()
    tokens = [t.id for t in stream_generate(model, ids, n, temperature=0.0, use_cache=use_cache, eos_id=None)]
    return len(tokens) / max(time.perf_counter() - start, 1e-9), tokens


@torch.no_grad()
def compare_kv_cache(model, ids: list[int], max_new_tokens: int, repeats: int = REPEATS) -> CacheComparison:
    """Greedy generation of the same tokens with and without the KV cache, timed fairly (see the module)."""
    room = max(1, model.cfg.context_length - len(ids))
    n = max(min(max_new_tokens, room), min(MIN_TOKENS, room))
    for use_cache in (True, False):  # warm-up: first calls allocate and pick kernels
        _rate(model, ids, min(n, 8), use_cache)
    rates = {True: [], False: []}
    tokens = {}
    for _ in range(repeats):
        for use_cache in (True, False):
            rate, tokens[use_cache] = _rate(model, ids, n, use_cache)
            rates[use_cache].append(rate)
    return CacheComparison(n, len(ids), statistics.median(rates[True]), statistics.median(rates[False]), repeats,
                           tokens[True] == tokens[False], sum(p.numel() for p in model.parameters()),
                           model.cfg.context_length)
