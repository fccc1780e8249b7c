"""TENT (Wang et al. 2021): test-time entropy minimisation of the batch-norm affine parameters.

As the authors' code (DequanWang/tent) does: every parameter is frozen except each batch-norm
layer's weight and bias; batch norm normalises by the current batch's statistics (no running
statistics) while adapting; each target batch takes ``steps`` Adam steps (lr 1e-3, beta 0.9, no
weight decay) on the mean softmax entropy of the model's predictions.

One difference, stated: TENT predicts online (each batch's output is the forward pass that also
updates), so a scan's prediction depends on the order and company it came in. Here adaptation runs
over the target batches first (``epochs`` passes), then the copy's running statistics are set to
the target's (as AdaBN) and it predicts in eval mode: the same scan gets the same answer whatever
batch it is in. AdaBN is therefore the ``epochs=0`` case of this function.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medtl.training.adabn import adapt_bn
from medtl.training.adaptation import softmax_entropy


def bn_affine_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The batch-norm layers' weights and biases: what TENT trains."""
    return [p for m in model.modules() if isinstance(m, _BatchNorm) and m.affine for p in (m.weight, m.bias)]


def tent(model: nn.Module, batches: Iterable[Any], device: torch.device | str = "cpu", epochs: int = 1, steps: int = 1,
         lr: float = 1e-3) -> nn.Module:
    """A copy of ``model`` adapted by TENT on ``batches`` (dicts with ``image``, or tensors); ``model`` is untouched.

    ``batches`` is iterated ``epochs`` times (give a re-iterable: a list or a DataLoader).
    """
    adapted = copy.deepcopy(model).to(device)
    wanted = [p.requires_grad for p in adapted.parameters()]
    adapted.requires_grad_(False)
    params = bn_affine_parameters(adapted)
    for p in params:
        p.requires_grad_(True)
    bns = [m for m in adapted.modules() if isinstance(m, _BatchNorm)]
    saved = [(m.track_running_stats, m.running_mean, m.running_var) for m in bns]
    adapted.eval()
    for m in bns:  # batch statistics only, as TENT's configure_model
        m.train()
        m.track_running_stats, m.running_mean, m.running_var = False, None, None
    if params and epochs > 0:
        optim = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
        with torch.enable_grad():
            for _ in range(epochs):
                for batch in batches:
                    x = (batch["image"] if isinstance(batch, dict) else batch).to(device)
                    if len(x) < 2:  # batch statistics of one scan are no statistics
                        continue
                    for _ in range(steps):
                        loss = softmax_entropy(adapted(x).float())
                        optim.zero_grad(set_to_none=True)
                        loss.backward()
                        optim.step()
    for m, (track, mean, var) in zip(bns, saved):
        m.track_running_stats, m.running_mean, m.running_var = track, mean, var
    for p, flag in zip(adapted.parameters(), wanted):
        p.requires_grad_(flag)
    return adapt_bn(adapted, batches, device)  # predict with the target's statistics, in eval mode
