"""The shipped configs run on the real MedMNIST files: all six strategies and the ensemble, shrunk to seconds."""

import numpy as np
import pytest

from medtl import api
from medtl.config import load_config
from tests.conftest import ROOT, shared_path

KINDS = {"frozen", "progressive", "full", "lp-ft", "surgical", "scratch", "ensemble"}


@pytest.mark.parametrize("name,classes", [("breastmnist", 2), ("organamnist", 11)])
def test_config_runs_every_strategy(name: str, classes: int, tmp_path, monkeypatch) -> None:
    shared_path("medmnist", f"{name}.npz")
    monkeypatch.chdir(tmp_path)
    path = ROOT / "configs" / f"{name}.yaml"
    cfg = load_config(path)
    assert {s.kind for s in cfg.strategies} == KINDS
    shrink = ["data.subset={train: 66, val: 33, test: 44}", "preprocess.size=32", "train.bootstrap=20"]
    for s in cfg.trained:
        shrink.append(f"strategies.{s.name}.epochs={3 if s.kind == 'progressive' else 1}")
        if s.kind == "lp-ft":
            shrink.append(f"strategies.{s.name}.probe_epochs=2")
    comp = api.compare(path, shrink, track=False)
    assert len(comp.data.classes) == classes
    table = comp.table()
    assert list(table["kind"]) == [s.kind for s in cfg.strategies]
    assert np.isfinite(table["test_auc"]).all()
