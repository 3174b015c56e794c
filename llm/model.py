"""The GPT model of chapters 3 and 4, with the book's module and parameter names.

`MultiHeadAttention` has two paths through one set of weights:
the fast path calls `torch.nn.functional.scaled_dot_product_attention`; the
inspectable path computes the attention weights step by step as section 3.6 does
and records the intermediate tensors for the lab's attention views. A `KVCache`
lets generation feed one new token at a time (the book's KV-cache bonus material).
"""
from __future__ import annotations

import copy
import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig


class KVCache:
    """Preallocated keys and values for every layer, filled as tokens are fed in.

    `pos` counts the positions already stored; `GPTModel.forward` advances it once
    all layers have written the new positions.
    """

    def __init__(self, cfg: GPTConfig, batch_size: int = 1, max_len: int | None = None,
                 device=None, dtype=torch.float32):
        self.max_len = min(max_len or cfg.context_length, cfg.context_length)
        shape = (batch_size, cfg.n_heads, self.max_len, cfg.head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.pos = 0

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor):
        """Store the new keys/values of `layer`; return all keys/values up to them."""
        end = self.pos + keys.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; cannot store up to {end}")
        self.keys[layer][:, :, self.pos:end] = keys
        self.values[layer][:, :, self.pos:end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention (section 3.6.2), fast or inspectable."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.context_length = context_length
        # The book registers `mask`, a context_length x context_length buffer (section 3.5.3). Here the
        # same triangle is cut to the tokens at hand on each call (`causal_mask`): a buffer for a
        # 200,000-token context would take 160 GB before a single token is seen.

    def causal_mask(self, start: int, num_q: int, num_k: int, device=None) -> torch.Tensor:
        """True where a query may NOT look: the rows start..start+num_q-1 and first num_k columns of
        the book's `torch.triu(torch.ones(context_length, context_length), diagonal=1)`."""
        return torch.ones(num_q, num_k, dtype=torch.bool, device=device).triu(diagonal=start + 1)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, num_tokens, _ = t.shape
        return t.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, kv_cache: KVCache | None = None, layer: int = 0, record: dict | None = None):
        b, num_tokens, _ = x.shape
        queries = self._heads(self.W_query(x))
        keys = self._heads(self.W_key(x))
        values = self._heads(self.W_value(x))
        start = 0
        if kv_cache is not None:
            start = kv_cache.pos
            keys, values = kv_cache.update(layer, keys, values)

        if record is None:
            context_vec = self._fast_attention(queries, keys, values, start)
        else:
            context_vec = self._explicit_attention(queries, keys, values, start, record)
        context_vec = context_vec.transpose(1, 2).reshape(b, num_tokens, self.d_out)
        return self.out_proj(context_vec)

    def _fast_attention(self, queries, keys, values, start):
        num_q, num_k = queries.shape[2], keys.shape[2]
        dropout_p = self.dropout.p if self.training else 0.0
        if num_q == 1:  # one new token attends to everything before it: no mask needed
            return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p)
        if start == 0:
            return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p, is_causal=True)
        allowed = ~self.causal_mask(start, num_q, num_k, queries.device)
        return F.scaled_dot_product_attention(queries, keys, values, attn_mask=allowed, dropout_p=dropout_p)

    def _explicit_attention(self, queries, keys, values, start, record: dict):
        """Section 3.6: scores, scaling by sqrt(d_k), causal mask, softmax, weighted sum."""
        num_q, num_k = queries.shape[2], keys.shape[2]
        attn_scores = queries @ keys.transpose(2, 3)
        scaled_scores = attn_scores / math.sqrt(self.head_dim)
        mask_bool = self.causal_mask(start, num_q, num_k, queries.device)
        masked_scores = scaled_scores.masked_fill(mask_bool, -torch.inf)
        attn_weights = torch.softmax(masked_scores, dim=-1)
        record.update(queries=queries, keys=keys, values=values, attn_scores=attn_scores,
                      scaled_scores=scaled_scores, masked_scores=masked_scores, attn_weights=attn_weights)
        attn_weights = self.dropout(attn_weights)
        context_vec = attn_weights @ values
        record["context"] = context_vec
        return context_vec


class LayerNorm(nn.Module):
    """Layer normalization with `scale` and `shift` (section 4.2)."""

    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        # Same math as the book's mean/var version (biased variance), in one fused kernel.
        return F.layer_norm(x, x.shape[-1:], self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GELU with the tanh approximation used by GPT-2 (section 4.3)."""

    def forward(self, x):
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Two linear layers with a GELU between them, 4x wider inside (section 4.3)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block with shortcut connections (section 4.5)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim, d_out=cfg.emb_dim, context_length=cfg.context_length,
            num_heads=cfg.n_heads, dropout=cfg.drop_rate, qkv_bias=cfg.qkv_bias)
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x, kv_cache=None, layer=0, record=None):
        shortcut = x
        x = self.norm1(x)
        x = self.att(x, kv_cache=kv_cache, layer=layer, record=record)
        x = self.drop_shortcut(x)
        x = x + shortcut

        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        return x + shortcut


class GPTModel(nn.Module):
    """The GPT model of section 4.6."""

    def __init__(self, cfg: GPTConfig | dict):
        super().__init__()
        cfg = cfg if isinstance(cfg, GPTConfig) else GPTConfig.from_dict(cfg)
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.tie_output_head()

    def tie_output_head(self):
        """Share the token embedding as the output head (weight tying, section 5.5).

        Tied, the head's logits are dot products with the embeddings, so those start at
        GPT-2's scale (std 0.02, positions 0.01) instead of nn.Embedding's N(0, 1), which
        would make the first logits about 20x too large.
        """
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.01)
        self.out_head.weight = self.tok_emb.weight

    def forward(self, in_idx, kv_cache: KVCache | None = None, records: list | None = None,
                last_only: bool = False, hidden: bool = False):
        """Logits for every position of `in_idx` (batch, num_tokens).

        kv_cache: feed only the new tokens and reuse the keys/values stored there.
        records: a list that receives, per layer, the attention tensors (explicit path)
            and the block's output as "hidden" (for the logit lens).
        last_only: compute logits for the last position only (generation).
        hidden: return the final-normed hidden states instead, without the output head
            (for a loss that applies the head in chunks, `llm.loss.chunked_cross_entropy`).
        """
        seq_len = in_idx.shape[1]
        x = self.embed(in_idx, start=kv_cache.pos if kv_cache is not None else 0)
        for layer, block in enumerate(self.trf_blocks):
            record = {} if records is not None else None
            x = block(x, kv_cache=kv_cache, layer=layer, record=record)
            if record is not None:
                record["hidden"] = x
                records.append(record)
        if kv_cache is not None:
            kv_cache.pos += seq_len
        if last_only:
            x = x[:, -1:, :]
        x = self.final_norm(x)
        return x if hidden else self.out_head(x)

    def embed(self, in_idx, start: int = 0):
        """Token plus position embeddings, then dropout (section 2.8): the first block's input.

        `start` is the position of the first token (after the tokens a KV cache holds).
        """
        seq_len = in_idx.shape[1]
        if start + seq_len > self.cfg.context_length:
            raise ValueError(f"{start + seq_len} tokens exceed the model's context length "
                             f"of {self.cfg.context_length}")
        tok_embeds = self.tok_emb(in_idx)
        pos_embeds = self.pos_emb(torch.arange(start, start + seq_len, device=in_idx.device))
        return self.drop_emb(tok_embeds + pos_embeds)

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device


class HalfLinear(nn.Module):
    """Inference-only stand-in for an `nn.Linear`, with its weight stored in float16.

    Generating one token is limited by how fast the weights stream from memory, so
    reading 2 bytes per weight instead of 4 makes its matrix-vector product about
    twice as fast on a CPU (float32 in, float32 out). Several rows at once (a prompt)
    are compute-bound instead and use the weight converted back to float32.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.float16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def forward(self, x):
        if x.numel() != x.shape[-1]:
            return F.linear(x, self.weight.to(x.dtype), self.bias)
        out = F.linear(x.to(torch.float16), self.weight).to(x.dtype)
        return out if self.bias is None else out + self.bias


class Int8Linear(nn.Module):
    """Inference-only stand-in for an `nn.Linear`, with its weight stored as int8.

    Each output channel (row) keeps one float scale, max|row| / 127, so a weight is
    scale * round(w / scale): a quarter of the float32 bytes. It runs on PyTorch's
    quantized CPU kernels (fbgemm / oneDNN, `torch.ops.quantized.linear_dynamic`), which
    quantize each call's input to 8 bits on the fly (one scale per call) and multiply in int8
    with VNNI/AMX instructions, float32 in and float32 out: one token reads a quarter of the bytes and
    a prompt's matrix-matrix product is faster too.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
        int8_weight = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        with warnings.catch_warnings():  # quantized tensors are deprecated as a user-facing type
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(
                int8_weight, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0)
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x):
        return torch.ops.quantized.linear_dynamic(x, self._packed, self.reduce_range)

    #: Quantize the inputs to 7 bits instead of 8 where the CPU lacks VNNI: there fbgemm adds
    #: products in saturating 16-bit pairs, which full 8-bit inputs could overflow. With 8 bits
    #: the greedy choices of a Wharton model agreed with float32 at 99.4% of positions, with 7 at 98.5%.
    reduce_range = not torch.cpu._is_vnni_supported()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


#: The linear layer of each low-precision inference copy, and whether the output head is replaced too.
LOW_PRECISION_LINEARS = {"fp16": (HalfLinear, False), "int8": (Int8Linear, True)}


def low_precision_copy(model: GPTModel, precision: str) -> GPTModel:
    """A copy of `model` for inference whose linear layers store fewer bytes per weight.

    "fp16": the transformer blocks' linears become `HalfLinear`s. The output head stays
    float32 because float16 keeps only ~3 significant digits and would round the logits
    themselves (GPT-2's are around -100, where the float16 step is 0.06), flipping close
    greedy choices.
    "int8": the blocks' linears and the output head become `Int8Linear`s (per-channel
    scales keep each logit's relative error small, which float16's rounding of the
    output does not); a tied head gets its own int8 copy of the embedding matrix.

    Embeddings, LayerNorms and whatever is not replaced are shared with `model` (no
    extra memory). The copy does not follow later changes to `model`'s weights.
    """
    if precision not in LOW_PRECISION_LINEARS:
        raise ValueError(f"precision must be one of {', '.join(LOW_PRECISION_LINEARS)}, got {precision!r}")
    make_linear, with_head = LOW_PRECISION_LINEARS[precision]
    modules = [*model.trf_blocks.modules(), *([model.out_head] if with_head else [])]
    linears = {id(m): make_linear(m) for m in modules if type(m) is nn.Linear}
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo={**shared, **linears}).eval()
