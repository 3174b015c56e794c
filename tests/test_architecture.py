"""Chapter 4's numbers (llm.architecture): parameter counts, shapes at every stage, layer norm, shortcuts."""
import numpy as np
import pytest
import torch

from llm.architecture import (STAGE_KEYS, ModelTrace, config_parameter_table, feed_forward_activations,
                              flow_stages, gelu_relu_curves, layer_norm_stats, memory_mb, parameter_table,
                              shortcut_gradients)
from llm.checkpoints import build_model
from llm.config import GPT2_SIZES, PRESETS, GPTConfig
from llm.model import GPTModel

TEXT_IDS = [6109, 3626, 6100, 345, 290, 262, 3797, 13]  # "Every effort moves you and the cat."
SHAPES = {
    "tiny": GPTConfig(vocab_size=50257, context_length=32, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1,
                      qkv_bias=True),
    "wide": GPTConfig(vocab_size=1000, context_length=16, emb_dim=48, n_heads=3, n_layers=3, drop_rate=0.0),
}


def numel(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --- 4.6: parameters and memory -------------------------------------------------------------

@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("tied", [False, True])
def test_parameter_table_equals_numel_on_small_models(name, tied):
    cfg = SHAPES[name].with_(tie_weights=tied)
    model = GPTModel(cfg)
    table = parameter_table(model)
    assert table.total == numel(model) == cfg.num_parameters()
    assert table.tied is tied
    from_config = config_parameter_table(cfg)
    assert [r.count for r in from_config.rows] == [r.count for r in table.rows]
    assert table.total_untied == cfg.num_parameters(tied_head=False)
    assert table.total_tied == cfg.num_parameters(tied_head=True)
    by_name = {r.component: r.count for r in table.rows}
    assert by_name["token embedding"] == model.tok_emb.weight.numel()
    assert by_name["attention"] == sum(numel(b.att) for b in model.trf_blocks)
    assert by_name["feed-forward"] == sum(numel(b.ff) for b in model.trf_blocks)
    assert by_name["output head"] == (0 if tied else model.out_head.weight.numel())


def test_book_124m_counts_on_the_meta_device():
    """Section 4.6: 163,009,536 parameters, 124,412,160 with weight tying, 621.83 MB in float32."""
    cfg = GPTConfig(qkv_bias=False)  # the book's GPT_CONFIG_124M
    with torch.device("meta"):
        model = GPTModel(cfg)
    table = parameter_table(model)
    assert table.total == numel(model) == 163_009_536
    assert table.total_tied == 124_412_160
    assert [r.count for r in table.rows] == [r.count for r in config_parameter_table(cfg, tied_head=False).rows]
    assert round(memory_mb(table.total), 2) == 621.83
    assert memory_mb(table.total, "float16") == pytest.approx(621.83 / 2, abs=0.01)
    assert memory_mb(table.total, "int8") == pytest.approx(621.83 / 4, abs=0.01)


@pytest.mark.parametrize("size", GPT2_SIZES)
def test_gpt2_sizes_from_their_configs_equal_meta_models(size):
    cfg = PRESETS[size]
    with torch.device("meta"):
        model = GPTModel(cfg)
        model.out_head.weight = model.tok_emb.weight  # how OpenAI's weights are loaded (section 5.5)
    table = config_parameter_table(cfg, tied_head=True)
    assert table.total == numel(model) == parameter_table(model).total
    assert table.total_untied == cfg.num_parameters(tied_head=False)
    assert 124e6 < config_parameter_table(PRESETS["gpt2-small"], True).total < 125e6
    assert 1.55e9 < config_parameter_table(PRESETS["gpt2-xl"], True).total < 1.56e9


def test_classifier_head_is_counted_and_cannot_be_tied(tiny_cfg):
    model = build_model(tiny_cfg, "classifier", 2)
    table = parameter_table(model)
    assert table.total == numel(model)
    assert {r.component: r.count for r in table.rows}["output head"] == 2 * tiny_cfg.emb_dim + 2
    assert not table.tied and table.total_tied is None and table.total_untied == table.total


# --- 4.1-4.6: the flow and its shapes ---------------------------------------------------------

@pytest.mark.parametrize("name", list(SHAPES))
def test_every_stage_has_the_shape_flow_stages_says(name):
    cfg = SHAPES[name]
    torch.manual_seed(0)
    model = GPTModel(cfg).eval()
    ids = [i % cfg.vocab_size for i in TEXT_IDS]
    trace = ModelTrace(model, ids)
    block = cfg.n_layers - 1
    stages = flow_stages(cfg, len(ids), block)
    assert [s.key for s in stages] == STAGE_KEYS
    d, t = cfg.emb_dim, len(ids)
    expected = {"ids": (1, t), "pos_emb": (t, d), "ff_expand": (1, t, 4 * d), "gelu": (1, t, 4 * d),
                "out_head": (1, t, cfg.vocab_size), "next": (1, cfg.vocab_size)}
    for s in stages:
        assert s.shape == expected.get(s.key, (1, t, d)), s.key
        numbers = trace.stage_numbers(s.key, block, t - 1)
        if numbers.vector is not None:
            assert numbers.vector.shape == (s.shape[-1],), s.key
    assert [s.module for s in stages][4:6] == [f"trf_blocks[{block}].norm1", f"trf_blocks[{block}].att"]
    with torch.inference_mode():
        logits = model(torch.tensor([ids]))[0]
    assert tuple(logits.shape) == stages[13].shape[1:]
    head = trace.stage_numbers("out_head", block, 3)
    assert head.top_ids[0] == int(logits[3].argmax())
    assert head.top_logits[0] == pytest.approx(float(logits[3].max()), abs=1e-4)
    att = trace.stage_numbers("att", block, 3).attention
    assert att.shape == (cfg.n_heads, t)
    np.testing.assert_allclose(att.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(att[:, 4:] == 0)  # the causal mask: token 3 never sees tokens 4..


def test_block_stages_recompute_what_the_model_computes(tiny_cfg):
    model = GPTModel(tiny_cfg).eval()
    trace = ModelTrace(model, TEXT_IDS)
    for block in range(tiny_cfg.n_layers):
        torch.testing.assert_close(trace.block_stages(block)["block_out"], trace.recorded.through(block)[block]["hidden"])
    assert trace.residual_norms().shape == (tiny_cfg.n_layers + 1, len(TEXT_IDS))
    assert (trace.residual_norms() > 0).all()


def test_counts_and_hidden_states_match_transformers_gpt2(tmp_path):
    """A reference no one here wrote: a random `transformers` GPT-2 loaded the way a cached GPT-2 size is."""
    transformers = pytest.importorskip("transformers")
    from llm.checkpoints import load_hub_gpt2_file

    torch.manual_seed(5)
    config = transformers.GPT2Config(n_embd=48, n_head=4, n_layer=3, n_positions=32, vocab_size=50257,
                                     activation_function="gelu_new", layer_norm_epsilon=1e-5)
    reference = transformers.GPT2LMHeadModel(config).eval()
    reference.save_pretrained(tmp_path / "hf")
    model = load_hub_gpt2_file(tmp_path / "hf" / "model.safetensors").model
    table = parameter_table(model)
    assert table.tied and table.total == reference.num_parameters() == numel(model)
    assert table.total_untied == reference.num_parameters() + 50257 * 48
    with torch.no_grad():
        out = reference(torch.tensor([TEXT_IDS]), output_hidden_states=True)
    trace = ModelTrace(model, TEXT_IDS)
    ours = trace.hidden_states()
    for n in range(3):  # embeddings, then blocks 0 and 1 (the reference's last one has ln_f applied)
        torch.testing.assert_close(ours[n], out.hidden_states[n][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(trace.final([7])["logits"][0], out.logits[0, 7], atol=1e-4, rtol=1e-4)


def test_classifier_next_stage_gives_class_probabilities_of_the_last_token(tiny_cfg):
    model = build_model(tiny_cfg, "classifier", 2).eval()
    trace = ModelTrace(model, TEXT_IDS)
    numbers = trace.stage_numbers("next", 0, 0)
    assert numbers.token == len(TEXT_IDS) - 1 and sorted(numbers.top_ids) == [0, 1]
    assert sum(numbers.top_probs) == pytest.approx(1.0, abs=1e-5)
    assert flow_stages(tiny_cfg, 8, 0, out_features=2)[-1].shape == (1, 2)


@pytest.mark.parametrize("bad, message", [(("att", 2, 0), "2 transformer blocks"), (("att", -1, 0), "from 0 to 1"),
                                          (("att", 0, 8), "8 tokens: pick a token from 0 to 7"),
                                          (("nope", 0, 0), "Unknown stage")])
def test_bad_block_token_or_stage_is_a_sentence(tiny_cfg, bad, message):
    trace = ModelTrace(GPTModel(tiny_cfg).eval(), TEXT_IDS)
    with pytest.raises(ValueError, match=message):
        trace.stage_numbers(*bad)


def test_the_books_pth_state_dict_loads_and_is_traced(tmp_path, tiny_cfg):
    """A `model.pth` saved as in chapter 5 (`torch.save(model.state_dict(), ...)`), loaded as the picker loads it."""
    from llm.checkpoints import load_any_checkpoint

    model = GPTModel(tiny_cfg.with_(qkv_bias=False))
    torch.save(model.state_dict(), tmp_path / "model.pth")
    loaded = load_any_checkpoint(tmp_path / "model.pth", n_heads=tiny_cfg.n_heads).model
    assert parameter_table(loaded).total == numel(model)
    trace = ModelTrace(loaded, TEXT_IDS)
    assert trace.residual_norms().shape == (tiny_cfg.n_layers + 1, len(TEXT_IDS))
    assert trace.stage_numbers("att", 1, 7).attention.shape == (tiny_cfg.n_heads, len(TEXT_IDS))


def test_token_ids_beyond_the_vocabulary_are_a_sentence():
    small = GPTModel(SHAPES["wide"])  # a 1,000-token vocabulary
    with pytest.raises(ValueError, match="vocabulary has 1,000 tokens"):
        ModelTrace(small, TEXT_IDS)


def test_text_longer_than_the_context_is_refused(tiny_cfg):
    with pytest.raises(ValueError, match="exceed the model's context length of 32"):
        ModelTrace(GPTModel(tiny_cfg), list(range(33)))


# --- 4.2, 4.3: layer norm and GELU ------------------------------------------------------------

@pytest.mark.parametrize("tied", [False, True])  # tied: embeddings at std 0.02, far from variance 1
def test_layer_norm_output_has_mean_0_and_variance_1_per_token(tiny_cfg, tied):
    model = GPTModel(tiny_cfg.with_(tie_weights=tied)).eval()
    trace = ModelTrace(model, TEXT_IDS)
    stats = layer_norm_stats(trace, 1)
    assert stats["input_mean"].shape == (len(TEXT_IDS),)
    assert np.abs(stats["normalized_mean"]).max() < 1e-5
    assert 0.95 < stats["normalized_var"].min() <= stats["normalized_var"].max() < 1.0 + 1e-4
    # fresh scale = 1 and shift = 0: the output is the normalized vector itself
    np.testing.assert_allclose(stats["output_var"], stats["normalized_var"], atol=1e-5)
    if tied:
        assert stats["input_var"].max() < 0.1  # "before ≈ anything"
    with torch.no_grad():
        model.trf_blocks[1].norm1.scale.fill_(2.0)
        model.trf_blocks[1].norm1.shift.fill_(0.5)
    stats = layer_norm_stats(ModelTrace(model, TEXT_IDS), 1)
    np.testing.assert_allclose(stats["output_mean"], 0.5, atol=1e-4)
    np.testing.assert_allclose(stats["output_var"], 4 * stats["normalized_var"], rtol=1e-4)


def test_gelu_curve_and_negative_share(tiny_cfg):
    curves = gelu_relu_curves()
    assert curves["x"].shape == curves["gelu"].shape == curves["relu"].shape
    assert -0.18 < curves["gelu"].min() < -0.16  # GELU's minimum, about -0.17 near x = -0.75
    assert curves["relu"].min() == 0.0
    acts = feed_forward_activations(ModelTrace(GPTModel(tiny_cfg).eval(), TEXT_IDS), 0)
    assert acts["count"] == len(TEXT_IDS) * 4 * tiny_cfg.emb_dim
    assert 0.0 < acts["negative_share"] < 1.0
    assert acts["negative_share"] == pytest.approx(float((acts["gelu"] < 0).mean()))
    assert acts["negative_share"] <= acts["pre_negative_share"] + 1e-9  # GELU(x) < 0 only where x < 0


# --- 4.4: shortcut connections ----------------------------------------------------------------

def test_shortcut_gradients_are_the_books():
    """Section 4.4 prints these mean gradients (torch.manual_seed(123), input [[1., 0., -1.]])."""
    without = list(shortcut_gradients(False).values())
    with_ = list(shortcut_gradients(True).values())
    np.testing.assert_allclose(without, [0.0002017, 0.0001201, 0.0007152, 0.0013989, 0.0050496], rtol=1e-3)
    np.testing.assert_allclose(with_, [0.2217, 0.2069, 0.3290, 0.2666, 1.3259], rtol=1e-3)


@pytest.mark.parametrize("layers, seed", [(5, 123), (8, 1), (8, 3), (8, 6)])
def test_without_shortcuts_the_first_layers_gradient_vanishes(layers, seed):
    """The book's network and seed, and deeper ones (a 3-wide toy: with shortcuts the last layer can still
    get over 10x the first's gradient for some seeds, e.g. 5 layers with seed 2; the book's seed is not one)."""
    sizes = [3] * layers + [1]
    without = list(shortcut_gradients(False, sizes, seed).values())
    with_ = list(shortcut_gradients(True, sizes, seed).values())
    assert len(without) == len(with_) == layers
    assert without[0] * 10 <= without[-1]
    assert with_[0] * 10 > with_[-1]


def test_shortcut_experiment_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    shortcut_gradients(True)
    assert torch.equal(state, torch.random.get_rng_state())


# --- python -m llm info --params -----------------------------------------------------------------

def test_cli_info_params_prints_the_table_for_a_gpt2_size_without_download(capsys):
    from llm.__main__ import main

    assert main(["info", "--params", "gpt2-small"]) == 0
    out = capsys.readouterr().out
    assert "124,439,808" in out and "tied to tok_emb" in out and "163,037,184" in out
    assert "163,009,536" in out and "124,412,160" in out  # the book's GPT_CONFIG_124M column
    assert "float16 MB" in out and "int8 MB" in out and "gpt2-xl" in out


def test_cli_info_params_counts_a_checkpoint_file_as_loaded(tmp_path, tiny_cfg, capsys):
    import json

    from llm.__main__ import main
    from llm.checkpoints import build_model, save_checkpoint

    model = build_model(tiny_cfg, "classifier", 2)
    path = save_checkpoint(tmp_path / "spam.safetensors", model, task="classifier", labels=["ham", "spam"])
    assert main(["info", "--params", "--json", str(path)]) == 0
    params = json.loads(capsys.readouterr().out)
    assert params["model"]["total"] == numel(model) and params["model"]["total_tied"] is None
    tied = GPTModel(tiny_cfg.with_(tie_weights=True))
    path = save_checkpoint(tmp_path / "tied.safetensors", tied)
    assert main(["info", "--params", "--json", str(path)]) == 0
    params = json.loads(capsys.readouterr().out)
    assert params["model"]["total"] == numel(tied) and params["model"]["tied"]


def test_cli_info_without_a_model_or_params_is_a_sentence(capsys):
    from llm.__main__ import main

    assert main(["info"]) == 2
    assert "name a checkpoint file" in capsys.readouterr().err
    assert main(["info", "--params", "no-such-model"]) == 2
