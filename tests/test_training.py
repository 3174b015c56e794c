"""The one training loop (llm/training.py): schedule, optimizer groups, reproducibility, resume."""
import json
import math
import os
from dataclasses import asdict

import pytest
import safetensors.torch
import torch
from torch.utils.data import DataLoader, TensorDataset

import llm.checkpoints
from llm.checkpoints import CheckpointError, load_checkpoint
from llm.model import GPTModel
from llm.training import (TrainConfig, decay_groups, load_training_state, lr_at, make_optimizer, mean_loss,
                          train)


def lm_batches(n_windows=24, length=16, batch_size=4, seed=0, vocab=200, shuffle=True):
    """A little repetitive token stream cut into windows, so that a tiny model can learn it."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, vocab, (40,), generator=g)
    stream = base.repeat(n_windows * length // 40 + 2)
    x = torch.stack([stream[i * length:(i + 1) * length] for i in range(n_windows)])
    y = torch.stack([stream[i * length + 1:(i + 1) * length + 1] for i in range(n_windows)])
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, drop_last=True,
                      generator=torch.Generator() if shuffle else None)


def loss_fn(model, batch):
    x, y = batch
    logits = model(x)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()), y.numel()


def step_losses(cfg, config, stop_after=None, resume=None, save_to=None, **kw):
    torch.manual_seed(7)
    model = GPTModel(cfg)
    run = train(model, lm_batches(), lm_batches(8, shuffle=False), loss_fn, config, resume=resume, **kw)
    losses = []
    for event in run:
        if event.kind == "step":
            losses.append(event.train_loss)
            if event.step == stop_after:
                run.save(save_to)
                run.close()
                break
    return losses, run


# ---------------------------------------------------------------- schedule and optimizer

def test_lr_schedule_warmup_then_cosine():
    c = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=4, epochs=None, max_steps=20)
    assert lr_at(0, c, 20) == pytest.approx(2.5e-4)  # warm-up never starts at 0
    assert lr_at(1, c, 20) == pytest.approx(5e-4)
    assert lr_at(3, c, 20) == pytest.approx(1e-3)  # warm-up reaches the peak
    assert lr_at(4, c, 20) == pytest.approx(1e-3)  # cosine starts at the peak
    assert lr_at(12, c, 20) == pytest.approx(1e-4 + 0.5 * 9e-4)  # half-way: the mean of peak and floor
    assert lr_at(8, c, 20) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi / 4)))
    assert lr_at(20, c, 20) == pytest.approx(1e-4)  # ends at min_lr
    lrs = [lr_at(s, c, 20) for s in range(4, 21)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_lr_schedule_constant_and_warmup_fraction():
    c = TrainConfig(lr=4e-4, schedule="constant", warmup_fraction=0.1, epochs=None, max_steps=50)
    assert c.warmup(50) == 5
    assert lr_at(0, c, 50) == pytest.approx(0.8e-4)
    assert lr_at(5, c, 50) == lr_at(49, c, 50) == pytest.approx(4e-4)


def test_weight_decay_groups_exclude_biases_and_norms(tiny_cfg):
    model = GPTModel(tiny_cfg)
    decay, no_decay = decay_groups(model)
    for name in ("trf_blocks.0.att.W_query.bias", "trf_blocks.0.att.out_proj.bias", "trf_blocks.1.ff.layers.0.bias",
                 "trf_blocks.0.norm1.scale", "trf_blocks.0.norm1.shift", "trf_blocks.1.norm2.scale",
                 "final_norm.scale", "final_norm.shift"):
        assert name in no_decay and name not in decay
    for name in ("tok_emb.weight", "pos_emb.weight", "out_head.weight", "trf_blocks.0.att.W_query.weight",
                 "trf_blocks.1.ff.layers.2.weight"):
        assert name in decay
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    optimizer = make_optimizer(model, 1e-3, 0.1)
    params = dict(model.named_parameters())
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert groups[0.1] == {id(params[n]) for n in decay}
    assert groups[0.0] == {id(params[n]) for n in no_decay}


def test_frozen_parameters_stay_out_of_the_optimizer(tiny_cfg):
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run = train(model, lm_batches(), None, loss_fn, TrainConfig(lr=1e-3, epochs=None, max_steps=3, eval_every=99),
                trainable=("out_head", "final_norm"))
    list(run)
    in_optimizer = {id(p) for g in run.optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        trainable = name.startswith(("out_head", "final_norm"))
        assert (id(p) in in_optimizer) == trainable
        assert torch.equal(p, before[name]) != trainable, name


# ---------------------------------------------------------------- the loop

def test_same_seed_same_losses_and_another_seed_differs(tiny_cfg):
    cfg = tiny_cfg.with_(drop_rate=0.1)  # dropout and shuffling both draw random numbers
    config = TrainConfig(lr=1e-3, epochs=None, max_steps=6, eval_every=3, eval_batches=1, seed=5)
    a, _ = step_losses(cfg, config)
    b, _ = step_losses(cfg, config)
    c, _ = step_losses(cfg, TrainConfig(**{**asdict(config), "seed": 6}))
    assert a == b and len(a) == 6
    assert a != c


def test_loss_falls_on_a_tiny_model(tiny_cfg):
    config = TrainConfig(lr=3e-3, epochs=None, max_steps=40, warmup_steps=4, eval_every=40, eval_batches=2)
    losses, run = step_losses(tiny_cfg, config)
    assert sum(losses[-5:]) / 5 < losses[0] - 2.0
    assert run.history[-1]["metrics"]["val_loss"] < run.history[0]["metrics"]["val_loss"] - 1.0


def test_events_are_json_and_evaluate_and_sample_are_called(tiny_cfg):
    calls = []
    config = TrainConfig(lr=1e-3, epochs=2, eval_every=4, eval_batches=1)  # 6 steps per epoch -> 12
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg)
    run = train(model, lm_batches(), None, loss_fn, config,
                evaluate=lambda m: calls.append(("eval", m.training)) or {"val_acc": 0.5},
                sample=lambda m: calls.append(("sample", m.training)) or "text")
    events = list(run)
    for e in events:
        json.dumps(asdict(e))
    assert [e.step for e in events if e.kind == "eval"] == [1, 4, 8, 12]
    assert events[-1].kind == "done" and events[-1].step == 12 == events[-1].total_steps
    assert events[-1].metrics == {"val_acc": 0.5} and events[-1].sample == "text"
    assert events[-1].seen == 12 * 4 * 16
    assert all(training is False for _, training in calls) and len(calls) == 8
    assert [e.epoch for e in events if e.kind == "step"] == [1] * 6 + [2] * 6
    assert not model.training  # left in eval mode at the end


def test_gradient_accumulation_matches_one_big_batch(tiny_cfg):
    config = TrainConfig(lr=1e-3, epochs=None, max_steps=1, eval_every=99, grad_clip=None)
    models = []
    for batch_size, accum in ((8, 1), (4, 2)):
        torch.manual_seed(3)
        model = GPTModel(tiny_cfg)
        list(train(model, lm_batches(batch_size=batch_size, shuffle=False), None, loss_fn,
                   TrainConfig(**{**asdict(config), "grad_accum": accum})))
        models.append(model)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_closing_the_generator_leaves_a_usable_model(tiny_cfg):
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg)
    run = train(model, lm_batches(), None, loss_fn, TrainConfig(lr=1e-3, epochs=3, eval_every=99))
    for event in run:
        if event.step == 2:
            break
    run.close()
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, tiny_cfg.vocab_size)
    assert run.state.step == 2


@pytest.mark.parametrize("stop_after, grad_accum", [(4, 1), (6, 1), (3, 2)])
def test_stop_and_resume_gives_the_same_next_losses(tiny_cfg, tmp_path, stop_after, grad_accum):
    """Stop mid-epoch (4), at an epoch boundary (6 steps per epoch) and with accumulation; resume exactly."""
    cfg = tiny_cfg.with_(drop_rate=0.1)
    config = TrainConfig(lr=2e-3, epochs=3, warmup_steps=2, eval_every=5, eval_batches=1, grad_accum=grad_accum)
    full, _ = step_losses(cfg, config)
    path = tmp_path / "run.safetensors"
    first, stopped = step_losses(cfg, config, stop_after=stop_after, save_to=path)
    rest, resumed = step_losses(cfg, config, resume=path)
    assert first == full[:stop_after]
    assert rest == full[stop_after:]  # exactly, not approximately
    assert resumed.state.seen == stopped.total_steps * 4 * 16 * grad_accum


def test_the_token_embedding_can_learn_faster_and_still_resume_exactly(tiny_cfg, tmp_path):
    """embedding_lr_scale multiplies the scheduled lr of tok_emb only, so its decay too: a token the
    data never has (ids >= 200 here) shrinks by (1 - lr * scale * wd) per step."""
    cfg = tiny_cfg.with_(tie_weights=False)
    config = TrainConfig(lr=1e-3, weight_decay=0.1, epochs=None, max_steps=6, schedule="constant", eval_every=99,
                         embedding_lr_scale=10)
    torch.manual_seed(7)
    start = GPTModel(cfg).tok_emb.weight.detach().clone()
    full, run = step_losses(cfg, config)
    lrs = {tuple(sorted(id(p) for p in g["params"])): g["lr"] for g in run.optimizer.param_groups}
    assert lrs[(id(run.model.tok_emb.weight),)] == pytest.approx(1e-2)
    assert sorted(lrs.values())[0] == pytest.approx(1e-3)
    unseen = run.model.tok_emb.weight.detach()[1000]
    assert torch.allclose(unseen, start[1000] * (1 - 1e-2 * 0.1) ** 6)
    path = tmp_path / "run.safetensors"
    first, _ = step_losses(cfg, config, stop_after=3, save_to=path)
    rest, _ = step_losses(cfg, config, resume=path)
    assert first + rest == full
    with pytest.raises(ValueError, match="embedding lr scale must be above 0 and at most 1,000"):
        TrainConfig(embedding_lr_scale=0).validate()


def test_resume_refuses_a_plain_checkpoint_and_other_trainable_sets(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg)
    config = TrainConfig(lr=1e-3, epochs=None, max_steps=2, eval_every=99)
    run = train(model, lm_batches(), None, loss_fn, config)
    list(run)
    run.save(tmp_path / "plain.safetensors", resumable=False)
    run.save(tmp_path / "full.safetensors")
    with pytest.raises(CheckpointError, match="no training state"):
        train(GPTModel(tiny_cfg), lm_batches(), None, loss_fn, config, resume=tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="different set of trainable parameters"):
        train(GPTModel(tiny_cfg), lm_batches(), None, loss_fn, config, resume=tmp_path / "full.safetensors",
              trainable=("out_head",))
    assert load_training_state(load_checkpoint(tmp_path / "full.safetensors")).step == 2


def test_interrupted_write_keeps_the_previous_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg)
    run = train(model, lm_batches(), None, loss_fn, TrainConfig(lr=1e-3, epochs=2, eval_every=99))
    path = tmp_path / "run.safetensors"
    events = iter(run)
    next(events)
    run.save(path)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    next(events)  # one more step: the weights now differ from the file

    real_save_file = safetensors.torch.save_file

    def half_then_crash(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:  # a crash half-way through the write
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError("disk full")

    monkeypatch.setattr(llm.checkpoints, "save_file", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        run.save(path)
    ckpt = load_checkpoint(path)  # still the previous, complete checkpoint
    assert load_training_state(ckpt).step == 1
    for k, v in ckpt.model.state_dict().items():
        assert torch.equal(v, saved[k])
    assert sorted(os.listdir(tmp_path)) == ["run.safetensors"]  # no half-written temp file left behind
    run.close()


# ---------------------------------------------------------------- bad settings

@pytest.mark.parametrize("changes, message", [
    ({"lr": -1e-3}, "learning rate must be a positive"),
    ({"lr": 0}, "learning rate must be a positive"),
    ({"lr": float("nan")}, "learning rate must be a positive"),
    ({"lr": 5.0}, "far too large"),
    ({"epochs": 0}, "epochs must be a whole number from 1 to 10,000"),
    ({"epochs": 10**9}, "epochs must be a whole number from 1 to 10,000"),
    ({"eval_batches": 10**9}, "eval batches must be a whole number from 1"),
    ({"seed": -1}, "seed must be a whole number from 0"),
    ({"epochs": None, "max_steps": None}, "give a number of epochs or a maximum number of steps"),
    ({"max_steps": -3}, "max steps must be a whole number from 1 to 10,000,000"),
    ({"grad_accum": 0}, "gradient accumulation \\(micro-batches per step\\) must be a whole number from 1"),
    ({"grad_clip": 1e9}, "clipping norm must be between 0 and 1,000,000"),
    ({"weight_decay": -0.1}, "weight decay"),
    ({"warmup_fraction": 1.5}, "warm-up fraction"),
    ({"min_lr": 1.0}, "min_lr"),
    ({"eval_every": 0}, "eval_every"),
    ({"schedule": "linear"}, "schedule must be one of"),
])
def test_absurd_settings_are_refused_with_a_sentence(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).validate()


def test_empty_training_data_and_no_trainable_parameters(tiny_cfg):
    model = GPTModel(tiny_cfg)
    empty = DataLoader(TensorDataset(torch.zeros(0, 4, dtype=torch.long)), batch_size=2)
    with pytest.raises(ValueError, match="no batches"):
        train(model, empty, None, loss_fn, TrainConfig())
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(model, lm_batches(), None, loss_fn, TrainConfig())


def test_mean_loss_is_the_mean_over_bounded_batches(tiny_cfg):
    model = GPTModel(tiny_cfg).eval()
    loader = lm_batches(shuffle=False)
    with torch.no_grad():
        losses = [float(loss_fn(model, b)[0]) for b in loader]
    assert mean_loss(model, loader, loss_fn) == pytest.approx(sum(losses) / len(losses))
    assert mean_loss(model, loader, loss_fn, 2) == pytest.approx(sum(losses[:2]) / 2)
