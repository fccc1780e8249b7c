"""``dann``: domain-adversarial training (Ganin et al. 2016), as TLlib's ``DomainAdversarialLoss``.

A domain discriminator (two hidden layers with batch norm) learns to tell source from target
features; a gradient-reversal layer makes the features learn to fool it. Ganin's schedule drives
the reversal's coefficient (0 at the start, so the discriminator's noisy early signal does not wreck
the pretrained features); ``weight`` scales the adversarial loss. The discriminator trains at the
head's rate and is checkpointed with the model, but is not part of the model that is kept.
"""

from __future__ import annotations

from typing import Any

import torch

from medtl.config import DannConfig
from medtl.training.adaptation import DomainDiscriminator, dann_loss, weight_at
from medtl.training.strategies.adapt import AdaptLoss, Adapting
from medtl.training.strategies.base import Arm, register


class DannLoss(AdaptLoss):
    name = "dann"

    def __init__(self, read_layer: str, align_layer: str, weight: float, schedule: str, gamma: float, in_features: int,
                 hidden: int) -> None:
        super().__init__(read_layer, align_layer, weight, schedule, gamma)
        self.discriminator = DomainDiscriminator(in_features, hidden)

    def loss(self, f_s: torch.Tensor, f_t: torch.Tensor, logits_t: torch.Tensor, progress: float) -> torch.Tensor:
        coeff = weight_at(self.schedule, progress, 1.0, self.gamma)
        value, _ = dann_loss(self.discriminator, f_s, f_t, coeff)
        return self.weight * value


@register
class Dann(Adapting):
    kind = "dann"
    config: DannConfig
    loss_class = DannLoss

    def loss_options(self, arm: Arm, align: str) -> dict[str, Any]:
        return {"in_features": arm.built.feature_dims[align], "hidden": self.config.discriminator_hidden}
