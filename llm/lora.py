"""Low-rank adaptation (appendix E): train two small matrices next to each frozen Linear layer.

`replace_linear_with_lora` wraps every `nn.Linear` of a module in `LinearWithLoRA`;
`merge_lora` folds the adapters back into plain `nn.Linear` weights
(W + alpha * (A B)^T), so a fine-tuned model saves and loads as an ordinary GPTModel.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class LoRALayer(nn.Module):
    """x -> alpha * x A B with A (in_dim x rank) Kaiming-uniform and B (rank x out_dim) zeros (section E.4).

    B starts at zero, so a freshly wrapped layer computes exactly what it did before.
    As in the book, the update is scaled by `alpha` itself (not alpha / rank).
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float):
        super().__init__()
        self.A = nn.Parameter(torch.empty(in_dim, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(rank, out_dim))
        self.alpha = alpha

    def forward(self, x):
        return self.alpha * (x @ self.A @ self.B)


class LinearWithLoRA(nn.Module):
    """A frozen-or-not `nn.Linear` plus a LoRA update (section E.4)."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)

    def forward(self, x):
        return self.linear(x) + self.lora(x)

    def merged(self) -> nn.Linear:
        """A plain `nn.Linear` that computes the same function."""
        linear = nn.Linear(self.linear.in_features, self.linear.out_features,
                           bias=self.linear.bias is not None).to(self.linear.weight)
        with torch.no_grad():
            delta = self.lora.alpha * (self.lora.A @ self.lora.B)  # (in, out); Linear stores (out, in)
            linear.weight.copy_(self.linear.weight + delta.T)
            if self.linear.bias is not None:
                linear.bias.copy_(self.linear.bias)
        return linear


def replace_linear_with_lora(model: nn.Module, rank: int, alpha: float) -> nn.Module:
    """Wrap every `nn.Linear` inside `model` in `LinearWithLoRA` (section E.4)."""
    from .bounds import check

    rank = check("LoRA rank", rank)  # 1-1,024: A and B cost (in + out) x rank each; beyond the width it adds nothing
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            setattr(model, name, LinearWithLoRA(module, rank, alpha))
        else:
            replace_linear_with_lora(module, rank, alpha)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every `LinearWithLoRA` inside `model` by its merged `nn.Linear`, in place."""
    for name, module in model.named_children():
        if isinstance(module, LinearWithLoRA):
            setattr(model, name, module.merged())
        else:
            merge_lora(module)
    return model


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LinearWithLoRA) for m in model.modules())
