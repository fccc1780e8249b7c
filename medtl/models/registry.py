"""Backbone registry: a name maps to a builder, its ImageNet weights and its input specification.

As in timm's ``pretrained_cfg``, the input specification (size, channels, mean, std,
interpolation) is read from the weights' own metadata (torchvision's ``Weights.transforms()``,
timm's ``pretrained_cfg``), never copied by hand; ``input_spec`` is the one place it is made,
``medtl.models.transfer.build_backbone`` attaches it to the model, and it travels with every model
medtl logs. This module is a leaf: it imports nothing of ``medtl.models``. The built-in backbones
register themselves from ``medtl.models.backbones``, which the package imports, so any import of
``medtl.models.*`` finds them registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from torch import nn

from medtl.errors import ConfigError


@dataclass(frozen=True)
class InputSpec:
    """What the backbone expects: a square ``size`` image with ``channels`` normalised by mean/std."""

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str  # "bilinear" | "bicubic" (MONAI/torch names)
    source: str  # where the numbers were read from

    def with_size(self, size: int | None) -> InputSpec:
        if size is None or size == self.size:
            return self
        return replace(self, size=int(size), source=f"{self.source}; size overridden to {size} by preprocess.size")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        return cls(
            size=int(d["size"]),
            channels=int(d["channels"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            interpolation=str(d["interpolation"]),
            source=str(d.get("source", "")),
        )


class WeightsSource(Protocol):
    """Where a backbone's pretrained weights come from and what input they were trained on."""

    id: str

    def input_spec(self) -> InputSpec: ...

    def load_into(self, model: nn.Module) -> str:
        """Load the weights into the full (1000-class) model; return the checkpoint's sha256."""
        ...


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[], nn.Module]  # the architecture with its original classifier, random init
    split: Callable[[nn.Module], tuple[list[tuple[str, nn.Module]], nn.Module]]  # -> groups, neck
    weights: WeightsSource
    family: str
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec, *, overwrite: bool = False) -> BackboneSpec:
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"backbone '{spec.name}' is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    if name not in _REGISTRY:
        raise ConfigError("backbone.name", f"unknown backbone '{name}' (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def input_spec(name: str, size: int | None = None) -> InputSpec:
    """What backbone ``name`` expects, from its weights' metadata, at ``size`` (``preprocess.size``;
    None: the size the weights were trained at). Built once per model and then read from it."""
    return get_backbone(name).weights.input_spec().with_size(size)
