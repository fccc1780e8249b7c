"""Kinds that train the backbone with the one loop: ``full``, ``scratch``, ``progressive``, ``surgical``.

Each is a schedule over the model's layer groups (``medtl.training.schedule``) for a new linear head:

* ``full`` and ``scratch``: every group from epoch 0 at one rate (scratch from random weights).
* ``progressive`` (ULMFiT): the head first, then one more group from the top down every
  ``unfreeze_every`` epochs; group at depth d trains at ``lr / lr_factor**d``.
* ``surgical``: the named groups and the head, the rest frozen throughout.

``FineTuning`` is also the base of kinds with a phase before the loop (``prepare``: lp-ft's probe)
or that learn from the target site (``target_stream`` and ``extra_loss``, handed to ``fit``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from medtl.config import FullConfig, ProgressiveConfig, ScratchConfig, SurgicalConfig, TrainConfig
from medtl.errors import ConfigError
from medtl.models.averaging import with_tta
from medtl.models.transfer import TransferModel, make_head
from medtl.training.extra_loss import ExtraLoss
from medtl.training.loop import FitResult, fit, predict_probs, seed_everything
from medtl.training.schedule import Schedule, all_at, progressive, surgical
from medtl.training.strategies.base import Arm, Strategy, Trained, register


class FineTuning(Strategy):
    """A new linear head on the last group, the model trained by ``schedule`` in the one loop."""

    def prepare(self, arm: Arm, model: TransferModel) -> FitResult | None:
        """A phase before the loop, on ``model`` as built (none here); its curves become ``Trained.probe``."""
        return None

    def target_stream(self, arm: Arm) -> Iterable[Any] | None:
        """Unlabelled target batches cycled beside the source batches (none here)."""
        return None

    def extra_loss(self, arm: Arm, model: TransferModel) -> ExtraLoss | None:
        """Losses added to the classification loss at every step, logged as ``<name>_loss`` (none here)."""
        return None

    def train_split(self, arm: Arm) -> str:
        """The labelled split the loop trains on (few-shot adds target scans to it)."""
        return "train"

    def train(self, arm: Arm) -> Trained:
        built = arm.built
        seed_everything(arm.seed)
        model = TransferModel(built.backbone, make_head(built.feature_dims[built.backbone.group_names[-1]], arm.num_classes, "linear"))
        probe = self.prepare(arm, model)
        groups = model.groups()
        schedule = self.schedule(tuple(groups), arm.train)
        result = fit(model, groups, schedule, arm.data.loader(self.train_split(arm), train=True, seed=arm.seed, shard=True),
                     arm.data.loader("val", shard=True), arm.opts, arm.data.checkpointer(arm.folder / "model"), arm.on_epoch,
                     self.target_stream(arm), self.extra_loss(arm, model), with_tta(model, self.config.tta))
        probs, labels = predict_probs(with_tta(model, self.config.tta), arm.data.loader("test", shard=True), arm.data.device, arm.train.amp, "testing",
                                      arm.data.ctx)
        return Trained(model, result, probs, labels, probe=probe)


@register
class Full(FineTuning):
    kind = "full"
    config: FullConfig

    def schedule(self, groups: tuple[str, ...], train: TrainConfig) -> Schedule:
        c = self.config
        return all_at(groups, self.epochs(train), self.lr(train), train.schedule, c.warmup_epochs, c.bn_stats)


@register
class Scratch(Full):
    kind = "scratch"
    pretrained = False
    config: ScratchConfig  # type: ignore[assignment]


@register
class Progressive(FineTuning):
    kind = "progressive"
    config: ProgressiveConfig

    def schedule(self, groups: tuple[str, ...], train: TrainConfig) -> Schedule:
        c = self.config
        return progressive(groups, self.epochs(train), self.lr(train), c.unfreeze_every, c.lr_factor, c.warmup_epochs,
                           train.schedule, c.bn_stats)


@register
class Surgical(FineTuning):
    kind = "surgical"
    config: SurgicalConfig

    def schedule(self, groups: tuple[str, ...], train: TrainConfig) -> Schedule:
        c = self.config
        try:
            return surgical(groups, c.groups, self.epochs(train), self.lr(train), train.schedule, c.bn_stats, c.warmup_epochs)
        except ConfigError as e:
            raise ConfigError(f"strategies.{c.name}.groups", e.problem) from None
