"""Chapters 3-4: the GPT's structure, its two attention paths and its KV cache."""
import pytest
import torch

from llm.config import PRESETS, GPTConfig, get_config
from llm.generation import generate_text_simple, stream_generate
from llm.model import GPTModel, KVCache


def test_book_parameter_names(tiny_cfg):
    names = set(GPTModel(tiny_cfg).state_dict())
    for expected in ["tok_emb.weight", "pos_emb.weight", "trf_blocks.0.att.W_query.weight",
                     "trf_blocks.0.att.W_key.weight", "trf_blocks.0.att.W_value.weight",
                     "trf_blocks.0.att.out_proj.weight", "trf_blocks.0.ff.layers.0.weight",
                     "trf_blocks.0.ff.layers.2.bias", "trf_blocks.1.norm1.scale", "trf_blocks.1.norm2.shift",
                     "final_norm.scale", "out_head.weight"]:
        assert expected in names


def test_124m_parameter_count_matches_the_book():
    cfg = get_config("gpt2-small").with_(qkv_bias=False)
    assert cfg.num_parameters() == 163_009_536  # section 4.6
    assert cfg.num_parameters(tied_head=True) == 124_412_160
    model = GPTModel(cfg.with_(context_length=8, n_layers=1))
    assert sum(p.numel() for p in model.parameters()) == cfg.with_(context_length=8, n_layers=1).num_parameters()


def test_presets_are_valid_and_named():
    assert {"gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "lab-tiny", "lecture"} <= set(PRESETS)
    assert get_config("gpt2-xl").emb_dim == 1600
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("gpt5")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(emb_dim=30, n_heads=4)


def test_fast_and_explicit_attention_agree(tiny_cfg):
    model = GPTModel(tiny_cfg).eval()
    idx = torch.randint(0, tiny_cfg.vocab_size, (3, 20))
    records = []
    with torch.no_grad():
        fast = model(idx)
        explicit = model(idx, records=records)
    assert (fast - explicit).abs().max().item() < 1e-5
    assert len(records) == tiny_cfg.n_layers
    w = records[0]["attn_weights"]
    assert w.shape == (3, tiny_cfg.n_heads, 20, 20)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, tiny_cfg.n_heads, 20))
    assert torch.all(torch.triu(w, diagonal=1) == 0)  # causal: nothing above the diagonal
    assert torch.isinf(records[0]["masked_scores"][0, 0, 0, 1])
    for key in ("queries", "keys", "values", "attn_scores", "scaled_scores", "context", "hidden"):
        assert key in records[0]


def test_kv_cache_gives_the_same_logits_as_a_full_pass(tiny_cfg):
    model = GPTModel(tiny_cfg).eval()
    idx = torch.randint(0, tiny_cfg.vocab_size, (2, 12))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(tiny_cfg, batch_size=2)
        first = model(idx[:, :5], kv_cache=cache)
        middle = model(idx[:, 5:9], kv_cache=cache)  # a chunk at an offset needs the shifted mask
        last = torch.cat([model(idx[:, i:i + 1], kv_cache=cache) for i in range(9, 12)], dim=1)
    torch.testing.assert_close(torch.cat([first, middle, last], dim=1), full, atol=1e-5, rtol=1e-5)


def test_greedy_with_cache_equals_without(tiny_cfg):
    model = GPTModel(tiny_cfg).eval()
    prompt = [6109, 3626, 6100, 345]
    cached = [t.id for t in stream_generate(model, prompt, 25, eos_id=None, use_cache=True)]
    uncached = [t.id for t in stream_generate(model, prompt, 25, eos_id=None, use_cache=False)]
    book = generate_text_simple(model, torch.tensor([prompt]), 25, tiny_cfg.context_length)[0, 4:].tolist()
    assert cached == uncached == book


def test_context_overflow_is_reported(tiny_cfg):
    model = GPTModel(tiny_cfg)
    with pytest.raises(ValueError, match="context length"):
        model(torch.zeros(1, tiny_cfg.context_length + 1, dtype=torch.long))
