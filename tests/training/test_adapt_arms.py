"""dann, coral, mcc and few-shot through ``compare``: they learn from the target site's scans, and never
from its labels (permuting the target training labels leaves every adapting model bit-identical)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from medtl.experiment.results import ArmResult
from medtl.experiment.run import compare
from medtl.config import load_config
from medtl.errors import ConfigError
from tests.conftest import tiny_config

ARMS = [
    {"name": "dann", "epochs": 2, "weight": 0.5, "discriminator_hidden": 16},
    {"name": "coral", "epochs": 2, "weight": 2.0, "align_layer": "stage1", "probe_epochs": 2, "ft_lr_scale": 0.1},
    {"name": "mcc", "epochs": 2, "temperature": 2.0},
    {"name": "few-shot", "epochs": 2, "shots": 2, "shot_repeat": 2},
]


def _manifest(marker_data: Path, out: Path, flip_target_train: bool) -> Path:
    """The curated manifest with absolute paths; optionally the target's training labels swapped."""
    df = pd.read_csv(marker_data, dtype=str, keep_default_na=False)
    df["path"] = [str((marker_data.parent / p).resolve()) for p in df["path"]]
    if flip_target_train:
        rows = (df["split"] == "train") & (df["domain"] == "scanner_b")
        labels = sorted(set(df["label"]))
        df.loc[rows, "label"] = df.loc[rows, "label"].map({labels[0]: labels[1], labels[1]: labels[0]})
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return out


def _run(marker_data: Path, work: Path, flip: bool):  # noqa: ANN202
    cfg = tiny_config(_manifest(marker_data, work / "manifest.csv", flip), strategies=ARMS)
    cfg["data"].update(source_domains=["scanner_a"], target_domains=["scanner_b"])
    cfg["shift"] = {"enabled": False}
    return compare(load_config(cfg), workdir=work / "runs")


@pytest.fixture(scope="module")
def runs(marker_data, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    work = tmp_path_factory.mktemp("adapt")
    mp.chdir(work)
    try:
        yield _run(marker_data, work / "plain", False), _run(marker_data, work / "flipped", True)
    finally:
        mp.undo()


def test_adapting_arms_train_with_their_losses(runs) -> None:
    comp, _ = runs
    arms = {a.strategy: a for a in comp.arms}
    assert set(arms) == {"dann", "coral", "mcc", "few-shot"}
    for kind in ("dann", "coral", "mcc"):  # each adaptation loss's curve, per epoch
        assert all(f"{kind}_loss" in row and row[f"{kind}_loss"] > 0 for row in arms[kind].fit.history), kind
    # a discriminator at chance: 0.5 x log 2 (weight 0.5); it learns, so the loss moves
    assert arms["dann"].fit.history[0]["dann_loss"] == pytest.approx(0.5 * 0.693, abs=0.1)
    assert not any(k.endswith(("dann_loss", "coral_loss", "mcc_loss")) for k in arms["few-shot"].fit.history[0])
    # coral starts from LP-FT's probe (its curves kept), dann from a random head
    assert arms["coral"].probe is not None and len(arms["coral"].probe.history) == 2 and arms["dann"].probe is None
    for a in arms.values():  # the discriminator does not stay in the model that is kept and served
        assert not any(k.startswith("domain.") for k in a.model.state_dict())
        assert a.metrics["test_auc"] == a.metrics["test_auc"]
        loaded = ArmResult.load(a.folder)
        assert all(torch.equal(v, a.model.state_dict()[k]) for k, v in loaded.model.state_dict().items())
    shots = [k for k in comp.data.splits if k.startswith("train+2shots")]
    assert shots and len(comp.data.splits[shots[0]]) == len(comp.data.splits["train"]) + 2 * 2 * len(comp.data.classes)


def test_permuted_target_labels_give_bit_identical_models_and_the_same_selection(runs) -> None:
    plain, flipped = runs
    assert plain.data.target_labels != flipped.data.target_labels  # the labels did change
    for a, b in zip(plain.arms, flipped.arms):
        same = all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
        if a.kind == "few-shot":
            assert not same  # the one arm meant to see target labels does see them: the test can tell
        else:
            assert same, a.strategy
            assert "select.snd" in a.metrics and "select.dev" in a.metrics
            assert {k: v for k, v in a.metrics.items() if k.startswith("select.")} == \
                   {k: v for k, v in b.metrics.items() if k.startswith("select.")}
    adapting = lambda c: [a for a in c.arms if a.kind != "few-shot"]  # noqa: E731
    from medtl.experiment.selection import selection_table

    assert selection_table(adapting(plain))["picks"].tolist() == selection_table(adapting(flipped))["picks"].tolist()


def test_adapting_arms_need_target_scans(marker_data) -> None:
    cfg = tiny_config(marker_data, strategies=[{"name": "mcc"}])
    with pytest.raises(ConfigError, match="mcc needs the target site's training scans"):
        compare(load_config(cfg))
    with pytest.raises(ConfigError, match="shots: Field required"):
        load_config(tiny_config(marker_data, strategies=[{"name": "few-shot"}]))
    with pytest.raises(ConfigError, match="temperature does not apply to kind 'dann'"):  # mcc's setting, not dann's
        load_config(tiny_config(marker_data, strategies=[{"name": "dann", "temperature": 2.0}]))
    with pytest.raises(ConfigError, match="align_layer.*unknown layer group 'stage9'"):
        compare(load_config({**tiny_config(marker_data, strategies=[{"name": "coral", "align_layer": "stage9"}]),
                             "data": {"manifest": str(marker_data), "source_domains": ["scanner_a"]}}))
