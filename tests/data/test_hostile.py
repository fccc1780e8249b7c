"""A hostile corpus, beyond broken files: what the operating system throws mid-run, bad settings, data
that cannot answer the question, identifier columns. Each costs its own row or stops before any work."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

import medtl.data.curate as curate_module
from medtl.data.curate import curate
from medtl.data.paths import check_scan_path
from medtl.data.synthetic import write_ct_dicom
from medtl.errors import ConfigError, ScanError


def medtl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in this process (its imports paid once): exit code and captured output, like a subprocess."""
    import contextlib
    import io
    import os

    from medtl.cli import main

    out, err, before = io.StringIO(), io.StringIO(), Path.cwd()
    try:
        os.chdir(cwd or before)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture()
def ct_rows(tmp_path: Path) -> list[dict[str, str]]:
    """Eight CT DICOMs of eight patients, two labels."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        p = write_ct_dicom(tmp_path / "scans" / f"s{i}.dcm", rng.normal(0, 200, (32, 32)), 0.8, f"PAT-{i}", "Made^Up")
        rows.append({"path": str(p), "label": "marker" if i % 2 else "clear", "patient_id": f"PAT-{i}"})
    return rows


def _manifest(tmp_path: Path, rows: list[dict[str, str]], name: str = "manifest.csv") -> Path:
    out = tmp_path / name
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


@pytest.mark.parametrize("code, reason", [
    (errno.EACCES, "permission denied (this user may not read it)"),
    (errno.ENOENT, "file not found"),
    (errno.EIO, "input/output error while reading (failing disk or network share)"),
])
def test_an_os_error_mid_read_is_that_rows_quarantine_reason(ct_rows, tmp_path, monkeypatch, code, reason) -> None:
    """Root reads any file and nothing vanishes on cue, so the failure is injected where pydicom opens the file."""
    victim = ct_rows[3]["path"]
    real = pydicom.dcmread

    def dcmread(fp, *a, **k):  # noqa: ANN001, ANN202
        if str(fp) == victim:
            raise OSError(code, "injected", str(fp))
        return real(fp, *a, **k)

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    result = curate(_manifest(tmp_path, ct_rows), tmp_path / "out")
    q = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert q.to_dict("records") == [{"path": victim, "reason": reason}]
    assert len(result.manifest) == 7


def test_a_file_that_vanishes_after_the_manifest_is_read_costs_only_its_row(ct_rows, tmp_path, monkeypatch) -> None:
    victim = Path(ct_rows[5]["path"])
    real = curate_module.read_manifest

    def read_then_delete(*a, **k):  # noqa: ANN202
        df = real(*a, **k)
        victim.unlink()  # gone between reading the manifest and checking its row
        return df

    monkeypatch.setattr(curate_module, "read_manifest", read_then_delete)
    result = curate(_manifest(tmp_path, ct_rows), tmp_path / "out")
    assert result.quarantine.to_dict("records") == [{"path": str(victim), "reason": "file not found"}]
    assert len(result.manifest) == 7


def test_check_scan_path_never_opens_what_it_refuses(tmp_path, monkeypatch) -> None:
    import os

    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    with pytest.raises(ScanError, match="named pipe"):
        check_scan_path(fifo)  # returns at once: a FIFO opened for reading would block here
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # as a non-root user sees a mode-000 file
    (tmp_path / "locked.dcm").write_bytes(b"DICM")
    with pytest.raises(ScanError, match=r"locked.dcm: permission denied"):
        check_scan_path(tmp_path / "locked.dcm")


# -- settings are checked when read, before any scan is touched -----------------------------------


def test_a_bad_preprocess_setting_exits_2_before_any_scan_is_read(ct_rows, tmp_path) -> None:
    manifest = _manifest(tmp_path, ct_rows)
    p = medtl("curate", str(manifest), "--out", str(tmp_path / "out"), "--preprocess", "window=nope")
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        "medtl: error: --preprocess window: unknown window 'nope' (allowed: lung, mediastinum, soft_tissue, abdomen, "
        "liver, bone, brain, subdural, stroke, or {level: HU, width: HU})"]
    assert not (tmp_path / "out").exists(), "nothing was curated, nothing quarantined"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{manifest: {manifest}}}\npreprocess: {{window: nope, percentiles: [99, 1]}}\n")
    p = medtl("compare", str(cfg), cwd=tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "preprocess.window: unknown window 'nope' (allowed: lung," in p.stderr
    cfg.write_text(f"data: {{manifest: {manifest}}}\npreprocess: {{percentiles: [99, 1]}}\n")
    p = medtl("compare", str(cfg), cwd=tmp_path)
    assert p.returncode == 2 and "preprocess.percentiles: percentiles must be two numbers with 0 <= low < high <= 100" in p.stderr


def test_inspect_with_an_unknown_backbone_exits_2_like_preview(ct_rows) -> None:
    p = medtl("inspect", ct_rows[0]["path"], "--backbone", "nope")
    assert p.returncode == 2 and p.stderr.startswith("medtl: error: backbone.name: unknown backbone 'nope'")
    assert len(p.stderr.strip().splitlines()) == 1


# -- data that cannot answer the question -----------------------------------------------------------


def test_curate_warns_when_a_split_lacks_a_class(ct_rows, tmp_path) -> None:
    one_class = [{**r, "label": "clear"} for r in ct_rows]
    result = curate(_manifest(tmp_path, one_class), tmp_path / "one")
    assert result.warnings == ["only one class (clear) among the kept rows: nothing to classify; compare will refuse it"]
    assert "- warning: only one class (clear)" in (tmp_path / "one" / "report.md").read_text()
    given = [{**r, "split": s} for r, s in zip(ct_rows, ["train"] * 4 + ["val", "val", "test", "test"])]
    given[4]["label"] = given[5]["label"] = "marker"  # val: marker only
    result = curate(_manifest(tmp_path, given), tmp_path / "split")
    assert result.warnings == ["the val split has no row of class(es) ['clear']: its AUC is undefined and compare will "
                               "refuse it (more patients of that class, or another --seed)"]
    balanced = curate(_manifest(tmp_path, ct_rows), tmp_path / "ok", seed=0)
    assert not [w for w in balanced.warnings if "class" in w]


# -- identifiers: columns kept by an allow-list -----------------------------------------------------


IDENTIFYING = {"first_name": "Ann", "referring_physician": "Dr^Who", "mothers_maiden_name": "Smith",
               "next_of_kin": "Bob Jones", "patient_name": "Doe^Jane"}


def test_only_the_manifests_own_and_declared_columns_are_copied(ct_rows, tmp_path) -> None:
    rows = [{**r, **IDENTIFYING, "site_code": f"S{i % 2}", "notes": "call back"} for i, r in enumerate(ct_rows)]
    manifest = _manifest(tmp_path, rows)
    result = curate(manifest, tmp_path / "out", keep_columns=["site_code"])
    kept = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert list(kept.columns) == ["path", "label", "patient_id", "site_code", "domain", "pixel_sha256", "split"]
    assert sorted(result.dropped_columns) == sorted([*IDENTIFYING, "notes"])
    text = (tmp_path / "out" / "manifest.csv").read_text() + (tmp_path / "out" / "report.md").read_text()
    for value in IDENTIFYING.values():
        assert value not in text
    with pytest.raises(ConfigError, match=r"\['patient_name'\] hold patient identifiers"):
        curate(manifest, tmp_path / "refused", keep_columns=["site_code", "patient_name"])
    p = medtl("curate", str(manifest), "--out", str(tmp_path / "cli"), "--keep-columns", "site_code,nope")
    assert p.returncode == 2 and p.stderr.startswith("medtl: error: --keep-columns: no column(s) ['nope'] in the manifest")
