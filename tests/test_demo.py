"""The README's main job, exactly as a user runs it: `medtl demo`, then `medtl predict` on its champion."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient


def _medtl(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 1800) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "medtl", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    proc = _medtl(["demo", "--out", "medtl-demo"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, proc


def test_demo_tracks_frozen_and_full_under_one_comparison(demo_run) -> None:
    work, proc = demo_run
    db = work / "mlflow.db"
    assert db.is_file(), "default store is sqlite:///mlflow.db in the working folder"
    client = MlflowClient(f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    parent_id = proc.stdout.strip().splitlines()[-1]
    parent = client.get_run(parent_id)
    assert parent.data.tags["medtl.role"] == "comparison"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    by = {r.data.tags["medtl.strategy"]: r for r in children}
    assert set(by) == {"frozen", "full"}
    for r in by.values():
        assert {"test_auc", "test_acc"} <= set(r.data.metrics)
    assert str(client.get_model_version_by_alias("medtl-demo", "champion").version) == "1"
    assert "frozen" in proc.stdout and "full" in proc.stdout


def test_predict_dicom_and_nifti_from_champion(demo_run) -> None:
    work, _ = demo_run
    data = work / "medtl-demo" / "data"
    dcm = next((data / "scanner_a").glob("*.dcm"))
    nii = next((data / "scanner_b").glob("*.nii.gz"))
    proc = _medtl(["predict", "models:/medtl-demo@champion", str(dcm), str(nii), "--json"], work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert [Path(r["path"]).name for r in out] == [dcm.name, nii.name]
    for r in out:
        assert set(r["probabilities"]) == {"clear", "marker"}
        assert abs(sum(r["probabilities"].values()) - 1.0) < 1e-5
        assert r["label"] in ("clear", "marker")


def test_demo_ends_with_commands_that_work_as_printed(demo_run) -> None:
    """The closing lines name the winner and why, and the `try:` command runs exactly as printed
    (real file names, this environment's medtl), from the folder the demo ran in."""
    import shlex

    work, proc = demo_run
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("best: ") and "validation AUC" in ln for ln in lines), lines[-8:]
    assert any("mlflow ui --backend-store-uri sqlite:///mlflow.db" in ln for ln in lines), lines[-8:]
    tried = next(ln for ln in lines if ln.startswith("try: ")).removeprefix("try: ")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    p = subprocess.run([*shlex.split(tried), "--json"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (tried, p.stderr[-2000:])
    assert {Path(r["path"]).suffix for r in json.loads(p.stdout)} == {".dcm", ".gz"}
