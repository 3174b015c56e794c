"""Turning a GPT's logits into text (sections 4.7 and 5.3).

Greedy decoding, temperature scaling, top-k and top-p (nucleus) filtering, a
streaming generator that yields one token at a time and uses the KV cache, and the
next-token distribution before and after those knobs, for the lab to plot.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Iterator

import torch

from .config import INFERENCE_PRECISIONS
from .model import GPTModel, KVCache, low_precision_copy
from .tokenizer import ENDOFTEXT_ID, get_tokenizer, text_to_token_ids, token_ids_to_text


def check_sampling(temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                   max_new_tokens: int | None = None, context_length: int | None = None,
                   vocab_size: int = 50257, seed: int | None = None) -> None:
    """Raise a ValueError that says what is wrong with these sampling settings.

    Every number must be finite and in its range (`llm.bounds`): temperature 0 (greedy)
    or 0.01-100, top-k 1 to the vocabulary, top-p in (0, 1], a seed of 64 bits.
    """
    from .bounds import BOUNDS, Bound, check, check_optional, check_temperature

    check_temperature(temperature)
    try:
        check_optional("top-k", top_k, Bound(1, vocab_size, integer=True))
    except ValueError:
        raise ValueError(f"top-k must be between 1 and the vocabulary size {vocab_size} "
                         f"(or empty for no top-k), got {top_k}") from None
    try:
        check_optional("top-p", top_p)
    except ValueError:
        raise ValueError(f"top-p must be in (0, 1], got {top_p}") from None
    check_optional("seed", seed)
    if max_new_tokens is not None:
        try:
            check("max new tokens", max_new_tokens)
        except ValueError:
            raise ValueError(f"max new tokens must be at least 1 and at most "
                             f"{BOUNDS['max new tokens'].high:,}, got {max_new_tokens}") from None
    if max_new_tokens is not None and context_length is not None and max_new_tokens > context_length:
        raise ValueError(f"max new tokens ({max_new_tokens}) is larger than the model's context "
                         f"length ({context_length})")


def apply_sampling_filters(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                           top_p: float | None = None) -> torch.Tensor:
    """Top-k, then temperature, then top-p on the last dimension; filtered entries become -inf.

    Section 5.3: top-k keeps the k largest logits; temperature divides the logits
    (temperature 0 means greedy and leaves them unscaled); top-p keeps the smallest
    set of tokens whose probabilities add up to at least p.
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, -torch.inf)
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, sorted_idx, drop_sorted)
        logits = logits.masked_fill(drop, -torch.inf)
    return logits


def sample_next_token(logits: torch.Tensor, temperature: float = 0.0, top_k=None, top_p=None,
                      generator: torch.Generator | None = None):
    """Choose the next token id (batch, 1) and the probability it had under the sampling distribution."""
    filtered = apply_sampling_filters(logits, temperature, top_k, top_p)
    probs = torch.softmax(filtered, dim=-1)
    if temperature > 0:
        idx_next = torch.multinomial(probs, num_samples=1, generator=generator)
    else:
        idx_next = torch.argmax(filtered, dim=-1, keepdim=True)
    return idx_next, probs.gather(-1, idx_next)


def generate_text_simple(model: GPTModel, idx: torch.Tensor, max_new_tokens: int, context_size: int):
    """The book's greedy loop of section 4.7: the whole window is recomputed for every token."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        idx_next = torch.argmax(logits[:, -1, :], dim=-1, keepdim=True)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


@dataclass(frozen=True)
class GeneratedToken:
    id: int
    prob: float  # probability of this token under the distribution it was sampled from


def crop_prompt(token_ids: list[int], context_length: int) -> tuple[list[int], int]:
    """Keep the last `context_length` tokens of a prompt; return them and how many were cropped."""
    cropped = max(0, len(token_ids) - context_length)
    return token_ids[cropped:], cropped


PRECISIONS = INFERENCE_PRECISIONS  # ("fp32", "fp16", "int8"), torch-free in llm.config for the CLI and UI
_low_precision_copies = weakref.WeakKeyDictionary()  # model -> {precision: (weights fingerprint, copy)}
_low_precision_lock = threading.Lock()


def weights_fingerprint(model: torch.nn.Module) -> tuple:
    """Changes whenever any of the model's weights change: for caches of copies made from them."""
    # In-place updates (optimizer steps, load_state_dict) bump a tensor's _version;
    # assigning new parameters changes their identity or storage. Inference tensors
    # have no version counter (and cannot be changed outside inference mode).
    return tuple((id(p), p.data_ptr(), -1 if p.is_inference() else p._version) for p in model.parameters())


def inference_model(model: GPTModel, precision: str = "fp32") -> GPTModel:
    """The model that generation runs: `model` itself for "fp32", else a copy with
    fewer bytes per weight (`llm.model.low_precision_copy`).

    Decoding one token streams every weight from memory, so fewer bytes are faster:
    "fp16" (float16 weights in the blocks; its greedy tokens matched fp32 at every
    position measured) and "int8" (int8 weights with per-channel scales in the blocks
    and the output head, on PyTorch's quantized kernels; the same greedy choice as fp32 at
    99.05% of 2,944 held-out positions on the bundled Wharton model). Speeds and agreement:
    benchmarks/bench_generate.py. A copy is built once per model and precision and
    rebuilt when the model's weights change.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32" or model.tok_emb.weight.dtype != torch.float32:
        return model
    if precision == "int8" and model.device.type != "cpu":
        raise ValueError(f"int8 inference runs on the CPU (PyTorch's quantized CPU kernels); the model is on "
                         f"{model.device.type}: choose fp32 or fp16 there")
    fingerprint = weights_fingerprint(model)
    with _low_precision_lock:
        copies = _low_precision_copies.setdefault(model, {})
        cached = copies.get(precision)
        if cached is None or cached[0] != fingerprint:
            with torch.no_grad():
                cached = (fingerprint, low_precision_copy(model, precision))
            copies[precision] = cached
    return cached[1]


@torch.inference_mode()
def teacher_forced_agreement(model: GPTModel, reference_model: GPTModel, token_ids: list[int]) -> float:
    """Share of positions where `model` and `reference_model` choose the same greedy next token.

    Teacher forcing: both are fed the same `token_ids` (a real text, say) one token at a
    time through their KV caches, as generation feeds them, and compared after each one,
    so one disagreement does not change the text after it. Used to check the fp16 and
    int8 copies (`inference_model`) against the float32 model.
    """
    if not token_ids:
        raise ValueError("no tokens to compare on: give at least one")
    if len(token_ids) > model.cfg.context_length:
        raise ValueError(f"{len(token_ids)} tokens exceed the model's context length of {model.cfg.context_length}")
    caches = [KVCache(m.cfg, device=m.device, dtype=m.tok_emb.weight.dtype) for m in (model, reference_model)]
    same = 0
    for token in token_ids:
        x = torch.tensor([[token]], device=model.device)
        choice, reference = (int(m(x, kv_cache=c, last_only=True)[0, -1].argmax())
                             for m, c in zip((model, reference_model), caches))
        same += choice == reference
    return same / len(token_ids)


@torch.inference_mode()
def stream_generate(model: GPTModel, token_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                    top_k: int | None = None, top_p: float | None = None, eos_id: int | None = ENDOFTEXT_ID,
                    use_cache: bool = True, seed: int | None = None, *,
                    precision: str = "fp32") -> Iterator[GeneratedToken]:
    """Yield new tokens one at a time (section 5.3's `generate`, streaming).

    Stops early at `eos_id`. A prompt longer than the context is cropped from the
    left (use `crop_prompt` first to tell the user). With the KV cache, once the
    window is full the cache is rebuilt from the most recent half of the window, so
    long generations cost a prefill every context_length/2 tokens instead of every token.
    precision "fp16" or "int8" runs a copy of the model with float16 or int8 weights
    (`inference_model`).
    """
    context_length = model.cfg.context_length
    check_sampling(temperature, top_k, top_p, max_new_tokens, vocab_size=model.cfg.vocab_size, seed=seed)
    if not token_ids:
        raise ValueError("the prompt is empty: give at least one token")
    model = inference_model(model, precision)
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=model.device).manual_seed(seed) if seed is not None else None
    ids = crop_prompt(list(token_ids), context_length)[0]
    cache = None
    pending = ids  # tokens the model has not seen yet
    try:
        for _ in range(max_new_tokens):
            if use_cache:
                if cache is None or cache.pos + len(pending) > context_length:
                    keep = context_length // 2 if cache is not None else context_length
                    cache = KVCache(model.cfg, batch_size=1, device=model.device,
                                    dtype=model.tok_emb.weight.dtype)
                    pending = ids[-keep:]
                logits = model(torch.tensor([pending], device=model.device), kv_cache=cache, last_only=True)
            else:
                window = torch.tensor([ids[-context_length:]], device=model.device)
                logits = model(window, last_only=True)
            idx_next, prob = sample_next_token(logits[:, -1, :].float(), temperature, top_k, top_p, generator)
            token = int(idx_next)
            if eos_id is not None and token == eos_id:
                break
            ids.append(token)
            pending = [token]
            yield GeneratedToken(token, float(prob))
    finally:
        model.train(was_training)


def generate(model: GPTModel, idx: torch.Tensor, max_new_tokens: int, context_size: int | None = None,
             temperature: float = 0.0, top_k: int | None = None, eos_id: int | None = None,
             top_p: float | None = None, use_cache: bool = True, seed: int | None = None) -> torch.Tensor:
    """The book's `generate` (section 5.3.3) for a batch of one: returns idx with new tokens appended."""
    if context_size is not None and context_size != model.cfg.context_length:
        idx = idx[:, -context_size:]
    new = [t.id for t in stream_generate(model, idx[0].tolist(), max_new_tokens, temperature, top_k,
                                         top_p, eos_id, use_cache, seed)]
    return torch.cat([idx, torch.tensor([new], dtype=idx.dtype, device=idx.device)], dim=1)


def generate_text(model: GPTModel, prompt: str, max_new_tokens: int = 50, **kwargs) -> str:
    """Prompt text in, continuation text out (without the prompt)."""
    return token_ids_to_text(t.id for t in stream_generate(model, text_to_token_ids(prompt),
                                                            max_new_tokens, **kwargs))


@dataclass
class NextTokenChoice:
    id: int
    piece: str
    prob_model: float  # softmax of the raw logits
    prob_sampling: float  # after temperature, top-k and top-p (0 when filtered out)


@torch.inference_mode()
def next_token_distribution(model: GPTModel, token_ids: list[int], temperature: float = 1.0,
                            top_k: int | None = None, top_p: float | None = None,
                            n: int = 10) -> list[NextTokenChoice]:
    """The n most likely next tokens, with probabilities before and after the sampling knobs."""
    check_sampling(temperature, top_k, top_p, vocab_size=model.cfg.vocab_size)
    if not token_ids:
        raise ValueError("the prompt is empty: give at least one token")
    was_training = model.training
    model.eval()
    try:
        ids = crop_prompt(list(token_ids), model.cfg.context_length)[0]
        logits = model(torch.tensor([ids], device=model.device), last_only=True)[0, -1].float()
    finally:
        model.train(was_training)
    prob_model = torch.softmax(logits, dim=-1)
    filtered = apply_sampling_filters(logits, temperature, top_k, top_p)
    if temperature == 0:  # greedy: all the mass on the arg-max
        prob_sampling = torch.zeros_like(prob_model)
        prob_sampling[int(torch.argmax(filtered))] = 1.0
    else:
        prob_sampling = torch.softmax(filtered, dim=-1)
    top = torch.topk(prob_model, min(n, prob_model.numel()))
    enc = get_tokenizer()
    return [NextTokenChoice(int(i), enc.decode([int(i)]) if int(i) < enc.n_vocab else f"<{int(i)}>",
                            float(p), float(prob_sampling[i]))
            for p, i in zip(top.values, top.indices)]
