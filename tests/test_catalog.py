"""The model catalog: what is listed, and the one shared LRU cache behind load_model."""
import os
import threading

import pytest
import torch

from llm import catalog
from llm.catalog import NOT_DOWNLOADED, PRESET_SEED, describe, list_models, load_model
from llm.checkpoints import CheckpointError, save_checkpoint
from llm.config import GPT2_SIZES, PRESETS
from llm.model import GPTModel


@pytest.fixture(autouse=True)
def lab_dirs(tmp_path, monkeypatch):
    """An empty checkpoints folder and Hugging Face cache; an empty model cache of size 3."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("LLM_LAB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.delenv("LLM_LAB_MODEL_CACHE", raising=False)
    (tmp_path / "checkpoints").mkdir()
    catalog.clear_cache()
    yield tmp_path / "checkpoints"
    catalog.clear_cache()


def by_key(entries):
    return {e.key: e for e in entries}


def test_presets_and_gpt2_sizes_are_listed(lab_dirs):
    entries = by_key(list_models())
    for name in ("lab-tiny", "lab-small", "lecture", "book-ch05", "gpt2-small-random"):
        assert entries[name].kind == "preset" and entries[name].available
        assert "random init" in entries[name].label
    for size in GPT2_SIZES:
        assert entries[size].kind == "gpt2" and not entries[size].available
        assert entries[size].reason == NOT_DOWNLOADED
    assert "124.4M" in entries["gpt2-small"].label


def test_local_files_are_listed_with_task_and_problems(lab_dirs, tiny_cfg):
    model = GPTModel(tiny_cfg)
    save_checkpoint(lab_dirs / "run1" / "lm.safetensors", model, training={"steps": 3})
    model.out_head = torch.nn.Linear(tiny_cfg.emb_dim, 2)
    save_checkpoint(lab_dirs / "spam.safetensors", model, task="classifier", labels=["ham", "spam"])
    (lab_dirs / "broken.pth").write_text("not weights")
    entries = {e.path: e for e in list_models() if e.kind == "local"}
    lm = entries[str((lab_dirs / "run1" / "lm.safetensors").resolve())]
    assert lm.available and lm.task == "lm" and lm.label.startswith(os.path.join("run1", "lm.safetensors"))
    assert lm.key == lm.path
    assert entries[str((lab_dirs / "spam.safetensors").resolve())].task == "classifier"
    broken = entries[str((lab_dirs / "broken.pth").resolve())]
    assert not broken.available and "not a checkpoint" in broken.reason


def test_gpt2_placed_by_hand_is_available_not_local(lab_dirs):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_embd=32, n_head=4, n_layer=1, n_positions=32)
    transformers.GPT2LMHeadModel(config).save_pretrained(lab_dirs / "gpt2-small")
    entries = list_models()
    assert by_key(entries)["gpt2-small"].available
    assert not [e for e in entries if e.kind == "local"]
    ckpt = load_model("gpt2-small")
    assert ckpt.config.emb_dim == 32 and ckpt.model.out_head.weight is ckpt.model.tok_emb.weight


def test_session_and_upload_paths(lab_dirs, tiny_cfg, tmp_path):
    outside = save_checkpoint(tmp_path / "elsewhere" / "mine.safetensors", GPTModel(tiny_cfg), task="instruct")
    inside = save_checkpoint(lab_dirs / "trained-here.safetensors", GPTModel(tiny_cfg))
    entries = {e.path: e for e in list_models(extra_paths=[str(outside), (inside, "upload")])}
    assert entries[str(outside.resolve())].kind == "session"
    assert entries[str(outside.resolve())].task == "instruct"
    assert entries[str(inside.resolve())].kind == "upload"  # listed once, as this session's
    assert sum(e.path == str(inside.resolve()) for e in list_models(extra_paths=[str(inside)])) == 1


def test_preset_models_are_seeded_shared_and_leave_the_global_rng_alone():
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    first = load_model("lab-tiny")
    assert torch.equal(torch.rand(3), expected_next)
    assert load_model("lab-tiny") is first and not first.model.training
    torch.manual_seed(PRESET_SEED)
    assert torch.equal(first.model.tok_emb.weight, GPTModel(PRESETS["lab-tiny"]).tok_emb.weight)
    assert "untrained" in first.training["note"]


def test_lru_cache_evicts_the_least_recently_used(monkeypatch):
    monkeypatch.setenv("LLM_LAB_MODEL_CACHE", "2")
    tiny = load_model("lab-tiny")
    load_model("lab-small")
    load_model("lab-tiny")  # now lab-small is the least recently used
    load_model("lecture")
    assert catalog.cached_keys() == [("preset", "lab-tiny"), ("preset", "lecture")]
    assert load_model("lab-tiny") is tiny  # a hit: lecture is now the least recently used
    load_model("lab-small")
    assert catalog.cached_keys() == [("preset", "lab-tiny"), ("preset", "lab-small")]


def test_fresh_returns_an_independent_copy():
    shared = load_model("lab-tiny")
    fresh = load_model("lab-tiny", fresh=True)
    assert fresh is not shared and fresh.model is not shared.model
    with torch.no_grad():
        fresh.model.tok_emb.weight.zero_()
    assert shared.model.tok_emb.weight.abs().sum() > 0
    catalog.clear_cache()
    uncached = load_model("lab-small", fresh=True)
    assert catalog.cached_keys() == [] and not uncached.model.training


def test_a_changed_file_is_loaded_again(lab_dirs, tiny_cfg):
    path = save_checkpoint(lab_dirs / "m.safetensors", GPTModel(tiny_cfg))
    first = load_model(str(path))
    assert load_model(str(path)) is first
    newer = GPTModel(tiny_cfg)
    save_checkpoint(path, newer)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load_model(str(path))
    assert second is not first and torch.equal(second.model.tok_emb.weight, newer.tok_emb.weight)


def test_concurrent_loads_share_one_model(lab_dirs, tiny_cfg):
    path = str(save_checkpoint(lab_dirs / "m.safetensors", GPTModel(tiny_cfg)))
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_model(path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r is results[0] for r in results)


def test_book_pth_loads_through_the_catalog(lab_dirs):
    cfg = PRESETS["gpt2-small"].with_(vocab_size=100, context_length=8, n_layers=1)
    model = GPTModel(cfg)
    model.out_head = torch.nn.Linear(cfg.emb_dim, 2)
    torch.save(model.state_dict(), lab_dirs / "review_classifier.pth")
    entry = by_key(list_models())[str((lab_dirs / "review_classifier.pth").resolve())]
    assert entry.task == "classifier" and entry.available
    ckpt = load_model(entry.key)
    assert ckpt.labels == ["ham", "spam"]
    assert describe(ckpt).endswith("classifier (ham, spam)")


def test_unknown_and_missing_models_are_clear_errors():
    with pytest.raises(CheckpointError, match="unknown model 'gpt5'.*lab-tiny"):
        load_model("gpt5")
    with pytest.raises(CheckpointError, match="python -m llm download gpt2-medium"):
        load_model("gpt2-medium")
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        load_model("gpt2-medium", download=True)


def test_describe_and_hub_status():
    text = describe(load_model("lab-tiny"))
    assert text == "6.5M parameters · 2 layers × 64 dims, 4 heads, context 64 · language model"
    reachable, message = catalog.hub_status()
    assert not reachable and "HF_HUB_OFFLINE" in message  # conftest forbids the network
