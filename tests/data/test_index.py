"""``medtl index``: an export folder built from the real files of ../shared (a DICOMDIR written
by pydicom's FileSet, a series split across folders under shuffled names without extensions,
single and multi-frame files, a structured report, a note) indexes to the right rows, every row
reads through medtl, and no identifier reaches the manifest or the report."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from medtl.data.curate import curate
from medtl.data.index import index_export, report_path, safe_description
from medtl.data.readers.series_ref import series_ref
from medtl.data.readers import read_scan
from medtl.errors import ConfigError, DataError
from medtl.privacy import hash_id
from tests.conftest import shared_path

IDS = ("crlab", "1CT1", "CQ500-CT-310")  # PatientID of the MR series, CT_small, 693_UNCR


def _export(root: Path) -> tuple[Path, list[Path]]:
    """DICOMDIR part (20 MR slices + CT_small), loose part (15 MR slices, 693_UNCR, a multi-frame MR,
    an SR, a README, a coronal copy of CT_small as a second series of its study) in a subfolder."""
    mr = sorted(shared_path("dicom", "series", "mr_brain_t1_sag_siemens").glob("*.dcm"))
    single = shared_path("dicom", "single")
    rng = random.Random(0)
    exp = root / "export"
    fs = FileSet()
    for f in mr[:20] + [single / "CT_small.dcm"]:
        fs.add(pydicom.dcmread(f))
    fs.write(exp / "cd")
    loose = exp / "loose"
    (loose / "sub").mkdir(parents=True)
    for f in mr[20:]:
        shutil.copy(f, loose / f"{rng.getrandbits(40):010x}")
    shutil.copy(mr[3], loose / "copy_of_an_instance")  # the same instance twice, as CDs carry them
    for f in (single / "693_UNCR.dcm", single / "emri_small.dcm"):
        shutil.copy(f, loose / "sub" / f"{rng.getrandbits(40):010x}")
    shutil.copy(get_testdata_file("test-SR.dcm"), loose / "sub" / "report")
    (loose / "README.TXT").write_text("viewer")
    ds = pydicom.dcmread(single / "CT_small.dcm")  # a second, coronal series in CT_small's study
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.SeriesDescription = "COR reformat"
    ds.save_as(loose / "sub" / "coronal")
    return exp, mr


def test_an_export_indexes_to_one_row_per_series_and_every_row_reads(tmp_path) -> None:
    exp, mr = _export(tmp_path)
    r = index_export([exp], tmp_path / "out" / "manifest.csv")
    m = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str, keep_default_na=False)
    assert sorted(m["kind"]) == ["image", "image", "image", "multiframe", "series"]
    series = m[m["kind"] == "series"].iloc[0]
    assert (series["slices"], series["orientation"], series["modality"]) == ("35", "sagittal", "MR")
    # grouped by series identity, not folder: the common folder of both halves, plus the key
    assert series_ref(series["path"])[0].name == "export"
    assert set(m.loc[m["modality"] == "CT", "orientation"]) == {"axial", "coronal"}
    assert r.dicomdirs == 1 and [Path(p).name for p in r.not_dicom] == ["README.TXT"]
    assert [Path(o["path"]).name for o in r.non_images] == ["report"] and r.non_images[0]["modality"] == "SR"
    assert any("repeat an instance" in w for w in r.warnings)
    # every row reads; the series as the original folder does, voxel for voxel
    for p in m["path"]:
        img, info = read_scan((tmp_path / "out" / p) if "#" not in p else str(tmp_path / "out" / p))
        assert img.numel() > 0
    got, _ = read_scan(str(tmp_path / "out" / series["path"]))
    want, _ = read_scan(mr[0].parent)
    assert np.array_equal(np.asarray(got), np.asarray(want))
    text = (tmp_path / "out" / "manifest.csv").read_text() + report_path(tmp_path / "out" / "manifest.csv").read_text()
    for ident in IDS:
        assert ident not in text
    assert "1.3.12.2" not in text  # no UID either


def test_a_label_sheet_joins_hashed_and_curate_reads_every_row(tmp_path) -> None:
    exp, _ = _export(tmp_path)
    sheet = tmp_path / "labels.csv"
    pd.DataFrame({"PatientID": list(IDS), "label": ["a", "b", "a"], "name": ["X", "Y", "Z"]}).to_csv(sheet, index=False)
    out = tmp_path / "manifest.csv"
    r = index_export([exp], out, labels=sheet, on="patient", domain_from=["manufacturer"], pick="largest-axial")
    m = r.manifest
    # patients joined by their hash; the multi-frame MR has no PatientID: unlabelled, reported
    assert dict(zip(m["patient_id"], m["label"])) == {hash_id("1CT1"): "b", hash_id("CQ500-CT-310"): "a"}
    assert len(r.unlabelled) == 1
    assert list(m["orientation"]) == ["axial", "axial"]  # the coronal copy of CT_small was not picked
    whys = {"coronal" if p.endswith("coronal") else "series" if "#series/" in p else p: w
            for p, w in ((u["path"], u["why"]) for u in r.unpicked)}
    assert whys == {"coronal": "another series of its study was picked", "series": "no series of its study fits the rule"}
    assert m.set_index("label").loc["b", "domain"] == "GE-MEDICAL-SYSTEMS"  # CT_small's Manufacturer
    assert all(not any(i in t for i in IDS) for t in (out.read_text(), r.report))
    res = _curate_all(exp, tmp_path)  # all five rows through curate's full read and pipeline
    assert res.quarantine.empty and len(res.manifest) == 5


def _curate_all(exp: Path, tmp: Path):  # noqa: ANN202
    out = tmp / "all.csv"
    index_export([exp], out)
    m = pd.read_csv(out, dtype=str, keep_default_na=False)
    m["label"] = ["a", "b"] * (len(m) // 2) + ["a"] * (len(m) % 2)
    m.to_csv(out, index=False)
    return curate(out, tmp / "cur")


def test_pick_by_description_and_bad_settings(tmp_path) -> None:
    exp, _ = _export(tmp_path)
    r = index_export([exp], tmp_path / "m.csv", pick="description:^cor")
    assert list(r.manifest["series_description"]) == ["COR reformat"]
    with pytest.raises(ConfigError, match="--pick"):
        index_export([exp], tmp_path / "m.csv", pick="biggest")
    with pytest.raises(DataError, match="label"):
        bad = tmp_path / "bad.csv"
        bad.write_text("PatientID,diagnosis\ncrlab,a\n")
        index_export([exp], tmp_path / "m.csv", labels=bad, on="patient")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no files"):
        index_export([empty], tmp_path / "m.csv")


def test_a_description_that_could_name_someone_is_withheld() -> None:
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID = "Doe^Jane", "12345678"
    for text, kept in (("t1_fl2d_sag", True), ("AX T2 FLAIR", True), ("Jane knee", False), ("study 12345678", False),
                       ("20240101 head", False), ("x" * 80, False)):
        ds.SeriesDescription = text
        assert (safe_description(ds) == text) is kept, text


def test_cli_index_writes_the_manifest_and_report(tmp_path) -> None:
    exp, _ = _export(tmp_path)
    p = subprocess.run([sys.executable, "-m", "medtl", "index", str(exp), "--out", str(tmp_path / "m.csv")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "5 rows" in p.stdout and "1 non-image objects" in p.stdout
    assert (tmp_path / "m.report.md").is_file()
    p = subprocess.run([sys.executable, "-m", "medtl", "index", str(exp), "--out", str(tmp_path / "m.csv"), "--on", "study"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "--labels" in p.stderr
