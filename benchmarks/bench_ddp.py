"""Training tokens/s of the one loop on 1 process and on N processes under torchrun (DDP, appendix A).

Every configuration trains the same model shape on the-verdict with the same global batch
(windows per optimizer step) and reports the tokens/s of all ranks together, timed from
step `--warmup` to the last step (evaluation and sampling switched off); the configurations
alternate for `--rounds` rounds and the median round counts, so load from other processes on a
shared machine hits all of them alike:

    single_1thread      python, 1 process, 1 thread                    (no torchrun: the plain loop)
    single_Nthreads     python, 1 process, N threads                   (all the cores in one process)
    ddp_N_x_1thread     torchrun --nproc_per_node=N, gloo, 1 thread each, batch / N per rank

On a CPU machine with N cores the DDP figure shows the cost of the gradient all-reduce and of
N small batches instead of one large one; a speed-up needs more cores than one process uses
well, or GPUs (one per rank, nccl).

    python benchmarks/bench_ddp.py [--nproc 2] [--model lecture] [--context 64] [--batch 8]
                                   [--steps 20] [--warmup 3] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(args) -> None:
    """One rank (or the single process): train and let rank 0 write the timing as JSON."""
    import torch

    from llm import distributed
    from llm.config import get_config
    from llm.model import GPTModel
    from llm.pretraining import DEFAULT_TEXT, lm_loss, load_text, make_loaders
    from llm.training import TrainConfig, train

    world = distributed.world_size()
    if args.batch % world:
        raise SystemExit(f"the global batch {args.batch} does not split over {world} processes")
    data = make_loaders(load_text(DEFAULT_TEXT), args.context, args.context, args.batch // world, seed=123)
    torch.manual_seed(123)
    model = GPTModel(get_config(args.model).with_(context_length=args.context))
    config = TrainConfig(lr=1e-3, epochs=None, max_steps=args.warmup + args.steps, eval_every=10 ** 9)
    run = train(model, data.train_loader, None, lm_loss, config, evaluate=lambda m: {})
    start = None
    for event in run:
        if event.kind == "step" and event.step == args.warmup:
            start = (time.perf_counter(), event.seen)
        elif event.kind == "step" and event.step == config.max_steps:
            seconds, tokens = time.perf_counter() - start[0], event.seen - start[1]
    if distributed.is_main():
        Path(args.out).write_text(json.dumps({
            "processes": world, "threads_per_process": torch.get_num_threads(),
            "batch_per_process": args.batch // world, "timed_steps": args.steps, "tokens": tokens,
            "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
            "last_loss": round(event.train_loss, 4)}))
    distributed.ddp_cleanup()


def measure(name: str, nproc: int | None, threads: int, args) -> dict:
    """Run one configuration in fresh processes; nproc None = plain python, no torchrun."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        script = [str(Path(__file__).resolve()), "--worker", "--out", str(out), "--model", args.model,
                  "--context", str(args.context), "--batch", str(args.batch), "--steps", str(args.steps),
                  "--warmup", str(args.warmup)]
        launcher = [sys.executable] if nproc is None else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            env.pop(key, None)
        t = time.perf_counter()
        proc = subprocess.run(launcher + script, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(out.read_text())
        result["wall_s_with_start_up"] = round(time.perf_counter() - t, 1)
        return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--model", default="lecture", help="model shape preset (llm.config)")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="global batch: windows per optimizer step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all configurations (median counts)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    import torch

    n = args.nproc
    result = {"torch": torch.__version__, "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
              "model": args.model, "context": args.context, "global_batch": args.batch}
    configs = {"single_1thread": (None, 1), f"single_{n}threads": (None, n), f"ddp_{n}_x_1thread": (n, 1)}
    rounds = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, (nproc, threads) in configs.items():
            rounds[name].append(measure(name, nproc, threads, args))
    runs = {}
    for name, results in rounds.items():
        median = sorted(results, key=lambda r: r["tokens_per_s"])[len(results) // 2]
        runs[name] = {**median, "tokens_per_s_each_round": [r["tokens_per_s"] for r in results]}
    result["runs"] = runs
    base = runs[f"single_{n}threads"]["tokens_per_s"]
    result[f"ddp_{n}_vs_single_{n}threads"] = round(runs[f"ddp_{n}_x_1thread"]["tokens_per_s"] / base, 3)
    result[f"ddp_{n}_vs_single_1thread"] = round(runs[f"ddp_{n}_x_1thread"]["tokens_per_s"]
                                                 / runs["single_1thread"]["tokens_per_s"], 3)
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
