"""Made-up identifiers written into real DICOM files never appear in any output of ``inspect``,
``preview``, ``curate`` (printed, written, reported) or the on-disk dataset cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.datadict import dictionary_VR

from medtl.data.synthetic import SCANNERS, write_ct_dicom, write_ct_series
from medtl.privacy import CONFIDENTIAL_KEYWORDS

# values no real file or library message would contain; dates in DICOM form and as a person writes them
NAME, PID, BIRTH, ACCESSION = "Quixotl^Zebediah", "ZQX-55172", "19230817", "ACCZQX99813"
INSTITUTION = "Zqxian Memorial Infirmary"
SECRETS = [NAME, "Quixotl", "Zebediah", PID, BIRTH, "1923-08-17", ACCESSION, INSTITUTION, "Zqxian"]


def _identifiers(i: int) -> dict[str, object]:
    """Every text attribute of the confidentiality profile gets a unique made-up value."""
    out: dict[str, object] = {}
    for kw in sorted(CONFIDENTIAL_KEYWORDS):
        vr = dictionary_VR(kw)
        if vr in ("LO", "SH", "LT", "ST", "UT", "CS") and not kw.endswith("UID"):
            out[kw] = f"ZQX{kw[:10].upper()}{i}"[:16]
        elif vr == "PN":
            out[kw] = f"Zqxperson{i}^{kw[:8]}"
    out.update(PatientName=NAME, PatientID=f"{PID}-{i}", PatientBirthDate=BIRTH, AccessionNumber=f"{ACCESSION}{i}",
               InstitutionName=INSTITUTION, StudyDate="19990203", AcquisitionDate="19990203")
    return out


def _write_scan(path: Path, i: int, **kw) -> Path:
    hu = np.random.default_rng(i).normal(0, 300, (48, 48))
    extra = {k: v for k, v in _identifiers(i).items() if k not in ("PatientName", "PatientID")}
    return write_ct_dicom(path, hu, 0.7, f"{PID}-{i}", NAME, scanner=SCANNERS["scanner_a"], extra=extra, **kw)


@pytest.fixture(scope="module")
def identified(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("identified")
    rows = []
    for i in range(6):
        p = _write_scan(root / f"scan{i}.dcm", i)
        rows.append({"path": p.name, "label": "ab"[i % 2], "patient_id": f"{PID}-{i}", "patient_name": NAME,
                     "birth_date": "1923-08-17"})
    series = write_ct_series(root / "series", np.random.default_rng(9).normal(0, 300, (4, 48, 48)), 0.7, 2.0,
                             f"{PID}-S", NAME)
    for f in series.iterdir():  # the series carries the identifiers too
        ds = pydicom.dcmread(f)
        for k, v in _identifiers(9).items():
            setattr(ds, k, v)
        ds.save_as(f)
    rows.append({"path": "series", "label": "a", "patient_id": f"{PID}-S", "patient_name": NAME, "birth_date": BIRTH})
    broken = _write_scan(root / "broken.dcm", 7)
    broken.write_bytes(broken.read_bytes()[:-500])  # truncated: identifiers sit in its header
    rows.append({"path": "broken.dcm", "label": "a", "patient_id": f"{PID}-7", "patient_name": NAME, "birth_date": BIRTH})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    assert INSTITUTION in (root / "scan0.dcm").read_bytes().decode("latin-1"), "the identifiers are really in the files"
    return root, [str(root / "scan0.dcm"), str(series), str(broken)]


def _leaks(text: str) -> list[str]:
    low = text.lower()
    found = [s for s in SECRETS if s.lower() in low]
    return found + [m for m in ("zqxperson", "zqxpatient", "zqxaccessio") if m in low]


def test_no_identifier_in_inspect_preview_or_curate(identified, tmp_path, capsys, caplog) -> None:
    """In process, so that every log record at DEBUG level is seen too."""
    from medtl.cli import main

    def _run(*args: str) -> str:
        main(list(args))
        out = capsys.readouterr()
        return out.out + out.err

    caplog.set_level(logging.DEBUG)
    root, scans = identified
    outputs = {
        "inspect": _run("inspect", *scans),
        "inspect --json": _run("inspect", "--json", *scans),
        "inspect --debug": _run("--debug", "inspect", *scans),
        "preview": _run("preview", scans[0], "--out", str(tmp_path / "p.png")),
        "curate": _run("curate", str(root / "manifest.csv"), "--out", str(tmp_path / "cur"),
                       "--domain-from", "manufacturer,model,institution,slice_thickness"),
    }
    assert "header" in outputs["inspect --json"] and "scan0.dcm" in outputs["inspect"], "the commands did run"
    assert "file is truncated" in outputs["inspect"] and "kept 7 rows, quarantined 1" in outputs["curate"]
    for f in sorted((tmp_path / "cur").iterdir()) + [tmp_path / "p.png"]:
        outputs[f.name] = f.read_bytes().decode("latin-1")
    outputs["logs"] = caplog.text
    assert {k: _leaks(v) for k, v in outputs.items()} == {k: [] for k in outputs}
    kept = pd.read_csv(tmp_path / "cur" / "manifest.csv")
    assert "patient_name" not in kept.columns and "birth_date" not in kept.columns
    assert kept["patient_id"].str.startswith("p-").all()
    assert kept["domain"].str.contains("site-").all(), "the institution is there, as a code"


def test_no_identifier_in_the_disk_cache(identified, tmp_path) -> None:
    from medtl.config import PreprocessConfig
    from medtl.data.datasets import image_dataset
    from medtl.data.transforms import scan_transforms
    from medtl.models.registry import InputSpec

    _, scans = identified
    spec = InputSpec(32, 3, (0.5,) * 3, (0.25,) * 3, "bilinear", "test")
    items = [{"image": s, "label": 0, "patient": "p-0000", "domain": "x", "path": s} for s in scans[:2]]
    ds = image_dataset(items, scan_transforms(spec, PreprocessConfig()), cache="disk", cache_dir=tmp_path / "cache")
    _ = [ds[i] for i in range(len(ds))]
    files = list((tmp_path / "cache").rglob("*"))
    assert any(f.is_file() for f in files)
    assert _leaks("".join(f.read_bytes().decode("latin-1") for f in files if f.is_file())) == []
