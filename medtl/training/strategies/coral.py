"""``coral``: Deep CORAL (Sun & Saenko 2016): the source and target batches' feature covariances aligned."""

from __future__ import annotations

import torch

from medtl.config import CoralConfig
from medtl.training.adaptation import coral_loss, weight_at
from medtl.training.strategies.adapt import AdaptLoss, Adapting
from medtl.training.strategies.base import register


class CoralLoss(AdaptLoss):
    name = "coral"

    def loss(self, f_s: torch.Tensor, f_t: torch.Tensor, logits_t: torch.Tensor, progress: float) -> torch.Tensor:
        return weight_at(self.schedule, progress, self.weight, self.gamma) * coral_loss(f_s, f_t)


@register
class Coral(Adapting):
    kind = "coral"
    config: CoralConfig
    loss_class = CoralLoss
