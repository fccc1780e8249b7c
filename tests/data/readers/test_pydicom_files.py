"""pydicom's own test files (installed with pydicom): palette colour against pydicom's ``apply_color_lut``,
non-image objects refused by what they are, and library failures put in plain words."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut

from medtl.config import PreprocessConfig
from medtl.data.readers import read_scan
from medtl.data.transforms import prepare_scan
from medtl.errors import ScanError


def _testfile(name: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom's test file {name} is not installed")
    return Path(path)


def _problem(path: Path) -> str:
    with pytest.raises(ScanError) as err:
        read_scan(path)
    return err.value.problem


def test_palette_colour_goes_through_the_lookup_tables_as_pydicom_applies_them(tmp_path, spec64) -> None:
    path = _testfile("examples_palette.dcm")  # ultrasound, 8-bit indices, 16-bit tables
    ds = pydicom.dcmread(path)
    want = apply_color_lut(ds.pixel_array, ds).astype(np.float64) / 65535 * 255  # full scale 65535 -> 255
    raw, info = read_scan(path)
    assert info.photometric == "PALETTE COLOR" and info.color and info.bits == 8
    assert info.raw_shape == (350, 800, 3) and info.raw_axes == ("rows", "columns", "samples")
    got = raw.numpy().transpose(2, 1, 0)  # (C, x, y) -> (rows, cols, RGB)
    assert np.allclose(got, want, atol=1e-3)
    assert len(np.unique(got.reshape(-1, 3), axis=0)) > 50, "colours, not a grey ramp"
    prep = prepare_scan(path, spec64, PreprocessConfig())
    assert prep.steps[0].startswith("colour: PALETTE COLOR indices through the file's colour lookup tables to RGB")
    assert "intensity: 8-bit values 0..255 to [0, 1]" in prep.steps
    assert not np.allclose(prep.image[0], prep.image[1]), "the channels differ: the table was applied"

    ds.NumberOfFrames = 2  # a multi-frame palette image: every frame through the same tables
    ds.PixelData = ds.PixelData + bytes(255 - np.frombuffer(ds.PixelData, np.uint8))
    ds.save_as(tmp_path / "two_frames.dcm")
    raw, info = read_scan(tmp_path / "two_frames.dcm")
    assert info.raw_shape == (2, 350, 800, 3) and info.kind == "dicom-multiframe"
    both = apply_color_lut(pydicom.dcmread(tmp_path / "two_frames.dcm").pixel_array, ds) / 65535 * 255
    assert np.allclose(raw.numpy().transpose(3, 2, 1, 0), both, atol=1e-3)


@pytest.mark.parametrize("name,problem", [
    ("liver_1frame.dcm", "is a segmentation object (Segmentation Storage), not an image; give the image series it segments"),
    ("rtdose.dcm", "is a radiotherapy dose grid (RT Dose Storage), not an image"),
    ("rtplan.dcm", "is a radiotherapy object (RT Plan Storage), not an image"),
    ("test-SR.dcm", "is a structured report (Comprehensive SR Storage), not an image"),
    ("waveform_ecg.dcm", "is a waveform (12-lead ECG Waveform Storage), not an image"),
    ("rtstruct.dcm", "is a radiotherapy object (RT Structure Set Storage), not an image"),  # no preamble, no file meta
    ("badVR.dcm", "header element NumberOfFrames (0028,0008) is not a whole number"),  # it holds '1A'
    ("DICOMDIR", "is a DICOMDIR, the index of an export (Media Storage Directory Storage), not an image; "
                 "give the series folders or files it lists"),
])
def test_what_is_not_an_image_or_not_readable_is_named(name: str, problem: str) -> None:
    assert _problem(_testfile(name)) == problem


def test_decoder_failures_say_which_decoder_refused_and_why() -> None:
    problem = _problem(_testfile("JPEG-lossy.dcm"))
    assert problem.startswith("compressed pixel data (JPEG Extended (Process 2 and 4)) that no installed decoder can decode")
    assert "pylibjpeg: A misplaced marker segment was found;" in problem and "libjpeg error code" not in problem


def test_every_pydicom_test_file_reads_or_fails_in_plain_words() -> None:
    """No library message leaks: no exception class names, no multi-line text, no word cut in two."""
    folder = _testfile("CT_small.dcm").parent
    read, refused = 0, 0
    for path in sorted(folder.glob("*.dcm")):
        try:
            read_scan(path)
            read += 1
        except ScanError as e:
            refused += 1
            assert "Error:" not in e.problem and "cannot be read (" not in e.problem, (path.name, e.problem)
            assert len(e.problem) < 400 and all(not w.endswith(("…", "...")) or w == "…" for w in e.problem.split())
    assert read > 40 and refused > 10


def test_inspect_json_prints_path_and_error_for_a_failure(tmp_path) -> None:
    seg = str(_testfile("liver_1frame.dcm"))
    good = str(_testfile("CT_small.dcm"))
    run = lambda *a: subprocess.run([sys.executable, "-m", "medtl", "inspect", "--json", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    one = run(seg)
    assert one.returncode == 1 and json.loads(one.stdout) == {"path": seg, "error": _problem(Path(seg))}
    both = run(seg, good)
    results = json.loads(both.stdout)
    assert both.returncode == 1 and [r["path"] for r in results] == [seg, good]
    assert "error" in results[0] and "error" not in results[1] and results[1]["modality"] == "CT"
