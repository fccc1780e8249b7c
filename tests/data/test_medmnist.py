"""MedMNIST ``.npz``: import-medmnist writes a manifest that keeps the official splits and points into
the file; curate, inspect and training read it like any scan."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from medtl.data.curate import curate
from medtl.data.datasets import load_data
from medtl.data.medmnist import import_medmnist, read_medmnist
from medtl.config import DataConfig
from medtl.errors import DataError
from medtl.privacy import hash_id
from tests.conftest import shared_path


def _npz(path, n=(6, 3, 3), shape=(28, 28), labels_per_image=1, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 255, (k, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 3, (k, labels_per_image))
    np.savez(path, **arrays)
    return arrays


def test_import_keeps_official_splits_and_one_pseudo_patient_per_image(tmp_path) -> None:
    arrays = _npz(tmp_path / "tinymnist.npz")
    manifest = import_medmnist(tmp_path / "tinymnist.npz", tmp_path / "imported")
    df = pd.read_csv(manifest, dtype=str)
    assert list(df["split"]) == ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    assert list(df["path"][:2]) == ["../tinymnist.npz#train/0", "../tinymnist.npz#train/1"]
    assert list(df["label"]) == [str(int(v)) for s in ("train", "val", "test") for v in arrays[f"{s}_labels"][:, 0]]
    assert df["patient_id"].is_unique and df["patient_id"][0] == "tinymnist-train-0"
    result = curate(manifest, tmp_path / "curated")
    assert len(result.manifest) == 12 and list(result.manifest["split"]) == list(df["split"]), "official splits kept"
    assert "splits: as given in the manifest" in result.report
    assert result.manifest["patient_id"].iloc[0] == hash_id("tinymnist-train-0")


def test_refuses_what_medtl_cannot_train_on(tmp_path) -> None:
    _npz(tmp_path / "multi.npz", labels_per_image=14)
    with pytest.raises(DataError, match="multi-label MedMNIST"):
        read_medmnist(tmp_path / "multi.npz")
    _npz(tmp_path / "vol.npz", shape=(28, 28, 28))
    with pytest.raises(DataError, match="3D MedMNIST is not supported"):
        read_medmnist(tmp_path / "vol.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="not a MedMNIST npz"):
        read_medmnist(tmp_path / "other.npz")


def test_real_breastmnist_through_the_commands(tmp_path) -> None:
    npz = shared_path("medmnist", "breastmnist.npz")
    p = subprocess.run([sys.executable, "-m", "medtl", "import-medmnist", str(npz), "--out", str(tmp_path), "--limit", "5"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(tmp_path / "manifest.csv")
    assert len(df) == 15 and set(df["label"]) <= {0, 1}
    ref = f"{npz}#test/4"
    p = subprocess.run([sys.executable, "-m", "medtl", "inspect", "--json", ref], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["raw_shape"] == [28, 28] and r["input_shape"] == [3, 224, 224] and "8-bit" in " ".join(r["preprocessing"])
    with np.load(npz) as z:  # the training path (data.npz) reads the same images
        bundle = load_data(DataConfig(npz=npz))
        assert np.array_equal(bundle.splits["test"][4]["image"], z["test_images"][4])
        assert len(bundle.splits["train"]) == len(z["train_images"]) == 546


def test_import_writes_the_path_as_given_not_its_symlink_target(tmp_path) -> None:
    """A linked data folder (shared storage, a mounted volume) stays the path the user gave."""
    (tmp_path / "store").mkdir()
    _npz(tmp_path / "store" / "tinymnist.npz")
    (tmp_path / "data").symlink_to(tmp_path / "store")
    manifest = import_medmnist(tmp_path / "data" / "tinymnist.npz", tmp_path / "imported")
    df = pd.read_csv(manifest, dtype=str)
    assert df["path"][0] == "../data/tinymnist.npz#train/0"
