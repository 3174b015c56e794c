"""Checkpoints: the lab format, GPT-2 in the Hub layout (checked against transformers), the book's .pth."""
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save, save_file

from llm.__main__ import main as cli
from llm.checkpoints import (Checkpoint, CheckpointError, count_parameters, download_gpt2, hub_status,
                             inspect_checkpoint, load_any_checkpoint, load_book_pth, load_checkpoint,
                             load_hub_gpt2_file, load_pretrained_gpt2, read_metadata, save_checkpoint)
from llm.config import GPTConfig
from llm.generation import generate, stream_generate
from llm.model import GPTModel

transformers = pytest.importorskip("transformers")

# (n_embd, n_head, n_layer, n_positions): two shapes neither of which is a GPT-2 size
SHAPES = [(64, 4, 2, 64), (96, 6, 3, 128)]


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache and checkpoints folder, so the machine's own never leak in."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("LLM_LAB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path / "hf-cache"


def reference_gpt2(n_embd, n_head, n_layer, n_positions):
    """A randomly initialised transformers GPT-2 (gelu_new, LayerNorm eps 1e-5 as ours)."""
    torch.manual_seed(n_embd)
    config = transformers.GPT2Config(n_embd=n_embd, n_head=n_head, n_layer=n_layer, n_positions=n_positions,
                                     vocab_size=50257, activation_function="gelu_new", layer_norm_epsilon=1e-5)
    return transformers.GPT2LMHeadModel(config).eval()


def save_raw_hub_file(reference, path):
    """The layout of openai-community/gpt2's model.safetensors: `wte.weight`, `h.0.attn...`, no prefix,
    with the old causal-mask buffers and a duplicate lm_head that a loader must ignore."""
    tensors = {k: v.detach().clone().contiguous() for k, v in reference.transformer.state_dict().items()}
    ctx = reference.config.n_positions
    for i in range(reference.config.n_layer):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(ctx, ctx)).view(1, 1, ctx, ctx)
        tensors[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    tensors["lm_head.weight"] = reference.lm_head.weight.detach().clone()
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def hub_file(reference, tmp_path, layout):
    if layout == "save_pretrained":  # keys `transformer.h.0...`, config.json next to the file
        reference.save_pretrained(tmp_path / "hf")
        return tmp_path / "hf" / "model.safetensors", None
    return save_raw_hub_file(reference, tmp_path / "raw.safetensors"), reference.config.n_head


# ------------------------------------------------------------------ reference parity

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"d{s[0]}-h{s[1]}-L{s[2]}-ctx{s[3]}")
@pytest.mark.parametrize("layout", ["save_pretrained", "raw"])
def test_hub_layout_matches_transformers(shape, layout, tmp_path):
    reference = reference_gpt2(*shape)
    path, n_heads = hub_file(reference, tmp_path, layout)
    ckpt = load_hub_gpt2_file(path, n_heads=n_heads)
    model = ckpt.model
    assert ckpt.task == "lm"
    assert model.cfg == GPTConfig(vocab_size=50257, context_length=shape[3], emb_dim=shape[0],
                                  n_heads=shape[1], n_layers=shape[2], drop_rate=0.0, qkv_bias=True)
    assert model.out_head.weight is model.tok_emb.weight  # tied, one tensor
    assert count_parameters(model) == sum(p.numel() for p in reference.parameters())

    idx = torch.randint(0, 50257, (2, shape[3]))
    with torch.no_grad():
        ours, theirs = model(idx), reference(idx).logits
    assert (ours - theirs).abs().max().item() < 1e-4

    prompt = torch.tensor([[15496, 11, 314, 716]])  # "Hello, I am"
    expected = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                                  min_new_tokens=20, do_sample=False, pad_token_id=0)[0, 4:].tolist()
    assert len(expected) == 20
    assert [t.id for t in stream_generate(model, prompt[0].tolist(), 20, eos_id=None)] == expected
    assert generate(model, prompt, 20, context_size=shape[3], eos_id=None)[0, 4:].tolist() == expected


@pytest.mark.parametrize("restore_buffers", [True, False], ids=["meta", "fallback"])
def test_large_model_path_builds_on_meta_and_matches(restore_buffers, tmp_path, monkeypatch):
    """GPT-2 sizes skip the random init (meta device); forced here on a small model."""
    import llm.checkpoints as checkpoints
    reference = reference_gpt2(*SHAPES[0])
    path, _ = hub_file(reference, tmp_path, "save_pretrained")
    normal = load_hub_gpt2_file(path).model
    monkeypatch.setattr(checkpoints, "META_MIN_PARAMS", 0)
    if not restore_buffers:  # a buffer the loader cannot rebuild: it must fall back to a normal build
        monkeypatch.setattr(checkpoints, "_restore_buffers", lambda model, cfg: False)
    model = load_hub_gpt2_file(path).model
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert model.out_head.weight is model.tok_emb.weight
    for (name, a), (_, b) in zip(normal.named_buffers(), model.named_buffers()):
        assert torch.equal(a, b), name
    idx = torch.randint(0, 50257, (1, 64))
    with torch.no_grad():
        assert torch.equal(model(idx), normal(idx))


def test_hub_file_without_head_count_asks_for_it(tmp_path):
    path = save_raw_hub_file(reference_gpt2(*SHAPES[1]), tmp_path / "raw.safetensors")
    with pytest.raises(CheckpointError, match="n_heads"):
        load_hub_gpt2_file(path)


def test_hub_config_with_other_activation_is_refused(tmp_path):
    reference = reference_gpt2(*SHAPES[0])
    reference.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["activation_function"] = "relu"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="activation 'relu'"):
        load_any_checkpoint(tmp_path / "hf" / "model.safetensors")


def test_inspect_hub_file_counts_tied_head_once(tmp_path):
    reference = reference_gpt2(*SHAPES[0])
    path, _ = hub_file(reference, tmp_path, "save_pretrained")
    info = inspect_checkpoint(path)
    assert info.layout == "hub" and info.config.n_heads == 4
    assert info.num_parameters == sum(p.numel() for p in reference.parameters())


# ------------------------------------------------------------------ OpenAI GPT-2 from the cache / Hub

def place_in_hf_cache(cache, repo, source_dir):
    """What hf_hub_download leaves behind: refs/main -> snapshots/<sha>/model.safetensors."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    sha = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(sha)
    (folder / "snapshots" / sha).mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        os.link(source_dir / name, folder / "snapshots" / sha / name)


def test_pretrained_gpt2_from_the_cache_without_network(hf_cache, tmp_path):
    reference = reference_gpt2(*SHAPES[1])
    reference.save_pretrained(tmp_path / "hf")
    place_in_hf_cache(hf_cache, "openai-community/gpt2", tmp_path / "hf")
    ckpt = load_pretrained_gpt2("gpt2-small")
    assert "openai-community/gpt2" in ckpt.training["source"]
    idx = torch.randint(0, 50257, (1, 16))
    with torch.no_grad():
        assert (ckpt.model(idx) - reference(idx).logits).abs().max().item() < 1e-4
    assert str(download_gpt2("gpt2")) == load_pretrained_gpt2("124M").source  # cached: no network


def test_pretrained_gpt2_placed_by_hand(hf_cache, tmp_path):
    reference = reference_gpt2(*SHAPES[0])
    reference.save_pretrained(tmp_path / "checkpoints" / "gpt2-medium")
    ckpt = load_pretrained_gpt2("gpt2-medium")
    assert ckpt.config.emb_dim == 64 and ckpt.config.n_heads == 4


def test_missing_gpt2_says_how_to_get_it(hf_cache):
    with pytest.raises(CheckpointError) as e:
        load_pretrained_gpt2("gpt2-small")
    message = str(e.value)
    assert "not downloaded" in message and "python -m llm download gpt2-small" in message
    assert str(hf_cache.parent / "checkpoints" / "gpt2-small" / "model.safetensors") in message


def test_download_offline_is_a_clear_error(hf_cache):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest: nothing here touches the network
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set") as e:
        load_pretrained_gpt2("gpt2-medium", download=True)
    assert "https://huggingface.co/openai-community/gpt2-medium/resolve/main/model.safetensors" in str(e.value)
    reachable, message = hub_status()
    assert not reachable and "HF_HUB_OFFLINE" in message


def test_unreachable_hub_is_a_clear_error(hf_cache, monkeypatch):
    """The Hub at a closed port on this machine: refused at once, said plainly (loopback only)."""
    import socket

    from huggingface_hub import constants
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    reachable, message = hub_status(timeout=2)
    assert not reachable and "unreachable" in message
    with pytest.raises(CheckpointError, match="Hugging Face Hub is unreachable"):
        download_gpt2("gpt2-small", timeout=2)


def test_unknown_gpt2_size():
    with pytest.raises(CheckpointError, match="unknown GPT-2 size"):
        load_pretrained_gpt2("gpt2-huge")


# ------------------------------------------------------------------ the book's .pth files

def book_state_dict(model):
    """A state dict as the book saves it: its MultiHeadAttention kept `mask` as a saved buffer."""
    state = dict(model.state_dict())
    ctx = model.cfg.context_length
    for i in range(model.cfg.n_layers):
        state[f"trf_blocks.{i}.att.mask"] = torch.triu(torch.ones(ctx, ctx), diagonal=1)
    return state


@pytest.fixture
def book_cfg():
    """The 124M width (so the heads follow from it) with a tiny vocabulary and depth."""
    return GPTConfig(vocab_size=300, context_length=16, emb_dim=768, n_heads=12, n_layers=2,
                     drop_rate=0.1, qkv_bias=False)


def same_logits(a, b):
    idx = torch.randint(0, a.cfg.vocab_size, (1, a.cfg.context_length))
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.equal(a(idx), b(idx))


def test_book_model_pth_loads(book_cfg, tmp_path):
    model = GPTModel(book_cfg)
    torch.save(book_state_dict(model), tmp_path / "model.pth")
    ckpt = load_book_pth(tmp_path / "model.pth")
    assert ckpt.task == "lm" and ckpt.labels is None
    assert ckpt.config == book_cfg.with_(drop_rate=0.0)
    assert same_logits(model, ckpt.model)


def test_book_model_and_optimizer_pth_loads(book_cfg, tmp_path):
    model = GPTModel(book_cfg.with_(qkv_bias=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    torch.save({"model_state_dict": book_state_dict(model), "optimizer_state_dict": optimizer.state_dict()},
               tmp_path / "model_and_optimizer.pth")
    ckpt = load_any_checkpoint(tmp_path / "model_and_optimizer.pth")
    assert ckpt.config.qkv_bias and "optimizer state" in ckpt.training
    assert same_logits(model, ckpt.model)


def test_book_classifier_pth_loads_as_classifier(book_cfg, tmp_path):
    model = GPTModel(book_cfg)
    model.out_head = torch.nn.Linear(768, 2)  # section 6.5
    torch.save(book_state_dict(model), tmp_path / "review_classifier.pth")
    ckpt = load_book_pth(tmp_path / "review_classifier.pth")
    assert ckpt.task == "classifier" and ckpt.labels == ["ham", "spam"]
    assert ckpt.model.out_head.out_features == 2
    assert same_logits(model, ckpt.model)
    info = inspect_checkpoint(tmp_path / "review_classifier.pth")
    assert info.task == "classifier" and info.num_parameters == count_parameters(model)


def test_book_sft_pth_is_an_instruct_model(book_cfg, tmp_path):
    torch.save(book_state_dict(GPTModel(book_cfg)), tmp_path / "gpt2-medium355M-sft.pth")
    assert load_book_pth(tmp_path / "gpt2-medium355M-sft.pth").task == "instruct"
    torch.save(book_state_dict(GPTModel(book_cfg)), tmp_path / "mine.pth")
    assert load_book_pth(tmp_path / "mine.pth", task="instruct").task == "instruct"


def test_book_pth_of_lab_width_needs_head_count(tiny_cfg, tmp_path):
    model = GPTModel(tiny_cfg)
    torch.save(model.state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="pass n_heads"):
        load_book_pth(tmp_path / "tiny.pth")
    assert same_logits(model, load_book_pth(tmp_path / "tiny.pth", n_heads=4).model)


def test_book_pth_with_a_wrong_shape_names_the_tensor(book_cfg, tmp_path):
    state = book_state_dict(GPTModel(book_cfg))
    state["trf_blocks.1.ff.layers.0.weight"] = torch.zeros(3000, 768)
    torch.save(state, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match=r"does not fit.*trf_blocks\.1\.ff\.layers\.0\.weight"):
        load_book_pth(tmp_path / "model.pth")


# ------------------------------------------------------------------ the lab's own format

def test_lab_checkpoint_round_trip(tiny_cfg, tmp_path):
    model = GPTModel(tiny_cfg)
    model.out_head = torch.nn.Linear(tiny_cfg.emb_dim, 3)
    training = {"epochs": 2, "val_acc": 0.955, "dataset": "SMSSpamCollection"}
    path = save_checkpoint(tmp_path / "clf.safetensors", model, task="classifier", labels=["a", "b", "c"],
                           training=training, extra={"step": 40}, extra_tensors={"opt/exp_avg": torch.ones(5)})
    meta = read_metadata(path)
    assert meta["config"] == tiny_cfg and meta["task"] == "classifier" and meta["labels"] == ["a", "b", "c"]
    for ckpt in (load_checkpoint(path), load_any_checkpoint(path)):
        assert isinstance(ckpt, Checkpoint)
        assert (ckpt.task, ckpt.labels, ckpt.training, ckpt.extra) == ("classifier", ["a", "b", "c"], training,
                                                                        {"step": 40})
        assert torch.equal(ckpt.extra_tensors["opt/exp_avg"], torch.ones(5))
        for k, v in model.state_dict().items():
            assert torch.equal(v, ckpt.model.state_dict()[k]), k
    assert inspect_checkpoint(path).num_parameters == count_parameters(model)
    assert path.stat().st_mode & 0o777 == 0o644  # readable like any file (a Docker volume, a copy to share)
    assert [p.name for p in tmp_path.iterdir()] == ["clf.safetensors"]  # no temporary file left


def test_lab_checkpoint_of_a_tied_model_round_trips(tmp_path):
    path, _ = hub_file(reference_gpt2(*SHAPES[0]), tmp_path, "save_pretrained")
    model = load_hub_gpt2_file(path).model
    saved = save_checkpoint(tmp_path / "lab.safetensors", model)
    assert same_logits(model, load_checkpoint(saved).model)


@pytest.mark.parametrize("storage, levels, size_ratio", [("int8", 127, 0.27), ("int4", 7, 0.15)])
def test_small_storage_loads_back_as_float32_within_half_a_step(storage, levels, size_ratio, tiny_cfg, tmp_path):
    """int8 (a scale per row) and int4 (a scale per 32 values, two values a byte): the bundled model's files."""
    model = GPTModel(tiny_cfg)
    fp32 = save_checkpoint(tmp_path / "fp32.safetensors", model)
    small = save_checkpoint(tmp_path / f"{storage}.safetensors", model, storage=storage)
    assert small.stat().st_size <= size_ratio * fp32.stat().st_size
    loaded = load_checkpoint(small).model.state_dict()
    for name, w in model.state_dict().items():
        assert loaded[name].dtype == torch.float32
        if w.dim() == 2:  # rounding moves a value by at most half a step of its scale
            step = w.abs().amax(dim=1, keepdim=True) / levels
            assert ((loaded[name] - w).abs() <= 0.5 * step * 1.01 + 1e-8).all(), name
            assert not torch.equal(loaded[name], w)
        else:
            assert torch.equal(loaded[name], w), name
    assert inspect_checkpoint(small).num_parameters == count_parameters(model)
    with safe_open(str(small), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(small)
    tensors["scale/tok_emb.weight"] = tensors["scale/tok_emb.weight"][:-1]
    save_file(tensors, tmp_path / "bad.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match="tok_emb.weight: quantized weights and their scales do not match"):
        load_checkpoint(tmp_path / "bad.safetensors")


# ------------------------------------------------------------------ bad files: one clear error

def _safetensors_bytes(tensors):
    return save(tensors)


def _lab_file(cfg, tmp_path):
    return save_checkpoint(tmp_path / "good.safetensors", GPTModel(cfg))


def _truncate(path, keep):
    data = path.read_bytes()
    out = path.with_name("cut-" + path.name)
    out.write_bytes(data[:int(len(data) * keep)])
    return out


def _evil_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    torch.save({"tok_emb.weight": Evil()}, tmp_path / "evil.pth")
    return tmp_path / "evil.pth"


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _saved(obj, path):
    torch.save(obj, path)
    return path


BAD_FILES = {  # case: (make the file in a folder, phrase the error must contain)
    "empty": (lambda cfg, d: _write(d / "empty.safetensors", b""), "is empty"),
    "empty pth": (lambda cfg, d: _write(d / "m.pth", b""), "is empty"),
    "text": (lambda cfg, d: _write(d / "notes.pth", b"hello, this is not a model\n" * 20), "not a checkpoint"),
    "truncated safetensors": (lambda cfg, d: _truncate(_lab_file(cfg, d), 0.6), "not a readable .safetensors"),
    "truncated pth": (lambda cfg, d: _truncate(_saved(GPTModel(cfg).state_dict(), d / "m.pth"), 0.5),
                      "damaged, truncated"),
    "corrupt header": (lambda cfg, d: _write(d / "bad.safetensors", (100).to_bytes(8, "little") + b"{" + bytes(120)),
                       "not a readable"),
    "pickle of objects": (lambda cfg, d: _evil_pickle(d), "refused"),
    "not a state dict": (lambda cfg, d: _saved([1, 2, 3], d / "list.pth"), "not a model state dict"),
    "other tensors": (lambda cfg, d: _write(d / "o.safetensors", _safetensors_bytes({"encoder.weight": torch.ones(2)})),
                      "not a GPT model"),
    "missing": (lambda cfg, d: d / "nowhere.safetensors", "no such file"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_give_one_clear_error(case, tiny_cfg, tmp_path):
    make, phrase = BAD_FILES[case]
    path = make(tiny_cfg, tmp_path)
    with pytest.raises(CheckpointError, match=phrase) as e:
        load_any_checkpoint(path)
    assert path.name in str(e.value)
    with pytest.raises(CheckpointError, match=phrase):
        inspect_checkpoint(path)
    assert not (tmp_path / "pwned").exists()  # nothing in a file ever runs


def test_lab_checkpoint_with_wrong_shapes(tiny_cfg, tmp_path):
    path = _lab_file(tiny_cfg, tmp_path)
    tensors = {k: v for k, v in GPTModel(tiny_cfg.with_(emb_dim=64)).state_dict().items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=
              {"format": "llm-scratch-lab/1", "config": json.dumps(tiny_cfg.to_dict()), "task": "lm"})
    with pytest.raises(CheckpointError, match=r"does not fit the model: wrong shapes: tok_emb\.weight"):
        load_checkpoint(path)


# ------------------------------------------------------------------ CLI: info and download

def test_info_cli_prints_config_task_and_training(tiny_cfg, tmp_path, capsys):
    model = GPTModel(tiny_cfg)
    model.out_head = torch.nn.Linear(tiny_cfg.emb_dim, 2)
    path = save_checkpoint(tmp_path / "spam.safetensors", model, task="classifier", labels=["ham", "spam"],
                           training={"epochs": 5})
    assert cli(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "task:       classifier" in out and "labels:     ham, spam" in out
    assert f"{count_parameters(model):,}" in out and "emb_dim: 32" in out and "epochs: 5" in out
    assert cli(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"] == tiny_cfg.to_dict()


def test_info_cli_on_a_bad_file_exits_non_zero(tmp_path, capsys):
    (tmp_path / "junk.pth").write_text("junk " * 100)
    assert cli(["info", str(tmp_path / "junk.pth")]) == 2
    assert "error: junk.pth is not a checkpoint" in capsys.readouterr().err
    assert cli(["info", "no-such-model"]) == 2


def test_download_cli_offline_exits_non_zero(hf_cache, capsys):
    assert cli(["download", "gpt2-small"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and "model.safetensors" in err and "Traceback" not in err
    assert cli(["download", "gpt2-giant"]) == 2


def test_a_safetensors_file_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    # 1 file in 256 has a header length whose low byte is 0x80, like a pickle's first byte
    import struct
    from safetensors.torch import save_file as plain_save
    from llm.checkpoints import _read_weights
    for pad in range(300):
        path = tmp_path / "m.safetensors"
        plain_save({"tok_emb.weight": torch.zeros(2, 2)}, str(path), metadata={"note": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.skip("no header length starting with 0x80 found")
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 256 == 0x80
    assert _read_weights(path).kind == "safetensors"
