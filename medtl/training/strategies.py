"""Strategies as data: which layer groups train from which epoch, at which base rate.

One ``Schedule`` per arm, read by the one training loop (as Lightning's ``BaseFinetuning`` keeps
freezing out of the loop). Groups are named shallow to deep and end with ``head``.

* ``frozen``: the head alone, on features cached from the frozen backbone.
* ``progressive`` (ULMFiT): the head first, then one more group from the top down every
  ``unfreeze_every`` epochs; group at depth d (head 0, top stage 1, ...) trains at
  ``lr / lr_factor**d``; each newly unfrozen group warms up linearly over ``warmup_epochs``.
* ``full`` and ``scratch``: every group from epoch 0 at one rate (scratch from random weights).
* ``surgical``: the named groups and the head, the rest frozen throughout.
* ``lp-ft``: a linear probe on cached features (as ``frozen``), then ``full`` from that head at
  ``lr * ft_lr_scale``.

Every fine-tuning kind warms each group up linearly over ``warmup_epochs`` from its unfreeze, and
says whose batch-norm running statistics follow the new data (``bn_stats``): by default those of
the groups being trained. ``frozen`` keeps ImageNet's statistics everywhere (affine weights still
learn): the features a probe was fitted to do not shift under it when fine-tuning starts, which
matters for ``lp-ft`` and ``progressive`` on small data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medtl.config import StrategyConfig, TrainConfig
from medtl.errors import ConfigError

HEAD = "head"


@dataclass(frozen=True)
class Schedule:
    groups: tuple[str, ...]  # shallow -> deep, ending with "head"
    epochs: int
    unfreeze_epoch: dict[str, int | None]  # None: frozen throughout
    lr: dict[str, float]  # base rate per group, before the schedule's shape
    warmup_epochs: float = 0.0
    bn_stats: str = "trainable"  # whose batch-norm running statistics update: trainable | frozen | all
    shape: str = "cosine"
    notes: list[str] = field(default_factory=list)

    def trainable(self, epoch: int) -> list[str]:
        return [g for g in self.groups if (e := self.unfreeze_epoch[g]) is not None and e <= epoch]

    def frozen(self, epoch: int) -> list[str]:
        return [g for g in self.groups if g not in self.trainable(epoch)]

    def depth(self, group: str) -> int:
        """0 for the head, 1 for the top backbone group, and so on down."""
        return len(self.groups) - 1 - self.groups.index(group)


def _all_at(groups: tuple[str, ...], epochs: int, lr: float, shape: str, warmup: float = 0.0,
            bn_stats: str = "trainable") -> Schedule:
    return Schedule(groups, epochs, {g: 0 for g in groups}, {g: lr for g in groups}, warmup_epochs=warmup, shape=shape,
                    bn_stats=bn_stats)


def head_only(groups: tuple[str, ...], epochs: int, lr: float, shape: str) -> Schedule:
    return Schedule(groups, epochs, {g: (0 if g == HEAD else None) for g in groups}, {g: lr for g in groups}, shape=shape)


def progressive(groups: tuple[str, ...], epochs: int, lr: float, every: int, factor: float, warmup: float,
                shape: str, bn_stats: str = "trainable") -> Schedule:
    """ULMFiT's gradual unfreezing: group at depth d starts at epoch ``d * every`` at ``lr / factor**d``."""
    unfreeze: dict[str, int | None] = {}
    rates: dict[str, float] = {}
    notes = []
    for g in groups:
        depth = len(groups) - 1 - groups.index(g)
        start = depth * every
        unfreeze[g] = start if start < epochs else None
        rates[g] = lr / factor**depth
        if unfreeze[g] is None:
            notes.append(f"{g} stays frozen: its turn (epoch {start}) comes after the last epoch ({epochs - 1})")
    return Schedule(groups, epochs, unfreeze, rates, warmup_epochs=warmup, bn_stats=bn_stats, shape=shape, notes=notes)


def surgical(groups: tuple[str, ...], named: list[str], epochs: int, lr: float, shape: str, bn_stats: str = "trainable",
             warmup: float = 0.0) -> Schedule:
    unknown = [g for g in named if g not in groups or g == HEAD]
    if unknown:
        raise ConfigError("strategies.surgical.groups", f"unknown group(s) {unknown} (groups: {', '.join(groups[:-1])})")
    unfreeze: dict[str, int | None] = {g: (0 if g in named or g == HEAD else None) for g in groups}
    return Schedule(groups, epochs, unfreeze, {g: lr for g in groups}, warmup_epochs=warmup, bn_stats=bn_stats, shape=shape)


def build_schedule(s: StrategyConfig, groups: tuple[str, ...], train: TrainConfig) -> Schedule:
    """The training schedule of a strategy (for ``frozen``: its head's; for ``lp-ft``: the fine-tuning phase)."""
    epochs = s.epochs or train.epochs
    lr = s.lr or train.lr
    if s.kind == "frozen":
        return head_only((HEAD,), epochs, s.lr or train.head_lr, train.schedule)
    if s.kind in ("full", "scratch", "dann", "coral", "mcc", "few-shot"):  # adaptation kinds: full fine-tuning + their loss
        return _all_at(groups, epochs, lr, train.schedule, s.warmup_epochs, s.bn_stats)
    if s.kind == "lp-ft":
        return _all_at(groups, epochs, lr * s.ft_lr_scale, train.schedule, s.warmup_epochs, s.bn_stats)
    if s.kind == "progressive":
        return progressive(groups, epochs, lr, s.unfreeze_every, s.lr_factor, s.warmup_epochs, train.schedule, s.bn_stats)
    if s.kind == "surgical":
        try:
            return surgical(groups, s.groups, epochs, lr, train.schedule, s.bn_stats, s.warmup_epochs)
        except ConfigError as e:
            raise ConfigError(f"strategies.{s.name}.groups", e.problem) from None
    raise ConfigError(f"strategies.{s.name}.kind", f"unknown strategy kind '{s.kind}'")


def probe_schedule(s: StrategyConfig, train: TrainConfig) -> Schedule:
    """lp-ft's first phase: a linear probe on cached features, as the ``frozen`` arm trains its head."""
    return head_only((HEAD,), s.probe_epochs, train.head_lr, train.schedule)
