"""Every arm's settings are checked against the backbone and the machine before the first arm starts,
and data that cannot answer the question is refused before any training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtl import api
from medtl.data.synthetic import write_ct_dicom
from medtl.errors import ConfigError, DataError
from medtl.preflight import backbone_groups
from tests.conftest import tiny_config

GOOD_ARM = {"name": "frozen", "epochs": 1}


@pytest.mark.parametrize("change, subject, problem", [
    ({"train": {"device": "tpu"}}, "train.device", "'tpu' is not a device (use auto, cpu, cuda, cuda:N, mps)"),
    ({"train": {"device": "cuda:99"}}, "train.device", "'cuda:99': this machine has"),
    ({"strategies": [GOOD_ARM, {"name": "cut", "kind": "surgical", "groups": ["stage9"]}]},
     "strategies.cut.groups", "unknown group(s) ['stage9'] (groups: stem, stage1, stage2)"),
    ({"strategies": [GOOD_ARM, {"name": "probe", "kind": "frozen", "layers": ["stage1", "deep"]}]},
     "strategies.probe.layers", "unknown layer group(s) ['deep'] (groups: stem, stage1, stage2)"),
    ({"strategies": [GOOD_ARM, {"name": "probe", "kind": "frozen", "layer": "head"}]},
     "strategies.probe.layer", "unknown layer group(s) ['head']"),
    ({"train": {"augment": [{"name": "RandFlip"}]}}, "train.augment[0]", "use the dictionary form 'RandFlipd'"),
])
def test_a_bad_arm_is_refused_before_data_is_read_or_any_arm_trains(tmp_path, monkeypatch, change, subject, problem) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path / "no-such-manifest.csv")  # reading it would be a DataError: it is never reached
    for k, v in change.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    with pytest.raises(ConfigError) as e:
        api.compare(cfg, track=False)
    assert e.value.subject == subject and problem in e.value.problem
    assert not (tmp_path / ".medtl").exists(), "no run folder, no cache: nothing started"


def test_a_batch_that_torchrun_cannot_split_is_refused_before_the_first_arm(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc-per-node 3 sets it (rank 0)
    cfg = tiny_config(tmp_path / "no-such-manifest.csv")  # frozen first: its heads never split a batch
    with pytest.raises(ConfigError, match=r"train.batch_size: 8 is the global batch; it must divide by the 3 processes"):
        api.compare(cfg, track=False)


def test_an_adaptation_arm_under_torchrun_is_refused_before_the_first_arm(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = tiny_config(tmp_path / "no-such-manifest.csv", strategies=[{"name": "full", "epochs": 1}, {"name": "coral", "epochs": 1}])
    with pytest.raises(ConfigError, match=r"strategies.coral: coral learns from the target stream in one process"):
        api.compare(cfg, track=False)
    assert not (tmp_path / ".medtl").exists()


def test_backbone_groups_come_from_the_architecture_without_weights() -> None:
    assert backbone_groups("tiny") == ["stem", "stage1", "stage2"]
    assert backbone_groups("resnet18") == ["stem", "layer1", "layer2", "layer3", "layer4"]


def test_cli_compare_with_an_unavailable_device_exits_2_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    from medtl.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {manifest: m.csv}\ntrain: {device: 'cuda:99'}\n")
    assert main(["compare", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medtl: error: train.device: 'cuda:99': this machine has") and len(err.strip().splitlines()) == 1


def _split_manifest(root: Path, labels: list[str], splits: list[str]) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i, (label, split) in enumerate(zip(labels, splits)):
        p = write_ct_dicom(root / f"s{i}.dcm", rng.normal(0, 200, (32, 32)), 0.8, f"P{i}", "Made^Up")
        rows.append({"path": str(p), "label": label, "patient_id": f"P{i}", "split": split})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


SPLITS = ["train"] * 4 + ["val", "val", "test", "test"]


@pytest.mark.parametrize("labels, problem", [
    (["clear"] * 8, "only one class (clear): a classifier needs at least two"),
    (["clear", "marker"] * 2 + ["marker", "marker", "clear", "marker"],
     "the val split has no scan of class(es) ['clear'] (classes: clear, marker), so its AUC is undefined"),
])
def test_compare_refuses_data_that_cannot_answer_before_training(tmp_path, monkeypatch, labels, problem) -> None:
    manifest = _split_manifest(tmp_path, labels, SPLITS)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        api.compare(tiny_config(manifest, strategies=[GOOD_ARM]), track=False)
    assert e.value.exit_code == 1 and problem in e.value.problem
    assert not (tmp_path / ".medtl").exists(), "refused before any arm, cache or run folder"
