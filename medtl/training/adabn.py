"""AdaBN (Li et al. 2016): test-time adaptation by re-estimating batch-norm statistics on target scans.

Nothing else changes: weights, affine parameters and the head are the trained ones; only each
batch-norm layer's running mean and variance (and its batch counter) are replaced by a cumulative
average over the unlabelled target batches.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def adapt_bn(model: nn.Module, batches: Iterable[Any], device: torch.device | str = "cpu") -> nn.Module:
    """A copy of ``model`` whose batch-norm running statistics are those of ``batches`` (dicts with ``image``, or tensors)."""
    adapted = copy.deepcopy(model).to(device).eval()
    bns = [m for m in adapted.modules() if isinstance(m, _BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every target batch counts the same
        bn.train()
    for batch in batches:
        x = batch["image"] if isinstance(batch, dict) else batch
        adapted(x.to(device))
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
        bn.eval()
    return adapted
