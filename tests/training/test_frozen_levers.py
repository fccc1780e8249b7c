"""The frozen arm's feature options: concatenated layer groups and a cross-validated logistic regression head."""

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medtl.config import load_config, strategy_config
from medtl.errors import ConfigError
from medtl.experiment.run import compare
from medtl.models.transfer import build_backbone, create_model
from medtl.tracking.pyfunc import MedtlClassifier, model_meta
from medtl.training import logreg
from medtl.training.logreg import fit_logreg, fold_linear
from medtl.training.strategies.frozen import sweep_layers
from tests.conftest import tiny_config


@pytest.mark.parametrize("classes", [2, 4])
def test_folded_head_gives_sklearns_probabilities(classes: int) -> None:
    """Standardisation and weights folded into one nn.Linear: softmax equals sklearn's predict_proba."""
    rng = np.random.default_rng(classes)
    x = rng.normal(3.0, [0.1, 5.0, 1.0, 20.0, 0.5, 2.0], size=(120, 6))  # scales far from 1: the fold must undo them
    y = (x[:, 0] * 10 + x[:, 1] / 5 + rng.normal(0, 1, 120) > 31).astype(int) if classes == 2 else rng.integers(0, classes, 120)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.7, max_iter=5000)).fit(x, y)
    scaler, clf = pipe[0], pipe[1]
    head = fold_linear(scaler, clf.coef_, clf.intercept_, classes)
    assert head.weight.shape == (classes, 6)
    with torch.no_grad():
        ours = torch.softmax(head(torch.as_tensor(x, dtype=torch.float32)), 1).numpy()
    np.testing.assert_allclose(ours, pipe.predict_proba(x), atol=1e-5)


def test_c_is_chosen_on_the_training_split_by_patient_level_folds(monkeypatch) -> None:
    """C comes from folds of the training data alone; a patient's images never straddle two folds."""
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(30)], 3)
    y = np.repeat(rng.permutation([0, 1] * 15), 3)
    x = torch.as_tensor(rng.normal(size=(90, 5)) + y[:, None] * 0.8, dtype=torch.float32)
    seen = {}
    real = logreg.LogisticRegressionCV

    def spy(*a, **k):  # noqa: ANN002, ANN003, ANN202
        seen["cv"] = k["cv"]
        return real(*a, **k)

    monkeypatch.setattr(logreg, "LogisticRegressionCV", spy)
    fit = fit_logreg(x, torch.as_tensor(y), 2, list(patients), cs=5, folds=3)
    assert fit.folds == 3 and fit.C in np.logspace(-4, 4, 5)
    assert len(seen["cv"]) == 3
    for train_idx, test_idx in seen["cv"]:
        assert max(max(train_idx), max(test_idx)) < 90  # indices into the training split only
        assert not set(patients[train_idx]) & set(patients[test_idx])
    with pytest.raises(ConfigError, match="too few"):
        fit_logreg(x[:4], torch.as_tensor([0, 0, 0, 1]), 2, cs=3, folds=3)


def test_layer_choices_read_naturally() -> None:
    groups = ["stem", "stage1", "stage2"]
    assert sweep_layers(strategy_config(name="frozen"), groups) == [("stage2",)]
    assert sweep_layers(strategy_config(name="frozen", layer="concat"), groups) == [("stem", "stage1", "stage2")]
    assert sweep_layers(strategy_config(name="frozen", layer=["stage2", "stage1"]), groups) == [("stage1", "stage2")]
    assert sweep_layers(strategy_config(name="frozen", layers="all"), groups) == [("stem",), ("stage1",), ("stage2",)]
    assert sweep_layers(strategy_config(name="frozen", layers=["stage2", "concat"]), groups) == [("stage2",), tuple(groups)]
    with pytest.raises(ConfigError, match=r"strategies.frozen.layer: .*\['stage9'\]"):
        sweep_layers(strategy_config(name="frozen", layer=["stage1", "stage9"]), groups)
    with pytest.raises(ValueError, match="empty list"):
        strategy_config(name="frozen", layer=[])


def test_concatenated_model_reads_the_cached_features() -> None:
    """A model on several groups computes, from an image, exactly the head input the cache concatenates."""
    model, built = create_model("tiny", 2, layer=["stem", "stage2"])
    assert model.head.in_features == built.feature_dims["stem"] + built.feature_dims["stage2"]
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        per = built.backbone.forward_all(x)
        assert torch.equal(model.features(x), torch.cat([per["stem"], per["stage2"]], 1))
        assert torch.equal(build_backbone("tiny").backbone(x, "stage1"), per["stage1"])  # one group: as before


@pytest.mark.parametrize("strategy", [{"name": "frozen", "epochs": 2, "layers": ["stage2", "concat"]},
                                      {"name": "frozen", "head": "logreg", "layer": "concat", "logreg_cs": 3, "logreg_folds": 2}])
def test_frozen_arm_with_concat_or_logreg_predicts_like_its_rebuilt_model(strategy, marker_data, tmp_path, monkeypatch) -> None:
    """The arm's test probabilities (from cached features) equal those of its model rebuilt from what is logged;
    a logistic regression never sees validation or test labels."""
    monkeypatch.chdir(tmp_path)
    seen_labels = []
    real = logreg.fit_logreg

    def spy(x, y, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen_labels.append(y.clone())
        return real(x, y, *a, **k)

    monkeypatch.setattr(logreg, "fit_logreg", spy)
    monkeypatch.setattr("medtl.training.strategies.frozen.fit_logreg", spy)
    comp = compare(load_config(tiny_config(marker_data, strategies=[strategy], shift={"enabled": False},
                                           selection={"enabled": False})))
    arm = comp.arms[0]
    # what MLflow logs and serves: the meta and state dict, rebuilt by the serving classifier from scan files
    meta = model_meta(arm.model, comp.data.classes, comp.config.preprocess, arm.build["head"], arm.strategy)
    served = MedtlClassifier(json.loads(json.dumps(meta)), arm.model.state_dict())
    probs = served.predict_proba([it["path"] for it in comp.data.splits["test"]])
    np.testing.assert_allclose(probs, arm.test_probs, atol=1e-5)
    if strategy.get("head") == "logreg":
        assert arm.build["head"] == "linear" and arm.build["layer"] == ["stem", "stage1", "stage2"]
        train_labels = torch.as_tensor([int(it["label"]) for it in comp.data.splits["train"]])
        assert len(seen_labels) == 1 and torch.equal(seen_labels[0], train_labels)
        assert "logreg_C" in arm.fit.history[0]
    else:
        assert set(arm.sweep) == {"stage2", "concat"}
        assert comp.sweep_table()["chosen"].tolist().count("1/1") == 1


def test_a_logreg_concat_sweep_is_tracked_registered_and_served(marker_data, mlflow_uri) -> None:
    """Through MLflow, with a new site: the sweep's choices and C are logged, the shift analysis (Grad-CAM on the
    deepest group read, AdaBN) and label-free validators run on the concatenated features, and the registered
    champion (a pyfunc rebuilt from the logged meta and weights) predicts the arm's test probabilities from files."""
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from medtl import api

    strategy = {"name": "frozen", "head": "logreg", "layers": ["stage2", ["stem", "stage2"], "concat"], "logreg_cs": 3,
                "logreg_folds": 2}
    pair = {"name": "pair", "kind": "frozen", "layer": ["stem", "stage1"], "epochs": 2}
    cfg = tiny_config(marker_data, strategies=[strategy, pair], shift={"max_items": 10, "permutations": 10, "adabn": True, "gradcam": 1},
                      tracking={"experiment": "levers", "model_name": "levers-model", "system_metrics": False})
    cfg["data"].update(source_domains=["scanner_a"], target_domains=["scanner_b"])
    comp = api.compare(cfg)
    client = MlflowClient(mlflow_uri)
    children = {r.data.tags["medtl.strategy"]: r.data.metrics for r in client.search_runs(
        [client.get_run(comp.run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{comp.run_id}'")}
    assert {"sweep.val_auc.stage2", "sweep.val_auc.stem-stage2", "sweep.val_auc.concat", "logreg_C"} <= set(children["frozen"])
    for metrics in children.values():
        assert {"shift.mmd", "adabn.target.test_auc", "select.snd"} <= set(metrics)
    arm = comp.best
    served = mlflow.pyfunc.load_model("models:/levers-model@champion")
    paths = [it["path"] for it in comp.data.splits["test"]]
    out = served.predict(pd.DataFrame({"path": paths}))
    np.testing.assert_allclose(out[list(comp.data.classes)].to_numpy(float), arm.test_probs, atol=1e-5)


def test_a_logreg_arm_without_patients_to_fold_is_refused_before_the_first_arm(marker_data, tmp_path, monkeypatch) -> None:
    """A class with one patient in the training split cannot cross-validate C: the comparison says so once
    the data is read, before the arm listed first trains."""
    import pandas as pd

    from medtl.experiment import run

    monkeypatch.chdir(tmp_path)
    rows = pd.read_csv(marker_data)
    marker_train = rows[(rows["split"] == "train") & (rows["label"] == "marker")]
    keep = marker_train["patient_id"].iloc[0]
    rows = rows.drop(marker_train.index[marker_train["patient_id"] != keep])  # one 'marker' patient left in train
    manifest = tmp_path / "manifest.csv"
    rows.to_csv(manifest, index=False)
    trained = []
    real = run.train_one
    monkeypatch.setattr(run, "train_one", lambda s, *a, **k: trained.append(s.name) or real(s, *a, **k))
    cfg = tiny_config(manifest, strategies=[{"name": "full", "epochs": 1},
                                            {"name": "frozen", "head": "logreg", "logreg_folds": 2}])
    with pytest.raises(ConfigError, match=r"strategies\.frozen\.logreg_folds.*class 'marker' has 1 patient"):
        compare(load_config(cfg))
    assert trained == []
