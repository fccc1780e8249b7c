"""Cross-validated selection (selection.method: cv) and the rule that no choice reads a test label.

Tiny: 32 px arrays in a MedMNIST-layout .npz, the tiny test backbone, two arms, one or two epochs.
"""

from pathlib import Path

import numpy as np
import pytest

from medtl.config import load_config
from medtl.errors import ConfigError
from medtl.experiment.crossval import POOL, cv_folds
from medtl.experiment.run import compare


def write_npz(path: Path, seed: int = 0, test_labels: str = "true") -> Path:
    """Two classes told apart by a bright centre; ``test_labels``: true, permuted or flipped (every class kept)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 24), ("val", 12), ("test", 12)):
        y = np.arange(n) % 2
        x = rng.integers(0, 120, (n, 28, 28)).astype(np.uint8)
        x[y == 1, 10:18, 10:18] += 100
        if split == "test" and test_labels == "permuted":
            y = np.random.default_rng(99).permutation(y)
        elif split == "test" and test_labels == "flipped":
            y = 1 - y
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None]
    np.savez(path, **arrays)
    return path


def config(npz: Path, **selection: object) -> dict:
    return {"name": "cv", "data": {"npz": str(npz), "num_workers": 0}, "backbone": {"name": "tiny"},
            "strategies": [{"name": "frozen", "epochs": 2}, {"name": "full", "epochs": 2}],
            "train": {"batch_size": 8, "bootstrap": 20, "seed": 0}, "selection": dict(selection),
            "tracking": {"experiment": "cv", "model_name": "cv-model", "system_metrics": False}}


def choices(comp) -> dict:  # noqa: ANN001
    """Everything selection decides or sees: the best arm, epochs, every validation number, the weights."""
    out = {"best": (comp.best.strategy, comp.best.seed)}
    for a in comp.arms:
        out[a.strategy] = {"best_epoch": a.fit.best_epoch, "val_auc": a.val_auc,
                           "history": [{k: v for k, v in h.items()} for h in a.fit.history],
                           "val_metrics": {k: v for k, v in a.metrics.items() if "test" not in k},
                           "cv": None if a.cv is None else a.cv.as_dict(),
                           "weights": {k: v.clone() for k, v in a.model.state_dict().items()}}
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a["best"] == b["best"]
    for name in a:
        if name == "best":
            continue
        wa, wb = a[name].pop("weights"), b[name].pop("weights")
        assert wa.keys() == wb.keys() and all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa), f"{name}: weights differ"
        # repr: every float to its last bit, and NaN (a refit's unvalidated epochs) equal to itself
        assert repr(a[name]) == repr(b[name]), f"{name}: a choice or a validation number changed with the test labels"


@pytest.mark.parametrize("selection", [{}, {"method": "cv", "folds": 3}, {"method": "cv", "folds": 3, "then": "ensemble"}],
                         ids=["holdout", "cv-refit", "cv-ensemble"])
def test_selection_never_reads_test_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, selection: dict) -> None:
    monkeypatch.chdir(tmp_path)
    true = compare(load_config(config(write_npz(tmp_path / "true.npz"), **selection)))
    other = compare(load_config(config(write_npz(tmp_path / "permuted.npz", test_labels="flipped"), **selection)))
    assert not np.array_equal(true.arms[0].test_labels, other.arms[0].test_labels)  # the test split did change
    assert any(a.metrics["test_auc"] != b.metrics["test_auc"] for a, b in zip(true.arms, other.arms))
    assert_same(choices(true), choices(other))


def test_cv_chooses_by_the_mean_over_folds_and_refits_for_that_many_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    comp = compare(load_config(config(write_npz(tmp_path / "d.npz"), method="cv", folds=3)))
    for arm in comp.arms:
        cv = arm.cv
        assert cv is not None and len(cv.folds) == 3 and sum(n for _, n in cv.sizes) == 36  # every pooled row held out once
        mean = [np.mean([f.history[e]["val_auc"] for f in cv.folds]) for e in range(2)]
        assert arm.val_auc == pytest.approx(mean[cv.epoch]) == pytest.approx(arm.metrics["cv.val_auc"])
        assert mean[cv.epoch] == max(mean)
        assert arm.metrics["cv.val_auc_std"] == pytest.approx(np.std([f.history[cv.epoch]["val_auc"] for f in cv.folds], ddof=1))
        assert cv.refit is not None and len(cv.refit.history) == cv.epoch + 1  # the chosen epoch count, on all of train+val
        assert all(np.isnan(h["val_auc"]) for h in cv.refit.history)  # nothing held out in the refit
    table = comp.table()
    assert {"cv_val_auc", "cv_val_auc_std"} <= set(table.columns)
    assert comp.best.strategy == max(comp.arms, key=lambda a: (a.val_auc, -a.fit.best_val_loss)).strategy


def test_folds_are_patient_level_stratified_and_seeded(tmp_path: Path) -> None:
    from medtl.data.datasets import load_data

    cfg = load_config(config(write_npz(tmp_path / "d.npz"), method="cv", folds=4))
    data = load_data(cfg.data, 0)
    data.splits["train"][1]["patient"] = data.splits["train"][0]["patient"]  # two scans of one patient
    folds = cv_folds(data, 4, seed=0)
    pool = data.splits[POOL]
    assert len(pool) == 36
    held = [set(b.tolist()) for _, b in folds]
    assert set().union(*held) == set(range(36)) and sum(map(len, held)) == 36
    assert any({0, 1} <= h for h in held)  # one patient, one fold
    assert all(sorted({pool[i]["label"] for i in h}) == [0, 1] for h in held)
    assert [b.tolist() for _, b in folds] == [b.tolist() for _, b in cv_folds(data, 4, seed=0)]
    assert [b.tolist() for _, b in folds] != [b.tolist() for _, b in cv_folds(data, 4, seed=1)]
    with pytest.raises(ConfigError, match="selection.folds"):
        cv_folds(data, 20, seed=0)  # a fold without one of the classes


def test_cv_is_tracked_on_each_arm_run_and_in_the_table(tmp_path: Path, mlflow_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    from medtl import api

    comp = api.compare(config(write_npz(tmp_path / "d.npz"), method="cv", folds=3), tracking_uri=mlflow_uri)
    client = MlflowClient(mlflow_uri)
    for arm in comp.arms:
        run = client.get_run(next(r.info.run_id for r in client.search_runs([client.get_experiment_by_name("cv").experiment_id])
                                  if r.data.tags.get("medtl.strategy") == arm.strategy))
        m = run.data.metrics
        assert m["cv.val_auc"] == pytest.approx(arm.metrics["cv.val_auc"]) and "cv.val_auc_std" in m
        assert {f"cv.fold{i}.val_auc" for i in range(3)} <= m.keys() and m["cv.epochs"] == arm.cv.epoch + 1
        assert len(client.get_metric_history(run.info.run_id, "fold2.val_auc")) == 2  # each fold's curve
        assert len(client.get_metric_history(run.info.run_id, "refit.train_loss")) == arm.cv.epoch + 1
    from medtl.tracking.results import outcome_lines

    assert f"best: {comp.best.strategy} (mean validation AUC over 3 folds of train+val" in outcome_lines(comp, mlflow_uri)[0]
    table = api.results(tracking_uri=mlflow_uri)  # read back from MLflow: the same cv columns as compare printed
    assert table.set_index("strategy")["cv_val_auc"].to_dict() == pytest.approx(comp.table().set_index("strategy")["cv_val_auc"].to_dict())


def test_a_cv_ensemble_is_one_model_of_every_fold_model_logged_and_served_whole(tmp_path: Path, mlflow_uri: str) -> None:
    from medtl import api
    from medtl.data.datasets import load_data
    from medtl.models.averaging import Averaged
    from medtl.tracking.tracker import load_classifier

    cfg = config(write_npz(tmp_path / "d.npz"), method="cv", folds=3, then="ensemble")
    comp = api.compare(cfg, tracking_uri=mlflow_uri)
    for arm in comp.arms:
        assert isinstance(arm.model, Averaged) and len(arm.model.members) == 3 and len(arm.build["members"]) == 3
        # its validation predictions are out-of-fold: every pooled scan once, by the model that did not train on it
        assert arm.val_probs.shape == (36, 2) and np.array_equal(arm.val_labels, [it["label"] for it in comp.data.splits[POOL]])
    served = load_classifier("models:/cv-model@champion")  # the registered best: every fold model
    test = load_data(load_config(cfg).data).splits["test"]
    assert served.predict_proba([it["image"] for it in test]) == pytest.approx(comp.best.test_probs, abs=1e-5)


def test_an_ensemble_arm_averages_cv_arms_out_of_fold_predictions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config(write_npz(tmp_path / "d.npz"), method="cv", folds=3)
    cfg["strategies"].append({"name": "ens", "kind": "ensemble", "top_k": 2})
    arms = {a.strategy: a for a in compare(load_config(cfg)).arms}
    assert arms["ens"].val_probs == pytest.approx((arms["frozen"].val_probs + arms["full"].val_probs) / 2)
    assert arms["ens"].test_probs == pytest.approx((arms["frozen"].test_probs + arms["full"].test_probs) / 2)
    with pytest.raises(ConfigError, match="selection.then: refit"):
        load_config({**cfg, "selection": {"method": "cv", "then": "ensemble"}})


def test_too_many_folds_are_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config(write_npz(tmp_path / "d.npz"), method="cv", folds=7)  # the subset leaves 6 images (patients) a class
    with pytest.raises(ConfigError, match="class 0 has 6 patient"):
        compare(load_config({**cfg, "data": {**cfg["data"], "subset": {"train": 8, "val": 4}}}))
    assert not (tmp_path / ".medtl" / "runs").exists()  # nothing trained, no run folder made


def test_an_interrupted_cv_arm_resumes_to_the_same_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medtl.experiment.results import ArmResult

    monkeypatch.chdir(tmp_path)
    cfg = load_config(config(write_npz(tmp_path / "d.npz"), method="cv", folds=3))
    first = compare(cfg)
    for arm in first.arms:  # killed after its folds and refit checkpointed, before the arm's result was written
        (arm.folder / ArmResult.RESULT).unlink()
    (first.arms[1].folder / "refit").rename(first.arms[1].folder / "refit-gone")  # and one refit never started
    again = compare(cfg, resume=True)
    assert_same(choices(first), choices(again))


def test_dry_run_says_what_cv_costs(tmp_path: Path) -> None:
    from tests.test_cli import run

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {npz: x.npz}\nstrategies: [{name: full, epochs: 2}]\n")
    p = run("compare", str(cfg), "--dry-run", "--set", "selection.method=cv", "--set", "selection.folds=4")
    assert p.returncode == 0, p.stderr
    assert "# selection cv: each trained arm runs 5 times, once per fold of train+val (4) and once more on all of it (refit)" \
        in p.stdout.splitlines()


@pytest.mark.parametrize("head", ["linear", "logreg"])
def test_a_frozen_layer_sweep_is_cross_validated_choice_by_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   head: str) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config(write_npz(tmp_path / "d.npz"), method="cv", folds=3)
    cfg["strategies"] = [{"name": "frozen", "epochs": 2, "layers": ["stage1", "stage2", "concat"], "head": head, "tta": ["hflip"],
                          **({"logreg_folds": 2} if head == "logreg" else {})}]  # flipped features of the pool, per fold
    arm = compare(load_config(cfg)).arms[0]
    assert set(arm.sweep) == {"stage1", "stage2", "concat"}
    chosen = max(arm.sweep, key=lambda g: (arm.sweep[g]["val_auc"], -arm.sweep[g]["val_loss"]))
    assert arm.val_auc == pytest.approx(arm.sweep[chosen]["val_auc"])  # the arm is its best choice's mean over folds
    from medtl.models.transfer import layer_label

    assert arm.cv.refit is not None and layer_label(arm.model.layer, arm.model.backbone.group_names) == chosen  # refitted
