"""Chapter 6: the spam data, the classifier head, freezing policies, LoRA and predictions."""
import math

import pandas as pd
import pytest
import torch

from llm.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from llm.classifier import (POLICIES, add_classification_head, calc_accuracy_loader, calc_loss_batch,
                            classifier_from_checkpoint, classify_batch, confusion_matrix, count_trainable,
                            explain_occlusion, predict, read_messages_file, set_trainable)
from llm.classifier import _class_probs
from llm.spam_data import (SpamDataset, create_balanced_dataset, create_spam_dataloaders, load_spam_data,
                           spam_splits)
from llm.lora import LinearWithLoRA, merge_lora
from llm.model import GPTModel
from llm.tokenizer import ENDOFTEXT_ID, text_to_token_ids


def classifier(cfg, policy="all", **kw):
    model = GPTModel(cfg)
    add_classification_head(model, 2)
    return set_trainable(model, policy, **kw)


# --- Data (sections 6.2-6.3) ------------------------------------------------------

def test_loader_keeps_every_message():
    df = load_spam_data()
    assert len(df) == 5574
    assert df["Label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    assert any('"' in t for t in df["Text"])  # the lines default quoting would merge are there


def test_balanced_split_sizes_match_the_book():
    balanced = create_balanced_dataset(load_spam_data())
    assert len(balanced) == 1494
    train, val, test = spam_splits(balanced=True)
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    assert set(train["Label"]) == {0, 1}
    assert len(set(train.index) | set(val.index) | set(test.index)) == 1494


def test_full_split_keeps_the_imbalance():
    train, val, test = spam_splits(balanced=False)
    assert len(train) + len(val) + len(test) == 5574
    assert int(train["Label"].sum() + val["Label"].sum() + test["Label"].sum()) == 747


def test_padding_to_the_longest_message_and_truncation_at_the_context():
    df = pd.DataFrame({"Label": [0, 1, 0], "Text": ["Hi", "Win a free prize now!", "one two three four"]})
    lengths = [len(text_to_token_ids(t)) for t in df["Text"]]
    ds = SpamDataset(df)
    assert ds.max_length == max(lengths) and ds.num_truncated == 0
    x, y = ds[0]
    assert x.tolist() == text_to_token_ids("Hi") + [ENDOFTEXT_ID] * (max(lengths) - lengths[0])
    assert y.item() == 0 and ds[1][1].item() == 1

    capped = SpamDataset(df, context_length=3)
    assert capped.max_length == 3
    assert capped.num_truncated == sum(n > 3 for n in lengths)
    assert capped[1][0].tolist() == text_to_token_ids("Win a free prize now!")[:3]


def test_book_dataloaders_pad_to_120_tokens():
    loaders = create_spam_dataloaders(context_length=1024, batch_size=8)
    assert loaders.max_length == 120  # the book's train_dataset.max_length
    assert loaders.num_truncated["train"] == 0
    assert len(loaders.train_loader) == 1045 // 8  # drop_last, as in the book
    x, y = next(iter(loaders.train_loader))
    assert x.shape == (8, 120) and y.shape == (8,)


# --- Head swap and freezing (section 6.5, appendix E) ------------------------------

def block_params(cfg):
    d = cfg.emb_dim
    attention = 4 * d * d + (3 * d if cfg.qkv_bias else 0) + d
    feed_forward = 8 * d * d + 5 * d
    return attention + feed_forward + 4 * d


@pytest.mark.parametrize("policy,k,rank", [("last-block", 1, 0), ("head", 0, 0), ("last-k", 2, 0),
                                           ("all", 0, 0), ("lora", 0, 4), ("lora", 0, 8)])
def test_each_policy_trains_exactly_the_intended_parameters(tiny_cfg, policy, k, rank):
    d, L = tiny_cfg.emb_dim, tiny_cfg.n_layers
    head = d * 2 + 2
    expected = {
        "last-block": block_params(tiny_cfg) + 2 * d + head,
        "last-k": k * block_params(tiny_cfg) + 2 * d + head,
        "head": head,
        "all": tiny_cfg.num_parameters(tied_head=True) + head,
        # per block: W_query, W_key, W_value, out_proj (d->d) and ff (d->4d, 4d->d): 18 d r
        "lora": L * 18 * d * rank + head,
    }[policy]
    model = classifier(tiny_cfg, policy, k=k or 1, rank=rank or 16, alpha=rank or 16)
    assert model.out_head.out_features == 2 and model.out_head.bias is not None
    assert count_trainable(model) == expected
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if policy in ("last-block", "last-k"):
        first_trained = L - (k if policy == "last-k" else 1)
        assert not any(n.startswith(f"trf_blocks.{first_trained - 1}.") for n in trainable)
        assert "final_norm.scale" in trainable and "tok_emb.weight" not in trainable
    if policy == "lora":
        assert all(".lora." in n or n.startswith("out_head.") for n in trainable)


def test_book_124m_numbers():
    """The counts the book prints for GPT-2 124M: 2,666,528 LoRA parameters (head adapted too)."""
    from llm.config import get_config
    cfg = get_config("gpt2-small")
    d, L = cfg.emb_dim, cfg.n_layers
    assert L * 18 * d * 16 + (d * 16 + 16 * 2) == 2_666_528  # formula used above, checked on the book's figure
    assert block_params(cfg) == 7_087_872  # one GPT-2 small block


def test_bad_policies_are_refused(tiny_cfg):
    model = GPTModel(tiny_cfg)
    add_classification_head(model)
    with pytest.raises(ValueError, match="unknown trainable policy"):
        set_trainable(model, "everything")
    with pytest.raises(ValueError, match="k must be between"):
        set_trainable(model, "last-k", k=tiny_cfg.n_layers + 1)
    with pytest.raises(ValueError, match="rank"):
        set_trainable(model, "lora", rank=0)


def test_lora_starts_as_the_base_model_and_merges_to_a_plain_checkpoint(tiny_cfg, tmp_path):
    model = classifier(tiny_cfg, "all")
    x = torch.randint(0, tiny_cfg.vocab_size, (2, 10))
    before = model(x)
    set_trainable(model, "lora", rank=4, alpha=8)
    assert torch.allclose(model(x), before, atol=1e-6)  # B starts at zero
    for m in model.modules():
        if isinstance(m, LinearWithLoRA):
            torch.nn.init.normal_(m.lora.B, std=0.05)
    adapted = model(x)
    assert not torch.allclose(adapted, before, atol=1e-4)
    merge_lora(model)
    assert not any(isinstance(m, LinearWithLoRA) for m in model.modules())
    assert torch.allclose(model(x), adapted, atol=1e-5)
    path = save_checkpoint(tmp_path / "lora.safetensors", model, task="classifier", labels=["ham", "spam"])
    assert torch.allclose(load_checkpoint(path).model(x), adapted, atol=1e-5)


# --- Loss, accuracy and predictions (sections 6.6-6.8) -----------------------------

def test_loss_and_accuracy_read_the_last_token(tiny_cfg):
    model = classifier(tiny_cfg).eval()
    x = torch.randint(0, tiny_cfg.vocab_size, (4, 12))
    y = torch.tensor([0, 1, 1, 0])
    logits = model(x)[:, -1, :]
    assert math.isclose(calc_loss_batch(x, y, model).item(),
                        torch.nn.functional.cross_entropy(logits, y).item(), rel_tol=1e-5)
    loader = [(x, y)]
    assert calc_accuracy_loader(loader, model) == (logits.argmax(-1) == y).float().mean().item()
    cm = confusion_matrix(loader, model)
    assert sum(map(sum, cm)) == 4 and cm[0][0] + cm[1][1] == (logits.argmax(-1) == y).sum().item()


def test_predictions_are_probabilities(tiny_cfg):
    model = classifier(tiny_cfg)
    pred = predict(model, "You have won a FREE holiday! Call now", max_length=20)
    assert set(pred.probs) == {"ham", "spam"}
    assert math.isclose(sum(pred.probs.values()), 1.0, rel_tol=1e-6)
    assert pred.label == max(pred.probs, key=pred.probs.get) and not pred.truncated
    batch = classify_batch(model, ["hi", "You have won a FREE holiday! Call now", "see you at 5"], 20)
    assert batch[1].probs == pytest.approx(pred.probs, abs=1e-6)  # same padding, same answer
    for p in batch:
        assert math.isclose(sum(p.probs.values()), 1.0, rel_tol=1e-6)


def test_prediction_without_pad_length_does_not_depend_on_batch_mates(tiny_cfg):
    model = classifier(tiny_cfg)
    alone = predict(model, "see you at 5")
    mixed = classify_batch(model, ["a much longer message that has many more tokens", "see you at 5"])
    assert mixed[1].probs == pytest.approx(alone.probs, abs=1e-6)


def test_occlusion_explains_the_predicted_label_against_the_neutral_pad(tiny_cfg):
    model = classifier(tiny_cfg)
    text = "Win a free prize"
    pred = predict(model, text, 10)
    explanation = explain_occlusion(model, text, max_length=10)
    assert ("ham", "spam")[explanation.target] == pred.label  # the verdict is what gets explained
    tokens = explanation.tokens
    assert [t.piece for t in tokens] == ["Win", " a", " free", " prize"]
    assert explanation.prob == pytest.approx(pred.probs[pred.label], abs=1e-6)
    # " free" replaced by the pad token: same length, every other token in its place
    occluded = _class_probs(model, [text_to_token_ids("Win a") + [ENDOFTEXT_ID] + text_to_token_ids(" prize")], 10)
    assert tokens[2].delta == pytest.approx(explanation.prob - float(occluded[0, explanation.target]), abs=1e-5)


def test_checkpoint_round_trip(tiny_cfg, tmp_path):
    model = classifier(tiny_cfg)
    path = save_checkpoint(tmp_path / "spam.safetensors", model, task="classifier", labels=["ham", "spam"],
                           training={"max_length": 16, "policy": "all"})
    clf = classifier_from_checkpoint(load_checkpoint(path))
    assert clf.labels == ("ham", "spam") and clf.max_length == 16
    text = "Free entry in 2 a wkly comp"
    assert predict(clf.model, text, clf.max_length, clf.labels).probs == pytest.approx(
        predict(model, text, 16).probs, abs=1e-6)


# --- Bad input ---------------------------------------------------------------------

def test_empty_message_is_refused(tiny_cfg):
    model = classifier(tiny_cfg)
    for text in ("", "   \n"):
        with pytest.raises(ValueError, match="empty"):
            predict(model, text, 20)


def test_huge_message_is_truncated_with_a_warning(tiny_cfg):
    text = "spam " * 10_000  # 50,000 characters
    pred = predict(classifier(tiny_cfg), text, max_length=20)
    assert pred.truncated and pred.num_tokens == len(text_to_token_ids(text)) > 20 and pred.max_tokens == 20
    assert "only the first 20" in pred.warning
    assert math.isclose(sum(pred.probs.values()), 1.0, rel_tol=1e-6)


def test_language_model_checkpoint_is_not_a_classifier(tiny_cfg, tmp_path):
    path = save_checkpoint(tmp_path / "lm.safetensors", GPTModel(tiny_cfg), task="lm")
    with pytest.raises(CheckpointError, match="not a classifier"):
        classifier_from_checkpoint(load_checkpoint(path))


def test_messages_files(tmp_path):
    csv_bytes = b'id,message,label\n1,"Hello, are we still on for tonight?",ham\n2,WINNER! Claim now,spam\n'
    table = read_messages_file(csv_bytes, "m.csv")
    assert table.texts == ["Hello, are we still on for tonight?", "WINNER! Claim now"]
    assert table.labels == ["ham", "spam"]
    tsv = b'text\nHe said "hi\nok\n'
    assert read_messages_file(tsv, "m.tsv").texts == ['He said "hi', "ok"]
    collection = read_messages_file("assets/SMSSpamCollection.tsv")
    assert len(collection.texts) == 5574 and collection.labels[:2] == ["ham", "ham"]
    with pytest.raises(ValueError, match="no text column"):
        read_messages_file(b"a,b\n1,2\n", "numbers.csv")
    with pytest.raises(ValueError, match="empty"):
        read_messages_file(b"", "empty.csv")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_messages_file(b"\xff\xfe\x00binary", "x.csv")


# --- Fine-tuning with the one training loop (section 6.7) ---------------------------

def _job(cfg, tmp_path, **kw):
    from llm.checkpoints import Checkpoint
    from llm.classifier import finetune_spam

    return finetune_spam(Checkpoint(GPTModel(cfg), source="tiny.safetensors"), out=tmp_path / "spam.safetensors",
                         **kw)


def test_a_few_steps_lower_the_loss_and_save_a_classifier(tiny_cfg, tmp_path):
    from llm.classifier import calc_loss_loader

    job = _job(tiny_cfg, tmp_path, policy="all", lr=1e-3, max_steps=15, eval_every=5)
    assert job.training["max_length"] == tiny_cfg.context_length  # longest message capped at the context
    assert job.training["num_truncated"]["train"] > 0
    before = calc_loss_loader(job.loaders.val_loader, job.model)
    events = list(job)
    after = calc_loss_loader(job.loaders.val_loader, job.model)
    assert after < before
    assert [e.step for e in events if e.kind == "step"] == list(range(1, 16))
    assert events[-1].kind == "done" and {"train_loss", "val_loss"} <= set(events[-1].metrics)
    result = job.finish()
    assert set(result.metrics) == {"train_acc", "val_acc", "test_acc", "confusion"}
    assert not result.stopped and result.steps == 15 and result.path == tmp_path / "spam.safetensors"
    assert sum(map(sum, result.confusion)) == 300
    assert result.test_acc == pytest.approx((result.confusion[0][0] + result.confusion[1][1]) / 300)
    ckpt = load_checkpoint(result.path)
    assert ckpt.task == "classifier" and ckpt.labels == ["ham", "spam"]
    assert ckpt.training["policy"] == "all" and ckpt.training["test_acc"] == result.test_acc
    clf = classifier_from_checkpoint(ckpt)
    assert clf.max_length == tiny_cfg.context_length


def test_epoch_events_carry_the_books_accuracies(tiny_cfg, tmp_path):
    job = _job(tiny_cfg.with_(context_length=8), tmp_path, policy="head", lr=1e-3, epochs=1, batch_size=64)
    events = list(job)
    epochs = [e for e in events if e.kind == "epoch"]
    assert len(epochs) == 1 and epochs[0].step == 1045 // 64
    assert 0 <= epochs[0].metrics["train_acc"] <= 1 and 0 <= epochs[0].metrics["val_acc"] <= 1


def test_stopped_lora_run_saves_a_plain_classifier(tiny_cfg, tmp_path):
    job = _job(tiny_cfg, tmp_path, policy="lora", rank=2, alpha=4, lr=1e-3, epochs=1)
    trainable_before = dict(job.model.named_parameters())
    assert any(".lora." in n for n in trainable_before)
    for event in job:
        if event.step == 3:
            break
    result = job.finish()
    assert result.stopped and result.steps == 3
    ckpt = load_checkpoint(result.path)  # strict load: no LoRA tensors left, a plain GPTModel
    assert not any("lora" in k for k in ckpt.model.state_dict())
    assert ckpt.training["stopped"] is True and ckpt.training["rank"] == 2
    x = torch.randint(0, tiny_cfg.vocab_size, (2, 6))
    assert torch.allclose(ckpt.model(x), job.model(x), atol=1e-5)


def test_bad_training_settings_are_refused(tiny_cfg, tmp_path):
    with pytest.raises(ValueError, match="learning rate"):
        _job(tiny_cfg, tmp_path, lr=-1)
    with pytest.raises(ValueError, match="batch size"):
        _job(tiny_cfg, tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="epochs must be a whole number from 1 to 10,000"):
        _job(tiny_cfg, tmp_path, epochs=10**9)


def test_a_batch_beyond_the_free_memory_is_refused_before_it_starts(tiny_cfg, tmp_path, monkeypatch):
    import llm.jobs

    monkeypatch.setattr(llm.jobs, "free_memory", lambda device="cpu": 60_000_000)  # 60 MB free
    with pytest.raises(ValueError, match=r"only 0\.1 GB are free here: use a batch of at most \d+"):
        _job(tiny_cfg, tmp_path, batch_size=1000)
