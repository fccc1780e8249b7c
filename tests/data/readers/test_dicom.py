"""DICOM through MONAI's LoadImage: series order, compressed syntaxes. Synthetic files written by the
test (the real ones are in test_real_files.py)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless, generate_uid

from medtl.data.readers import read_scan
from medtl.data.synthetic import write_ct_dicom, write_ct_series


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


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_lossless_compressed_ct_decodes_to_the_same_hu(tmp_path, ct_slice, syntax) -> None:
    path, hu = ct_slice
    ds = pydicom.dcmread(path)
    ds.compress(syntax)  # encoded by pydicom's own RLE / the pylibjpeg-openjpeg plugin
    ds.save_as(tmp_path / "compressed.dcm")
    raw, info = read_scan(tmp_path / "compressed.dcm")
    assert info.transfer_syntax.startswith(syntax.name) and info.in_hu
    assert np.array_equal(raw.numpy()[0].T, np.round(hu))


def test_jpeg_baseline_decodes(tmp_path, ct_slice) -> None:
    """An 8-bit JPEG baseline frame (encoded by Pillow), as ultrasound and secondary captures carry it."""
    yy, xx = np.mgrid[0:48, 0:64]
    img = ((xx * 4 + yy) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    ds = pydicom.dcmread(ct_slice[0])
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
