"""The language-modelling loss without the whole logits tensor (section 5.1.2, made lean).

The book computes `logits = model(inputs)` for every position, a (tokens x 50,257)
tensor, then `cross_entropy(logits.flatten(0, 1), targets.flatten())`. For the lab's small
models that tensor is most of the work and most of the memory: a 1,024-token batch
makes 206 MB of logits, and softmax, log-probabilities and their gradient each make
another tensor of that size.

`chunked_cross_entropy` takes the final hidden states instead and applies the output
head a few hundred rows at a time. Each chunk's logits are used at once: the loss
(minus the log of the target's softmax probability) and, while training, the gradient, which for
cross-entropy is known in closed form, softmax(logits) - one_hot(target). The chunk's
share of the gradients of the hidden states and of the head's weight is accumulated
there and then, and the chunk is dropped. Backward then only scales those gradients.
The loss and the gradients equal the plain path's up to float rounding (tests/test_loss.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

#: Rows of logits held at a time: 128 x 50,257 floats is 26 MB (128 measured fastest on 2 cores: benchmarks/README).
DEFAULT_CHUNK_ROWS = 128
IGNORE_INDEX = -100  # targets equal to this are left out of the mean, as in F.cross_entropy


def _softmax_in_place(logits: torch.Tensor) -> torch.Tensor:
    """softmax over the last dimension, written over `logits` on the CPU (one pass; log_softmax then exp took two)."""
    if logits.device.type != "cpu":  # (the CPU kernel reads each row before writing it; others are not promised to)
        return torch.softmax(logits, dim=-1)
    return torch.ops.aten._softmax.out(logits, -1, False, out=logits)


def _target_nll(probs, t, target_logits, h, weight) -> torch.Tensor:
    """-log p(target) per row, read from the softmax; rows whose p(target) underflowed to 0 are recomputed exactly."""
    p_target = probs.gather(1, t).squeeze(1)
    nll = -torch.log(p_target)
    tiny = p_target < 1e-30  # float32 keeps ~7 digits of -log p only while p is a normal number
    if bool(tiny.any()):
        nll[tiny] = torch.logsumexp(h[tiny] @ weight.T, dim=-1) - target_logits[tiny]
    return nll


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ weight.T` against `targets`, computed `chunk_rows` rows at a time."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows, grad_enabled):
        # (under no_grad, needs_input_grad still follows requires_grad: hence grad_enabled)
        # Every row of grad_hidden is written once and grad_weight is first written with beta=0: no zeros needed.
        alloc = torch.empty_like if hidden.shape[0] else torch.zeros_like
        grad_hidden = alloc(hidden) if grad_enabled and ctx.needs_input_grad[0] else None
        grad_weight = alloc(weight) if grad_enabled and ctx.needs_input_grad[1] else None
        needs_grad = grad_hidden is not None or grad_weight is not None
        kept = targets != IGNORE_INDEX
        count = int(kept.sum())
        loss_sum = hidden.new_zeros((), dtype=torch.float32)
        scale = 1.0 / max(count, 1)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            h, t, k = hidden[rows], targets[rows].clamp(min=0)[:, None], kept[rows]
            logits = h @ weight.T  # (rows, vocab): the only large tensor, one chunk of it
            target_logits = logits.gather(1, t).squeeze(1)
            probs = _softmax_in_place(logits)
            loss_sum += (_target_nll(probs, t, target_logits, h, weight) * k).sum()
            if needs_grad:
                # d loss / d logits = (softmax - one_hot(target)) / count, made in place of the probabilities
                grad_logits = probs
                grad_logits.scatter_add_(1, t, torch.full(t.shape, -1.0, dtype=grad_logits.dtype))
                if not bool(k.all()):
                    grad_logits[~k] = 0.0
                if grad_hidden is not None:
                    grad_hidden[rows].addmm_(grad_logits, weight, beta=0, alpha=scale)
                if grad_weight is not None:
                    grad_weight.addmm_(grad_logits.T, h, beta=1 if start else 0, alpha=scale)
        ctx.grads = grad_hidden, grad_weight  # not saved_tensors: backward hands them on without a copy
        return loss_sum / count if count else loss_sum * float("nan")

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        grads = [g if g is None or bool(grad_loss == 1) else g * grad_loss for g in ctx.grads]
        del ctx.grads  # the last reference is autograd's: it takes the tensor as .grad instead of cloning it
        return (*grads, None, None, None)


def chunked_cross_entropy(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor,
                          chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """`F.cross_entropy(head(hidden).flatten(0, 1), targets.flatten())` without materialising the logits.

    hidden: (..., emb_dim), the final-normed hidden states (`GPTModel(..., hidden=True)`);
    head: the output head (a bias-free `nn.Linear`, tied or not); targets: the token ids
    of the same leading shape (`-100` is ignored, as in `F.cross_entropy`).
    """
    if not 1 <= chunk_rows <= 1_000_000:
        raise ValueError(f"chunk_rows must be between 1 and 1,000,000 (got {chunk_rows})")
    if head.bias is not None or torch.is_autocast_enabled(hidden.device.type):
        # The GPT's head has no bias; under autocast (bf16 on CUDA) keep autocast's own casts.
        return F.cross_entropy(head(hidden).flatten(0, -2), targets.flatten())
    return _ChunkedCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), head.weight, targets.reshape(-1),
                                      chunk_rows, torch.is_grad_enabled())
