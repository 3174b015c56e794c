"""llm.introspect: the numbers behind the Tokenize, Embeddings and Attention tabs."""
import numpy as np
import pytest
import torch

from llm.introspect import (RecordedPass, attention_maps, attention_records, attention_steps, embedding_views, logit_lens,
                         nearest_neighbours, pca_2d, sanitize_text, simple_tokens, sliding_windows)
from llm.model import GPTModel
from llm.tokenizer import text_to_token_ids


@pytest.fixture
def model(tiny_cfg):
    return GPTModel(tiny_cfg).eval()


IDS = text_to_token_ids("Your journey starts with one step")


def test_sanitize_text_notices():
    assert sanitize_text("plain")[1] == []
    text, notices = sanitize_text("a\x00b\x1bc\nd\te", limit=100)
    assert text == "abc\nd\te" and "Removed 2 control character(s)" in notices[0]
    text, notices = sanitize_text("x" * 50, limit=10)
    assert text == "x" * 10 and "first 10" in notices[0]
    assert "special end-of-text token" in sanitize_text("a <|endoftext|> b")[1][0]
    for empty in ("", "  \n", None, "\x00\x07"):
        with pytest.raises(ValueError):
            sanitize_text(empty)


def test_simple_tokens_mark_unknown_words():
    tokens = simple_tokens("I HAD always thought someunknownPlace.")
    assert [t.text for t in tokens] == ["I", "HAD", "always", "thought", "someunknownPlace", "."]
    assert [t.unknown for t in tokens] == [False] * 4 + [True, False]


def test_sliding_windows_match_the_dataset_count():
    ids = list(range(100))
    pairs, total = sliding_windows(ids, max_length=8, stride=5, limit=3)
    assert total == len(range(0, 100 - 8, 5)) and len(pairs) == 3
    assert pairs[1] == (list(range(5, 13)), list(range(6, 14)))
    assert sliding_windows(ids[:5], 8, 1) == ([], 0)


def test_embedding_views_add_up(model):
    views = embedding_views(model, IDS)
    assert views["token"].shape == (len(IDS), model.cfg.emb_dim)
    np.testing.assert_allclose(views["input"], views["token"] + views["position"], atol=1e-6)
    np.testing.assert_allclose(views["token"][0], model.tok_emb.weight[IDS[0]].detach().numpy())


def test_pca_2d_finds_the_main_direction():
    rng = np.random.default_rng(0)
    t = rng.normal(size=50)
    vectors = np.outer(t, [3.0, 0, 0, 4.0]) + 0.01 * rng.normal(size=(50, 4))
    coords, (first, second) = pca_2d(vectors)
    assert coords.shape == (50, 2) and first > 0.99 and second < 0.01
    assert abs(np.corrcoef(coords[:, 0], t)[0, 1]) > 0.999
    with pytest.raises(ValueError):
        pca_2d(vectors[:1])


def test_nearest_neighbours_by_cosine(model):
    with torch.no_grad():
        model.tok_emb.weight[7] = 2.5 * model.tok_emb.weight[1000]  # same direction, other length
    found = nearest_neighbours(model, 1000, k=5)
    assert found[0].id == 7 and found[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert 1000 not in [f.id for f in found]
    assert [f.similarity for f in found] == sorted((f.similarity for f in found), reverse=True)
    with pytest.raises(ValueError):
        nearest_neighbours(model, 10 ** 6)


def test_attention_maps_are_causal_distributions(model):
    maps = attention_maps(model, IDS)
    n = len(IDS)
    assert maps.shape == (model.cfg.n_layers, model.cfg.n_heads, n, n)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert np.all(maps[..., np.triu_indices(n, k=1)[0], np.triu_indices(n, k=1)[1]] == 0)


def test_a_recorded_pass_runs_each_block_once_and_only_when_asked(model):
    """Looking at layer 0 runs one block; a later look at the last layer runs the rest, not block 0 again."""
    calls = []
    for i, block in enumerate(model.trf_blocks):
        block.register_forward_hook(lambda module, args, out, i=i: calls.append(i))
    recorded = RecordedPass(model, IDS)
    first = recorded.through(0)
    assert len(first) == 1 and calls == [0]
    every = recorded.through()
    assert len(every) == model.cfg.n_layers and calls == list(range(model.cfg.n_layers))
    assert recorded.through(0)[0] is first[0] and calls == list(range(model.cfg.n_layers))
    # the same tensors as one whole forward pass of the model with recording on
    records = []
    with torch.inference_mode():
        logits = model(torch.tensor([IDS]), records=records)
    for ours, whole in zip(every, records):
        for name, t in whole.items():
            torch.testing.assert_close(ours[name], t[0], rtol=0, atol=0, msg=name)
    hidden = every[-1]["hidden"]
    with torch.inference_mode():
        torch.testing.assert_close(model.out_head(model.final_norm(hidden)), logits[0], rtol=0, atol=1e-6)


def test_attention_steps_follow_section_3_6(model):
    records = attention_records(model, IDS)
    steps = attention_steps(records, layer=1, head=2, max_tokens=4)
    q, k, v = steps["queries"], steps["keys"], steps["values"]
    assert q.shape == (4, model.cfg.head_dim)
    np.testing.assert_allclose(steps["attn_scores"], q @ k.T, atol=1e-5)
    np.testing.assert_allclose(steps["scaled_scores"], q @ k.T / np.sqrt(model.cfg.head_dim), atol=1e-5)
    assert np.isneginf(steps["masked_scores"][0, 1:]).all()
    np.testing.assert_allclose(steps["context"], steps["attn_weights"] @ v, atol=1e-5)
    full = attention_maps(model, IDS)[1, 2]
    np.testing.assert_allclose(steps["attn_weights"], full[:4, :4], atol=1e-6)  # the causal cut is exact


def test_logit_lens_last_block_is_the_models_prediction(model):
    rows = logit_lens(model, IDS, top=3)
    assert [r.layer for r in rows] == list(range(model.cfg.n_layers))
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([IDS])), dim=-1)[0]
    top = torch.topk(probs, 3, dim=-1)
    assert rows[-1].top_ids == top.indices.tolist()
    np.testing.assert_allclose(rows[-1].top_probs, top.values.numpy(), atol=1e-5)
    last_two = logit_lens(model, IDS, top=3, last_positions=2)
    assert last_two[0].top_ids == rows[0].top_ids[-2:]


def test_inputs_longer_than_the_context_are_refused(model):
    with pytest.raises(ValueError, match="context length"):
        attention_records(model, list(range(model.cfg.context_length + 1)))
