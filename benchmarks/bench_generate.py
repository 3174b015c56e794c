"""Generation speed of the 124M GPT on the CPU, printed as JSON.

Greedy decoding of N new tokens after a P-token prompt, batch 1, for:
  (a) our `stream_generate` with the KV cache (float32, exact),
  (a16) the same with `precision="fp16"` (float16 linear weights in the transformer
      blocks, float32 head), plus how often its greedy tokens agree with float32,
  (b) `transformers` GPT2LMHeadModel.generate with its cache (same shape, random init),
  (c) our model without the cache (the whole window recomputed per token).
All in one process with the same thread count, the runs interleaved; each figure is
the median of --runs. The load average is printed too: other processes on the
cores make every figure lower and noisier.

    python benchmarks/bench_generate.py [--runs 3] [--new-tokens 200] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm.config import get_config  # noqa: E402
from llm.generation import inference_model, stream_generate  # noqa: E402
from llm.model import GPTModel, KVCache  # noqa: E402


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


@torch.inference_mode()
def teacher_forced_agreement(model, prompt, reference: list[int]) -> float:
    """Share of steps where `model`'s greedy choice equals `reference`, when fed the reference tokens."""
    cache = KVCache(model.cfg)
    logits = model(torch.tensor([prompt]), kv_cache=cache, last_only=True)
    same = 0
    for token in reference:
        same += int(logits[0, -1].argmax()) == token
        logits = model(torch.tensor([[token]]), kv_cache=cache, last_only=True)
    return same / len(reference)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt-tokens", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--skip-no-cache", action="store_true", help="skip (c), the slow one")
    args = parser.parse_args(argv)

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
    transformers_run(hf, prompt, 5)()

    load_before = os.getloadavg()
    contenders = {"a": ours(model, prompt, n), "a16": ours(model, prompt, n, precision="fp16"),
                  "b": transformers_run(hf, prompt, n)}
    if not args.skip_no_cache:
        contenders["c"] = ours(model, prompt, n, use_cache=False)
    measured = measure(contenders, args.runs)
    (cached, _, cached_ids), (fp16, _, fp16_ids), (hf_rate, _, _) = (measured[k] for k in ("a", "a16", "b"))
    result = {
        "shape": "gpt2-small (124M, random weights)", "prompt_tokens": len(prompt), "new_tokens": n,
        "batch": 1, "threads": torch.get_num_threads(), "runs": args.runs, "decoding": "greedy",
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "a_ours_kv_cache_fp32_tok_s": round(cached, 2),
        "a16_ours_kv_cache_fp16_blocks_tok_s": round(fp16, 2),
        "b_transformers_generate_tok_s": round(hf_rate, 2),
        "ratio_a_over_b": round(cached / hf_rate, 3),
        "ratio_a16_over_b": round(fp16 / hf_rate, 3),
        "fp16_greedy_agreement": {
            "free_running_same_tokens": sum(a == b for a, b in zip(cached_ids, fp16_ids)) / n,
            "teacher_forced_same_argmax": teacher_forced_agreement(
                inference_model(model, "fp16"), prompt, cached_ids),
        },
    }
    if "c" in measured:
        no_cache, _, no_cache_ids = measured["c"]
        result["c_ours_no_cache_tok_s"] = round(no_cache, 2)
        result["ratio_a_over_c"] = round(cached / no_cache, 2)
        result["cache_equals_no_cache_greedy"] = cached_ids == no_cache_ids
    result["runs_tok_s"] = {name: runs for name, (_, runs, _) in measured.items()}
    result["load_average_1min_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
