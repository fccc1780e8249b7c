"""Plain pictures (PIL) and arrays (.npy, MedMNIST .npz references)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medtl.config import PreprocessConfig
from medtl.data.readers import read_scan
from medtl.data.transforms import prepare_scan
from medtl.errors import ScanError


def test_images_keep_their_rows_and_columns(tmp_path, spec64) -> None:
    grey = np.zeros((40, 60), np.uint8)
    grey[:10, :10] = 255  # top-left block
    Image.fromarray(grey).save(tmp_path / "g.png")
    rgb = np.zeros((30, 20, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    Image.fromarray(np.dstack([rgb, np.full((30, 20), 255, np.uint8)])).save(tmp_path / "a.png")
    _, info = read_scan(tmp_path / "g.png")
    assert (info.raw_shape, info.raw_axes, info.bits) == ((40, 60), ("rows", "columns"), 8)
    prep = prepare_scan(tmp_path / "g.png", spec64, PreprocessConfig())
    x = prep.image[0]  # 60x60 after padding rows 10 above and below, then 64x64
    assert float(x[12:18, 2:8].mean()) > 0.9 and float(x[12:18, 56:62].mean()) < 0.1, "top-left stays top-left"
    for name in ("c.jpg", "a.png"):
        raw, info = read_scan(tmp_path / name)
        assert info.color and info.raw_axes == ("rows", "columns", "channels") and info.raw_shape[:2] == (30, 20)
        img = prepare_scan(tmp_path / name, spec64, PreprocessConfig()).image
        assert img.shape == (3, 64, 64) and float(img[0].max()) > 0.7 and float(img[2].max()) < 0.1


def test_npy_keeps_its_rows_and_columns(tmp_path) -> None:
    a = np.arange(12 * 20, dtype=np.float32).reshape(12, 20)
    np.save(tmp_path / "a.npy", a)
    raw, info = read_scan(tmp_path / "a.npy")
    assert (info.kind, info.raw_shape, info.raw_axes, info.bits) == ("array", (12, 20), ("rows", "columns"), None)
    assert np.array_equal(raw.numpy()[0].T, a)


def test_medmnist_npz_reference(tmp_path) -> None:
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 255, (5, 28, 28), dtype=np.uint8) for s in ("train", "val", "test")}
    arrays |= {f"{s}_labels": rng.integers(0, 2, (5, 1)) for s in ("train", "val", "test")}
    np.savez(tmp_path / "tiny.npz", **arrays)
    raw, info = read_scan(f"{tmp_path / 'tiny.npz'}#val/3")
    assert info.raw_shape == (28, 28) and info.bits == 8
    assert np.array_equal(raw.numpy()[0].T, arrays["val_images"][3])
    with pytest.raises(ScanError, match="index 9 outside the 5 test images"):
        read_scan(f"{tmp_path / 'tiny.npz'}#test/9")
    with pytest.raises(ScanError, match=r"name one as FILE.npz#SPLIT/INDEX"):
        read_scan(tmp_path / "tiny.npz")
    with pytest.raises(ScanError, match=r"missing.npz#test/0: file not found"):
        read_scan(f"{tmp_path / 'missing.npz'}#test/0")
