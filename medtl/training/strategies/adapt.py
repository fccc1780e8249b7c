"""What the kinds that learn from the target site's unlabelled scans share (``dann``, ``coral``, ``mcc``).

Each is full fine-tuning (``Full``'s schedule; with ``probe_epochs``, LP-FT's probe first and the rate
scaled by ``ft_lr_scale``) plus an ``ExtraLoss`` on the target stream (the
comparison's ``target`` split: training scans of the target sites, without labels). One forward
pass takes the source and target batches together (batch norm sees both sites, as TLlib's DANN and
MCC do); the kind's loss reads the pooled features of ``align_layer`` (default: those the head
reads) or the target logits. Its weight follows ``weight_schedule`` over training progress:
``constant`` or ``ganin`` (2/(1+exp(-gamma p)) - 1, rising from 0). The losses themselves are in
``medtl.training.adaptation``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from medtl.errors import ConfigError
from medtl.models.transfer import TransferModel
from medtl.config import TrainConfig
from medtl.training.extra_loss import ExtraLoss, Step
from medtl.training.loop import FitResult
from medtl.training.schedule import Schedule, all_at
from medtl.training.strategies.base import Arm
from medtl.training.strategies.finetune import Full
from medtl.training.strategies.lpft import linear_probe


class AdaptLoss(ExtraLoss):
    """Runs the step's forward pass on source and target together; subclasses say what the target adds."""

    name: ClassVar[str]

    def __init__(self, read_layer: str, align_layer: str, weight: float, schedule: str, gamma: float) -> None:
        super().__init__()
        self.read_layer, self.align_layer = read_layer, align_layer
        self.weight, self.schedule, self.gamma = weight, schedule, gamma

    def forward(self, model: nn.Module, step: Step) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise ConfigError("strategies", "adaptation kinds (dann, coral, mcc) run in one process, not under torchrun")
        if step.target is None:
            raise ValueError(f"{self.name} needs the target stream")
        n = len(step.x)
        feats = model.backbone.forward_all(torch.cat([step.x, step.target]))
        logits = model.head(feats[self.read_layer])
        f = feats[self.align_layer].float()
        return logits[:n], {self.name: self.loss(f[:n], f[n:], logits[n:].float(), step.progress)}

    def loss(self, f_s: torch.Tensor, f_t: torch.Tensor, logits_t: torch.Tensor, progress: float) -> torch.Tensor:
        raise NotImplementedError


class Adapting(Full):
    """Full fine-tuning with a target stream and the kind's ``AdaptLoss``."""

    uses_target = True
    loss_class: ClassVar[type[AdaptLoss]]

    def schedule(self, groups: tuple[str, ...], train: TrainConfig) -> Schedule:
        c = self.config
        return all_at(groups, self.epochs(train), self.lr(train) * c.ft_lr_scale, train.schedule, c.warmup_epochs, c.bn_stats)

    def prepare(self, arm: Arm, model: TransferModel) -> FitResult | None:
        """With ``probe_epochs``, LP-FT's probe first: the source-only head the alignment then starts from."""
        return linear_probe(arm, model, self.config.probe_epochs) if self.config.probe_epochs else None

    def target_stream(self, arm: Arm) -> Iterable[Any] | None:
        return arm.data.loader("target", train=True, seed=arm.seed)

    def layers(self, arm: Arm, model: TransferModel) -> tuple[str, str]:
        """The layer the head reads and the layer whose features are aligned (checked against the backbone)."""
        names = model.backbone.group_names
        read = model.layer or names[-1]
        align = getattr(self.config, "align_layer", None) or read
        if align not in names:
            raise ConfigError(f"strategies.{self.config.name}.align_layer",
                              f"unknown layer group '{align}' (groups: {', '.join(names)})")
        return read, align

    def extra_loss(self, arm: Arm, model: TransferModel) -> ExtraLoss | None:
        c = self.config
        read, align = self.layers(arm, model)
        return self.loss_class(read, align, c.weight, c.weight_schedule, c.gamma, **self.loss_options(arm, align))

    def loss_options(self, arm: Arm, align: str) -> dict[str, Any]:
        return {}
