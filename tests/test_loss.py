"""The chunked language-modelling loss (llm.loss): the book's cross-entropy, never the whole logits."""
import pytest
import torch
import torch.nn.functional as F

from llm.loss import chunked_cross_entropy
from llm.model import GPTModel
from llm.pretraining import calc_loss_batch


def book_loss(model, x, y):
    """Section 5.1.2 as printed: every logit, flattened, then cross-entropy."""
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def gradients(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tied", [False, True], ids=["separate-head", "tied-head"])
def test_calc_loss_batch_has_the_plain_paths_loss_and_gradients(tiny_cfg, tied):
    model = GPTModel(tiny_cfg.with_(tie_weights=tied))
    x = torch.randint(0, tiny_cfg.vocab_size, (3, 20))
    y = torch.randint(0, tiny_cfg.vocab_size, (3, 20))
    plain = book_loss(model, x, y)
    plain_grads = gradients(model, plain)
    chunked = calc_loss_batch(x, y, model)
    chunked_grads = gradients(model, chunked)
    assert abs(chunked.item() - plain.item()) < 1e-5
    assert plain_grads.keys() == chunked_grads.keys()
    assert ("out_head.weight" in plain_grads) != tied  # tied: one parameter, both uses' gradients summed
    for name, grad in plain_grads.items():
        assert (chunked_grads[name] - grad).abs().max() < 1e-5, name


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_any_chunk_size_gives_the_same_loss_and_gradients(chunk_rows):
    head = torch.nn.Linear(16, 300, bias=False)
    hidden = torch.randn(2, 25, 16, requires_grad=True)
    targets = torch.randint(0, 300, (2, 25))
    targets[1, 3:6] = -100  # ignored positions, as F.cross_entropy's ignore_index
    plain = F.cross_entropy(head(hidden).flatten(0, 1), targets.flatten())
    plain_grads = torch.autograd.grad(plain * 3.0, [hidden, head.weight])  # an upstream factor
    chunked = chunked_cross_entropy(hidden, head, targets, chunk_rows)
    chunked_grads = torch.autograd.grad(chunked * 3.0, [hidden, head.weight])
    assert abs(chunked.item() - plain.item()) < 1e-5
    for a, b in zip(plain_grads, chunked_grads):
        assert (a - b).abs().max() < 1e-5


def test_a_confidently_wrong_prediction_keeps_its_exact_loss():
    # logits ~100 apart: p(target) underflows float32 to 0, yet the loss must stay finite and exact
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = (torch.randn(12, 8) * 60.0).requires_grad_()
    targets = head(hidden).argmin(dim=-1)  # the least likely token of every row
    plain = F.cross_entropy(head(hidden), targets)
    chunked = chunked_cross_entropy(hidden, head, targets, 5)
    assert torch.isfinite(chunked) and float(plain) > 80
    assert abs(chunked.item() - plain.item()) / plain.item() < 1e-6
    for a, b in zip(torch.autograd.grad(plain, [hidden, head.weight]),
                    torch.autograd.grad(chunked, [hidden, head.weight])):
        assert (a - b).abs().max() < 1e-5


def test_without_gradients_only_the_loss_is_computed(tiny_cfg):
    model = GPTModel(tiny_cfg)
    x = torch.randint(0, tiny_cfg.vocab_size, (2, 10))
    with torch.no_grad():
        loss = calc_loss_batch(x, x, model)
        assert abs(float(loss) - float(book_loss(model, x, x))) < 1e-5
    assert not loss.requires_grad and all(p.grad is None for p in model.parameters())


def test_bad_chunk_size_is_refused_with_a_sentence():
    head = torch.nn.Linear(4, 10, bias=False)
    with pytest.raises(ValueError, match="chunk_rows must be between 1 and"):
        chunked_cross_entropy(torch.randn(3, 4), head, torch.zeros(3, dtype=torch.long), 0)
