"""Generation speed of the 124M GPT on the CPU, printed as JSON.

Greedy decoding of N new tokens after a P-token prompt, batch 1, for:
  (a) our `stream_generate` with the KV cache (float32, exact),
  (a16) the same with `precision="fp16"` (float16 linear weights in the transformer
      blocks, float32 head), plus how often its greedy tokens agree with float32,
  (a8) the same with `precision="int8"` (int8 weights with per-output-channel scales in
      the blocks and the head, on PyTorch's quantized CPU kernels),
  (b) `transformers` GPT2LMHeadModel.generate with its cache (same shape, random init),
  (c) our model without the cache (the whole window recomputed per token).
All in one process with the same thread count, the runs interleaved; each figure is
the median of --runs. The load average is printed too: other processes on the
cores make every figure lower and noisier.

Agreement of fp16 and int8 with float32 is measured where it means something, on
trained models (--trained: the bundled Wharton model by default; on random weights the
near-uniform logits make it meaningless): the share of positions of held-out text where
their greedy next token equals float32's, teacher-forced through the KV cache. The
memory (RSS) of each precision is measured in a fresh process each, the 124M model
loaded and 5 tokens generated: float32 alone, float32 plus its fp16 or int8 copy (the
lab keeps both), and the copy alone once the float32 model is dropped.

    python benchmarks/bench_generate.py [--runs 3] [--new-tokens 200] [--threads 2]
        [--trained assets/models/wharton-gpt.safetensors other.safetensors] [--skip-memory]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm.config import get_config  # noqa: E402
from llm.generation import inference_model, stream_generate, teacher_forced_agreement  # noqa: E402
from llm.model import GPTModel  # noqa: E402
from llm.paths import ASSETS_DIR  # noqa: E402

BUNDLED = ASSETS_DIR / "models" / "wharton-gpt.safetensors"


def measure(runs_by_name: dict, runs: int) -> dict[str, tuple[float, list[float], list[int]]]:
    """Median tokens/s of each `run()` (which returns the generated ids) over `runs` rounds.

    The runs are interleaved round by round, so a burst of load from other
    processes slows every contender rather than one of them.
    """
    rates = {name: [] for name in runs_by_name}
    ids = {}
    for _ in range(runs):
        for name, run in runs_by_name.items():
            start = time.perf_counter()
            ids[name] = run()
            rates[name].append(len(ids[name]) / (time.perf_counter() - start))
    return {name: (statistics.median(r), [round(x, 2) for x in r], ids[name]) for name, r in rates.items()}


def ours(model, prompt, new_tokens, **kw):
    return lambda: [t.id for t in stream_generate(model, prompt, new_tokens, eos_id=None, **kw)]


def hf_model(cfg, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hf_cfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
                        n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    return GPT2LMHeadModel(hf_cfg).eval()


def transformers_run(model, prompt, new_tokens):
    input_ids = torch.tensor([prompt])

    def run():
        with torch.inference_mode():
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=True,
                                 eos_token_id=None, pad_token_id=0)
        ids = out[0, len(prompt):].tolist()
        assert len(ids) == new_tokens, f"transformers stopped after {len(ids)} tokens"
        return ids
    return run


def trained_agreement(path, windows_per_text: int = 16, window: int = 128) -> dict:
    """fp16 and int8 greedy agreement with float32 on a trained checkpoint, teacher-forced over
    held-out text (`llm.quality.held_out_windows`; ~3,000 positions: one flip moves the share by 0.03%)."""
    from llm.checkpoints import load_checkpoint
    from llm.quality import held_out_windows

    model = load_checkpoint(path).model.eval()
    window = min(window, model.cfg.context_length)
    out = {"model": Path(path).name, "config": model.cfg.to_dict(), "positions": 0}
    texts = held_out_windows(window, windows_per_text)
    for precision in ("fp16", "int8"):
        fast = inference_model(model, precision)
        scores = [teacher_forced_agreement(fast, model, ids) for ids in texts]
        out[f"{precision}_same_argmax"] = round(sum(scores) / len(scores), 4)
        out[f"{precision}_worst_window"] = round(min(scores), 4)
    out["positions"] = sum(len(ids) for ids in texts)
    return out


def memory_child(kind: str, threads: int, seed: int) -> None:
    """In a fresh process: load the 124M model as `kind`, generate 5 tokens, print the RSS then and its peak (MB)."""
    torch.set_num_threads(threads)
    cfg = get_config("gpt2-small")
    torch.manual_seed(seed)
    prompt = list(range(1000, 1020))
    if kind == "transformers_fp32":
        hf = hf_model(cfg, seed)
        transformers_run(hf, prompt, 5)()
    else:
        model = GPTModel(cfg).eval()
        precision, _, alone = kind.partition("_")
        fast = inference_model(model, precision)
        if alone:  # keep only the copy: the float32 blocks and head are freed
            del model
            gc.collect()
        ours(fast, prompt, 5)()
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    mb = {key: round(int(status[key].split()[0]) / 1024, 1) for key in ("VmRSS", "VmHWM")}
    # (VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec)
    print(json.dumps({"rss_mb": mb["VmRSS"], "peak_rss_mb": mb["VmHWM"]}))


MEMORY_KINDS = ("fp32", "fp16", "int8", "fp16_alone", "int8_alone", "transformers_fp32")


def memory_figures(threads: int, seed: int) -> dict:
    figures = {}
    for kind in MEMORY_KINDS:
        out = subprocess.run([sys.executable, __file__, "--memory-child", kind, "--threads", str(threads),
                              "--seed", str(seed)], capture_output=True, text=True, check=True)
        figures[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rss_mb_after_5_tokens": {kind: f["rss_mb"] for kind, f in figures.items()},
            "peak_rss_mb": {kind: f["peak_rss_mb"] for kind, f in figures.items()},
            "note": "fp16/int8: the float32 model plus its copy (how the lab runs them); *_alone: the copy only, "
                    "the float32 model dropped (embeddings stay float32 and shared)"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt-tokens", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--skip-no-cache", action="store_true", help="skip (c), the slow one")
    parser.add_argument("--trained", nargs="*", default=None,
                        help="checkpoints to measure fp16/int8 agreement on (default: the bundled model)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", choices=MEMORY_KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child, args.threads, args.seed)

    torch.set_num_threads(args.threads)
    cfg = get_config("gpt2-small")
    torch.manual_seed(args.seed)
    model = GPTModel(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (args.prompt_tokens,)).tolist()
    hf = hf_model(cfg, args.seed)
    n = args.new_tokens

    # one untimed warm-up each: first calls allocate and build the fp16 copy
    ours(model, prompt, 5)()
    ours(model, prompt, 5, precision="fp16")()
    ours(model, prompt, 5, precision="int8")()
    transformers_run(hf, prompt, 5)()

    load_before = os.getloadavg()
    contenders = {"a": ours(model, prompt, n), "a16": ours(model, prompt, n, precision="fp16"),
                  "a8": ours(model, prompt, n, precision="int8"), "b": transformers_run(hf, prompt, n)}
    if not args.skip_no_cache:
        contenders["c"] = ours(model, prompt, n, use_cache=False)
    measured = measure(contenders, args.runs)
    (cached, _, cached_ids), (fp16, _, fp16_ids), (int8, _, int8_ids), (hf_rate, _, _) = (
        measured[k] for k in ("a", "a16", "a8", "b"))
    result = {
        "shape": "gpt2-small (124M, random weights)", "prompt_tokens": len(prompt), "new_tokens": n,
        "batch": 1, "threads": torch.get_num_threads(), "runs": args.runs, "decoding": "greedy",
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "a_ours_kv_cache_fp32_tok_s": round(cached, 2),
        "a16_ours_kv_cache_fp16_blocks_tok_s": round(fp16, 2),
        "a8_ours_kv_cache_int8_tok_s": round(int8, 2),
        "b_transformers_generate_tok_s": round(hf_rate, 2),
        "ratio_a_over_b": round(cached / hf_rate, 3),
        "ratio_a16_over_b": round(fp16 / hf_rate, 3),
        "ratio_a8_over_b": round(int8 / hf_rate, 3),
        "random_weights_greedy_agreement": {
            "note": "random weights: near-uniform logits, so this says little (see trained_model_agreement)",
            "fp16_free_running_same_tokens": sum(a == b for a, b in zip(cached_ids, fp16_ids)) / n,
            "fp16_teacher_forced_same_argmax": teacher_forced_agreement(
                inference_model(model, "fp16"), model, prompt + cached_ids[:-1]),
            "int8_free_running_same_tokens": sum(a == b for a, b in zip(cached_ids, int8_ids)) / n,
            "int8_teacher_forced_same_argmax": teacher_forced_agreement(
                inference_model(model, "int8"), model, prompt + cached_ids[:-1]),
        },
    }
    if "c" in measured:
        no_cache, _, no_cache_ids = measured["c"]
        result["c_ours_no_cache_tok_s"] = round(no_cache, 2)
        result["ratio_a_over_c"] = round(cached / no_cache, 2)
        result["cache_equals_no_cache_greedy"] = cached_ids == no_cache_ids
    result["runs_tok_s"] = {name: runs for name, (_, runs, _) in measured.items()}
    trained = args.trained if args.trained is not None else [BUNDLED] if BUNDLED.exists() else []
    result["trained_model_agreement"] = [trained_agreement(path) for path in trained]
    if not args.skip_memory:
        result["memory"] = memory_figures(args.threads, args.seed)
    result["load_average_1min_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
