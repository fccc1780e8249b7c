"""Caching after the deterministic transforms, and worker processes where they have work to do."""

from __future__ import annotations

import os

import numpy as np
import torch
from monai.data import CacheDataset, PersistentDataset

from medtl.config import PreprocessConfig
from medtl.data.datasets import fully_cached, image_dataset, loader, resolve_workers
from medtl.data.synthetic import write_ct_dicom
from medtl.data.augment import build_augmentations
from medtl.data.transforms import scan_transforms
from medtl.models.registry import InputSpec

SPEC = InputSpec(32, 3, (0.5,) * 3, (0.25,) * 3, "bilinear", "test")


def _items(tmp_path, n=6):
    rng = np.random.default_rng(0)
    return [{"image": str(write_ct_dicom(tmp_path / f"{i}.dcm", rng.normal(0, 300, (40, 40)), 0.7, "x", "y")),
             "label": i % 2, "patient": f"p-{i}", "domain": "a", "path": f"{i}.dcm"} for i in range(n)]


def test_auto_workers_leave_a_core_for_training() -> None:
    assert resolve_workers("auto") == min(4, max(0, (os.cpu_count() or 1) - 1))
    assert resolve_workers(3) == 3


def test_memory_cache_holds_final_tensors_and_skips_workers(tmp_path) -> None:
    items = _items(tmp_path)
    plain = image_dataset(items, scan_transforms(SPEC, PreprocessConfig()), cache="memory")
    assert isinstance(plain, CacheDataset) and fully_cached(plain)
    assert loader(plain, 2, shuffle=False, num_workers=2).num_workers == 0, "nothing left to compute per item"
    aug = scan_transforms(SPEC, PreprocessConfig(), augment=build_augmentations([{"name": "RandFlipd", "prob": 0.5}]))
    augmented = image_dataset(items, aug, cache="memory")
    assert not fully_cached(augmented)
    assert loader(augmented, 2, shuffle=True, num_workers=2).num_workers == 2


def test_disk_cache_in_worker_processes_gives_the_same_batches(tmp_path) -> None:
    items = _items(tmp_path)
    tf = scan_transforms(SPEC, PreprocessConfig())
    ds = image_dataset(items, tf, cache="disk", cache_dir=tmp_path / "cache")
    assert isinstance(ds, PersistentDataset)
    with_workers = [b["image"] for b in loader(ds, 2, shuffle=False, num_workers=2)]  # fills the cache
    assert len(list((tmp_path / "cache").glob("*.pt"))) == len(items)
    serial = [b["image"] for b in loader(ds, 2, shuffle=False, num_workers=0)]  # read back from disk
    assert all(torch.equal(a, b) for a, b in zip(with_workers, serial))
    assert with_workers[0].shape == (2, 3, 32, 32)


def test_augmented_epochs_are_reproducible_with_workers(tmp_path) -> None:
    items = _items(tmp_path)
    aug = build_augmentations([{"name": "RandGaussianNoised", "prob": 1.0, "std": 0.5}])
    ds = image_dataset(items, scan_transforms(SPEC, PreprocessConfig(), augment=aug), cache="memory")

    def epoch(seed: int) -> torch.Tensor:
        return torch.cat([b["image"] for b in loader(ds, 3, shuffle=True, num_workers=2, seed=seed)])

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_memory_cache_does_not_drift_when_an_augmentation_does_not_fire(tmp_path) -> None:
    """A random transform that skips hands on the cached tensor; normalisation must not write into it."""
    items = _items(tmp_path, n=2)
    aug = build_augmentations([{"name": "RandFlipd", "prob": 0.0, "spatial_axis": 1}])
    ds = image_dataset(items, scan_transforms(SPEC, PreprocessConfig(), augment=aug), cache="memory")
    first = ds[0]["image"].clone()
    assert torch.equal(ds[0]["image"], first) and torch.equal(ds[0]["image"], first)
