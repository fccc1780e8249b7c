"""Batched preprocessing of in-memory arrays gives the tensors ``scan_transforms`` gives one image at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from medtl.config import PreprocessConfig
from medtl.data.batched import BatchedArrays, batchable
from medtl.data.datasets import fully_cached, loader, prepared_dataset
from medtl.data.medmnist import read_medmnist
from medtl.data.augment import build_augmentations
from medtl.data.transforms import scan_transforms
from medtl.models.registry import InputSpec, get_backbone
from tests.conftest import shared_path

LITE0 = get_backbone("efficientnet_lite0").weights.input_spec()


def _items(images: np.ndarray) -> list[dict]:
    return [{"image": a, "label": i % 2, "patient": f"p{i}", "domain": "d", "path": f"x.npz#train/{i}"}
            for i, a in enumerate(images)]


def _per_image(items: list[dict], spec: InputSpec, pp: PreprocessConfig) -> torch.Tensor:
    tf = scan_transforms(spec, pp)
    return torch.stack([torch.as_tensor(tf(dict(it))["image"]) for it in items])


def _batched(items: list[dict], spec: InputSpec, pp: PreprocessConfig) -> torch.Tensor:
    ds = BatchedArrays(items, spec, pp)
    return torch.stack([b["image"] for b in ds.__getitems__(list(range(len(items))))])


@pytest.mark.parametrize("npz", ["breastmnist.npz", "organamnist.npz"])
@pytest.mark.parametrize("size,intensity", [(64, "fixed"), (16, "fixed"), (48, "percentile"), (32, "auto")])
def test_real_medmnist_batches_equal_scan_transforms(npz: str, size: int, intensity: str) -> None:
    images = read_medmnist(shared_path("medmnist", npz))["test"][0][:40]
    items = _items(images)
    spec, pp = LITE0.with_size(size), PreprocessConfig(intensity=intensity, size=size)
    want, got = _per_image(items, spec, pp), _batched(items, spec, pp)
    assert got.shape == want.shape == (40, 3, size, size) and got.dtype == torch.float32
    assert float((got - want).abs().max()) < 1e-5, "the batch path must feed the backbone what prediction feeds it"
    assert float(want.std()) > 0.1  # real images, not a constant that would match anything


def test_colour_non_square_float_arrays_and_constant_images() -> None:
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (6, 20, 30, 3)).astype(np.uint8)
    rgba = rng.integers(0, 256, (4, 30, 20, 4)).astype(np.uint8)
    floats = rng.normal(100, 40, (5, 25, 17)).astype(np.float32)
    floats[2] = 7.0  # constant: percentiles equal, min == max: all 0
    floats[3, :, :] = 0.0
    floats[3, 0, 0] = 5.0  # percentiles equal but min < max: min..max
    spec = InputSpec(24, 3, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), "bilinear", "test")
    for images, pp in ((colour, PreprocessConfig(intensity="fixed")), (rgba, PreprocessConfig()),
                       (floats, PreprocessConfig()), (floats, PreprocessConfig(percentiles=(5, 95)))):
        items = _items(images)
        want, got = _per_image(items, spec, pp), _batched(items, spec, pp)
        assert got.shape == want.shape == (len(images), 3, 24, 24)
        assert float((got - want).abs().max()) < 1e-5


def test_planes_made_in_chunks_equal_the_per_image_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planes are built a chunk at a time (flat build memory); chunk edges must change nothing."""
    import medtl.data.batched as batched

    monkeypatch.setattr(batched, "CHUNK", 3)  # 3 does not divide 10 or 7: a short last chunk
    real = read_medmnist(shared_path("medmnist", "breastmnist.npz"))["test"][0][:10]
    rng = np.random.default_rng(2)
    odd = rng.normal(50, 20, (7, 12, 18)).astype(np.float32)  # non-square, per-image percentiles
    odd[4] = 1.0  # a constant image in the middle chunk
    spec = InputSpec(20, 3, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), "bilinear", "test")
    for images, pp in ((real, PreprocessConfig(intensity="fixed")), (real, PreprocessConfig(intensity="percentile")),
                       (odd, PreprocessConfig())):
        items = _items(images)
        want, got = _per_image(items, spec, pp), _batched(items, spec, pp)
        assert got.shape == want.shape == (len(images), 3, 20, 20)
        assert float((got - want).abs().max()) < 1e-5
        assert float(got.std()) > 0.1


def test_only_finite_same_shape_arrays_take_the_batch_path(tmp_path) -> None:
    a = np.zeros((8, 8), np.uint8)
    assert batchable(_items(np.stack([a, a])))
    assert not batchable(_items(np.zeros((2, 8, 8, 8))))  # volumes
    assert not batchable([{"image": a}, {"image": np.zeros((9, 8), np.uint8)}])
    assert not batchable([{"image": a}, {"image": str(tmp_path / "x.dcm")}])
    nan = np.ones((2, 8, 8), np.float32)
    nan[1, 3, 3] = np.nan
    assert not batchable(_items(nan)), "non-finite images go the per-scan way, which names them"
    spec = InputSpec(8, 3, (0.5,) * 3, (0.5,) * 3, "bilinear", "test")
    assert not isinstance(prepared_dataset(_items(nan), spec, PreprocessConfig(nonfinite="fill")), BatchedArrays)


def test_loader_subsets_workers_and_augmentation() -> None:
    rng = np.random.default_rng(1)
    items = _items(rng.integers(0, 256, (10, 28, 28)).astype(np.uint8))
    spec, pp = InputSpec(32, 3, (0.5,) * 3, (0.25,) * 3, "bilinear", "test"), PreprocessConfig(intensity="fixed")
    ds = prepared_dataset(items, spec, pp)
    assert isinstance(ds, BatchedArrays) and fully_cached(ds)
    batches = list(loader(ds, 4, shuffle=False, num_workers=2))
    assert loader(ds, 4, shuffle=False, num_workers=2).num_workers == 0
    assert [len(b["image"]) for b in batches] == [4, 4, 2] and batches[0]["label"].tolist() == [0, 1, 0, 1]
    assert batches[1]["path"] == [f"x.npz#train/{i}" for i in range(4, 8)]
    sub = next(iter(loader(Subset(ds, [7, 2]), 2, shuffle=False)))  # Subset delegates to __getitems__
    assert torch.equal(sub["image"][0], ds[7]["image"]) and sub["patient"] == ["p7", "p2"]

    aug = build_augmentations([{"name": "RandGaussianNoised", "prob": 1.0, "std": 0.5}])
    ads = prepared_dataset(items, spec, pp, aug)
    assert not fully_cached(ads)

    def epoch(seed: int) -> torch.Tensor:
        return torch.cat([b["image"] for b in loader(ads, 3, shuffle=True, num_workers=2, seed=seed)])

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert torch.equal(first, again) and not torch.equal(first, other)
    planes = ads.planes.clone()
    epoch(3)
    assert torch.equal(ads.planes, planes), "augmentation and normalisation never write into the kept planes"
