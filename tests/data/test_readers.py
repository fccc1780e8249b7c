"""Reading through MONAI's LoadImage: series order, compressed syntaxes, NIfTI, images, MedMNIST refs,
intensity rules. Synthetic files written by the test (the real ones are in test_real_files.py)."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless, generate_uid

from medtl.config import PreprocessConfig, WindowConfig
from medtl.data.intensity import WINDOWS, ScanIntensity
from medtl.data.readers import read_scan
from medtl.data.synthetic import write_ct_dicom, write_ct_series
from medtl.data.transforms import prepare_scan
from medtl.errors import ScanError
from medtl.models.registry import InputSpec

SPEC = InputSpec(64, 3, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear", "test")


def _layered(n: int, side: int = 24) -> np.ndarray:
    """Slice z holds the constant z * 100 HU, so order is visible in the values."""
    return np.stack([np.full((side, side), 100.0 * z) for z in range(n)])


def test_series_is_sorted_by_position_not_by_file_name(tmp_path) -> None:
    folder = write_ct_series(tmp_path / "s", _layered(6), 0.7, 2.5, "P", "N^M", rng=np.random.default_rng(3))
    names = sorted(p.name for p in folder.iterdir())
    z_by_name = [float(pydicom.dcmread(folder / n).ImagePositionPatient[2]) for n in names]
    assert z_by_name != sorted(z_by_name), "the fixture's file names are out of slice order"
    raw, info = read_scan(folder)
    assert info.kind == "dicom-series" and info.raw_shape == (6, 24, 24) and info.raw_axes == ("slices", "rows", "columns")
    assert [float(raw[0, :, :, k].mean()) for k in range(6)] == pytest.approx([100.0 * z for z in range(6)])
    assert info.spacing == (2.5, 0.7, 0.7)


def test_position_wins_over_instance_number(tmp_path) -> None:
    folder, uid = tmp_path / "rev", generate_uid()
    vol = _layered(4)
    for z in range(4):  # InstanceNumber counts down while the position goes up
        write_ct_dicom(folder / f"{z}.dcm", vol[z], 0.7, "P", "N^M", series_uid=uid, instance=4 - z, z_mm=3.0 * z)
    raw, _ = read_scan(folder)
    assert [float(raw[0, :, :, k].mean()) for k in range(4)] == pytest.approx([0, 100, 200, 300])


def test_series_folder_skips_notes_and_reads_one_series(tmp_path) -> None:
    folder = write_ct_series(tmp_path / "s", _layered(3), 0.7, 2.0, "P", "N^M")
    (folder / "README").write_text("exported by PACS\n")
    raw, info = read_scan(folder)
    assert info.raw_shape == (3, 24, 24)


def _ct_slice(tmp_path, name: str = "ct.dcm") -> tuple[pydicom.Dataset, np.ndarray]:
    yy, xx = np.mgrid[0:48, 0:64]
    hu = (xx * 30 - 900 + yy * 5).astype(float)
    path = write_ct_dicom(tmp_path / name, hu, 0.6, "P", "N^M")
    return pydicom.dcmread(path), hu


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_lossless_compressed_ct_decodes_to_the_same_hu(tmp_path, syntax) -> None:
    ds, hu = _ct_slice(tmp_path)
    ds.compress(syntax)  # encoded by pydicom's own RLE / the pylibjpeg-openjpeg plugin
    path = tmp_path / "compressed.dcm"
    ds.save_as(path)
    raw, info = read_scan(path)
    assert info.transfer_syntax.startswith(syntax.name) and info.in_hu
    assert np.array_equal(raw.numpy()[0].T, np.round(hu))


def test_jpeg_baseline_decodes(tmp_path) -> None:
    """An 8-bit JPEG baseline frame (encoded by Pillow), as ultrasound and secondary captures carry it."""
    yy, xx = np.mgrid[0:48, 0:64]
    img = ((xx * 4 + yy) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    ds, _ = _ct_slice(tmp_path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Modality, ds.Rows, ds.Columns = "OT", 48, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for kw in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        delattr(ds, kw)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpeg.dcm")
    raw, info = read_scan(tmp_path / "jpeg.dcm")
    assert info.transfer_syntax.startswith("JPEG Baseline") and info.bits == 8
    assert np.abs(raw.numpy()[0].T - img).mean() < 3.0  # lossy, but the same picture


def test_nifti_3d_and_4d_plain_and_gzipped(tmp_path) -> None:
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
    prep = prepare_scan(tmp_path / "t.nii.gz", SPEC, pp)
    assert float(prep.image.mean()) == pytest.approx((20 - (10 - 20)) / 40)  # volume 2 holds 20 HU
    assert any(s.startswith("volume: 2 of 3") for s in prep.steps)


def test_images_keep_their_rows_and_columns(tmp_path) -> None:
    grey = np.zeros((40, 60), np.uint8)
    grey[:10, :10] = 255  # top-left block
    Image.fromarray(grey).save(tmp_path / "g.png")
    rgb = np.zeros((30, 20, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    Image.fromarray(np.dstack([rgb, np.full((30, 20), 255, np.uint8)])).save(tmp_path / "a.png")
    _, info = read_scan(tmp_path / "g.png")
    assert (info.raw_shape, info.raw_axes, info.bits) == ((40, 60), ("rows", "columns"), 8)
    prep = prepare_scan(tmp_path / "g.png", SPEC, PreprocessConfig())
    x = prep.image[0]  # 60x60 after padding rows 10 above and below, then 64x64
    assert float(x[12:18, 2:8].mean()) > 0.9 and float(x[12:18, 56:62].mean()) < 0.1, "top-left stays top-left"
    for name in ("c.jpg", "a.png"):
        raw, info = read_scan(tmp_path / name)
        assert info.color and info.raw_axes == ("rows", "columns", "channels") and info.raw_shape[:2] == (30, 20)
        img = prepare_scan(tmp_path / name, SPEC, PreprocessConfig()).image
        assert img.shape == (3, 64, 64) and float(img[0].max()) > 0.7 and float(img[2].max()) < 0.1


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


@pytest.mark.parametrize("window", [*WINDOWS, "custom"])
def test_ct_windows_map_hu_exactly(tmp_path, window) -> None:
    ds, _ = _ct_slice(tmp_path)
    raw, info = read_scan(ds.filename)
    w = WindowConfig(level=-50, width=300) if window == "custom" else window
    level, width = (-50.0, 300.0) if window == "custom" else WINDOWS[window]
    t = ScanIntensity(PreprocessConfig(window=w))
    hu = torch.tensor([[[level - width / 2 - 1, level - width / 2, level, level + width / 2, level + width / 2 + 5]]])
    assert t(hu, info).flatten().tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0], abs=1e-6)
    assert t.describe(info).startswith(f"intensity: CT window {window if window != 'custom' else 'custom'} (level {level:g}, width {width:g} HU)")


def test_window_refuses_what_is_not_hounsfield(tmp_path) -> None:
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(ScanError, match="needs CT in Hounsfield units"):
        prepare_scan(tmp_path / "x.png", SPEC, PreprocessConfig(intensity="window"))


def test_nonfinite_is_filled_only_when_asked(tmp_path) -> None:
    vol = np.full((16, 16, 4), 5.0, np.float32)
    vol[2, 2, 2] = np.nan
    vol[3, 3, 3] = -np.inf
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "n.nii.gz")
    with pytest.raises(ScanError, match="2 non-finite voxel"):
        prepare_scan(tmp_path / "n.nii.gz", SPEC, PreprocessConfig())
    prep = prepare_scan(tmp_path / "n.nii.gz", SPEC, PreprocessConfig(nonfinite="fill"))
    assert torch.isfinite(prep.image).all()
    assert "non-finite: 2 voxel(s) filled with the lowest finite value" in prep.steps
