"""Every real file in ../shared/data/dicom and ../shared/data/nifti goes through ``medtl inspect --json``
and comes out with the backbone's input shape; modality, kind and shape are pinned per file (in the
file's own axis order), and CT is checked to be in Hounsfield units."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from medtl.data.readers import read_scan
from medtl.models.registry import get_backbone
from tests.conftest import SHARED_DATA, shared_path

# file -> (kind, modality, raw_shape, raw_axes, orientation); shapes and modalities agree with
# ../shared/data/MANIFEST.md (rows x columns as DICOM Rows/Columns, frames first as pydicom has them)
EXPECTED: dict[str, tuple[str, str | None, list[int], list[str], str | None]] = {
    "dicom/single/693_J2KR.dcm": ("dicom", "CT", [512, 512], ["rows", "columns"], "PL"),
    "dicom/single/693_UNCR.dcm": ("dicom", "CT", [512, 512], ["rows", "columns"], "PL"),
    "dicom/single/CT_small.dcm": ("dicom", "CT", [128, 128], ["rows", "columns"], "PL"),
    "dicom/single/JPEG-LL.dcm": ("dicom", "NM", [1024, 256], ["rows", "columns"], None),
    "dicom/single/JPGExtended.dcm": ("dicom", "NM", [1024, 256], ["rows", "columns"], None),
    "dicom/single/MR_small.dcm": ("dicom", "MR", [64, 64], ["rows", "columns"], "PL"),
    "dicom/single/MR_small_RLE.dcm": ("dicom", "MR", [64, 64], ["rows", "columns"], "PL"),
    "dicom/single/MR_small_bigendian.dcm": ("dicom", "MR", [64, 64], ["rows", "columns"], "PL"),
    "dicom/single/MR_small_implicit.dcm": ("dicom", "MR", [64, 64], ["rows", "columns"], "PL"),
    "dicom/single/MR_small_jp2klossless.dcm": ("dicom", "MR", [64, 64], ["rows", "columns"], "PL"),
    "dicom/single/MR_small_jpeg_ls_lossless.dcm": ("dicom", "MR", [64, 64], ["rows", "columns"], "PL"),
    "dicom/single/RG1_J2KR.dcm": ("dicom", "CR", [1955, 1841], ["rows", "columns"], None),
    "dicom/single/US1_J2KR.dcm": ("dicom", "US", [480, 640, 3], ["rows", "columns", "samples"], None),
    "dicom/single/eCT_Supplemental.dcm": ("dicom-multiframe", "CT", [2, 512, 512], ["frames", "rows", "columns"], "IPR"),
    "dicom/single/emri_small.dcm": ("dicom-multiframe", "MR", [10, 64, 64], ["frames", "rows", "columns"], None),
    "dicom/single/emri_small_RLE.dcm": ("dicom-multiframe", "MR", [10, 64, 64], ["frames", "rows", "columns"], None),
    "dicom/single/image_dfl.dcm": ("dicom", "OT", [512, 512], ["rows", "columns"], None),
    "dicom/series/mr_brain_t1_sag_siemens": ("dicom-series", "MR", [35, 256, 256], ["slices", "rows", "columns"], "RIP"),
    "nifti/anatomical.nii": ("nifti", None, [33, 41, 25], ["i", "j", "k"], "LAS"),
    "nifti/example4d.nii.gz": ("nifti", None, [128, 96, 24, 2], ["i", "j", "k", "t"], "LAS"),
    "nifti/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz": ("nifti", None, [197, 233, 189], ["i", "j", "k"], "RAS"),
}
CT_FILES = [k for k, v in EXPECTED.items() if v[1] == "CT"]


def _on_disk() -> list[str]:
    found = [f"dicom/single/{p.name}" for p in sorted((SHARED_DATA / "dicom" / "single").glob("*"))]
    found += [f"dicom/series/{p.name}" for p in sorted((SHARED_DATA / "dicom" / "series").glob("*"))]
    return found + [f"nifti/{p.name}" for p in sorted((SHARED_DATA / "nifti").glob("*"))]


@pytest.fixture(scope="module")
def inspected() -> dict[str, dict]:
    shared_path("dicom")
    files = _on_disk()
    p = subprocess.run([sys.executable, "-m", "medtl", "inspect", "--json", *[str(SHARED_DATA / f) for f in files]],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    return {f: r for f, r in zip(files, json.loads(p.stdout))}


def test_every_shared_file_is_pinned(inspected) -> None:
    assert sorted(inspected) == sorted(EXPECTED), "a new file in ../shared/data needs its expected reading here"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_file_reads_as_pinned_and_becomes_the_backbone_input(inspected, name: str) -> None:
    r = inspected[name]
    kind, modality, shape, axes, orientation = EXPECTED[name]
    assert (r["kind"], r["modality"], r["raw_shape"], r["raw_axes"], r["orientation"]) == (kind, modality, shape, axes, orientation)
    spec = get_backbone("efficientnet_lite0").weights.input_spec()
    assert r["input_shape"] == [spec.channels, spec.size, spec.size] and r["dtype"] == "float32"
    assert r["spec"]["mean"] == list(spec.mean) and r["spec"]["std"] == list(spec.std)
    assert r["in_hu"] == (modality == "CT")
    assert r["value_units"] == ("HU" if modality == "CT" else "stored values")
    assert np.isfinite(r["input_mean"]) and r["input_std"] > 0.05, "a real picture, not a blank"
    assert len(r["spacing"] or axes) == len(axes)


def _stored_to_hu(ds: pydicom.Dataset) -> np.ndarray:
    """HU by the DICOM definition (stored * slope + intercept), written out here, not medtl's code."""
    if "RescaleSlope" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    else:  # enhanced CT: the pixel value transformation of the functional groups
        item = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        slope, intercept = float(item.RescaleSlope), float(item.RescaleIntercept)
    return ds.pixel_array.astype(np.float64) * slope + intercept


@pytest.mark.parametrize("name", CT_FILES)
def test_ct_values_are_hounsfield_units(inspected, name: str) -> None:
    path = shared_path(*name.split("/"))
    raw, info = read_scan(path)
    expected = _stored_to_hu(pydicom.dcmread(path))
    got = raw.numpy()[0]
    assert info.in_hu
    # MONAI's (x=columns, y=rows[, frames]) is the transpose of pydicom's ([frames,] rows, columns);
    # eCT's two frames come sorted along the slice normal, which reverses their stored order
    assert np.array_equal(got.T, expected) or np.array_equal(got.T, expected[::-1])
    assert inspected[name]["value_range"] == [float(expected.min()), float(expected.max())]
    body = expected[expected > -2000]  # outside the reconstruction circle some scanners store -3024
    assert (body < -700).mean() > 0.1, "a head CT holds air around it (about -1000 HU; -850 in the downsized CT_small)"
    assert ((body > -100) & (body < 100)).mean() > 0.2, "and brain and soft tissue near 0..100 HU"


def test_compressed_and_uncompressed_copies_decode_to_the_same_pixels(inspected) -> None:
    """The MR_small encodings (RLE, JPEG 2000, JPEG-LS, big endian, implicit) and 693 (J2K) are identical."""
    for group in (["MR_small", "MR_small_RLE", "MR_small_bigendian", "MR_small_implicit", "MR_small_jp2klossless",
                   "MR_small_jpeg_ls_lossless"], ["693_UNCR", "693_J2KR"], ["emri_small", "emri_small_RLE"]):
        arrays = [read_scan(shared_path("dicom", "single", f"{g}.dcm"))[0].numpy() for g in group]
        for g, a in zip(group[1:], arrays[1:]):
            assert np.array_equal(arrays[0], a), g


def test_series_spacing_comes_from_slice_positions(inspected) -> None:
    r = inspected["dicom/series/mr_brain_t1_sag_siemens"]
    assert r["spacing"] == [4.8, 1.0156, 1.0156]  # MANIFEST: 4.8 mm uniform spacing, 1.016 mm pixels
    ect = inspected["dicom/single/eCT_Supplemental.dcm"]
    assert ect["spacing"] == [10.0, 0.3887, 0.3887], "enhanced CT: PixelMeasuresSequence and plane positions"


def test_monochrome1_is_inverted_so_dense_is_bright() -> None:
    """RG1 (CR, MONOCHROME1): low stored values are dense (bright on a film), so the input inverts them."""
    from medtl.config import PreprocessConfig
    from medtl.data.transforms import prepare_scan

    spec = get_backbone("efficientnet_lite0").weights.input_spec().with_size(64)
    prep = prepare_scan(shared_path("dicom", "single", "RG1_J2KR.dcm"), spec, PreprocessConfig(), raw_plane=True)
    raw = prep.raw_plane.numpy()[0]  # (rows, cols) as stored; padding goes to the columns
    n = raw.shape[0]
    raw_rows = np.array([raw[i * n // 64 : (i + 1) * n // 64].mean() for i in range(64)])
    input_rows = prep.image.numpy()[0][:, 4:60].mean(axis=1)
    assert np.corrcoef(input_rows, raw_rows)[0, 1] < -0.8
    assert any("MONOCHROME1 inverted" in s for s in prep.steps)


def test_series_read_equals_a_plain_position_sorted_stack() -> None:
    """The reader's layout tricks (no strided copies) change nothing: same voxels as a plain pydicom stack."""
    folder = shared_path("dicom", "series", "mr_brain_t1_sag_siemens")
    slices = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    iop = np.asarray(slices[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, float))))
    plain = np.stack([d.pixel_array for d in slices], axis=-1)  # (rows, cols, slices)
    raw, _ = read_scan(folder)
    assert np.array_equal(raw.numpy()[0].transpose(1, 0, 2), plain)
