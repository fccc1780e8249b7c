"""Fixtures the data tests share: a small synthetic CT slice and an input spec for tiny inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medtl.data.synthetic import write_ct_dicom
from medtl.models.registry import InputSpec


@pytest.fixture()
def ct_slice(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 48x64 CT slice whose HU ramp along both axes (so orientation and values show), and the HU."""
    yy, xx = np.mgrid[0:48, 0:64]
    hu = (xx * 30 - 900 + yy * 5).astype(float)
    return write_ct_dicom(tmp_path / "ct.dcm", hu, 0.6, "P", "N^M"), hu


@pytest.fixture()
def spec64() -> InputSpec:
    """A 64 px, 3-channel input with mean 0 and std 1, so the input shows the [0, 1] plane itself."""
    return InputSpec(64, 3, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear", "test")
