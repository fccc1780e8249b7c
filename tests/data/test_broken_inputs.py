"""Broken inputs: each gets INTERFACE.md's one-line error from ``inspect``, and is quarantined with
the same reason by ``curate`` while every good row survives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtl.data.curate import curate
from medtl.data.synthetic import write_ct_dicom, write_nifti
from tests.data.broken import HIDE_J2K, Broken, build_corpus, build_no_decoder, hidden_decoder


def medtl(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    code = prelude + f"from medtl.cli import main; raise SystemExit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Broken]:
    root = tmp_path_factory.mktemp("broken")
    return [*build_corpus(root / "scans"), build_no_decoder(root / "j2k")]


@pytest.fixture(scope="module")
def good_scans(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str, str]]:
    """(path, label, patient) for valid DICOM and NIfTI scans of six patients."""
    root = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    rows = []
    for p in range(6):
        label = "marker" if p % 2 else "clear"
        hu = rng.normal(0, 200, (40, 40))
        rows.append((write_ct_dicom(root / f"p{p}.dcm", hu, 0.8, f"GOOD-{p}", "Good^Patient"), label, f"GOOD-{p}"))
        rows.append((write_nifti(root / f"p{p}.nii.gz", rng.normal(0, 200, (3, 40, 40)), 0.8, 3.0), label, f"GOOD-{p}"))
    return rows


def test_corpus_has_at_least_15_kinds_of_breakage(corpus: list[Broken]) -> None:
    assert len(corpus) >= 15
    assert len({b.problem for b in corpus}) >= 15, "distinct problems, not one message for everything"


def test_inspect_names_each_broken_input_in_one_line_and_reports_the_good_ones(corpus, good_scans) -> None:
    readable = [b for b in corpus if b.name != "compressed without a decoder"]
    good = [str(good_scans[0][0]), str(good_scans[1][0])]
    p = medtl("inspect", "--json", good[0], *[str(b.path) for b in readable], good[1])
    assert p.returncode == 1, "any failure fails the command"
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [f"medtl: error: {b.path}: {b.problem}" for b in readable]
    results = json.loads(p.stdout)
    assert [r["path"] for r in results if "error" not in r] == good, "every good scan is still reported"
    assert [(r["path"], r["error"]) for r in results if "error" in r] == [(str(b.path), b.problem) for b in readable]


def test_compressed_dicom_without_its_decoder(corpus) -> None:
    (b,) = [b for b in corpus if b.name == "compressed without a decoder"]
    hidden = medtl("inspect", str(b.path), prelude=HIDE_J2K)
    assert hidden.returncode == 1
    assert hidden.stderr.strip() == f"medtl: error: {b.path}: {b.problem}"
    with_decoder = medtl("inspect", "--json", str(b.path))  # the same file decodes once the plugin is there
    assert with_decoder.returncode == 0, with_decoder.stderr
    assert "JPEG 2000" in json.loads(with_decoder.stdout)["transfer_syntax"]


def test_curate_quarantines_every_broken_row_and_keeps_every_good_one(corpus, good_scans, tmp_path) -> None:
    rows = [{"path": str(p), "label": lab, "patient_id": pid} for p, lab, pid in good_scans]
    rows += [{"path": str(b.path), "label": "clear", "patient_id": f"BROKEN-{i}"} for i, b in enumerate(corpus)]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    with hidden_decoder():
        result = curate(manifest, tmp_path / "out", seed=0)
    quarantined = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert dict(zip(quarantined["path"], quarantined["reason"])) == {str(b.path): b.problem for b in corpus}
    kept = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert sorted(kept["path"]) == sorted(str(p) for p, _, _ in good_scans)
    assert set(kept["split"]) == {"train", "val", "test"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"quarantined {len(corpus)}" in report and len(result.quarantine) == len(corpus)
    for b in corpus:
        assert f"- {b.path.name}: {b.problem}" in report
