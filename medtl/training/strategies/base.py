"""What every strategy kind is: an object that owns its phases, registered by its kind.

A kind turns one arm's inputs (``Arm``: the comparison's data and caches, a built backbone, the fit
options, where to checkpoint) into a trained model with its test predictions (``Trained``). How it
gets there is its own business: a head on cached features, a probe then fine-tuning, a schedule of
unfreezing, extra losses on a target stream. The orchestration (``medtl.experiment``) calls
``strategy_for(config).train(arm)`` and never asks which kind it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from medtl.config import TrainConfig
from medtl.errors import ConfigError
from medtl.models.transfer import BuiltBackbone, TransferModel
from medtl.training.distributed import DistContext
from medtl.training.feature_cache import Features
from medtl.training.loop import Checkpointer, FitOptions, FitResult
from medtl.training.schedule import HEAD, Schedule


class ArmData(Protocol):
    """The datasets and caches a comparison lends each arm (``medtl.experiment.shared.SharedData``)."""

    device: torch.device
    ctx: DistContext

    def loader(self, split: str, train: bool = False, seed: int = 0, shard: bool = False) -> Any: ...
    def extra_split(self, key: str, build: Callable[[Any], list[dict[str, Any]]]) -> str: ...
    def features_for(self, built: BuiltBackbone, seed: int, split: str, flip: str | None = None) -> Features: ...
    def patients(self, split: str) -> list[str]: ...
    def checkpointer(self, folder: Path) -> Checkpointer: ...


@dataclass
class Arm:
    """One arm's inputs, lent by the orchestration."""

    data: ArmData
    train: TrainConfig
    built: BuiltBackbone  # ImageNet weights unless the kind says ``pretrained = False``
    num_classes: int
    seed: int
    opts: FitOptions
    folder: Path  # this arm's checkpoints
    on_epoch: Callable[[int, dict[str, float]], None]  # the tracker's per-epoch curves


@dataclass
class Trained:
    """What a strategy hands back: the model with its kept weights, its curves and its test predictions."""

    model: TransferModel
    fit: FitResult
    probs: np.ndarray
    labels: np.ndarray
    head: str = "linear"  # the head's architecture, to rebuild the model
    probe: FitResult | None = None  # a first phase's curves (lp-ft's linear probe)
    sweep: dict[str, dict[str, float]] | None = None  # per-layer validation results of a layer sweep


class Strategy:
    """Base of every kind; subclasses set ``kind``, implement ``schedule`` and ``train``, and ``@register``."""

    kind: ClassVar[str]
    pretrained: ClassVar[bool] = True  # starts from the backbone's ImageNet weights (scratch: False)
    uses_target: ClassVar[bool] = False  # trains with the target sites' training scans (the ``target`` split)
    trains_backbone: ClassVar[bool] = True  # under torchrun its batches are split across processes (a head alone: not)

    def __init__(self, config: Any) -> None:
        self.config = config

    def epochs(self, train: TrainConfig) -> int:
        return self.config.epochs or train.epochs

    def lr(self, train: TrainConfig) -> float:
        return self.config.lr or train.lr

    def schedule(self, groups: tuple[str, ...], train: TrainConfig) -> Schedule:
        """The schedule of the kind's main phase over ``groups`` (shallow to deep, ending with ``head``)."""
        raise NotImplementedError

    def train(self, arm: Arm) -> Trained:
        raise NotImplementedError

    def check(self, groups: tuple[str, ...], train: TrainConfig) -> None:
        """Raise the ``ConfigError`` this arm would meet on a backbone with ``groups`` (preflight, before any arm runs)."""
        self.schedule((*groups, HEAD), train)

    def check_data(self, data: Any) -> None:
        """Raise the ``ConfigError`` this arm would meet on the comparison's data (a ``DataBundle``: ``splits`` of
        rows with ``label`` and ``patient``, ``classes``), once it is read and before any arm runs: an arm that
        cannot train on it must not let the arms before it run for nothing."""
        if self.uses_target and not data.splits.get("target"):
            raise ConfigError(f"strategies.{self.config.name}", f"{self.kind} needs the target site's training scans, and "
                              "there are none: set data.source_domains (a manifest's other domains' train rows become the "
                              "target) or data.corruptions.train_per_domain (MedMNIST-C)")


_KINDS: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: the home of ``cls.kind``. One home per kind."""
    if cls.kind in _KINDS and _KINDS[cls.kind] is not cls:
        raise ValueError(f"strategy kind '{cls.kind}' already has a home ({_KINDS[cls.kind].__module__})")
    _KINDS[cls.kind] = cls
    return cls


def strategy_for(config: Any) -> Strategy:
    """The strategy of a validated strategy config (``medtl.config.StrategyConfig``)."""
    try:
        return _KINDS[config.kind](config)
    except KeyError:
        raise ConfigError(f"strategies.{config.name}.kind", f"no home for strategy kind '{config.kind}' "
                                                          f"(known: {', '.join(_KINDS)})") from None


def registered_kinds() -> list[str]:
    return list(_KINDS)


def build_schedule(config: Any, groups: tuple[str, ...], train: TrainConfig) -> Schedule:
    """The main-phase schedule of a strategy config (for ``frozen``: its head's; for ``lp-ft``: fine-tuning)."""
    return strategy_for(config).schedule(groups, train)
