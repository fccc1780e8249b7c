"""A small comparison on the tiny backbone, tracked in a real sqlite MLflow store."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from medtl import api
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def tracked(marker_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.chdir(folder)
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    comp = api.compare(tiny_config(marker_data))
    yield comp, uri, MlflowClient(uri)
    mp.undo()


def test_parent_and_children_as_interface_says(tracked) -> None:
    comp, uri, client = tracked
    parent = client.get_run(comp.run_id)
    assert parent.data.tags["medtl.role"] == "comparison"
    exp = parent.info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{comp.run_id}'")
    assert sorted(r.data.tags["medtl.strategy"] for r in children) == ["frozen", "full"]
    for r in children:
        m = r.data.metrics
        assert 0.0 <= m["test_auc"] <= 1.0 and 0.0 <= m["test_acc"] <= 1.0
        assert {"test_auc.scanner_a", "test_auc.scanner_b", "test_acc.scanner_a", "test_acc.scanner_b"} <= set(m)
        assert m["test_auc_ci_low"] <= m["test_auc"] <= m["test_auc_ci_high"]
        hist = client.get_metric_history(r.info.run_id, "val_auc")
        assert len(hist) >= 2, "per-epoch val_auc"
        assert r.data.tags["medtl.weights_sha256"] == "tiny-fixed-seed"


def test_champion_predicts_like_medtl_predict(tracked, marker_data) -> None:
    comp, uri, client = tracked
    mv = client.get_model_version_by_alias("tiny-model", "champion")
    assert mv.tags["medtl.decision"] == "champion"
    test = pd.read_csv(marker_data)
    test = test[test.split == "test"]
    dcm = next(p for p in test.path if p.endswith(".dcm"))
    nii = next(p for p in test.path if p.endswith(".nii.gz"))
    model = mlflow.pyfunc.load_model("models:/tiny-model@champion")
    out = model.predict([dcm, nii])
    assert list(out.columns) == ["clear", "marker"]
    np.testing.assert_allclose(out.to_numpy().sum(1), 1.0, rtol=1e-5)
    ours = api.predict("models:/tiny-model@champion", [dcm, nii])
    np.testing.assert_allclose(ours[["p_clear", "p_marker"]].to_numpy(), out.to_numpy(), rtol=1e-5)


def test_second_comparison_is_challenger_unless_better(tracked, marker_data) -> None:
    """The same data and a worse model (one epoch): the alias stays; the decision is recorded."""
    comp, uri, client = tracked
    cfg = tiny_config(marker_data, strategies=[{"name": "frozen", "epochs": 1, "lr": 1e-6}])
    second = api.compare(cfg)
    d = second.registry
    assert d["previous_champion"] == "1" and d["version"] == "2"
    assert (d["alias"] == "champion") == (d["val_auc"] > d["champion_val_auc"])
    assert client.get_model_version("tiny-model", "2").tags["medtl.decision"] == d["alias"]
