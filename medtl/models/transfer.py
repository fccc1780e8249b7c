"""A backbone cut into named layer groups plus a new head: the one model every strategy trains."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from medtl.errors import ConfigError
from medtl.models.registry import BackboneSpec, InputSpec, get_backbone


class GroupedBackbone(nn.Module):
    """Stages applied in order; ``forward(x, layer)`` returns the pooled output of one stage."""

    def __init__(self, groups: list[tuple[str, nn.Module]], neck: nn.Module) -> None:
        super().__init__()
        self.stages = nn.ModuleDict(OrderedDict(groups))
        self.neck = neck
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))

    @property
    def group_names(self) -> list[str]:
        return list(self.stages.keys())

    def forward(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        last = self.group_names[-1]
        layer = layer or last
        for name, stage in self.stages.items():
            x = stage(x)
            if name == layer:
                return self.neck(x) if name == last else self.pool(x)
        raise ConfigError("layer", f"unknown layer group '{layer}' (groups: {', '.join(self.group_names)})")

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled features of every stage in one pass (layer sweeps, CKA)."""
        out: dict[str, torch.Tensor] = {}
        last = self.group_names[-1]
        for name, stage in self.stages.items():
            x = stage(x)
            out[name] = self.neck(x) if name == last else self.pool(x)
        return out


def make_head(in_features: int, num_classes: int, kind: str = "linear") -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "mlp":
        hidden = min(512, max(64, in_features // 2))
        return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, num_classes))
    raise ConfigError("head", f"unknown head '{kind}' (linear, mlp)")


@dataclass
class BuiltBackbone:
    backbone: GroupedBackbone
    spec: InputSpec
    weights_id: str
    weights_sha256: str | None  # None: random init (scratch)
    feature_dims: dict[str, int]


def build_backbone(name: str, pretrained: bool = True) -> BuiltBackbone:
    """The backbone's groups with ImageNet weights (or random ones for the scratch control)."""
    bspec: BackboneSpec = get_backbone(name)
    full = bspec.build()
    sha = bspec.weights.load_into(full) if pretrained else None
    groups, neck = bspec.split(full)
    backbone = GroupedBackbone(groups, neck)
    backbone.eval()
    with torch.no_grad():  # feature widths of every stage, from a small dry run
        dims = {k: int(v.shape[1]) for k, v in backbone.forward_all(torch.zeros(1, 3, 64, 64)).items()}
    return BuiltBackbone(
        backbone, bspec.weights.input_spec(), bspec.weights.id if pretrained else "random", sha, dims
    )


class TransferModel(nn.Module):
    """Backbone + head. ``layer`` picks which stage's pooled output the head reads."""

    def __init__(self, backbone: GroupedBackbone, head: nn.Module, layer: str | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x, self.layer))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x, self.layer)

    def groups(self) -> OrderedDict[str, nn.Module]:
        """Trainable units shallow to deep, ending with ``head``; groups past ``layer`` are unused."""
        names = self.backbone.group_names
        used = names[: names.index(self.layer) + 1] if self.layer else names
        out: OrderedDict[str, nn.Module] = OrderedDict((n, self.backbone.stages[n]) for n in used)
        if not self.layer or self.layer == names[-1]:
            out[names[-1]] = nn.ModuleList([self.backbone.stages[names[-1]], self.backbone.neck])
        out["head"] = self.head
        return out


def create_model(
    name: str, num_classes: int, pretrained: bool = True, head: str = "linear", layer: str | None = None
) -> tuple[TransferModel, BuiltBackbone]:
    built = build_backbone(name, pretrained)
    layer_name = layer or built.backbone.group_names[-1]
    if layer_name not in built.feature_dims:
        raise ConfigError("layer", f"unknown layer group '{layer}' for {name} (groups: {', '.join(built.feature_dims)})")
    model = TransferModel(built.backbone, make_head(built.feature_dims[layer_name], num_classes, head), layer)
    return model, built
