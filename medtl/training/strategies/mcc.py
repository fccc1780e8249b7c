"""``mcc``: minimum class confusion (Jin et al. 2020) on the target's temperature-scaled predictions."""

from __future__ import annotations

from typing import Any

import torch

from medtl.config import MccConfig
from medtl.training.adaptation import mcc_loss, weight_at
from medtl.training.strategies.adapt import AdaptLoss, Adapting
from medtl.training.strategies.base import Arm, register


class MccLoss(AdaptLoss):
    name = "mcc"

    def __init__(self, read_layer: str, align_layer: str, weight: float, schedule: str, gamma: float,
                 temperature: float) -> None:
        super().__init__(read_layer, align_layer, weight, schedule, gamma)
        self.temperature = temperature

    def loss(self, f_s: torch.Tensor, f_t: torch.Tensor, logits_t: torch.Tensor, progress: float) -> torch.Tensor:
        return weight_at(self.schedule, progress, self.weight, self.gamma) * mcc_loss(logits_t, self.temperature)


@register
class Mcc(Adapting):
    kind = "mcc"
    config: MccConfig
    loss_class = MccLoss

    def loss_options(self, arm: Arm, align: str) -> dict[str, Any]:
        return {"temperature": self.config.temperature}
