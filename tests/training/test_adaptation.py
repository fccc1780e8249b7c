"""Known answers for the adaptation losses: gradient reversal, Ganin's schedule, DANN, Deep CORAL, MCC, entropy."""

import math

import numpy as np
import pytest
import torch

from medtl.metrics.shift import coral
from medtl.training.adaptation import (DomainDiscriminator, coral_loss, dann_loss, entropy, ganin_lambda, mcc_loss,
                                       reverse_gradient, softmax_entropy, weight_at)


def test_gradient_reversal_flips_the_gradient_times_lambda() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)  # identity forward
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * w)


def test_ganin_schedule() -> None:
    assert ganin_lambda(0.0) == 0.0
    assert ganin_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert ganin_lambda(1.0) == pytest.approx(0.9999092, abs=1e-6)
    assert ganin_lambda(2.0) == ganin_lambda(1.0)  # progress is clipped to [0, 1]
    assert weight_at("ganin", 1.0, 0.5) == pytest.approx(0.5 * ganin_lambda(1.0))
    assert weight_at("constant", 0.0, 0.5) == 0.5
    with pytest.raises(ValueError, match="linear"):
        weight_at("linear", 0.0, 1.0)


def test_dann_loss_is_log2_at_chance_and_reverses_the_feature_gradient() -> None:
    torch.manual_seed(0)
    disc = DomainDiscriminator(5, hidden=8)
    with torch.no_grad():  # a discriminator that says 0.5 everywhere
        disc[-1].weight.zero_()
        disc[-1].bias.zero_()
    f_s, f_t = torch.randn(6, 5), torch.randn(6, 5)
    loss, acc = dann_loss(disc, f_s, f_t)
    assert loss.item() == pytest.approx(math.log(2))
    assert acc == pytest.approx(0.5)  # logit 0: source called target, target called target

    disc = DomainDiscriminator(5, hidden=8)
    grads = {}
    for coeff in (0.0, 1.0, 0.25):
        f = torch.cat([f_s, f_t]).requires_grad_(True)
        loss, _ = dann_loss(disc, f[:6], f[6:], coeff)
        disc.zero_grad()
        loss.backward()
        grads[coeff] = (f.grad.clone(), disc[0].weight.grad.clone())
    plain = torch.cat([f_s, f_t]).requires_grad_(True)  # the same loss without the reversal
    d = disc(plain).squeeze(1)
    ref = 0.5 * (torch.nn.functional.binary_cross_entropy_with_logits(d[:6], torch.ones(6))
                 + torch.nn.functional.binary_cross_entropy_with_logits(d[6:], torch.zeros(6)))
    ref.backward()
    assert torch.allclose(grads[1.0][0], -plain.grad, atol=1e-6)  # the features ascend what the discriminator descends
    assert torch.allclose(grads[0.25][0], -0.25 * plain.grad, atol=1e-6)
    assert torch.count_nonzero(grads[0.0][0]) == 0
    assert torch.allclose(grads[0.25][1], grads[1.0][1])  # the discriminator's own gradient does not depend on lambda


def test_coral_zero_for_identical_covariances_and_hand_value() -> None:
    torch.manual_seed(0)
    f = torch.randn(20, 4)
    assert coral_loss(f, f + 3.0).item() == pytest.approx(0.0, abs=1e-10)  # a shift moves means, not covariances
    assert coral_loss(f, f[torch.randperm(20)]).item() == pytest.approx(0.0, abs=1e-10)
    # d = 1: var([0, 2]) = 2, var([1, 1]) = 0 -> (2 - 0)^2 / (4 * 1) = 1
    assert coral_loss(torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]])).item() == pytest.approx(1.0)
    a, b = torch.randn(30, 6), torch.randn(25, 6) * 2
    assert coral_loss(a, b).item() == pytest.approx(coral(a.numpy(), b.numpy()), rel=1e-5)  # the shift metric's definition
    a.requires_grad_(True)
    coral_loss(a, b).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def _mcc_reference(logits: np.ndarray, t: float) -> float:
    """MCC written from the paper's equations, in numpy (an independent path)."""
    z = logits / t
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    h = -(p * np.log(p + 1e-5)).sum(1)
    w = 1 + np.exp(-h)
    w = len(p) * w / w.sum()
    c = np.einsum("i,ij,ik->jk", w, p, p)
    c = c / c.sum(1)
    k = p.shape[1]
    return float((c.sum() - np.trace(c)) / k)


def test_mcc_known_answers() -> None:
    assert mcc_loss(torch.zeros(8, 2)).item() == pytest.approx(0.5)  # uniform predictions: (k - 1) / k
    assert mcc_loss(torch.zeros(8, 4)).item() == pytest.approx(0.75)
    confident = torch.eye(3).repeat(4, 1) * 50.0  # every scan certain, classes apart: no confusion
    assert mcc_loss(confident, temperature=1.0).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(16, 3, generator=torch.Generator().manual_seed(1)) * 2
    assert mcc_loss(logits, 2.5).item() == pytest.approx(_mcc_reference(logits.numpy().astype(np.float64), 2.5), rel=1e-5)
    logits.requires_grad_(True)
    mcc_loss(logits).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_entropy() -> None:
    assert softmax_entropy(torch.zeros(5, 4)).item() == pytest.approx(math.log(4))
    assert softmax_entropy(torch.tensor([[100.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
    assert entropy(torch.tensor([[0.5, 0.5]])).item() == pytest.approx(math.log(2), abs=1e-4)
