"""Curation: planted duplicates and a patient planted in two splits are found; splits are
patient-level, stratified and seeded; domains can come from DICOM headers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtl.data.curate import curate
from medtl.data.synthetic import SCANNERS, write_ct_dicom, write_nifti
from medtl.errors import ConfigError, DataError
from medtl.privacy import hash_id


def _scan(folder: Path, name: str, seed: int, **kw) -> Path:
    hu = np.random.default_rng(seed).normal(0, 200, (32, 32))
    return write_ct_dicom(folder / name, hu, 0.8, "IGNORED", "Ignored^Name", **kw)


def _write(rows: list[dict], path: Path) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_planted_duplicates_and_a_patient_in_two_splits_are_found(tmp_path) -> None:
    rows = []
    for p in range(9):
        split = ("train", "val", "test")[p % 3]
        for s in range(2):
            rows.append({"path": str(_scan(tmp_path, f"p{p}_{s}.dcm", 10 * p + s)), "label": "ab"[p % 2],
                         "patient_id": f"PAT-{p}", "split": split})
    # planted: an exact copy of p0_0 filed under another patient in the test split
    shutil.copy(tmp_path / "p0_0.dcm", tmp_path / "copy_of_p0_0.dcm")
    rows.append({"path": str(tmp_path / "copy_of_p0_0.dcm"), "label": "a", "patient_id": "PAT-8", "split": "test"})
    # planted: patient LEAK has one scan in train and one in test
    rows.append({"path": str(_scan(tmp_path, "leak_train.dcm", 901)), "label": "a", "patient_id": "LEAK", "split": "train"})
    rows.append({"path": str(_scan(tmp_path, "leak_test.dcm", 902)), "label": "a", "patient_id": "LEAK", "split": "test"})
    result = curate(_write(rows, tmp_path / "m.csv"), tmp_path / "out", seed=0)

    assert [sorted(Path(p).name for p in g) for g in result.duplicates] == [["copy_of_p0_0.dcm", "p0_0.dcm"]]
    assert result.leaking_patients == [hash_id("LEAK")]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- 2 rows in test, train, under 2 patient ids: p0_0.dcm, copy_of_p0_0.dcm" in report
    assert f"- {hash_id('LEAK')}: test, train" in report
    assert "splits: as given in the manifest" in report
    assert any("identical images sit in more than one split" in w for w in result.warnings)
    assert any("1 patient(s) appear in more than one split" in w for w in result.warnings)


def test_label_typos_tiny_classes_and_one_file_under_two_patients_are_warned(tmp_path) -> None:
    """Without --labels, 'Benign' and 'benign ' would silently train as two classes; a class with fewer
    rows than splits cannot be in all three; one file listed for two patients is a wrong id."""
    rows = [{"path": str(_scan(tmp_path, f"p{p}.dcm", p)), "label": ["benign", "malignant"][p % 2], "patient_id": f"P{p}"}
            for p in range(10)]
    rows += [{"path": str(_scan(tmp_path, "typo1.dcm", 50)), "label": "Benign", "patient_id": "P50"},
             {"path": str(_scan(tmp_path, "typo2.dcm", 51)), "label": "benign ", "patient_id": "P51"},
             {"path": rows[0]["path"], "label": "benign", "patient_id": "P99"}]  # p0.dcm again, another patient
    result = curate(_write(rows, tmp_path / "m.csv"), tmp_path / "out", seed=0)
    typo = [w for w in result.warnings if "differ only by case or spacing" in w]
    assert len(typo) == 1 and "'Benign'" in typo[0] and "'benign '" in typo[0] and "'benign'" in typo[0]
    assert sum("fewer than the 3 splits" in w for w in result.warnings) == 2  # 'Benign' and 'benign ', one row each
    assert any("1 file(s) appear under more than one patient id" in w for w in result.warnings)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- p0.dcm: 2 patient ids" in report and "under 2 patient ids: p0.dcm, p0.dcm" in report
    checked = curate(_write(rows[:10], tmp_path / "m2.csv"), tmp_path / "out2", seed=0, labels=["benign", "malignant"])
    assert checked.warnings == []


def test_a_clean_manifest_reports_no_duplicates_or_leakage(tmp_path) -> None:
    rows = [{"path": str(_scan(tmp_path, f"p{p}.dcm", p)), "label": "ab"[p % 2], "patient_id": f"P{p}"} for p in range(8)]
    result = curate(_write(rows, tmp_path / "m.csv"), tmp_path / "out", seed=0)
    assert result.duplicates == [] and result.leaking_patients == [] and result.warnings == []


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """40 patients x 2 scans, two labels, two scanners (DICOM and NIfTI), unbalanced."""
    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(0)
    rows = []
    for p in range(40):
        label = "marker" if p % 4 == 0 else "clear"  # 25% positive
        domain = "scanner_a" if p < 24 else "scanner_b"
        for s in range(2):
            hu = rng.normal(0, 150, (3, 24, 24))
            path = (write_ct_dicom(root / f"{p}_{s}.dcm", hu[1], 0.9, "x", "y") if domain == "scanner_a"
                    else write_nifti(root / f"{p}_{s}.nii.gz", hu, 0.9, 3.0))
            rows.append({"path": path.name, "label": label, "patient_id": f"SUBJ-{p:03d}", "domain": domain})
    return _write(rows, root / "manifest.csv")


def test_splits_are_patient_level_stratified_and_reproducible(cohort, tmp_path) -> None:
    a = curate(cohort, tmp_path / "a", seed=7).manifest
    b = curate(cohort, tmp_path / "b", seed=7).manifest
    c = curate(cohort, tmp_path / "c", seed=8).manifest
    assert list(a["split"]) == list(b["split"]), "same seed, same split"
    assert list(a["split"]) != list(c["split"]), "the seed matters"
    assert (a.groupby("patient_id")["split"].nunique() == 1).all(), "a patient lives in one split"
    patients = a.drop_duplicates("patient_id")
    share = patients["split"].value_counts(normalize=True)
    assert 0.55 <= share["train"] <= 0.8 and share["val"] >= 0.1 and share["test"] >= 0.1
    for split, part in patients.groupby("split"):
        assert set(part["label"]) == {"marker", "clear"}, f"{split} holds both labels"
        assert set(part["domain"]) == {"scanner_a", "scanner_b"}, f"{split} holds both domains"
    assert all(v.startswith("p-") for v in a["patient_id"]), "patient ids are hashed"


def test_known_labels_blank_images_and_partial_splits(tmp_path) -> None:
    rows = [{"path": str(_scan(tmp_path, f"p{p}.dcm", p)), "label": "ab"[p % 2], "patient_id": f"P{p}"} for p in range(6)]
    rows.append({"path": str(_scan(tmp_path, "typo.dcm", 99)), "label": "B", "patient_id": "P9"})
    blank = write_ct_dicom(tmp_path / "blank.dcm", np.full((32, 32), -1000.0), 0.8, "x", "y")
    rows.append({"path": str(blank), "label": "a", "patient_id": "P10"})
    result = curate(_write(rows, tmp_path / "m.csv"), tmp_path / "out", labels=["a", "b"])
    reasons = dict(zip(result.quarantine["path"].map(lambda p: Path(p).name), result.quarantine["reason"]))
    assert reasons == {"typo.dcm": "unknown label 'B' (known: a, b)", "blank.dcm": "blank image (every value is -1000)"}
    rows[0]["split"] = "train"  # one row with a split, the others without
    with pytest.raises(DataError, match="split column is filled for 1 of 6 usable rows"):
        curate(_write(rows[:6], tmp_path / "m2.csv"), tmp_path / "out2")


def test_domains_from_dicom_headers_code_the_institution(tmp_path) -> None:
    rows = []
    sites = {"a": ("Zentrum Hospital Nord", SCANNERS["scanner_a"]), "b": ("Clinique du Lac", SCANNERS["scanner_b"])}
    for p in range(12):
        site, (institution, scanner) = ("a", sites["a"]) if p < 6 else ("b", sites["b"])
        path = _scan(tmp_path, f"{p}.dcm", p, scanner=scanner, extra={"InstitutionName": institution})
        rows.append({"path": str(path), "label": "ab"[p % 2], "patient_id": f"P{p}", "domain": f"given-{site}"})
    rows.append({"path": str(write_nifti(tmp_path / "v.nii.gz", np.random.default_rng(0).normal(0, 100, (3, 24, 24)), 1.0, 3.0)),
                 "label": "a", "patient_id": "P99", "domain": "given-nifti"})
    result = curate(_write(rows, tmp_path / "m.csv"), tmp_path / "out",
                    domain_from=["manufacturer", "model", "institution", "slice_thickness"])
    m = result.manifest
    code_a, code_b = (hash_id(sites[s][0], prefix="site-", length=8) for s in "ab")
    assert set(m["domain"]) == {f"Demo-Medical_Sharp-CT-128_{code_a}_0.8mm", f"Other-Systems_Soft-CT-80_{code_b}_0.8mm",
                                "given-nifti"}
    assert set(m["manifest_domain"]) == {"given-a", "given-b", "given-nifti"}
    assert any("1 row(s) have no DICOM header" in w for w in result.warnings)
    out = "".join(p.read_text() for p in (tmp_path / "out").iterdir())
    assert "Zentrum" not in out and "Clinique" not in out
    assert "institutions appear only as keyed codes" in result.report
    with pytest.raises(ConfigError, match="unknown field"):
        curate(tmp_path / "m.csv", tmp_path / "out3", domain_from=["scanner_colour"])
