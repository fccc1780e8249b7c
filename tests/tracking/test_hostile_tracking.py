"""Hostile conditions around the store: two comparisons started together on a new sqlite store, a model
asked to predict on the whole broken corpus, ``predict`` where there is no store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medtl.data.synthetic import write_ct_dicom, write_nifti
from tests.conftest import ROOT, tiny_config
from tests.data.broken import build_corpus


def _split_manifest(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate(["train"] * 6 + ["val"] * 4 + ["test"] * 4):
        p = write_ct_dicom(root / f"s{i}.dcm", rng.normal(0, 200, (32, 32)) + 300 * (i % 2), 0.8, f"P{i}", "Made^Up")
        rows.append({"path": str(p), "label": "marker" if i % 2 else "clear", "patient_id": f"P{i}", "split": split})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_two_comparisons_started_together_on_a_new_store_both_succeed(tmp_path) -> None:
    """Two real processes, released at the same instant after their imports, on one fresh sqlite file."""
    manifest = _split_manifest(tmp_path)
    cfg = tiny_config(manifest, strategies=[{"name": "frozen", "epochs": 1}],
                      shift={"enabled": False}, data={"manifest": str(manifest), "num_workers": 0})
    cfg["train"] = {**cfg["train"], "bootstrap": 10}
    cfg["tracking"] = {**cfg["tracking"], "system_metrics": False}
    for w in ("a", "b"):  # each in its own folder (own run folder and caches), one store
        (tmp_path / w).mkdir()
        (tmp_path / w / "c.yaml").write_text(yaml.safe_dump(cfg))
    start = time.time() + 25  # both have imported torch, MONAI and MLflow by then, even on a loaded machine
    code = ("import time, tests.conftest; from medtl.cli import main; "
            f"time.sleep(max(0.0, {start} - time.time())); raise SystemExit(main(['compare', 'c.yaml']))")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path / w, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in ("a", "b")]
    outs = [p.communicate(timeout=600) for p in procs]
    assert time.time() > start, "the processes really started together"
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "tiny"]
    parents = client.search_runs([exp.experiment_id], "tags.`medtl.role` = 'comparison'")
    assert len(parents) == 2 and {r.info.status for r in parents} == {"FINISHED"}


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A tiny two-class model logged to a fresh sqlite store: (runs:/ URI, store file)."""
    import mlflow

    from medtl.config import PreprocessConfig
    from medtl.models.transfer import create_model
    from medtl.tracking.pyfunc import log_classifier, model_meta

    root = tmp_path_factory.mktemp("model")
    db = root / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    model, _ = create_model("tiny", 2, pretrained=False)
    meta = model_meta(model, ["clear", "marker"], PreprocessConfig(assume_modality="CT", window="lung"), "linear", "full")
    with mlflow.start_run() as run:
        log_classifier(run.info.run_id, model, meta, "tiny model card", [], {})
    return f"runs:/{run.info.run_id}/model", db


def test_predict_names_each_broken_scan_in_one_line_and_scores_the_good_ones(logged_model, tmp_path, monkeypatch, capsys) -> None:
    from medtl.cli import main

    uri, db = logged_model
    corpus = build_corpus(tmp_path / "broken")
    good = [write_ct_dicom(tmp_path / "good.dcm", np.random.default_rng(1).normal(0, 200, (40, 40)), 0.8, "G", "Good^G"),
            write_nifti(tmp_path / "good.nii.gz", np.random.default_rng(2).normal(0, 200, (3, 40, 40)), 0.8, 3.0)]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    paths = [str(good[0]), *[str(b.path) for b in corpus], str(good[1])]
    code = main(["predict", "--json", uri, *paths])
    out = capsys.readouterr()
    assert code == 1
    assert out.err.strip().splitlines() == [f"medtl: error: {b.path}: {b.problem}" for b in corpus]
    scored = json.loads(out.out)
    assert [r["path"] for r in scored] == [str(g) for g in good]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in scored)


def test_predict_where_there_is_no_store_leaves_no_mlflow_db(logged_model, tmp_path, monkeypatch, capsys) -> None:
    import mlflow

    from medtl.cli import main

    uri, db = logged_model
    folder = Path(mlflow.artifacts.download_artifacts(uri, tracking_uri=f"sqlite:///{db}", dst_path=str(tmp_path / "m")))
    scan = write_ct_dicom(tmp_path / "s.dcm", np.random.default_rng(1).normal(0, 200, (40, 40)), 0.8, "G", "Good^G")
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["predict", "models:/tiny-model@champion", str(scan)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"medtl: error: models:/tiny-model@champion: no MLflow store here ({empty / 'mlflow.db'} does not exist): "
                   "run where the comparison ran, or set MLFLOW_TRACKING_URI to its store")
    assert main(["predict", "--json", str(folder), str(scan)]) == 0, "a model folder needs no store"
    assert json.loads(capsys.readouterr().out)[0]["path"] == str(scan)
    assert list(empty.iterdir()) == [], "no empty mlflow.db (nor anything else) left behind"


def test_evaluate_reports_each_row_the_os_refuses_and_scores_the_rest(logged_model, tmp_path, monkeypatch, capsys) -> None:
    """A relative symlink loop and a FIFO among good rows: each its own line, the metrics from the good rows."""
    from medtl.cli import main

    uri, db = logged_model
    rng = np.random.default_rng(3)
    rows = [{"path": str(write_ct_dicom(tmp_path / f"g{i}.dcm", rng.normal(0, 200, (40, 40)), 0.8, f"G{i}", "Good^G")),
             "label": "marker" if i % 2 else "clear", "patient_id": f"G{i}"} for i in range(6)]
    os.symlink("loop_b.dcm", tmp_path / "loop_a.dcm")
    os.symlink("loop_a.dcm", tmp_path / "loop_b.dcm")
    os.mkfifo(tmp_path / "fifo.dcm")
    rows += [{"path": "loop_a.dcm", "label": "clear", "patient_id": "B1"},  # relative: resolved against the manifest
             {"path": "fifo.dcm", "label": "marker", "patient_id": "B2"}]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    code = main(["evaluate", "--json", "--bootstrap", "10", uri, str(tmp_path / "manifest.csv")])
    out = capsys.readouterr()
    assert code == 1
    assert out.err.strip().splitlines() == [
        f"medtl: error: {tmp_path / 'loop_a.dcm'}: symlink loop (the link leads back to itself)",
        f"medtl: error: {tmp_path / 'fifo.dcm'}: not a regular file but a named pipe (FIFO); medtl reads files and folders only"]
    assert json.loads(out.out)["overall"]["n"] == 6
