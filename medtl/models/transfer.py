"""A backbone cut into named layer groups plus a new head: the one model every strategy trains.

Like timm's ``model.pretrained_cfg``, the backbone carries its registry name and its input
specification (``GroupedBackbone.name``, ``.spec``; ``TransferModel.spec`` reads them): the spec is
made once, with its size, when the backbone is built, and everything downstream (feature cache
keys, the logged model, its card, serving) reads it from the model instead of resolving the name
again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from medtl.errors import ConfigError
from medtl.models.registry import BackboneSpec, InputSpec, get_backbone, input_spec

Layer = str | Sequence[str] | None
"""What a head reads: one layer group, several (their pooled features concatenated), or null (the last)."""


class GroupedBackbone(nn.Module):
    """Stages applied in order; ``forward(x, layer)`` returns the pooled output of one stage.

    ``name`` (the registry's) and ``spec`` (the input it expects) travel with the module; they are
    plain attributes, not state: ``state_dict`` holds tensors only.
    """

    def __init__(self, groups: list[tuple[str, nn.Module]], neck: nn.Module, *, name: str, spec: InputSpec) -> None:
        super().__init__()
        self.stages = nn.ModuleDict(OrderedDict(groups))
        self.neck = neck
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.name = name
        self.spec = spec

    @property
    def group_names(self) -> list[str]:
        return list(self.stages.keys())

    def forward(self, x: torch.Tensor, layer: Layer = None) -> torch.Tensor:
        """The pooled output of ``layer`` (null: the last group); of several groups, concatenated in
        the order given. Stages past the deepest one asked for never run."""
        names = self.group_names
        wanted = read_layers(layer, names)
        last, out = names[-1], {}
        for name, stage in self.stages.items():
            x = stage(x)
            if name in wanted:
                out[name] = self.neck(x) if name == last else self.pool(x)
                if len(out) == len(wanted):
                    return concat_features(out, wanted)
        raise ConfigError("layer", f"unknown layer group(s) {[g for g in wanted if g not in names]} "
                                   f"(groups: {', '.join(names)})")

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled features of every stage in one pass (layer sweeps, CKA)."""
        out: dict[str, torch.Tensor] = {}
        last = self.group_names[-1]
        for name, stage in self.stages.items():
            x = stage(x)
            out[name] = self.neck(x) if name == last else self.pool(x)
        return out


def read_layers(layer: Layer, names: Sequence[str]) -> tuple[str, ...]:
    """The groups ``layer`` names, as a tuple (null: the last of ``names``)."""
    if layer is None:
        return (names[-1],)
    return (layer,) if isinstance(layer, str) else tuple(layer)


def layer_label(layer: Layer, names: Sequence[str]) -> str:
    """A layer choice's name in tables and runs: the group, ``a-b`` for several (MLflow metric names allow no
    ``+``), ``concat`` for every group."""
    read = read_layers(layer, names)
    return "concat" if len(read) > 1 and read == tuple(names) else "-".join(read)


def concat_features(feats: Mapping[str, torch.Tensor], layers: Sequence[str]) -> torch.Tensor:
    """The head's input from per-group pooled features (``forward_all``, the feature cache): one group's
    as it is, several concatenated along the feature axis in the order of ``layers``."""
    return feats[layers[0]] if len(layers) == 1 else torch.cat([feats[g] for g in layers], 1)


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
    weights_id: str
    weights_sha256: str | None  # None: random init (scratch)
    feature_dims: dict[str, int]

    @property
    def spec(self) -> InputSpec:
        return self.backbone.spec


def build_backbone(name: str, pretrained: bool = True, spec: InputSpec | None = None) -> BuiltBackbone:
    """The backbone's groups with ImageNet weights (or random ones for the scratch control).

    ``spec``: the input specification the model will carry (``input_spec(name, size)``, or the one
    a logged model was saved with); None: the weights' own, at the size they were trained at.
    """
    bspec: BackboneSpec = get_backbone(name)
    full = bspec.build()
    sha = bspec.weights.load_into(full) if pretrained else None
    groups, neck = bspec.split(full)
    backbone = GroupedBackbone(groups, neck, name=name, spec=spec or input_spec(name))
    backbone.eval()
    with torch.no_grad():  # feature widths of every stage, from a small dry run
        dims = {k: int(v.shape[1]) for k, v in backbone.forward_all(torch.zeros(1, 3, 64, 64)).items()}
    return BuiltBackbone(backbone, bspec.weights.id if pretrained else "random", sha, dims)


class TransferModel(nn.Module):
    """Backbone + head. ``layer`` picks which stage's pooled output the head reads (a list: several
    stages' concatenated, the frozen arm's ``layer: concat``)."""

    def __init__(self, backbone: GroupedBackbone, head: nn.Module, layer: Layer = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.layer = layer if layer is None or isinstance(layer, str) else list(layer)

    @property
    def read_layers(self) -> tuple[str, ...]:
        """The groups whose pooled features the head reads, in the order it reads them."""
        return read_layers(self.layer, self.backbone.group_names)

    @property
    def spec(self) -> InputSpec:
        """The input the model expects (made when its backbone was built)."""
        return self.backbone.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x, self.layer))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x, self.layer)

    def groups(self) -> OrderedDict[str, nn.Module]:
        """Trainable units shallow to deep, ending with ``head``; groups past ``layer`` are unused."""
        names = self.backbone.group_names
        deepest = max(names.index(g) for g in self.read_layers)
        out: OrderedDict[str, nn.Module] = OrderedDict((n, self.backbone.stages[n]) for n in names[: deepest + 1])
        if deepest == len(names) - 1:
            out[names[-1]] = nn.ModuleList([self.backbone.stages[names[-1]], self.backbone.neck])
        out["head"] = self.head
        return out


def create_model(
    name: str, num_classes: int, pretrained: bool = True, head: str = "linear", layer: Layer = None,
    spec: InputSpec | None = None,
) -> tuple[TransferModel, BuiltBackbone]:
    built = build_backbone(name, pretrained, spec)
    layers = read_layers(layer, built.backbone.group_names)
    if unknown := [g for g in layers if g not in built.feature_dims]:
        raise ConfigError("layer", f"unknown layer group(s) {unknown} for {name} (groups: {', '.join(built.feature_dims)})")
    model = TransferModel(built.backbone, make_head(sum(built.feature_dims[g] for g in layers), num_classes, head), layer)
    return model, built
