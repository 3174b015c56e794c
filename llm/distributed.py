"""Training on several processes with PyTorch's DistributedDataParallel (appendix A.9).

Appendix A starts one process per GPU with `torch.multiprocessing.spawn` and a
`ddp_setup(rank, world_size)`; here `torchrun` starts the processes and
`ddp_setup()` reads what torchrun puts in the environment:

    torchrun --nproc_per_node=2 -m llm pretrain --model lab-tiny --max-steps 100
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 \\
             --rdzv_backend=c10d --rdzv_endpoint=host0:29500 -m llm pretrain ...

Every process runs the same command. RANK (0 .. WORLD_SIZE-1) names the process
among all of them, LOCAL_RANK among those on its machine (and picks its GPU).
The one training loop (`llm.training`) then wraps the model in `DDP`, gives each
rank its own share of the batches with a `DistributedSampler`, averages losses
and accuracies over the ranks for reporting, and writes checkpoints from rank 0
only. Without torchrun every helper here is a no-op and a run is exactly the
single-process run.

Public API
----------
launched_by_torchrun() -> bool       RANK and WORLD_SIZE are in the environment
rank(), local_rank(), world_size()   from the environment (0, 0, 1 without torchrun)
is_main() -> bool                    rank 0: the process that prints and writes files
ddp_setup() -> torch.device | None   join the process group once (nccl on CUDA, gloo on CPU);
                                     the device of this rank, None when not distributed
is_distributed() -> bool             a process group with more than zero peers is up
ddp_cleanup()                        leave the process group (destroy_process_group)
ddp_model(model, device)             DDP (DistributedDataParallel) around a model on `device`
shard_loader(loader, seed)           the same DataLoader over this rank's share (DistributedSampler)
set_epoch(loader, epoch)             reshuffle a DistributedSampler for a new epoch
barrier(), all_reduce_sum(values), all_reduce_mean(values), any_rank(flag)
on_main(fn, *args, **kwargs)         call fn on rank 0 only (writing a file), then barrier
main_process_output()                context: ranks other than 0 print nothing to stdout
run_command(command, args)           a CLI training command under torchrun: set up, rank-0 output, clean up
stop_request()                       context: Ctrl-C / torchrun's SIGTERM become a flag every rank agrees on
write_rank_report(model, record)     test hook: with LLM_RANK_REPORT_DIR set, each rank writes
                                     rank<k>.json (its losses and a digest of its weights)
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data.distributed import DistributedSampler

REPORT_ENV = "LLM_RANK_REPORT_DIR"


# ---------------------------------------------------------------- where am I

def launched_by_torchrun() -> bool:
    """True in a process started by torchrun (or any launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", 0)) if launched_by_torchrun() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if launched_by_torchrun() else 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1)) if launched_by_torchrun() else 1


def is_main() -> bool:
    """Rank 0 prints, draws and writes checkpoints; the other ranks only train."""
    return rank() == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


# ---------------------------------------------------------------- set-up and clean-up

def ddp_setup() -> torch.device | None:
    """Join the process group torchrun described (appendix A's `ddp_setup`); return this rank's device.

    CUDA: one GPU per process, cuda:LOCAL_RANK, backend nccl. CPU: backend gloo.
    Called again it returns the same device; without torchrun it returns None.
    """
    if not launched_by_torchrun():
        return None
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if local_rank() >= gpus:
            raise RuntimeError(f"torchrun started more processes on this machine than it has GPUs "
                               f"(local rank {local_rank()}, {gpus} GPUs): use --nproc_per_node={gpus}")
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not is_distributed():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # device_id binds the process group to this rank's GPU (nccl); the rest comes from
        # the environment torchrun set (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE).
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None,
                                timeout=timedelta(minutes=30))
    return device


def ddp_cleanup() -> None:
    """Leave the process group (appendix A's `destroy_process_group()` at the end of main)."""
    if is_distributed():
        dist.destroy_process_group()


def ddp_model(model: torch.nn.Module, device: torch.device) -> DDP:
    """`DDP(model, device_ids=[rank])` as in appendix A, for a model already on `device`.

    Choose the trainable parameters first: DDP synchronises those that require grad when built.

    The wrapper averages the gradients over all ranks during backward; rank 0's weights
    are copied to every rank when it is built, so all ranks start alike.
    """
    # The only buffers are constant causal masks (context x context per block): DDP would otherwise
    # broadcast them from rank 0 before every forward pass. Newer torch names the switch differently.
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                      else {"broadcast_buffers": False})
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync)


# ---------------------------------------------------------------- data

def shard_loader(loader: DataLoader, seed: int = 0) -> DataLoader:
    """The same DataLoader over this rank's share of the data, through a DistributedSampler.

    A loader that shuffled (RandomSampler) shuffles the whole dataset with `seed` + epoch
    (`set_epoch`) and hands every rank its own slice of the order: with world size W,
    rank r gets positions r, r+W, r+2W, ... so one step of W ranks sees the same
    examples as one batch W times as large in a single process using the same sampler.
    `batch_size` stays per rank; the global batch is W times larger. Not distributed:
    the loader itself.
    """
    if not is_distributed() or loader is None:
        return loader
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    if loader.batch_size is None:
        raise ValueError("a loader with its own batch sampler cannot be shared out over ranks; "
                         "give it a batch_size")
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size(), rank=rank(),
                                 shuffle=isinstance(loader.sampler, RandomSampler), seed=seed)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      drop_last=loader.drop_last, collate_fn=loader.collate_fn,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory)


def set_epoch(loader, epoch: int) -> None:
    """Tell a DistributedSampler which epoch starts, so each epoch gets its own shuffle."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


# ---------------------------------------------------------------- collectives

def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _device() -> torch.device:
    # nccl reduces tensors on the GPU, gloo on the CPU.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """The sum of each value over all ranks (the values themselves when not distributed)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_mean(values: Sequence[float] | dict) -> list[float] | dict:
    """The mean of each value over all ranks; a dict keeps its keys (every rank must send the same keys)."""
    if isinstance(values, dict):
        keys = sorted(values)
        return dict(zip(keys, all_reduce_mean([values[k] for k in keys])))
    n = world_size() if is_distributed() else 1
    return [v / n for v in all_reduce_sum(values)]


def any_rank(flag: bool) -> bool:
    """True on every rank if it is True on at least one (e.g. a stop asked on one rank)."""
    return all_reduce_sum([1.0 if flag else 0.0])[0] > 0


def on_main(fn: Callable, *args, **kwargs):
    """Call fn (which writes a file) on rank 0 only; every rank waits until it is done.

    Returns fn's result on rank 0 and None elsewhere. Not distributed: just fn(...).
    """
    result = fn(*args, **kwargs) if is_main() else None
    barrier()
    return result


# ---------------------------------------------------------------- the command line

@contextlib.contextmanager
def main_process_output() -> Iterator[None]:
    """Within the block, only rank 0 writes to stdout; errors (stderr) still show on every rank."""
    if is_main():
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def run_command(command: Callable, args) -> int:
    """Run a training command (`command(args) -> exit status`) as appendix A's `main` does.

    Under torchrun: join the process group first, let only rank 0 print, and leave the group
    at the end whatever happens. Without torchrun: just `command(args)`.
    """
    ddp_setup()
    try:
        with main_process_output():
            return command(args)
    finally:
        ddp_cleanup()


@contextlib.contextmanager
def stop_request(distributed_only: bool = False) -> Iterator[Callable[[], bool]]:
    """Turn Ctrl-C into a request to stop after the current step; yields `asked() -> bool`.

    Under torchrun, Ctrl-C reaches every process and torchrun passes the signal on (a
    SIGTERM if it is stopped otherwise), then waits 30 s before killing: each rank
    records the request and `asked()` is True on all ranks as soon as one saw it
    (one tiny all-reduce), so all of them stop after the same step and save together.
    Call `asked()` on every rank at the same points. With `distributed_only`, a
    single-process run keeps Python's usual KeyboardInterrupt.
    """
    flag = {"asked": False}
    if distributed_only and not launched_by_torchrun():
        yield lambda: False
        return

    def on_signal(signum, frame):
        flag["asked"] = True

    signals = [signal.SIGINT] + ([signal.SIGTERM] if launched_by_torchrun() else [])
    previous = {s: signal.signal(s, on_signal) for s in signals}
    try:
        yield (lambda: any_rank(flag["asked"])) if is_distributed() else (lambda: flag["asked"])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------- test hook

def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in name order: equal digests = bitwise equal weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def write_rank_report(model: torch.nn.Module, record: dict) -> Path | None:
    """If LLM_RANK_REPORT_DIR is set, write rank<k>.json there: `record`, the rank and a weights digest.

    Lets a test compare what every rank holds after a torchrun run (only rank 0 saves a checkpoint).
    """
    folder = os.environ.get(REPORT_ENV)
    if not folder:
        return None
    path = Path(folder) / f"rank{rank()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"rank": rank(), "world_size": world_size(), "weights_sha256": weights_digest(model), **record}
    path.write_text(json.dumps(report))
    return path
