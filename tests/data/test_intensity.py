"""Intensity rules: CT windows in HU, refusal of what is not HU, non-finite voxels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medtl.config import PreprocessConfig, WindowConfig
from medtl.data.intensity import WINDOWS, ScanIntensity
from medtl.data.readers import read_scan
from medtl.data.transforms import prepare_scan
from medtl.errors import ScanError


@pytest.mark.parametrize("window", [*WINDOWS, "custom"])
def test_ct_windows_map_hu_exactly(ct_slice, window) -> None:
    raw, info = read_scan(ct_slice[0])
    w = WindowConfig(level=-50, width=300) if window == "custom" else window
    level, width = (-50.0, 300.0) if window == "custom" else WINDOWS[window]
    t = ScanIntensity(PreprocessConfig(window=w))
    hu = torch.tensor([[[level - width / 2 - 1, level - width / 2, level, level + width / 2, level + width / 2 + 5]]])
    assert t(hu, info).flatten().tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0], abs=1e-6)
    assert t.describe(info).startswith(f"intensity: CT window {window if window != 'custom' else 'custom'} (level {level:g}, width {width:g} HU)")


def test_window_refuses_what_is_not_hounsfield(tmp_path, spec64) -> None:
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(ScanError, match="needs CT in Hounsfield units"):
        prepare_scan(tmp_path / "x.png", spec64, PreprocessConfig(intensity="window"))


def test_nonfinite_is_filled_only_when_asked(tmp_path, spec64) -> None:
    vol = np.full((16, 16, 4), 5.0, np.float32)
    vol[2, 2, 2] = np.nan
    vol[3, 3, 3] = -np.inf
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "n.nii.gz")
    with pytest.raises(ScanError, match="2 non-finite voxel"):
        prepare_scan(tmp_path / "n.nii.gz", spec64, PreprocessConfig())
    prep = prepare_scan(tmp_path / "n.nii.gz", spec64, PreprocessConfig(nonfinite="fill"))
    assert torch.isfinite(prep.image).all()
    assert "non-finite: 2 voxel(s) filled with the lowest finite value" in prep.steps


def test_map_batch_maps_each_image_as_its_scan() -> None:
    """The batch form of the percentile rule gives each image the map ``plan``/``apply`` gives it alone."""
    from medtl.data.readers import array_scan

    rng = np.random.default_rng(0)
    images = rng.normal(100, 40, (5, 12, 9)).astype(np.float32)
    images[1] = 3.0  # constant: all 0
    images[2] = 0.0
    images[2, 0, 0] = 1.0  # equal percentiles, min < max: min..max
    for pp in (PreprocessConfig(), PreprocessConfig(assume_modality="CT", window="lung", intensity="window")):
        t = ScanIntensity(pp)
        _, info = array_scan(images[0])
        got = t.map_batch(torch.from_numpy(images).unsqueeze(1), info)
        for i, a in enumerate(images):
            raw, one = array_scan(a)
            want = t(raw, one)[0].T
            assert torch.allclose(torch.as_tensor(got[i, 0]), torch.as_tensor(want), atol=1e-6), (pp.intensity, i)
