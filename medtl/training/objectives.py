"""Training objectives of the kinds that learn from the target site's unlabelled scans: dann, coral, mcc.

An objective replaces the loop's plain cross-entropy step: given a labelled source batch and an
unlabelled target batch, it runs the model once on both (concatenated, so batch norm sees the
two sites together, as TLlib's DANN and MCC do), and returns the source classification loss plus
the weighted adaptation loss (``medtl.training.adaptation``), and the numbers to log per epoch
(``adapt.<name>``). The weight follows its schedule over training progress (``ganin``: Ganin et
al.'s rise from 0, or ``constant``). ``align_layer`` picks whose pooled features are aligned (dann,
coral): by default the features the head reads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medtl.config import ADAPT_KINDS, StrategyConfig
from medtl.errors import ConfigError
from medtl.training.adaptation import DomainDiscriminator, coral_loss, dann_loss, mcc_loss, weight_at


class AdaptObjective:
    """Source cross-entropy + ``weight(progress)`` x the kind's adaptation loss."""

    def __init__(self, kind: str, model: nn.Module, weight: float = 1.0, schedule: str = "ganin", gamma: float = 10.0,
                 align_layer: str | None = None, temperature: float = 2.5, hidden: int = 256) -> None:
        if kind not in ADAPT_KINDS:
            raise ValueError(f"unknown adaptation kind '{kind}' ({', '.join(ADAPT_KINDS)})")
        names = model.backbone.group_names
        self.kind, self.weight, self.schedule, self.gamma, self.temperature = kind, weight, schedule, gamma, temperature
        self.read_layer = model.layer or names[-1]
        self.align_layer = align_layer or self.read_layer
        if self.align_layer not in names:
            raise ValueError(f"unknown layer group '{self.align_layer}' (groups: {', '.join(names)})")
        self.discriminator: nn.Module | None = None
        if kind == "dann":
            with torch.no_grad():
                was = model.training
                model.eval()
                dim = model.backbone.forward_all(torch.zeros(2, 3, 32, 32))[self.align_layer].shape[1]
                model.train(was)
            self.discriminator = DomainDiscriminator(int(dim), hidden)

    @classmethod
    def from_config(cls, s: StrategyConfig, model: nn.Module) -> AdaptObjective:
        schedule = s.weight_schedule or ("ganin" if s.kind == "dann" else "constant")
        try:
            return cls(str(s.kind), model, s.weight, schedule, s.gamma, s.align_layer, s.temperature, s.discriminator_hidden)
        except ValueError as e:
            raise ConfigError(f"strategies.{s.name}.align_layer", str(e)) from None

    def extra_modules(self) -> dict[str, nn.Module]:
        """Modules the optimiser must also train (the domain discriminator), by group name."""
        return {"domain": self.discriminator} if self.discriminator is not None else {}

    def __call__(self, model: nn.Module, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, progress: float,
                 ce: nn.Module) -> tuple[torch.Tensor, dict[str, float]]:
        n = len(x_s)
        feats = model.backbone.forward_all(torch.cat([x_s, x_t]))
        logits = model.head(feats[self.read_layer]).float()
        cls = ce(logits[:n], y_s)
        w = weight_at(self.schedule, progress, self.weight, self.gamma)
        f = feats[self.align_layer].float()
        logs: dict[str, float] = {"weight": w}
        if self.kind == "dann":  # as TLlib: the schedule drives the reversal's coefficient, the weight the loss
            assert self.discriminator is not None
            coeff = weight_at(self.schedule, progress, 1.0, self.gamma)
            extra, acc = dann_loss(self.discriminator, f[:n], f[n:], coeff=coeff)
            loss = cls + self.weight * extra
            logs.update({"weight": self.weight * coeff, "domain_acc": acc})
        elif self.kind == "coral":
            extra = coral_loss(f[:n], f[n:])
            loss = cls + w * extra
        else:
            extra = mcc_loss(logits[n:], self.temperature)
            loss = cls + w * extra
        logs.update({"cls_loss": float(cls.detach()), f"{self.kind}_loss": float(extra.detach())})
        return loss, logs
