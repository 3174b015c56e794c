"""Chapter 4, "Implementing a GPT model from scratch to generate text", as numbers to look at.

The computations behind the lab's Model tab, pure functions of a model (or a config) and
token ids that return plain Python/NumPy data; the figures live in `llm.viz_model`.

- 4.1 the architecture as a flow of named modules with the shape of every tensor
  (`flow_stages`), and the numbers of one stage for one token (`ModelTrace.stage_numbers`);
- 4.2 layer normalization: mean and variance per token before and after (`layer_norm_stats`);
- 4.3 GELU next to ReLU, and how many feed-forward activations GELU leaves negative
  (`gelu_relu_curves`, `feed_forward_activations`);
- 4.4 shortcut connections: the chapter's `ExampleDeepNeuralNetwork` and its gradients
  with and without shortcuts (`shortcut_gradients`);
- 4.5 the transformer block, and the residual stream it adds to (`ModelTrace.residual_norms`);
- 4.6 parameters per component and memory at float32/float16/int8 (`parameter_table`
  for an instantiated model, `config_parameter_table` from a config alone).

A `ModelTrace` runs one input only as far as a view asks: the blocks through
`llm.introspect.RecordedPass` (block by block, kept), the output head only for the
positions shown, so a 124M (or larger) model computes nothing that is not on screen.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .config import GPTConfig
from .introspect import RecordedPass
from .model import GELU, GPTModel

#: Bytes per parameter (section 4.6 computes float32; half precision and int8 for comparison).
BYTES_PER_PARAMETER = {"float32": 4, "float16": 2, "int8": 1}
#: The book's megabyte: `total_size_bytes / (1024 * 1024)` (section 4.6).
MB = 1024 * 1024


# --- 4.6: parameters and memory ------------------------------------------------------------

@dataclass(frozen=True)
class ParameterRow:
    component: str  # what a reader calls it
    modules: str  # the book's module names
    count: int


@dataclass(frozen=True)
class ParameterTable:
    """Parameters per component (section 4.6); a tied head is counted once, as `model.parameters()` does."""

    rows: list[ParameterRow]
    tied: bool  # out_head.weight is tok_emb.weight (weight tying, section 4.6 / 5.5)
    head_weights: int  # the output head's own weight matrix, shared or not
    tieable: bool  # the head has the vocabulary's shape (a classifier's 2-wide head has not)

    @property
    def total(self) -> int:
        """What `sum(p.numel() for p in model.parameters())` gives for this model."""
        return sum(row.count for row in self.rows)

    @property
    def total_untied(self) -> int:
        """With a separate output head (the book's 163,009,536 for GPT_CONFIG_124M)."""
        return self.total + (self.head_weights if self.tied else 0)

    @property
    def total_tied(self) -> int | None:
        """With the head sharing tok_emb.weight (the book's 124,412,160); None when the head cannot be tied."""
        if not self.tieable:
            return None
        return self.total - (0 if self.tied else self.head_weights)


def memory_mb(parameters: int, dtype: str = "float32") -> float:
    """Section 4.6's `total_params * 4 / (1024 * 1024)`, for float32, float16 or int8 weights."""
    return parameters * BYTES_PER_PARAMETER[dtype] / MB


_COMPONENTS = [  # (component, book modules, name prefix or test)
    ("token embedding", "tok_emb", lambda n: n.startswith("tok_emb.")),
    ("position embedding", "pos_emb", lambda n: n.startswith("pos_emb.")),
    ("attention", "trf_blocks[*].att (W_query, W_key, W_value, out_proj)", lambda n: ".att." in n),
    ("feed-forward", "trf_blocks[*].ff (4x wider, GELU)", lambda n: ".ff." in n),
    ("layer norms", "trf_blocks[*].norm1, norm2, final_norm", lambda n: "norm" in n.rpartition(".")[0].split(".")[-1]),
    ("output head", "out_head", lambda n: n.startswith("out_head.")),
]
_TIED_HEAD = ParameterRow("output head", "out_head (tied: shares tok_emb.weight)", 0)


def parameter_table(model: nn.Module) -> ParameterTable:
    """Count an instantiated model's parameters per component (works on the meta device too)."""
    counts = {component: 0 for component, _, _ in _COMPONENTS}
    other = 0
    for name, p in model.named_parameters():  # a shared (tied) tensor is listed once
        component = next((c for c, _, match in _COMPONENTS if match(name)), None)
        if component is None:
            other += p.numel()
        else:
            counts[component] += p.numel()
    rows = [ParameterRow(c, modules, counts[c]) for c, modules, _ in _COMPONENTS]
    if other:
        rows.append(ParameterRow("other", "adapters and extra modules", other))
    head, tok = model.out_head.weight, model.tok_emb.weight
    tied = head is tok
    if tied:
        rows[len(_COMPONENTS) - 1] = _TIED_HEAD
    return ParameterTable(rows, tied, head.numel(), head.shape == tok.shape)


def config_parameter_table(cfg: GPTConfig, tied_head: bool | None = None) -> ParameterTable:
    """The same table from a config alone (no weights, no download): GPT-2's four sizes side by side."""
    tied = cfg.tie_weights if tied_head is None else tied_head
    d, v, layers = cfg.emb_dim, cfg.vocab_size, cfg.n_layers
    attention = 4 * d * d + (3 * d if cfg.qkv_bias else 0) + d  # W_query, W_key, W_value, out_proj (+ biases)
    feed_forward = d * 4 * d + 4 * d + 4 * d * d + d
    counts = [v * d, cfg.context_length * d, layers * attention, layers * feed_forward,
              layers * 2 * 2 * d + 2 * d, 0 if tied else v * d]
    rows = [ParameterRow(c, modules, n) for (c, modules, _), n in zip(_COMPONENTS, counts)]
    if tied:
        rows[-1] = _TIED_HEAD
    return ParameterTable(rows, tied, v * d, True)


#: The book's GPT_CONFIG_124M (section 4.1): GPT-2 small's shape without the query/key/value biases.
BOOK_CONFIG_124M = GPTConfig(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12, n_layers=12,
                             drop_rate=0.1, qkv_bias=False)
DTYPES = tuple(BYTES_PER_PARAMETER)


def parameter_rows(table: ParameterTable) -> list[list]:
    """[component, modules, parameters, share, MB at float32, float16, int8] per component, then the total."""
    total = table.total
    rows = [[r.component, r.modules, r.count, r.count / total if total else 0.0,
             *(memory_mb(r.count, d) for d in DTYPES)] for r in table.rows]
    rows.append(["total", "sum(p.numel() for p in model.parameters())", total, 1.0,
                 *(memory_mb(total, d) for d in DTYPES)])
    return rows


def size_comparison() -> tuple[list[str], list[list]]:
    """The book's GPT_CONFIG_124M and GPT-2's four sizes side by side, from their configs (section 4.6).

    Returns (column names, rows of [label, value per column]); component rows count a separate head.
    """
    from .config import GPT2_SIZES, PRESETS

    configs = {"GPT_CONFIG_124M (book)": BOOK_CONFIG_124M, **{s: PRESETS[s] for s in GPT2_SIZES}}
    tables = [config_parameter_table(cfg, tied_head=False) for cfg in configs.values()]
    rows = [[key] + [getattr(cfg, key) for cfg in configs.values()]
            for key in ("emb_dim", "n_layers", "n_heads", "context_length", "qkv_bias")]
    for n, row in enumerate(tables[0].rows):
        label = "output head (when separate)" if row.component == "output head" else row.component
        rows.append([label] + [t.rows[n].count for t in tables])
    rows.append(["total, separate head"] + [t.total_untied for t in tables])
    rows.append(["total, tied head"] + [t.total_tied for t in tables])
    rows += [[f"{d} MB, tied"] + [memory_mb(t.total_tied, d) for t in tables] for d in DTYPES]
    return list(configs), rows


# --- 4.1-4.6: the flow of one input through the model ---------------------------------------

@dataclass(frozen=True)
class Stage:
    key: str  # what `ModelTrace.stage_numbers` takes
    title: str
    module: str  # the book's module name
    shape: tuple[int, ...]  # the tensor's shape for this input
    section: str  # where the book builds it
    part: str  # "input", "block" or "output"


def is_classifier(model: GPTModel) -> bool:
    """A classifier's head (section 6.5) predicts classes, not the next token."""
    return model.out_head.out_features != model.cfg.vocab_size


def flow_stages(cfg: GPTConfig, num_tokens: int, block: int, out_features: int | None = None) -> list[Stage]:
    """Every stage of `GPTModel.forward` for `num_tokens` tokens, block `block` opened up (figure 4.15)."""
    if not 0 <= block < cfg.n_layers:
        raise ValueError(f"the model has {cfg.n_layers} transformer blocks: pick a block from 0 to {cfg.n_layers - 1}")
    d, t, b = cfg.emb_dim, num_tokens, f"trf_blocks[{block}]"
    out = out_features or cfg.vocab_size
    classes = out != cfg.vocab_size
    return [
        Stage("ids", "token ids", "in_idx", (1, t), "2.6", "input"),
        Stage("tok_emb", "token embeddings", "tok_emb", (1, t, d), "2.7", "input"),
        Stage("pos_emb", "position embeddings", "pos_emb", (t, d), "2.8", "input"),
        Stage("embed", "tok_emb + pos_emb, dropout", "drop_emb", (1, t, d), "4.6", "input"),
        Stage("norm1", "layer norm 1", f"{b}.norm1", (1, t, d), "4.2", "block"),
        Stage("att", "masked multi-head attention", f"{b}.att", (1, t, d), "3.6, 4.5", "block"),
        Stage("shortcut1", "dropout, then + shortcut", f"{b}.drop_shortcut", (1, t, d), "4.4", "block"),
        Stage("norm2", "layer norm 2", f"{b}.norm2", (1, t, d), "4.2", "block"),
        Stage("ff_expand", "feed-forward: linear, 4x wider", f"{b}.ff.layers[0]", (1, t, 4 * d), "4.3", "block"),
        Stage("gelu", "GELU", f"{b}.ff.layers[1]", (1, t, 4 * d), "4.3", "block"),
        Stage("ff", "feed-forward: linear back", f"{b}.ff.layers[2]", (1, t, d), "4.3", "block"),
        Stage("block_out", "dropout, then + shortcut", f"{b} output", (1, t, d), "4.4, 4.5", "block"),
        Stage("final_norm", "final layer norm", "final_norm", (1, t, d), "4.6", "output"),
        Stage("out_head", "output head: logits" if not classes else "classification head: logits",
              "out_head", (1, t, out), "4.6" if not classes else "6.5", "output"),
        Stage("next", "next-token probabilities" if not classes else "class probabilities (last token)",
              "softmax(logits)", (1, out), "4.7" if not classes else "6.6", "output"),
    ]


STAGE_KEYS = [s.key for s in flow_stages(GPTConfig(n_layers=1, n_heads=1, emb_dim=1), 1, 0)]
BLOCK_STAGES = ("norm1", "att", "shortcut1", "norm2", "ff_expand", "gelu", "ff", "block_out")


@dataclass(frozen=True)
class StageNumbers:
    """One stage's numbers for one token."""

    key: str
    token: int  # position in the input
    vector: np.ndarray | None  # the stage's output at that token (emb_dim or 4*emb_dim values)
    attention: np.ndarray | None = None  # "att": that token's attention weights, (heads, tokens)
    top_ids: list[int] | None = None  # "out_head"/"next": the largest logits, best first
    top_logits: list[float] | None = None
    top_probs: list[float] | None = None


@contextlib.contextmanager
def _evaluating(model: nn.Module):
    """Dropout off while looking (the lab's shared models are in eval mode already)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class ModelTrace:
    """One input through a GPT, computed only as far as the views ask; thread-safe, results kept.

    Blocks run once each through `RecordedPass` (in order, up to the deepest block asked
    for); block `b`'s inner stages (section 4.5) are recomputed from its input only when
    shown; the output head runs only for the positions shown.
    """

    def __init__(self, model: GPTModel, token_ids):
        self.model = model
        vocab = model.cfg.vocab_size
        if any(not 0 <= int(i) < vocab for i in token_ids):
            raise ValueError(f"This model's vocabulary has {vocab:,} tokens and the text has GPT-2 token ids beyond "
                             "it: pick a model with GPT-2's vocabulary (50,257 tokens).")
        self.recorded = RecordedPass(model, token_ids)
        self.ids = self.recorded.idx[0].tolist()
        self._blocks: dict[int, dict[str, torch.Tensor]] = {}
        self._embed: torch.Tensor | None = None
        self._lock = threading.Lock()

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    def check_block(self, block) -> int:
        block, layers = int(block), self.model.cfg.n_layers
        if not 0 <= block < layers:
            raise ValueError(f"This model has {layers} transformer blocks: pick a block from 0 to {layers - 1}.")
        return block

    def check_token(self, token) -> int:
        token = int(token)
        if not 0 <= token < self.num_tokens:
            many = f"{self.num_tokens} tokens: pick a token from 0 to" if self.num_tokens > 1 else "1 token: pick token"
            raise ValueError(f"The text has {many} {self.num_tokens - 1}.")
        return token

    @torch.inference_mode()
    def embeddings(self) -> torch.Tensor:
        """tok_emb + pos_emb (dropout is off): the first block's input, (tokens, emb_dim)."""
        with self._lock:
            if self._embed is None:
                with _evaluating(self.model):
                    self._embed = self.model.embed(self.recorded.idx)[0].float().cpu()
            return self._embed

    def block_input(self, block: int) -> torch.Tensor:
        """What enters `trf_blocks[block]`: the embeddings or the block before's output, (tokens, emb_dim)."""
        block = self.check_block(block)
        return self.embeddings() if block == 0 else self.recorded.through(block - 1)[block - 1]["hidden"]

    @torch.inference_mode()
    def block_stages(self, block: int) -> dict[str, torch.Tensor]:
        """Block `block`'s stages as `TransformerBlock.forward` computes them (section 4.5), (tokens, ·) each."""
        block = self.check_block(block)
        x = self.block_input(block)
        with self._lock:
            if block not in self._blocks:
                model = self.model
                trf = model.trf_blocks[block]
                with _evaluating(model):
                    x = x.to(device=model.device, dtype=model.tok_emb.weight.dtype)[None]
                    s = {"norm1": trf.norm1(x)}
                    s["att"] = trf.att(s["norm1"])
                    s["shortcut1"] = x + trf.drop_shortcut(s["att"])
                    s["norm2"] = trf.norm2(s["shortcut1"])
                    s["ff_expand"] = trf.ff.layers[0](s["norm2"])
                    s["gelu"] = trf.ff.layers[1](s["ff_expand"])
                    s["ff"] = trf.ff.layers[2](s["gelu"])
                    s["block_out"] = s["shortcut1"] + trf.drop_shortcut(s["ff"])
                self._blocks[block] = {k: v[0].float().cpu() for k, v in s.items()}
            return self._blocks[block]

    def hidden_states(self) -> list[torch.Tensor]:
        """The residual stream: the embeddings, then every block's output, each (tokens, emb_dim)."""
        return [self.embeddings()] + [r["hidden"] for r in self.recorded.through()]

    def residual_norms(self) -> np.ndarray:
        """L2 norm of the hidden state of each token after each block: (n_layers + 1, tokens); row 0 = input."""
        return torch.stack([h.norm(dim=-1) for h in self.hidden_states()]).numpy()

    @torch.inference_mode()
    def final(self, positions: list[int]) -> dict[str, torch.Tensor]:
        """final_norm and out_head for the given positions only: {"final_norm": (k, d), "logits": (k, out)}."""
        model = self.model
        hidden = self.recorded.through()[-1]["hidden"][positions]
        hidden = hidden.to(device=model.device, dtype=model.out_head.weight.dtype)
        with _evaluating(model):
            normed = model.final_norm(hidden)
            logits = model.out_head(normed)
        return {"final_norm": normed.float().cpu(), "logits": logits.float().cpu()}

    def stage_numbers(self, key: str, block: int, token: int, top: int = 10) -> StageNumbers:
        """The numbers of one stage (see `flow_stages`) at position `token`; computes only what it needs."""
        token = self.check_token(token)
        if key not in STAGE_KEYS:
            raise ValueError(f"Unknown stage {key!r}: choose one of {', '.join(STAGE_KEYS)}.")
        if key == "ids":
            return StageNumbers(key, token, None, top_ids=[self.ids[token]])
        if key in ("tok_emb", "pos_emb"):
            with torch.inference_mode():
                table = self.model.tok_emb if key == "tok_emb" else self.model.pos_emb
                row = self.ids[token] if key == "tok_emb" else token
                return StageNumbers(key, token, table.weight[row].float().cpu().numpy())
        if key == "embed":
            return StageNumbers(key, token, self.embeddings()[token].numpy())
        if key in BLOCK_STAGES:
            block = self.check_block(block)
            vector = self.block_stages(block)[key][token].numpy()
            attention = None
            if key == "att":
                attention = self.recorded.through(block)[block]["attn_weights"][:, token].numpy()
            return StageNumbers(key, token, vector, attention=attention)
        if key == "final_norm":
            return StageNumbers(key, token, self.final([token])["final_norm"][0].numpy())
        position = token if key == "out_head" or not is_classifier(self.model) else self.num_tokens - 1
        logits = self.final([position])["logits"][0]
        probs = torch.softmax(logits, dim=-1)
        values, indices = torch.topk(logits, min(top, logits.numel()))
        return StageNumbers(key, position, None, top_ids=indices.tolist(), top_logits=values.tolist(),
                            top_probs=probs[indices].tolist())


# --- 4.2: layer normalization -----------------------------------------------------------------

def layer_norm_stats(trace: ModelTrace, block: int) -> dict[str, np.ndarray]:
    """Mean and variance (biased, as the book's `unbiased=False`) of each token's vector at `norm1`.

    "input": what enters the block; "normalized": (x - mean) / sqrt(var + eps), about 0 and 1;
    "output": after `scale` and `shift`, the learned parameters (section 4.2). Each (tokens,).
    """
    block = trace.check_block(block)
    x = trace.block_input(block)
    norm = trace.model.trf_blocks[block].norm1
    mean, var = x.mean(dim=-1, keepdim=True), x.var(dim=-1, keepdim=True, unbiased=False)
    normalized = (x - mean) / torch.sqrt(var + norm.eps)
    out = trace.block_stages(block)["norm1"]
    stats = {}
    for name, t in (("input", x), ("normalized", normalized), ("output", out)):
        stats[f"{name}_mean"] = t.mean(dim=-1).numpy()
        stats[f"{name}_var"] = t.var(dim=-1, unbiased=False).numpy()
    with torch.inference_mode():
        stats["scale"] = norm.scale.detach().float().cpu().numpy()
        stats["shift"] = norm.shift.detach().float().cpu().numpy()
    return stats


# --- 4.3: GELU ----------------------------------------------------------------------------------

def gelu_relu_curves(low: float = -3.0, high: float = 3.0, points: int = 121) -> dict[str, np.ndarray]:
    """GELU (tanh approximation, as GPT-2) and ReLU on a grid, as the chapter's figure 4.8 plots them."""
    x = torch.linspace(low, high, points)
    with torch.inference_mode():
        return {"x": x.numpy(), "gelu": GELU()(x).numpy(), "relu": torch.relu(x).numpy()}


def feed_forward_activations(trace: ModelTrace, block: int) -> dict:
    """Block `block`'s feed-forward pre-activations and their GELU, with the share GELU leaves negative.

    ReLU would set every negative input to exactly 0; GELU lets small negative values through
    (its minimum is about -0.17 at x = -0.75).
    """
    stages = trace.block_stages(trace.check_block(block))
    pre, post = stages["ff_expand"].flatten(), stages["gelu"].flatten()
    return {"pre": pre.numpy(), "gelu": post.numpy(), "count": int(post.numel()),
            "negative_share": float((post < 0).float().mean()), "pre_negative_share": float((pre < 0).float().mean()),
            "zero_share_relu": float((pre <= 0).float().mean())}


# --- 4.4: shortcut connections ------------------------------------------------------------------

class ExampleDeepNeuralNetwork(nn.Module):
    """The chapter's five-layer toy network with optional shortcut connections (section 4.4, listing 4.5)."""

    def __init__(self, layer_sizes, use_shortcut):
        super().__init__()
        self.use_shortcut = use_shortcut
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(layer_sizes[i], layer_sizes[i + 1]), GELU())
                                     for i in range(len(layer_sizes) - 1)])

    def forward(self, x):
        for layer in self.layers:
            layer_output = layer(x)
            if self.use_shortcut and x.shape == layer_output.shape:
                x = x + layer_output
            else:
                x = layer_output
        return x


BOOK_LAYER_SIZES = (3, 3, 3, 3, 3, 1)
BOOK_INPUT = ((1.0, 0.0, -1.0),)


def shortcut_gradients(use_shortcut: bool, layer_sizes=BOOK_LAYER_SIZES, seed: int = 123,
                       sample_input=BOOK_INPUT) -> dict[str, float]:
    """The book's `print_gradients`: mean |gradient| of every layer's weight after one backward pass.

    `torch.manual_seed(seed)` before building the network, input [[1., 0., -1.]], target [[0.]],
    MSE loss (section 4.4). The global random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        model = ExampleDeepNeuralNetwork(list(layer_sizes), use_shortcut=use_shortcut)
        output = model(torch.tensor(sample_input))
        loss = nn.MSELoss()(output, torch.tensor([[0.0]]))
        loss.backward()
    return {name: param.grad.abs().mean().item() for name, param in model.named_parameters() if "weight" in name}


__all__ = ["BYTES_PER_PARAMETER", "MB", "ParameterRow", "ParameterTable", "memory_mb", "parameter_table",
           "config_parameter_table", "BOOK_CONFIG_124M", "DTYPES", "parameter_rows", "size_comparison", "Stage", "is_classifier", "flow_stages", "STAGE_KEYS", "BLOCK_STAGES",
           "StageNumbers", "ModelTrace", "layer_norm_stats", "gelu_relu_curves", "feed_forward_activations",
           "ExampleDeepNeuralNetwork", "BOOK_LAYER_SIZES", "BOOK_INPUT", "shortcut_gradients"]
