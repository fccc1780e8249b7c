"""The seam through which a strategy adds losses to the one loop (adaptation: DANN, CORAL, MCC, ...).

A strategy that needs more than the classification loss hands ``fit`` an ``ExtraLoss``: a module
that does a training step's forward pass itself, so that source and target images can share one
pass through the backbone, and returns the source logits with its named, already weighted, losses.
The loop adds them to the classification loss and logs each name's epoch mean as ``<name>_loss``.
The module's own parameters (a domain discriminator) train at the head's rate and schedule and are
checkpointed with the model. Without an ``ExtraLoss`` the loop is exactly the plain loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Step:
    """What one training step offers an extra loss."""

    x: torch.Tensor  # source images, on the device (channels-last when the loop trains so)
    y: torch.Tensor  # their labels
    target: torch.Tensor | None  # a batch of unlabelled target images (the target stream), else None
    epoch: int
    progress: float  # fraction of all training steps done before this one, in [0, 1): for weight schedules


class ExtraLoss(nn.Module):
    """Subclass and implement ``forward``; ``model`` is the network being trained (DDP-wrapped under torchrun)."""

    def forward(self, model: nn.Module, step: Step) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # noqa: D102
        raise NotImplementedError


def images(batch: Any) -> torch.Tensor:
    """The images of a batch, whatever carries them (a dict, an (x, y) pair, a bare tensor); labels are dropped."""
    if isinstance(batch, dict):
        return batch["image"]
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def endless(loader: Iterable[Any]) -> Iterator[Any]:
    """Batches of ``loader`` round and round: the target stream is cycled alongside the source batches."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the target stream has no batches")
