"""Every built-in backbone is cut into groups that cover the network exactly once.

Built with random weights (torchvision checkpoints are not available offline): the structure is
the same, and the grouped network with the original classifier must reproduce the original output.
"""

import pytest
import torch
from torch import nn

from medtl.models.registry import get_backbone
from medtl.models.transfer import GroupedBackbone, build_backbone, create_model

BUILTIN = ["resnet18", "resnet50", "densenet121", "efficientnet_b0", "convnext_tiny",
           "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
STAGES = ["stem", "stage1", "stage2", "stage3", "stage4"]


def _ids(module: nn.Module) -> list[int]:
    return [id(t) for t in [*module.parameters(), *module.buffers()]]


@pytest.mark.parametrize("name", BUILTIN)
def test_groups_cover_every_tensor_but_the_classifier_once(name: str) -> None:
    torch.manual_seed(0)
    bspec = get_backbone(name)
    full = bspec.build().eval()
    groups, neck = bspec.split(full)
    assert len(groups) == 5, f"{name}: five resolution stages"
    owned: list[int] = []
    for _, g in groups:
        owned += _ids(g)
    owned += _ids(neck)
    assert len(owned) == len(set(owned)), f"{name}: a tensor sits in two groups"
    rest = set(_ids(full)) - set(owned)
    classifiers = [m for m in full.modules() if isinstance(m, nn.Linear) and set(_ids(m)) == rest]
    assert len(classifiers) == 1 and classifiers[0].out_features == 1000, f"{name}: left out more than the 1000-class classifier"
    # the grouped network + the original classifier is the original network
    grouped = GroupedBackbone(groups, neck, name=name, spec=bspec.weights.input_spec()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(classifiers[0](grouped(x)), full(x), rtol=1e-4, atol=1e-4)
        feats = grouped.forward_all(x)
    assert list(feats) == [g for g, _ in groups]
    assert all(f.ndim == 2 and f.shape[0] == 2 for f in feats.values())


def test_transfer_model_groups_end_with_a_new_head_and_own_every_parameter() -> None:
    model, built = create_model("efficientnet_lite0", num_classes=3, pretrained=False)
    assert built.weights_sha256 is None and built.weights_id == "random"
    groups = model.groups()
    assert list(groups) == [*STAGES, "head"]
    owned = [id(p) for g in groups.values() for p in g.parameters()]
    assert sorted(owned) == sorted(id(p) for p in model.parameters()) and len(owned) == len(set(owned))
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_a_shallow_layer_leaves_deeper_groups_out() -> None:
    model, built = create_model("efficientnet_lite0", num_classes=2, pretrained=False, layer="stage2")
    assert list(model.groups()) == ["stem", "stage1", "stage2", "head"]
    assert model.head.in_features == built.feature_dims["stage2"] == 40
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


def test_scratch_is_random_and_seeded() -> None:
    """The scratch control: none of the ImageNet tensors, and the same seed gives the same init."""
    imagenet = build_backbone("efficientnet_lite0", pretrained=True).backbone.state_dict()
    torch.manual_seed(1)
    a = build_backbone("efficientnet_lite0", pretrained=False).backbone.state_dict()
    torch.manual_seed(1)
    b = build_backbone("efficientnet_lite0", pretrained=False).backbone.state_dict()
    weights = [k for k, v in imagenet.items() if v.is_floating_point() and v.numel() > 1 and "running" not in k]
    assert weights and not any(torch.equal(imagenet[k], a[k]) for k in weights)
    assert all(torch.equal(a[k], b[k]) for k in a)
