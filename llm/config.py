"""Model configurations (chapter 4.1, "Coding an LLM architecture").

`GPTConfig` carries the same fields as the book's `GPT_CONFIG_124M` dictionary;
`PRESETS` names the four GPT-2 sizes (chapter 5.5) and the small lab models that
train in seconds on a laptop CPU.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


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

    def num_parameters(self, tied_head: bool = False) -> int:
        """Parameter count of a `GPTModel` with this config (chapter 4.6)."""
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
}

GPT2_SIZES = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl")


def get_config(name: str) -> GPTConfig:
    """Return the preset called `name`, or raise a ValueError listing the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
