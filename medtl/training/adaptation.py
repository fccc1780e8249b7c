"""Losses that adapt a network to a new site from its unlabelled scans: DANN, Deep CORAL, MCC, entropy.

Each is a plain function or small module on a batch of source and/or target features or logits;
the strategy that uses it (``dann``, ``coral``, ``mcc``) adds it, weighted, to the classification
loss. Written by hand after reading TLlib's implementations (``tllib.modules.grl``,
``tllib.alignment.dann``, ``tllib.modules.domain_discriminator``, ``tllib.self_training.mcc``):
TLlib is not installable offline here and pulls in its own classifier wrappers, and each loss is a
few lines. Tests hold each to a hand-computed value (and CORAL to ``medtl.metrics.shift.coral``).

* Gradient reversal (Ganin & Lempitsky 2015; Ganin et al. 2016): identity forward, gradient times
  ``-coeff`` backward. Its weight follows Ganin's schedule ``2 / (1 + exp(-gamma p)) - 1`` over the
  training progress ``p`` in [0, 1] (gamma 10), so the discriminator's noisy early signal does not
  wreck the pretrained features.
* DANN: a small domain discriminator (TLlib's: two hidden layers with batch norm) on
  gradient-reversed features; binary cross-entropy, source 1, target 0, averaged over the two sides.
* Deep CORAL (Sun & Saenko 2016): ``||C_s - C_t||_F^2 / (4 d^2)`` between the two batches' feature
  covariances.
* MCC (Jin et al. 2020): the off-diagonal mass of the entropy-weighted, row-normalised class
  confusion matrix of temperature-scaled target predictions, divided by the number of classes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:  # noqa: ANN401
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN401
        return grad.neg() * ctx.coeff, None


def reverse_gradient(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """``x`` unchanged; its gradient multiplied by ``-coeff`` on the way back."""
    return _ReverseGrad.apply(x, float(coeff))


def ganin_lambda(progress: float, gamma: float = 10.0, hi: float = 1.0) -> float:
    """Ganin et al.'s weight schedule: 0 at the start, rising to ``hi`` (``progress`` in [0, 1])."""
    p = min(max(progress, 0.0), 1.0)
    return hi * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


def weight_at(schedule: str, progress: float, weight: float, gamma: float = 10.0) -> float:
    """An adaptation loss's weight at a point of training: ``constant`` or ``ganin`` (the rise above)."""
    if schedule == "constant":
        return weight
    if schedule == "ganin":
        return ganin_lambda(progress, gamma, weight)
    raise ValueError(f"unknown weight schedule '{schedule}' (constant, ganin)")


class DomainDiscriminator(nn.Sequential):
    """Source-vs-target classifier on features: two hidden layers with batch norm, one logit (TLlib's shape)."""

    def __init__(self, in_features: int, hidden: int = 256) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 1))


def dann_loss(discriminator: nn.Module, f_s: torch.Tensor, f_t: torch.Tensor, coeff: float = 1.0) -> tuple[torch.Tensor, float]:
    """Domain-adversarial loss and the discriminator's accuracy on this batch.

    The discriminator descends this loss; through the reversal, the features ascend it by ``coeff``
    (so one optimiser step trains both players).
    """
    d = discriminator(reverse_gradient(torch.cat([f_s, f_t]), coeff)).squeeze(1).float()
    d_s, d_t = d[: len(f_s)], d[len(f_s):]
    loss = 0.5 * (F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))
                  + F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t)))
    with torch.no_grad():
        acc = 0.5 * (float((d_s > 0).float().mean()) + float((d_t <= 0).float().mean()))
    return loss, acc


def _covariance(x: torch.Tensor) -> torch.Tensor:
    xc = x - x.mean(0, keepdim=True)
    return xc.T @ xc / max(len(x) - 1, 1)


def coral_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Deep CORAL: squared Frobenius distance of the two feature covariances over ``4 d^2``."""
    d = f_s.shape[1]
    diff = _covariance(f_s.float()) - _covariance(f_t.float())
    return (diff * diff).sum() / (4.0 * d * d)


def entropy(probs: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Shannon entropy of each row of class probabilities (nats); ``eps`` as TLlib keeps log finite."""
    return -(probs * torch.log(probs + eps)).sum(1)


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the softmax of ``logits``, exact (TENT's objective)."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()


def mcc_loss(logits_t: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum class confusion on target logits (Jin et al. 2020)."""
    n, k = logits_t.shape
    p = F.softmax(logits_t.float() / temperature, dim=1)
    w = 1.0 + torch.exp(-entropy(p).detach())
    w = (n * w / w.sum()).unsqueeze(1)
    confusion = (p * w).T @ p
    confusion = confusion / confusion.sum(1)  # as the paper's code: each column j divided by row j's sum
    return (confusion.sum() - confusion.trace()) / k
