"""DistributedDataParallel under torchrun (appendix A): the pretrain command on 2 CPU processes (gloo).

One torchrun run of `python -m llm pretrain` (2 ranks x batch 1 x 2 micro-batches, 4 steps,
lab-tiny, which has no dropout) is shared by the tests below; with LLM_RANK_REPORT_DIR set every
rank writes its own step losses, the reported (reduced) ones and a digest of its weights.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from llm import distributed
from llm.__main__ import main
from llm.checkpoints import load_checkpoint
from llm.pretraining import DEFAULT_TEXT, get_settings, lm_loss, load_text, pretrain
from llm.training import TrainConfig, TrainState, _continue_on, load_training_state, train

ROOT_DIR = Path(__file__).resolve().parents[1]
# book-ch05 settings (evaluation on 5 batches) on the lab-tiny shape: seconds, not minutes.
ARGS = ["--preset", "book-ch05", "--model", "lab-tiny", "--context", "32", "--batch-size", "1", "--grad-accum", "2",
        "--max-steps", "4", "--eval-every", "100", "--no-progress", "--resumable"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Run the command under torchrun once; return its folder, checkpoint, output and the rank reports."""
    folder = tmp_path_factory.mktemp("ddp")
    out, reports = folder / "ckpt" / "ddp.safetensors", folder / "reports"
    env = {**os.environ, "PYTHONPATH": str(ROOT_DIR), distributed.REPORT_ENV: str(reports)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    # --standalone: a private rendezvous on a free local port, so parallel test runs do not meet.
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "llm", "pretrain", *ARGS, "--out", str(out)],
                          cwd=ROOT_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [json.loads((reports / f"rank{r}.json").read_text()) for r in range(2)]
    return {"out": out, "stdout": proc.stdout, "stderr": proc.stderr, "ranks": ranks}


def test_both_ranks_hold_the_same_weights_as_the_checkpoint(ddp_run):
    r0, r1 = ddp_run["ranks"]
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2) and r0["step"] == r1["step"] == 4
    assert r0["weights_sha256"] == r1["weights_sha256"]
    assert distributed.weights_digest(load_checkpoint(ddp_run["out"]).model) == r0["weights_sha256"]


def test_reported_loss_is_the_mean_over_ranks(ddp_run):
    r0, r1 = ddp_run["ranks"]
    assert r0["reported_losses"] == r1["reported_losses"]  # every rank reports the same reduced loss
    for own0, own1, reported in zip(r0["own_losses"], r1["own_losses"], r0["reported_losses"]):
        assert own0 != own1  # each rank trained on its own share of the batches
        assert reported == pytest.approx((own0 + own1) / 2, rel=1e-12)
    assert len(r0["reported_losses"]) == 4


def test_only_rank_0_writes_one_checkpoint_and_prints(ddp_run):
    out = ddp_run["out"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["ddp.loss.csv", "ddp.loss.html", "ddp.safetensors"]
    ckpt = load_checkpoint(out)
    assert ckpt.training["steps"] == 4 and ckpt.training["pretrain"]["train"]["grad_accum"] == 2
    state = load_training_state(ckpt)
    assert state.world_size == 2 and state.batch_in_epoch == 8  # 4 steps x 2 micro-batches on each rank
    stdout = ddp_run["stdout"]
    assert stdout.count("done: 4 steps") == 1 and stdout.count("distributed: 2 processes (cpu)") == 1
    assert "done: 4 steps, 512 tokens" in stdout  # 4 steps x 2 ranks x 2 micro-batches x 32 tokens
    assert "Traceback" not in ddp_run["stderr"]


def test_matches_one_process_with_the_same_global_batch(ddp_run):
    """1 process x batch 4 with the sampler's order for 1 replica sees, per step, the 4 windows that
    2 ranks x 2 micro-batches of 1 saw: the same losses and weights up to float rounding."""
    settings = get_settings("book-ch05").with_(model="lab-tiny", context_length=32, stride=32, batch_size=4,
                                               max_steps=4, epochs=None, eval_every=100)
    job = pretrain(load_text(DEFAULT_TEXT), settings)  # the same initial weights and data as the command
    dataset = job.data.train_loader.dataset
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=settings.seed)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, drop_last=True)
    run = train(job.model, loader, None, lm_loss, settings.train_config(), evaluate=lambda m: {})
    losses = [e.train_loss for e in run if e.kind == "step"]
    assert losses == pytest.approx(ddp_run["ranks"][0]["reported_losses"], abs=1e-5)
    ddp_state = load_checkpoint(ddp_run["out"]).model.state_dict()
    for name, value in job.model.state_dict().items():
        torch.testing.assert_close(ddp_state[name], value, rtol=0, atol=1e-5, msg=name)


def test_the_checkpoint_resumes_on_one_process(ddp_run, tmp_path, capsys):
    out = tmp_path / "resumed.safetensors"
    code = main(["pretrain", "--resume", str(ddp_run["out"]), "--max-steps", "6", "--eval-every", "100",
                 "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "model: lab-tiny shape" in printed and "6 steps (starting at 4)" in printed and "done: 6 steps" in printed
    ckpt = load_checkpoint(out)
    assert ckpt.training["steps"] == 6 and "trainer" not in ckpt.extra


# ---------------------------------------------------------------- without torchrun

def test_without_torchrun_the_helpers_change_nothing():
    assert not distributed.launched_by_torchrun() and distributed.ddp_setup() is None
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    loader = DataLoader(list(range(10)), batch_size=2, shuffle=True)
    assert distributed.shard_loader(loader, seed=1) is loader
    assert distributed.all_reduce_mean({"b": 2.0, "a": 1.0}) == {"a": 1.0, "b": 2.0}
    assert distributed.on_main(lambda: 7) == 7 and distributed.any_rank(False) is False


def test_a_position_in_the_epoch_carries_over_to_another_world_size():
    state = TrainState(batch_in_epoch=8, world_size=2)
    _continue_on(state, 1)
    assert (state.batch_in_epoch, state.world_size) == (16, 1)
    _continue_on(state, 4)
    assert (state.batch_in_epoch, state.world_size) == (4, 4)


def test_bf16_is_refused_on_a_cpu_with_a_reason(tiny_cfg, capsys):
    from llm.model import GPTModel

    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        TrainConfig(precision="fp16").validate()
    model = GPTModel(tiny_cfg)
    batches = [(torch.randint(0, 100, (2, 8)), torch.randint(0, 100, (2, 8)))]
    with pytest.raises(ValueError, match="bf16 mixed precision needs a CUDA GPU.*50x slower"):
        train(model, batches, None, lm_loss, TrainConfig(max_steps=1, precision="bf16"))
    assert main(["pretrain", "--model", "lab-tiny", "--context", "32", "--max-steps", "1",
                 "--precision", "bf16"]) == 2
    assert "bf16 mixed precision needs a CUDA GPU" in capsys.readouterr().err
