"""The KV-cache comparison (llm.cache_speed): timed fairly, and never a speed-up below 1 without the reason."""
import re

from llm.cache_speed import MIN_TOKENS, CacheComparison, compare_kv_cache
from llm.model import GPTModel


def _speedups(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"×(\d+(?:\.\d+)?)", text)]


def test_a_slower_cache_is_explained_not_reported_as_a_speed_up():
    slower = CacheComparison(40, 5, with_cache=113.8, without_cache=147.7, runs=3, same_tokens=True,
                             parameters=13_900_000, context_length=64)
    text = slower.explain()
    assert "No clear speed-up here" in text and "output head" in text and "larger model" in text
    assert all(s >= 1 for s in _speedups(text))
    faster = CacheComparison(60, 5, with_cache=300.0, without_cache=100.0, runs=3, same_tokens=True,
                             parameters=124_000_000, context_length=1024)
    assert "×3.0" in faster.explain()


def test_the_measurement_warms_up_uses_enough_tokens_and_agrees(tiny_cfg):
    model = GPTModel(tiny_cfg.with_(context_length=64)).eval()
    c = compare_kv_cache(model, [1, 2, 3], max_new_tokens=4, repeats=2)
    assert c.tokens == MIN_TOKENS and c.runs == 2 and c.same_tokens
    assert all(s >= 1 for s in _speedups(c.explain())) and c.with_cache > 0 and c.without_cache > 0
