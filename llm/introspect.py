"""Looking inside a GPT: the numbers behind the lab's Tokenize, Embeddings and Attention tabs.

Chapter 2 (tokens, sliding windows, embeddings), chapter 3 (attention weights step
by step) and a logit lens over chapter 4's blocks. Pure functions of a model and
token ids that return plain Python/NumPy data; the figures live in `llm.viz`.
"""
from __future__ import annotations

import threading
import unicodedata
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from .data import GPTDatasetV1, count_windows
from .generation import weights_fingerprint
from .model import GPTModel
from .tokenizer import ENDOFTEXT, UNK, get_tokenizer, simple_split, token_pieces, verdict_simple_tokenizer

_KEEP_CONTROLS = {"\n", "\t"}


def sanitize_text(text: str | None, limit: int = 20_000, what: str = "text") -> tuple[str, list[str]]:
    """Text ready to tokenize, and notices for the learner about what was changed.

    Removes control characters (except newline and tab), cuts the text to `limit`
    characters, and notes a literal `<|endoftext|>`, which the tokenizer treats as the
    special token (section 2.4). Raises ValueError for empty text.
    """
    text = text or ""
    notices = []
    if not text.strip():
        raise ValueError(f"The {what} is empty: type or pick an example.")
    controls = [ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in _KEEP_CONTROLS]
    if controls:
        shown = ", ".join(sorted({f"U+{ord(ch):04X}" for ch in controls})[:5])
        removed = set(controls)
        text = "".join(ch for ch in text if ch not in removed)
        notices.append(f"Removed {len(controls)} control character(s) ({shown}).")
        if not text.strip():
            raise ValueError(f"The {what} held only control characters.")
    if len(text) > limit:
        notices.append(f"The {what} has {len(text):,} characters; only the first {limit:,} are used.")
        text = text[:limit]
    if ENDOFTEXT in text:
        notices.append(f"`{ENDOFTEXT}` is read as GPT-2's special end-of-text token (id 50256), "
                       "not as the characters you typed.")
    return text, notices


# --- chapter 2: tokenizers side by side ---------------------------------------------

@dataclass(frozen=True)
class SimpleToken:
    text: str  # the word or punctuation the regex split off
    id: int
    unknown: bool  # mapped to <|unk|>


def simple_tokens(text: str) -> list[SimpleToken]:
    """The book's SimpleTokenizerV2 with the-verdict's vocabulary (section 2.4), token by token."""
    tok = verdict_simple_tokenizer()
    out = []
    for word in simple_split(text):
        known = word in tok.str_to_int
        out.append(SimpleToken(word, tok.str_to_int[word if known else UNK], not known))
    return out


def sliding_windows(token_ids: list[int], max_length: int, stride: int, limit: int = 20):
    """The first `limit` input/target pairs `GPTDatasetV1` makes (section 2.6), and how many in all."""
    total = count_windows(len(token_ids), max_length, stride)
    shown = min(total, limit)
    needed = (shown - 1) * stride + max_length + 1 if shown else 0
    dataset = GPTDatasetV1(list(token_ids[:needed]) if shown else [], max_length=max_length, stride=stride)
    pairs = [(x.tolist(), y.tolist()) for x, y in (dataset[i] for i in range(min(shown, len(dataset))))]
    return pairs, total


# --- chapter 2: embeddings ----------------------------------------------------------

def _as_tensor(model: GPTModel, token_ids) -> torch.Tensor:
    ids = list(token_ids)
    if not ids:
        raise ValueError("no tokens to look at")
    if len(ids) > model.cfg.context_length:
        raise ValueError(f"{len(ids)} tokens exceed the model's context length of {model.cfg.context_length}")
    return torch.tensor([ids], device=model.device)


@torch.inference_mode()
def embedding_views(model: GPTModel, token_ids) -> dict[str, np.ndarray]:
    """Token, positional and input embeddings (their sum) of section 2.8, each (tokens, emb_dim)."""
    idx = _as_tensor(model, token_ids)
    tok = model.tok_emb(idx)[0]
    pos = model.pos_emb(torch.arange(idx.shape[1], device=idx.device))
    return {"token": tok.float().cpu().numpy(), "position": pos.float().cpu().numpy(),
            "input": (tok + pos).float().cpu().numpy()}


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Project row vectors onto their first two principal components; also the variance each explains."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError("a 2-D map needs at least two vectors")
    x = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    coords = x @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    var = s ** 2
    explained = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    explained = np.pad(explained, (0, 2 - len(explained)))
    # fix the sign so the picture does not flip between runs
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    signs[signs == 0] = 1
    return coords * signs, (float(explained[0]), float(explained[1]))


@dataclass(frozen=True)
class Neighbour:
    id: int
    piece: str
    similarity: float  # cosine similarity


@torch.inference_mode()
def nearest_neighbours(model: GPTModel, token_id: int, k: int = 10) -> list[Neighbour]:
    """The k tokens whose embedding vectors point most nearly the same way as `token_id`'s."""
    weight = model.tok_emb.weight
    if not 0 <= token_id < weight.shape[0]:
        raise ValueError(f"token id {token_id} is outside the vocabulary (0..{weight.shape[0] - 1})")
    k = max(1, min(int(k), weight.shape[0] - 1))
    normed = torch.nn.functional.normalize(weight.float(), dim=-1)
    sims = normed @ normed[token_id]
    sims[token_id] = -2.0  # not its own neighbour
    top = torch.topk(sims, k)
    pieces = token_pieces(top.indices.tolist()) if weight.shape[0] <= get_tokenizer().n_vocab else None
    return [Neighbour(int(i), pieces[n].text if pieces else f"<{int(i)}>", float(s))
            for n, (s, i) in enumerate(zip(top.values, top.indices))]


# --- chapter 3: attention, and a logit lens over the blocks --------------------------

class RecordedPass:
    """The inspectable forward pass of one input, run block by block only as far as asked.

    `through(layer)` returns the tensors of section 3.6 for blocks 0..layer, computing the
    blocks not run yet (a block's attention depends on the blocks before it only), so a
    look at layer 0 costs one block and a later look at layer 11 runs the rest. Safe to
    share between threads: one of them computes, the others wait for its result.
    """

    def __init__(self, model: GPTModel, token_ids):
        self.model = model
        self.idx = _as_tensor(model, token_ids)
        self.records: list[dict] = []
        self._x = None  # the output of the last block run so far
        self._lock = threading.Lock()

    @torch.inference_mode()
    def through(self, layer: int | None = None) -> list[dict]:
        """Per block up to `layer` (all blocks when None), float32 CPU tensors, batch 1 removed.

        Keys: queries, keys, values (heads, tokens, head_dim); attn_scores, scaled_scores,
        masked_scores, attn_weights (heads, tokens, tokens); context (heads, tokens, head_dim);
        hidden (tokens, emb_dim), the block's output.
        """
        model = self.model
        last = model.cfg.n_layers - 1 if layer is None else min(int(layer), model.cfg.n_layers - 1)
        with self._lock:
            if len(self.records) <= last:
                was_training = model.training
                model.eval()
                try:
                    if self._x is None:
                        self._x = model.embed(self.idx)
                    while len(self.records) <= last:
                        record = {}
                        self._x = model.trf_blocks[len(self.records)](self._x, layer=len(self.records),
                                                                      record=record)
                        record["hidden"] = self._x
                        self.records.append({name: t[0].float().cpu() for name, t in record.items()})
                finally:
                    model.train(was_training)
            return self.records[:last + 1]


def attention_records(model: GPTModel, token_ids) -> list[dict]:
    """Every block's tensors of section 3.6 for one input (see `RecordedPass.through`)."""
    return RecordedPass(model, token_ids).through()


def attention_maps(model: GPTModel, token_ids) -> np.ndarray:
    """Attention weights of every layer and head: (layers, heads, tokens, tokens); rows sum to 1."""
    return np.stack([rec["attn_weights"].numpy() for rec in attention_records(model, token_ids)])


@dataclass(frozen=True)
class HeadPattern:
    layer: int
    head: int
    previous_token: float  # mean attention weight on position i-1, over positions 1..n-1


def previous_token_heads(maps: np.ndarray, threshold: float = 0.5) -> list[HeadPattern]:
    """Heads that mostly look one token back (the "previous-token heads" of trained GPTs).

    `maps` is `attention_maps(...)` (layers, heads, tokens, tokens); a head qualifies when
    its mean weight on position i-1 reaches `threshold`. Strongest first. A random model
    has none: its causal weights are spread evenly over all earlier tokens.
    """
    n = maps.shape[-1]
    if n < 2:
        return []
    diagonal = maps[:, :, np.arange(1, n), np.arange(n - 1)].mean(axis=-1)  # (layers, heads)
    found = [HeadPattern(int(l), int(h), float(diagonal[l, h])) for l, h in zip(*np.nonzero(diagonal >= threshold))]
    return sorted(found, key=lambda p: -p.previous_token)


def attention_steps(records: list[dict], layer: int, head: int, max_tokens: int = 16) -> dict[str, np.ndarray]:
    """Section 3.6 for one head, on the first `max_tokens` tokens: Q, K, QKᵀ, /√d_k, masked, softmax, ×V.

    Restricting to the first tokens is exact: with the causal mask those tokens never see later ones.
    """
    rec = records[layer]
    n = min(max_tokens, rec["attn_weights"].shape[-1])
    pick = {name: rec[name][head, :n] for name in ("queries", "keys", "values", "context")}
    pick.update({name: rec[name][head, :n, :n] for name in
                 ("attn_scores", "scaled_scores", "masked_scores", "attn_weights")})
    return {name: t.numpy() for name, t in pick.items()}


@dataclass(frozen=True)
class LensRow:
    layer: int  # index of the block in model.trf_blocks
    top_ids: list[list[int]]  # per position, the `top` most likely next tokens
    top_probs: list[list[float]]


@torch.inference_mode()
def logit_lens(model: GPTModel, token_ids, top: int = 5, records: list[dict] | None = None,
               last_positions: int | None = None) -> list[LensRow]:
    """What the model would predict after each block: its output through `final_norm` and `out_head`.

    The last block's row is exactly the model's own next-token prediction; the earlier rows are
    decoded with bfloat16 products where the CPU has fast ones (their top tokens agree with
    float32's: tests/test_bundled.py). Only the last `last_positions` positions are decoded when
    given (the head is the costly part).
    """
    records = records if records is not None else attention_records(model, token_ids)
    hidden = torch.stack([rec["hidden"][-last_positions:] if last_positions else rec["hidden"] for rec in records])
    normed = model.final_norm(hidden.to(device=model.device, dtype=model.out_head.weight.dtype))
    parts = [model.out_head(normed[-1:])]  # the last block's row: the model's own prediction, in its own precision
    if len(records) > 1:
        # the blocks before it: all their positions through the head in one product, which reads the
        # head's weights once (in bfloat16 where the CPU multiplies it fast: the lens's costliest part)
        head = _lens_head(model)
        parts.insert(0, normed[:-1].to(head.dtype) @ head.T)
    values, indices = (torch.cat(t) for t in zip(*(_top_probs(logits.float(), top) for logits in parts)))
    return [LensRow(layer, indices[layer].tolist(), values[layer].tolist()) for layer in range(len(records))]


def _top_probs(logits: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `top` largest softmax probabilities over the last dimension and their indices (softmax of those only)."""
    top_logits, indices = torch.topk(logits, min(top, logits.shape[-1]), dim=-1)
    return torch.exp(top_logits - torch.logsumexp(logits, dim=-1, keepdim=True)), indices


_lens_heads = weakref.WeakKeyDictionary()  # model -> (weights fingerprint, bfloat16 copy of out_head.weight)
_lens_heads_lock = threading.Lock()
_FAST_BF16 = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def _lens_head(model: GPTModel) -> torch.Tensor:
    """The output head's weight for the logit lens's earlier blocks: a cached bfloat16 copy on CPUs with
    bfloat16 matrix instructions (AMX or AVX-512 BF16: ~5x faster than float32 here), else the weight itself."""
    weight = model.out_head.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or not _FAST_BF16:
        return weight
    fingerprint = weights_fingerprint(model)
    with _lens_heads_lock:
        cached = _lens_heads.get(model)
        if cached is None or cached[0] != fingerprint:
            cached = _lens_heads[model] = (fingerprint, weight.detach().to(torch.bfloat16))
    return cached[1]


__all__ = ["sanitize_text", "SimpleToken", "simple_tokens", "sliding_windows", "embedding_views", "pca_2d",
           "Neighbour", "nearest_neighbours", "RecordedPass", "attention_records", "attention_maps", "attention_steps",
           "LensRow", "logit_lens"]
