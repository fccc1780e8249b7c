"""Against a real `mlflow server` (sqlite backend, local artifact folder): round trip, down at start, outage mid-run."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from medtl import api
from medtl.experiment.run import compare, run_folder
from medtl.config import load_config
from medtl.errors import TrackingError
from medtl.tracking.tracker import MlflowTracker
from tests.tracking.conftest import compare_on_server, free_port
from tests.tracking.conftest import server_config as _config


def test_server_down_at_start_is_said_before_training(identified_data, tmp_path) -> None:
    manifest, _ = identified_data
    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(_config(manifest, "down")))
    uri = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    p = subprocess.run([sys.executable, "-m", "medtl", "compare", str(cfg)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"medtl: error: {uri}: MLflow tracking server not reachable"), p.stderr
    assert "nothing was trained" in lines[0] and "Traceback" not in p.stderr
    assert not (tmp_path / ".medtl").exists(), "no training, no run folder"


def test_round_trip_through_a_real_server(mlflow_server, identified_data, tmp_path, monkeypatch) -> None:
    manifest, _ = identified_data
    comp, client, parent = compare_on_server(mlflow_server.uri, manifest, "roundtrip", tmp_path, monkeypatch)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{comp.run_id}'")
    assert sorted(r.data.tags["medtl.strategy"] for r in children) == ["frozen", "full"]
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists(), "nothing tracked locally"
    served = list(mlflow_server.artifacts.rglob("*"))
    assert any(p.name == "weights.pt" for p in served) and any(p.name == "comparison.png" for p in served), \
        "artifacts went through the server into its artifact folder"
    mv = client.get_model_version_by_alias("roundtrip-model", "champion")
    assert mv.tags["medtl.decision"] == "champion"
    test = pd.read_csv(manifest)
    dcm = next(p for p in test[test.split == "test"].path if p.endswith(".dcm"))
    out = mlflow.pyfunc.load_model("models:/roundtrip-model@champion").predict(pd.DataFrame({"path": [dcm]}))[["clear", "marker"]]
    np.testing.assert_allclose(out.to_numpy().sum(1), 1.0, rtol=1e-6)
    ours = api.predict("models:/roundtrip-model@champion", [dcm])
    np.testing.assert_allclose(ours[["p_clear", "p_marker"]].to_numpy(), out.to_numpy(), rtol=1e-5)


def test_outage_mid_run_loses_nothing(mlflow_server, identified_data, tmp_path, monkeypatch) -> None:
    """Kill the server after the first epoch is logged; training finishes locally; --resume logs the rest once."""
    manifest, _ = identified_data
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cfg = load_config(_config(manifest, "outage"))
    tracker = MlflowTracker()
    log_epoch = tracker.log_epoch

    def then_kill(epoch: int, metrics: dict) -> None:
        log_epoch(epoch, metrics)
        mlflow_server.stop()  # the first epoch reached the server; everything after meets a dead port

    tracker.log_epoch = then_kill
    with pytest.raises(TrackingError) as err:
        compare(cfg, tracker)
    folder = run_folder(cfg)
    msg = str(err.value)
    assert str(folder) in msg and "--resume" in msg and "Nothing is lost" in msg
    for arm in ("frozen-seed0", "full-seed0"):
        assert (folder / arm / "result.pt").is_file(), arm
    assert (folder / "frozen-seed0" / "head" / "last.pt").is_file() and (folder / "full-seed0" / "model" / "last.pt").is_file()

    mlflow_server.start()
    comp = compare(cfg, MlflowTracker(), resume=True)
    client = MlflowClient(mlflow_server.uri, registry_uri=mlflow_server.uri)
    exp = client.get_experiment_by_name("outage")
    parents = client.search_runs([exp.experiment_id], "tags.`medtl.role` = 'comparison'")
    assert [p.info.run_id for p in parents] == [comp.run_id] and parents[0].info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{comp.run_id}'")
    by = {r.data.tags["medtl.strategy"]: r for r in children}
    assert len(children) == 2 and set(by) == {"frozen", "full"}, "no duplicate runs"
    for name, epochs in (("frozen", 3), ("full", 2)):
        r = by[name]
        assert r.info.status == "FINISHED" and r.data.tags["medtl.logged"] == "complete"
        for key in ("train_loss", "val_auc", "val_loss", "lr.head"):
            steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert sorted(steps) == list(range(epochs)), (name, key, steps)  # every epoch, exactly once
        arm = next(a for a in comp.arms if a.strategy == name)
        assert r.data.metrics["test_auc"] == pytest.approx(arm.metrics["test_auc"])
        models = client.search_logged_models([exp.experiment_id], filter_string=f"source_run_id = '{r.info.run_id}'")
        assert len(models) == 1, "one model per run"
        assert {"predictions.json", "model_card.md", "plots"} <= {f.path for f in client.list_artifacts(r.info.run_id)}
    mv = client.get_model_version_by_alias("outage-model", "champion")
    assert str(mv.version) == "1" and len(client.search_model_versions("name = 'outage-model'")) == 1
    counts = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "val_auc")) for r in children}
    again = compare(cfg, MlflowTracker(), resume=True)  # resuming a finished comparison changes nothing
    assert again.run_id == comp.run_id and len(client.search_model_versions("name = 'outage-model'")) == 1
    assert {k: len(client.get_metric_history(k, "val_auc")) for k in counts} == counts
    assert client.get_run(comp.run_id).info.status == "FINISHED"
