"""A small comparison gives the numbers it gave before the house was rebuilt (issue 19).

The expected values were produced on main at 392fe18, before the spec moved onto the model and
before ``fit`` stopped leaving its seeds in the caller's global generators. They cover every way
a seed reaches a number: a frozen layer sweep with a dropout (``mlp``) head, fine-tuning with a
random flip, LP-FT's probe then fine-tuning, and a scratch backbone's random init. The tolerance
(1e-6 relative) only absorbs summation order on other CPUs; on one machine they are bit-identical.
"""

from pathlib import Path

import pytest

from medtl.config import load_config
from medtl.experiment.run import compare
from tests.conftest import tiny_config

STRATEGIES = [
    {"name": "frozen", "epochs": 3, "layers": "all", "head": "mlp"},
    {"name": "full", "epochs": 2},
    {"name": "lp-ft", "probe_epochs": 2, "epochs": 2},
    {"name": "scratch", "epochs": 2},
]

EXPECTED = {  # main 392fe18
    "frozen": {"test_auc": 0.75, "test_ece": 0.034370869398117065, "val_auc": 0.5,
               "train_loss": [0.7121726115544637, 0.697811734676361, 0.6926987727483114],
               "val_loss": [0.6582151651382446, 0.686211884021759, 0.6920486688613892]},
    "full": {"test_auc": 1.0, "test_ece": 0.039776697754859924, "val_auc": 0.625,
             "train_loss": [0.7001913626988728, 0.7005642692248026], "val_loss": [0.6522379517555237, 0.6535305380821228]},
    "lp-ft": {"test_auc": 0.75, "test_ece": 0.05345366895198822, "val_auc": 0.625,
              "train_loss": [0.7024970650672913, 0.704900614420573], "val_loss": [0.6395925879478455, 0.6401464939117432]},
    "scratch": {"test_auc": 0.75, "test_ece": 0.026112601161003113, "val_auc": 0.5,
                "train_loss": [0.7217488249142965, 0.6898370305697124], "val_loss": [0.667063295841217, 0.6684862375259399]},
}


def test_a_small_comparison_gives_the_numbers_of_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medtl.data.curate import curate
    from medtl.data.synthetic import make_marker_dataset

    # its own marker data (the session fixture's may be written with other settings by then)
    manifest = make_marker_dataset(tmp_path / "data", patients_per_domain=10, scans_per_patient=2, seed=1)
    curate(manifest, tmp_path / "curated", seed=0)
    cfg = tiny_config(tmp_path / "curated" / "manifest.csv", strategies=STRATEGIES)
    cfg["train"]["augment"] = [{"name": "RandFlipd", "prob": 0.5, "spatial_axis": 1}]
    monkeypatch.chdir(tmp_path)
    comp = compare(load_config(cfg))
    got = {a.strategy: {"test_auc": a.metrics["test_auc"], "test_ece": a.metrics["test_ece"], "val_auc": a.val_auc,
                        "train_loss": [h["train_loss"] for h in a.fit.history],
                        "val_loss": [h["val_loss"] for h in a.fit.history]} for a in comp.arms}
    assert got.keys() == EXPECTED.keys()
    for arm, row in EXPECTED.items():
        for k, v in row.items():
            assert got[arm][k] == pytest.approx(v, rel=1e-6), f"{arm} {k}: {got[arm][k]} != {v} (main)"
