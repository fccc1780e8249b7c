"""Slice geometry of real series: a plane across an anisotropic volume keeps its physical shape;
a series rewritten with a gantry tilt or with missing slices is found, reported and resampled
onto the grid its written geometry says (checked against that geometry, not against the code)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medtl.config import PreprocessConfig
from medtl.data.readers import read_scan
from medtl.data.transforms import prepare_scan
from medtl.models.registry import InputSpec
from tests.conftest import shared_path

SPEC = InputSpec(64, 3, (0.0,) * 3, (1.0,) * 3, "bilinear", "test")


def _series() -> list[Path]:
    return sorted(shared_path("dicom", "series", "mr_brain_t1_sag_siemens").glob("*.dcm"))


def _sorted_slices(files: list[Path]) -> list[pydicom.Dataset]:
    slices = [pydicom.dcmread(f) for f in files]
    iop = np.asarray(slices[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(slices, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))


def test_an_axial_plane_of_a_sagittal_mr_keeps_its_physical_shape() -> None:
    """35 sagittal slices 4.8 mm apart, 256 x 1.016 mm in plane: the axial plane is 256 x 168 mm."""
    prep = prepare_scan(_series()[0].parent, SPEC, PreprocessConfig(slice_axis="axial", intensity="fixed"), raw_plane=True)
    step = next(s for s in prep.steps if s.startswith("square pixels"))
    assert "256x35 plane" in step and "256x165" in step
    rows, cols = prep.raw_plane.shape[-2:]  # the raw plane (preview) is at physical shape too
    assert (rows, cols) == (256, 165)
    assert abs(cols / rows - (35 * 4.8) / (256 * 1.015625)) < 0.01  # aspect of the physical extent
    assert any("pad: 256x165" in s for s in prep.steps)
    # the sagittal plane (the acquired one) is already square: nothing resampled
    prep = prepare_scan(_series()[0].parent, SPEC, PreprocessConfig(slice_axis="sagittal", intensity="fixed"))
    assert not any(s.startswith("square pixels") for s in prep.steps)


def test_a_tilted_series_is_corrected_to_the_geometry_written(tmp_path) -> None:
    """Each slice's position moved one row spacing along the column direction per slice: a tilt of
    atan(1.0156 / 4.8); after the correction slice k equals the original slice k moved k rows."""
    slices = _sorted_slices(_series())
    row_sp = float(slices[0].PixelSpacing[0])
    col_dir = np.asarray(slices[0].ImageOrientationPatient[3:], float)
    folder = tmp_path / "tilted"
    folder.mkdir()
    for k, ds in enumerate(slices):
        ds.ImagePositionPatient = [float(v) for v in np.asarray(ds.ImagePositionPatient, float) + k * row_sp * col_dir]
        ds.GantryDetectorTilt = 11.9
        ds.save_as(folder / f"{k:03d}.dcm")
    img, info = read_scan(folder)
    orig, _ = read_scan(_series()[0].parent)
    want_tilt = math.degrees(math.atan(row_sp / 4.8))
    assert info.tilt_deg == pytest.approx(want_tilt, abs=0.01)
    assert any("gantry tilt 11.95°" in s and "GantryDetectorTilt 11.9°" in s for s in info.applied)
    assert info.spacing[0] == pytest.approx(4.8, abs=1e-3)  # the gap along the normal, not along the tilted path
    affine = np.asarray(img.affine)[:3, :3]
    assert np.linalg.norm(affine[:, 2]) == pytest.approx(info.spacing[0], abs=1e-3)  # affine and spacing agree
    normal = np.cross(*np.asarray(slices[0].ImageOrientationPatient, float).reshape(2, 3))
    assert abs(abs(np.dot(affine[:, 2] / np.linalg.norm(affine[:, 2]), normal * [-1, -1, 1]))) == pytest.approx(1, abs=1e-6)
    got, ref = np.asarray(img[0]), np.asarray(orig[0])  # MONAI layout (cols, rows, slices)
    for k in (1, 17, 34):
        assert np.allclose(got[:, k:, k], ref[:, :-k, k])  # slice k moved down k rows, exactly
    assert np.allclose(got[..., 0], ref[..., 0])


def test_missing_slices_are_found_and_interpolated_onto_an_even_grid(tmp_path) -> None:
    files = _series()
    slices = _sorted_slices(files)
    folder = tmp_path / "gappy"
    folder.mkdir()
    keep = [k for k in range(len(slices)) if k not in (10, 20, 21)]
    for k in keep:
        slices[k].save_as(folder / f"{k:03d}.dcm")
    img, info = read_scan(folder)
    orig, _ = read_scan(files[0].parent)
    assert info.slice_gaps == pytest.approx((4.8, 14.4), abs=1e-3)
    assert info.raw_shape[0] == 35 and info.spacing[0] == pytest.approx(4.8, abs=1e-3)
    assert any("uneven slice gaps 4.8..14.4 mm: 32 slices resampled to 35" in s for s in info.applied)
    assert np.linalg.norm(np.asarray(img.affine)[:3, 2]) == pytest.approx(4.8, abs=1e-3)
    got, ref = np.asarray(img[0]), np.asarray(orig[0])
    assert np.allclose(got[..., 10], (ref[..., 9] + ref[..., 11]) / 2, atol=1e-3)  # the midpoint of its neighbours
    assert np.allclose(got[..., 20], ref[..., 19] * 2 / 3 + ref[..., 22] / 3, atol=1e-3)
    assert np.allclose(got[..., 30], ref[..., 30], atol=0.01)  # kept slices unchanged (positions agree to 1e-5 mm)
    # an even series reports its gaps and is left alone
    _, even = read_scan(files[0].parent)
    assert even.tilt_deg == 0 and even.slice_gaps == pytest.approx((4.8, 4.8), abs=1e-3) and not even.applied


def test_curate_reports_the_corrected_geometry(tmp_path) -> None:
    import pandas as pd

    from medtl.data.curate import curate

    files = _series()
    slices = _sorted_slices(files)
    rows = []
    for n in range(3):
        folder = tmp_path / f"s{n}"
        folder.mkdir()
        for k, ds in enumerate(slices):
            if n == 0 and k == 10:
                continue  # one series with a missing slice
            ds.save_as(folder / f"{k:03d}.dcm")
        rows.append({"path": str(folder), "label": "ab"[n % 2], "patient_id": f"P{n}", "split": ("train", "val", "test")[n]})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    r = curate(tmp_path / "m.csv", tmp_path / "out")
    assert list(r.geometry) == [str(tmp_path / "s0")]
    assert "s0: uneven slice gaps 4.8..9.6 mm" in (tmp_path / "out" / "report.md").read_text()
