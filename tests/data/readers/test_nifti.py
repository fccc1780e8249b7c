"""NIfTI through MONAI's NibabelReader: 3D and 4D, plain and gzipped, spacing and orientation."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medtl.config import PreprocessConfig, WindowConfig
from medtl.data.readers import read_scan
from medtl.data.transforms import prepare_scan


def test_nifti_3d_and_4d_plain_and_gzipped(tmp_path, spec64) -> None:
    vol = np.random.default_rng(0).normal(size=(20, 16, 12)).astype(np.float32)
    for name in ("v.nii", "v.nii.gz"):
        nib.save(nib.Nifti1Image(vol, np.diag([0.5, 0.6, 2.0, 1.0])), tmp_path / name)
        raw, info = read_scan(tmp_path / name)
        assert info.raw_shape == (20, 16, 12) and info.raw_axes == ("i", "j", "k") and info.volume
        assert info.spacing == (0.5, 0.6, 2.0) and info.orientation == "RAS"
        assert np.allclose(raw.numpy()[0], vol)
    series = np.stack([np.full((16, 16, 8), 10.0 * t) for t in range(3)], axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(series, np.eye(4)), tmp_path / "t.nii.gz")
    raw, info = read_scan(tmp_path / "t.nii.gz")
    assert info.raw_shape == (16, 16, 8, 3) and info.raw_axes == ("i", "j", "k", "t") and info.frames == 3
    pp = PreprocessConfig(intensity="window", assume_modality="CT", window=WindowConfig(level=10, width=40), volume_index=2)
    prep = prepare_scan(tmp_path / "t.nii.gz", spec64, pp)
    assert float(prep.image.mean()) == pytest.approx((20 - (10 - 20)) / 40)  # volume 2 holds 20 HU
    assert any(s.startswith("volume: 2 of 3") for s in prep.steps)
