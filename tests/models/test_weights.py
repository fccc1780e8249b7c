"""The offline ImageNet weights are ImageNet's: natural photos are classified right."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medtl.errors import WeightsError
from medtl.models.registry import get_backbone, list_backbones
from medtl.models.transfer import build_backbone, create_model

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the natural test photos")


def _prepare(img: np.ndarray, spec) -> torch.Tensor:
    x = torch.as_tensor(img).permute(2, 0, 1).float()[None] / 255.0
    x = F.interpolate(x, size=(spec.size, spec.size), mode=spec.interpolation, align_corners=False, antialias=True)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_lite_weights_classify_natural_photos(name: str) -> None:
    bspec = get_backbone(name)
    spec = bspec.weights.input_spec()
    assert spec.source.startswith("timm pretrained_cfg"), "input spec must come from the weights' metadata"
    model = bspec.build()
    sha = bspec.weights.load_into(model)
    assert len(sha) == 64
    model.eval()
    with torch.no_grad():
        cat = model(_prepare(skimage_data.chelsea(), spec)).argmax(1).item()
        coffee = model(_prepare(skimage_data.coffee(), spec)).argmax(1).item()
    assert cat in (281, 282, 285), f"{name}: chelsea classified as {cat}, not a cat (tabby 281, tiger cat 282, Egyptian cat 285)"
    assert coffee == 967, f"{name}: coffee classified as {coffee}, not espresso (967)"


def test_random_init_is_not_imagenet() -> None:
    """The control for the test above: without the weights the same photos are not recognised."""
    bspec = get_backbone("efficientnet_lite0")
    model = bspec.build().eval()
    with torch.no_grad():
        p = torch.softmax(model(_prepare(skimage_data.coffee(), bspec.weights.input_spec())), 1)
    assert p[0, 967] < 0.5


def test_torchvision_spec_from_weights_metadata() -> None:
    spec = get_backbone("resnet18").weights.input_spec()
    assert (spec.size, spec.channels) == (224, 3)
    assert spec.mean == pytest.approx((0.485, 0.456, 0.406))
    assert "ResNet18_Weights" in spec.source
    assert {"resnet18", "resnet50", "densenet121", "efficientnet_b0", "convnext_tiny", "efficientnet_lite0"} <= set(list_backbones())


def test_missing_torchvision_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capfd) -> None:
    """Offline with no checkpoint: an error that says which file goes where, never random weights, and
    not torch.hub's "Downloading: https://..." line before it (stdout is medtl's tables)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    import urllib.request

    def offline(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsError) as e:
        build_backbone("resnet18", pretrained=True)
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path) in msg
    out, err = capfd.readouterr()
    assert "Downloading" not in out + err


def test_groups_are_ordered_and_head_is_new() -> None:
    model, built = create_model("efficientnet_lite0", num_classes=2)
    assert built.backbone.group_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert list(model.groups())[-1] == "head"
    assert model.head.out_features == 2 and built.feature_dims["stage4"] == model.head.in_features == 1280
    x = torch.zeros(2, 3, 64, 64)
    assert model(x).shape == (2, 2)
    assert built.weights_sha256 == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
