"""Schedules as data: which layer groups train from which epoch, at which base rate.

One ``Schedule`` per arm, read by the one training loop (as Lightning's ``BaseFinetuning`` keeps
freezing out of the loop). Groups are named shallow to deep and end with ``head``. The shapes here
(head only, all at once, ULMFiT's gradual unfreezing, surgical) know nothing of strategy kinds: each
kind under ``medtl.training.strategies`` picks its shape.

Every shape but ``head_only`` warms each group up linearly over ``warmup_epochs`` from its unfreeze,
and says whose batch-norm running statistics follow the new data (``bn_stats``): by default those of
the groups being trained. ``frozen`` keeps ImageNet's statistics everywhere (affine weights still
learn): the features a probe was fitted to do not shift under it when fine-tuning starts, which
matters for ``lp-ft`` and ``progressive`` on small data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def all_at(groups: tuple[str, ...], epochs: int, lr: float, shape: str, warmup: float = 0.0,
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
        raise ConfigError("groups", f"unknown group(s) {unknown} (groups: {', '.join(groups[:-1])})")
    unfreeze: dict[str, int | None] = {g: (0 if g in named or g == HEAD else None) for g in groups}
    return Schedule(groups, epochs, unfreeze, {g: lr for g in groups}, warmup_epochs=warmup, bn_stats=bn_stats, shape=shape)
