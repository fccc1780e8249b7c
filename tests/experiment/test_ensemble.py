"""Ensemble arms and test-time flips in a real (tiny) comparison: chosen on validation, scored like every arm,
tracked and served with every member."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from medtl import api
from medtl.config import EnsembleConfig, load_config
from medtl.errors import ConfigError
from medtl.experiment.ensemble import choose_members
from medtl.experiment.results import Comparison
from medtl.experiment.run import compare
from medtl.experiment.shared import SharedData
from medtl.training.loop import predict_probs
from tests.conftest import tiny_config

STRATEGIES = [{"name": "frozen", "epochs": 2, "tta": ["hflip", "vflip"]},
              {"name": "mlp", "kind": "frozen", "epochs": 2, "head": "mlp"},
              {"name": "full", "epochs": 1, "tta": ["hflip"]},
              {"name": "ens", "kind": "ensemble", "top_k": 2}]


def _compare(manifest: Path, folder: Path, seeds: list[int] | None = None, tracked: bool = False):  # noqa: ANN202
    cfg = tiny_config(manifest, strategies=STRATEGIES)
    cfg["train"].update({"bootstrap": 10, **({"seeds": seeds} if seeds else {})})
    cfg["tracking"]["system_metrics"] = False
    cfg["data"]["cache_dir"] = str(folder / "cache")
    return api.compare(cfg) if tracked else compare(load_config(cfg), workdir=folder / "runs")


@pytest.fixture(scope="module")
def two_seeds(marker_data: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return _compare(marker_data, tmp_path_factory.mktemp("ens"), seeds=[0, 1])


def _by_name(comp) -> dict:  # noqa: ANN001
    return {(a.strategy, a.seed): a for a in comp.arms}


def test_the_ensemble_averages_every_seed_of_its_members_probabilities(two_seeds) -> None:
    ens = two_seeds.arms[-1]
    assert ens.strategy == "ens" and ens.kind == "ensemble" and [a.strategy for a in two_seeds.arms].count("ens") == 1
    keys = [(m["strategy"], m["seed"]) for m in ens.build["members"]]
    assert len(keys) == 4 and {s for _, s in keys} == {0, 1}  # two arms x two seeds
    members = [_by_name(two_seeds)[k] for k in keys]
    np.testing.assert_allclose(ens.test_probs, np.mean([a.test_probs for a in members], 0), rtol=0, atol=1e-7)
    np.testing.assert_allclose(ens.val_probs, np.mean([a.val_probs for a in members], 0), rtol=0, atol=1e-7)
    for k in ("test_auc", "test_auc_ci_low", "test_auc_ci_high", "test_acc", "test_ece"):
        assert np.isfinite(ens.metrics[k]), k  # the same test metrics and bootstrap intervals as every arm
    assert set(two_seeds.table()["strategy"]) == {"frozen", "mlp", "full", "ens"}
    again = Comparison.load(two_seeds.folder).arms[-1]  # saved with every member's weights, rebuilt without training
    np.testing.assert_array_equal(again.test_probs, ens.test_probs)
    x = torch.stack([SharedData(two_seeds.config, two_seeds.data, two_seeds.spec, Path("."), torch.device("cpu"))
                     .dataset("test")[i]["image"] for i in range(len(ens.test_labels))])
    with torch.no_grad():
        np.testing.assert_allclose(torch.softmax(again.model(x), 1).numpy(), ens.test_probs, rtol=0, atol=1e-5)


def test_ensemble_members_are_the_top_k_on_validation_not_test() -> None:
    def arm(name: str, val: float, test: float):  # noqa: ANN202
        return SimpleNamespace(strategy=name, seed=0, val_auc=val, val_probs=np.zeros((1, 2)),
                               fit=SimpleNamespace(best_val_loss=0.5), metrics={"test_auc": test})

    arms = [arm("a", 0.9, 0.5), arm("b", 0.8, 0.6), arm("c", 0.7, 0.99), arm("d", 0.6, 0.98)]
    assert [a.strategy for a in choose_members(EnsembleConfig(name="e", top_k=2), arms)] == ["a", "b"]
    assert [a.strategy for a in choose_members(EnsembleConfig(name="e", top_k=1, members=["c", "d"]), arms)] == ["c"]
    arms[0].val_probs = None  # an arm trained before validation probabilities were kept
    with pytest.raises(ConfigError, match="a-seed0 kept no validation probabilities"):
        choose_members(EnsembleConfig(name="e"), arms)


def test_permuted_test_labels_choose_the_same_members(marker_data: Path, tmp_path: Path) -> None:
    rows = pd.read_csv(marker_data)
    test = rows.index[rows.split == "test"]
    rows.loc[test, "label"] = rows.loc[test, "label"].sample(frac=1, random_state=3).to_numpy()
    moved = tmp_path / "manifest.csv"
    rows.assign(path=[str((marker_data.parent / p).resolve()) for p in rows.path]).to_csv(moved, index=False)
    a, b = _compare(marker_data, tmp_path / "a"), _compare(moved, tmp_path / "b")
    ea, eb = a.arms[-1], b.arms[-1]
    assert not np.array_equal(ea.test_labels, eb.test_labels)  # the permutation reached the test split
    assert ea.build["members"] == eb.build["members"] and ea.val_auc == eb.val_auc
    np.testing.assert_array_equal(ea.val_probs, eb.val_probs)


def test_tta_arms_score_validation_and_test_over_flipped_images(two_seeds) -> None:
    shared = SharedData(two_seeds.config, two_seeds.data, two_seeds.spec, Path("."), torch.device("cpu"))
    for name, flips in (("frozen", (3, 2)), ("full", (3,))):
        arm = _by_name(two_seeds)[(name, 0)]
        for split, probs in (("test", arm.test_probs), ("val", arm.val_probs)):
            views = [predict_probs(torch.nn.Sequential(Flip(d), arm.model) if d else arm.model, shared.loader(split),
                                   torch.device("cpu"), False)[0] for d in (None, *flips)]
            np.testing.assert_allclose(probs, np.mean(views, 0), rtol=0, atol=1e-6, err_msg=f"{name} {split}")
            assert np.abs(probs - views[0]).max() > 1e-5, f"{name} {split}: the flips changed nothing"


class Flip(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(self.dim)


def test_the_logged_ensemble_serves_every_member_like_its_evaluation(marker_data: Path, tmp_path: Path, mlflow_uri: str,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from mlflow.tracking import MlflowClient

    from medtl.cli import main

    comp = _compare(marker_data, tmp_path, tracked=True)
    ens = comp.arms[-1]
    run = MlflowClient(mlflow_uri).search_runs([mlflow.get_experiment_by_name("tiny").experiment_id],
                                               "tags.`medtl.strategy` = 'ens'")[0]
    uri = f"models:/{run.data.tags['medtl.model_id']}"
    clf = api.load_model(uri)
    assert [m["strategy"] for m in clf.meta["members"]] == [m["strategy"] for m in ens.build["members"]]
    assert len(clf.network.members) == len(ens.build["members"])  # every member's weights, checked by checksum at load
    paths = [it["path"] for it in comp.data.splits["test"]]
    served = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"path": paths}))
    np.testing.assert_allclose(served[list(comp.data.classes)].to_numpy(), ens.test_probs, rtol=0, atol=1e-5)
    capsys.readouterr()
    assert main(["predict", uri, paths[0], "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)[0]["probabilities"]
    np.testing.assert_allclose([cli[c] for c in comp.data.classes], ens.test_probs[0], rtol=0, atol=1e-5)
    if comp.best.strategy == "ens":  # registered as champion like any arm when validation says so
        assert comp.registry["alias"] == "champion"


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "ens", "kind": "ensemble", "tta": ["hflip"]}, "strategies.ens.tta: tta does not apply to kind 'ensemble'"),
    ({"name": "ens", "kind": "ensemble", "epochs": 3}, "strategies.ens.epochs: epochs does not apply to kind 'ensemble'"),
    ({"name": "ens", "kind": "ensemble", "members": ["full", "nope"]}, "members ['nope'] are not trained strategies (full)"),
    ({"name": "full", "tta": ["rot90"]}, "strategies.full.tta.0"),
])
def test_a_setting_that_does_not_apply_is_refused_by_the_type(entry: dict, message: str) -> None:
    strategies = [{"name": "full"}, entry] if entry["name"] != "full" else [entry]
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(tiny_config(Path("m.csv"), strategies=strategies))
    with pytest.raises(ConfigError, match="an ensemble needs trained strategies"):
        load_config(tiny_config(Path("m.csv"), strategies=[{"name": "ens", "kind": "ensemble"}]))
