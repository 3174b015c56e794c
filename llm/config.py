"""Model configurations (chapter 4.1, "Coding an LLM architecture").

`GPTConfig` carries the same fields as the book's `GPT_CONFIG_124M` dictionary;
`PRESETS` names the four GPT-2 sizes (chapter 5.5) and the small lab models that
train in seconds on a laptop CPU. `PretrainSettings` and `SETTINGS` name the
pretraining runs of chapter 5 ("lecture" and the book's "book-ch05"; used by
`llm.pretraining`); each contains the `TrainConfig` of `llm.recipes`. Nothing here imports torch,
so the app can show them at start-up.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .paths import ASSETS_DIR
from .recipes import ContainsTrainConfig, TrainConfig


@dataclass(frozen=True)
class GPTConfig:
    """Hyperparameters of a GPT model, named as in the book's config dict."""

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    tie_weights: bool = False  # output head shares tok_emb.weight, as GPT-2 does (section 5.5)

    def __post_init__(self):
        problems = []
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be at least 1 (got {getattr(self, name)})")
        if not 0.0 <= self.drop_rate < 1.0:
            problems.append(f"drop_rate must be in [0, 1) (got {self.drop_rate})")
        if not problems and self.emb_dim % self.n_heads:
            problems.append(f"emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads})")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """Build a config from a dict, accepting the book's key names too."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def with_(self, **changes) -> "GPTConfig":
        return replace(self, **changes)

    def num_parameters(self, tied_head: bool | None = None) -> int:
        """Parameter count of a `GPTModel` with this config (chapter 4.6); a tied head counts once."""
        tied_head = self.tie_weights if tied_head is None else tied_head
        d, v, L = self.emb_dim, self.vocab_size, self.n_layers
        bias = 3 * d if self.qkv_bias else 0
        attention = 3 * d * d + bias + d * d + d
        feed_forward = d * 4 * d + 4 * d + 4 * d * d + d
        norms = 2 * 2 * d
        head = 0 if tied_head else v * d
        return v * d + self.context_length * d + L * (attention + feed_forward + norms) + 2 * d + head


_GPT2 = GPTConfig(vocab_size=50257, context_length=1024, drop_rate=0.0, qkv_bias=True)

#: Named model shapes. The GPT-2 sizes use qkv_bias=True and dropout 0, the
#: settings the book uses when it loads OpenAI's weights (chapter 5.5).
PRESETS: dict[str, GPTConfig] = {
    "gpt2-small": _GPT2.with_(emb_dim=768, n_layers=12, n_heads=12),
    "gpt2-medium": _GPT2.with_(emb_dim=1024, n_layers=24, n_heads=16),
    "gpt2-large": _GPT2.with_(emb_dim=1280, n_layers=36, n_heads=20),
    "gpt2-xl": _GPT2.with_(emb_dim=1600, n_layers=48, n_heads=25),
    # The book's chapter-5 training shape: the 124M model with a 256-token context.
    "book-ch05": GPTConfig(context_length=256, emb_dim=768, n_heads=12, n_layers=12, drop_rate=0.1),
    # Lab presets: small enough to train in seconds to a minute on two CPU cores.
    "lab-tiny": GPTConfig(context_length=64, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0),
    "lab-small": GPTConfig(context_length=128, emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.1),
    # Tuned with llm.pretraining.SETTINGS["lecture"]: the head (50257 x emb_dim) is most of the compute.
    "lecture": GPTConfig(context_length=64, emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.0),
    # The bundled model (SETTINGS["wharton"]): blocks are cheap next to the 50257-wide head, so it
    # has six of them. The head is not tied: tied, layer 0 grew no previous-token head (assets/README.md);
    # int4 storage keeps the 14.1M parameters under 10 MB.
    "wharton": GPTConfig(context_length=128, emb_dim=128, n_heads=4, n_layers=6, drop_rate=0.0),
}

GPT2_SIZES = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl")

#: Weights that generation and classification can run with (`llm.generation.inference_model`):
#: float32 as trained, or a copy with float16 (transformer blocks) or int8 (blocks and head) weights.
INFERENCE_PRECISIONS = ("fp32", "fp16", "int8")


def get_config(name: str) -> GPTConfig:
    """Return the preset called `name`, or raise a ValueError listing the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


MAX_TEXT_BYTES = 10_000_000  # 10 MB: about 2.4 million tokens; admits the bundled Wharton corpus (8.2 MB)
DEFAULT_TEXT = ASSETS_DIR / "the-verdict.txt"
WHARTON_TEXT = ASSETS_DIR / "wharton-fiction.txt"
DEFAULT_PROMPT = "Every effort moves you"


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class PretrainSettings(ContainsTrainConfig):
    """A model shape, its data windows and batch, and the `TrainConfig` of the run (section 5.2).

    `settings.with_(lr=1e-3, batch_size=4)` changes either level; `settings.lr` reads `settings.train.lr`.
    """

    model: str  # a preset of llm.config.PRESETS
    context_length: int
    stride: int
    batch_size: int
    train: TrainConfig
    prompt: str = DEFAULT_PROMPT
    sample_tokens: int = 50
    holdout_every: int | None = None  # validation: every Nth paragraph (None: the last 10% of the text)
    text: str | None = None  # the text these settings are made for (a file in assets/), if any
    storage: str = "fp32"  # weights of the finished (not resumable) checkpoint: "fp32", "int8" or "int4"
    note: str = ""

    def model_config(self) -> GPTConfig:
        cfg = get_config(self.model)
        if self.context_length > cfg.context_length:
            raise ValueError(f"a context of {self.context_length} tokens is beyond the {self.model} model's "
                             f"context length of {cfg.context_length}")
        return cfg

    def train_config(self) -> TrainConfig:
        return self.train.validate()


SETTINGS: dict[str, PretrainSettings] = {
    "lecture": PretrainSettings(
        model="lecture", context_length=64, stride=64, batch_size=4,
        train=TrainConfig(lr=4e-3, weight_decay=0.1, epochs=15, warmup_fraction=0.03, min_lr=4e-4, eval_every=20,
                          eval_batches=10),
        # Measured on 2 shared cores: the 50257-wide output head is most of the compute, so a
        # 128-wide model runs ~1.8x the tokens/s of a 256-wide one; small batches (4 x 64 tokens)
        # give many steps per epoch; lr 4e-3 with a short warm-up (5e-3 stalls the 256-wide model);
        # a cosine over 15 epochs keeps the lr high until the loss is below 1 (~step 140, ~60 s).
        note="tuned for a live demo: the-verdict's training loss below 1.0 in about a minute on 2 CPU cores"),
    "book-ch05": PretrainSettings(
        model="book-ch05", context_length=256, stride=256, batch_size=2,
        train=TrainConfig(lr=4e-4, weight_decay=0.1, epochs=10, schedule="constant", grad_clip=None, eval_every=5,
                          eval_batches=5),
        note="the book's section 5.2 run: 124M shape, context 256, batch 2, AdamW lr 4e-4, wd 0.1, 10 epochs"),
    "wharton": PretrainSettings(
        model="wharton", context_length=128, stride=128, batch_size=8,
        # The token embedding learns (and decays) 10x faster than the rest: at the common lr it kept its
        # random N(0, 1) start, so its nearest neighbours were noise (assets/README.md).
        train=TrainConfig(lr=2e-3, weight_decay=0.1, epochs=None, max_steps=4000, warmup_fraction=0.02, min_lr=2e-4,
                          eval_every=500, eval_batches=30, embedding_lr_scale=10),
        holdout_every=20, text=WHARTON_TEXT.name, storage="int4",
        note="the bundled model: Wharton's fiction, every 20th paragraph held out; see assets/README.md"),
}


def get_settings(name: str) -> PretrainSettings:
    try:
        return SETTINGS[name]
    except KeyError:
        raise ValueError(f"unknown pretraining settings {name!r}; choose one of: {', '.join(SETTINGS)}") from None
