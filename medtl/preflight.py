"""Every arm's settings checked against the backbone and this machine before the first arm starts.

pydantic checks a config's shape when it is read; some settings can only be judged against
things outside it: the device (is there a GPU?), the backbone's layer groups (``groups`` of a
surgical arm, ``layer``/``layers`` of a frozen one), the augmentations (are they MONAI's?).
Checked late, a typo in the third arm costs the first two arms' training and leaves FAILED runs;
checked here, it costs nothing and exits 2 naming the setting.
"""

from __future__ import annotations

import torch

from medtl.config import ExperimentConfig, StrategyConfig
from medtl.errors import ConfigError

DEVICE_KINDS = ("auto", "cpu", "cuda", "cuda:N", "mps")


def check_device(name: str) -> None:
    """``train.device`` names a device this machine has (``auto`` always does)."""
    if name == "auto":
        return
    key = "train.device"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(key, f"'{name}' is not a device (use {', '.join(DEVICE_KINDS)})") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise ConfigError(key, f"'{name}': this machine has no CUDA GPU (use auto or cpu)")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(key, f"'{name}': this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(key, f"'{name}': Apple's MPS is not available on this machine (use auto or cpu)")
        return
    raise ConfigError(key, f"'{name}': medtl trains on {', '.join(DEVICE_KINDS)}")


def backbone_groups(name: str) -> list[str]:
    """The backbone's layer groups, shallow to deep, from its architecture built on the meta device
    (no memory, no weights: a fraction of a second even for a large network)."""
    from medtl.models.registry import get_backbone

    spec = get_backbone(name)
    with torch.device("meta"):
        groups, _ = spec.split(spec.build())
    return [g for g, _ in groups]


def check_strategy(s: StrategyConfig, groups: list[str], cfg: ExperimentConfig) -> None:
    """One arm against the backbone's groups: its kind has a home, its schedule builds over the groups
    (a surgical arm's ``groups``), and a frozen arm's ``layer``/``layers`` are among them."""
    from medtl.training.strategies import strategy_for

    strategy_for(s).check(tuple(groups), cfg.train)


def check_world(cfg: ExperimentConfig) -> None:
    """Under ``torchrun`` a fine-tuning arm splits each global batch across the processes: it must divide
    (found otherwise when the first such arm builds its loader, after the arms before it trained)."""
    from medtl.training.distributed import DistContext
    from medtl.training.strategies import strategy_for

    ctx = DistContext.from_env()
    bs = cfg.train.batch_size
    if ctx.active and bs % ctx.world_size and any(strategy_for(s).trains_backbone for s in cfg.trained):
        raise ConfigError("train.batch_size", f"{bs} is the global batch; it must divide by the {ctx.world_size} processes")
    for s in cfg.trained:  # found otherwise at the first step of the arm, after the arms before it trained
        if ctx.active and strategy_for(s).uses_target:
            raise ConfigError(f"strategies.{s.name}", f"{s.kind} learns from the target stream in one process; "
                              f"run it without torchrun (this run has {ctx.world_size} processes)")


def preflight(cfg: ExperimentConfig) -> None:
    """Raise the first ``ConfigError`` any arm would meet, before data is read or a run is started."""
    from medtl.data.augment import build_augmentations

    check_device(cfg.train.device)
    check_world(cfg)
    groups = backbone_groups(cfg.backbone.name)
    for s in cfg.trained:
        check_strategy(s, groups, cfg)
    build_augmentations(cfg.train.augment)
