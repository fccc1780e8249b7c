"""The default configs on RGB MedMNIST data, and bench_accuracy's --npz route and ablation rows.

No RGB MedMNIST file is available offline (only BreastMNIST and OrganAMNIST, both grey), so a
tiny synthetic file of MedMNIST's layout stands in for DermaMNIST: ``(N, 28, 28, 3)`` uint8 images
whose classes differ in colour (red, green, blue), labels ``(N, 1)``, official-style splits.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medtl import api
from medtl.config import load_config
from medtl.models.transfer import GroupedBackbone
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))
from benchmarks.bench_accuracy import PUBLISHED, expand_lever, main, paired_delta, parse_lever, published_rows  # noqa: E402
from medtl.metrics.classification import acc_score, auc_score  # noqa: E402

# Time only: every arm 1 epoch (medtl compare --quick's setting, scaled further), 32 px, few
# bootstrap resamples, no worker processes. Nothing else differs from configs/<name>.yaml; the
# synthetic file is tiny (36 train images), so neither config needs a subset (OrganAMNIST's
# `subset: {train: 10000, val: 2000}` stays and keeps every image).
SHRINK = ["train.epochs_scale=0.02", "preprocess.size=32", "train.bootstrap=20", "data.num_workers=0"]
COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], np.uint8)  # one hue per class


def rgb_medmnist(path: Path, per_class: tuple[int, int, int] = (12, 4, 4), seed: int = 0) -> Path:
    """A MedMNIST-layout .npz of 28x28 RGB images, three classes told apart by colour only."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), per_class):
        labels = np.repeat(np.arange(len(COLOURS)), n)
        noise = rng.integers(-30, 31, (len(labels), 28, 28, 3))
        images = np.clip(COLOURS[labels][:, None, None, :].astype(int) + noise, 0, 255).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None].astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return path


@pytest.mark.parametrize("config", ["breastmnist", "organamnist"])
def test_default_config_runs_unchanged_on_rgb_medmnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str) -> None:
    npz = rgb_medmnist(tmp_path / "dermamnist.npz")
    seen: list[torch.Tensor] = []
    forward, forward_all = GroupedBackbone.forward, GroupedBackbone.forward_all

    def spy(method):  # noqa: ANN001, ANN202
        def wrapped(self, x, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
            mean = torch.tensor(self.spec.mean).view(1, -1, 1, 1)
            std = torch.tensor(self.spec.std).view(1, -1, 1, 1)
            if x.amax() > x.amin():  # not build_backbone's all-zeros probe of the feature sizes
                seen.append((x.detach().float().cpu() * std + mean)[:4])  # back to [0, 1] intensities
            return method(self, x, *a, **k)
        return wrapped

    monkeypatch.setattr(GroupedBackbone, "forward", spy(forward))
    monkeypatch.setattr(GroupedBackbone, "forward_all", spy(forward_all))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(ROOT / "configs" / f"{config}.yaml", [f"data.npz={npz}", *SHRINK])
    comp = api.compare(cfg, track=False)

    assert comp.data.classes == ["0", "1", "2"]
    assert {a.strategy for a in comp.arms} == {s.name for s in cfg.strategies}  # every arm ran
    assert all(0.0 <= a.metrics["test_auc"] <= 1.0 for a in comp.arms)
    assert seen and all(x.shape[1] == 3 for x in seen)
    # colour reached the backbone: red, green and blue images keep their hue (a grey copy would
    # make the three channels equal at every pixel, whatever the normalisation)
    spread = torch.cat([(x.amax(dim=1) - x.amin(dim=1)).flatten(1).amax(dim=1) for x in seen])
    assert spread.min() > 0.3, "an image reached the backbone with (near) equal channels: colour was lost"
    dominant = torch.cat([x.mean(dim=(2, 3)).argmax(dim=1) for x in seen])
    assert set(dominant.tolist()) == {0, 1, 2}, "each class's hue should dominate its own channel"
    # the published bar of the dataset the images stand for is found by name
    assert published_rows("dermamnist") and PUBLISHED["dermamnist"][0][2:] == (0.917, 0.735)


def test_paired_delta_against_plain_metrics() -> None:
    """The ablation's point estimate is the difference of the seed-mean test AUC / ACC as medtl computes
    them; a lever that changes nothing gets exactly zero, interval included (same resampled images)."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 20)
    arm = lambda noise: SimpleNamespace(test_labels=y, test_probs=np.eye(3)[y] + rng.random((60, 3)) * noise)  # noqa: E731
    base, lever = [arm(2.0), arm(2.0)], [arm(0.5), arm(0.5)]
    d = paired_delta(base, lever, n=200)
    for k, score in (("auc", auc_score), ("acc", acc_score)):
        want = np.mean([score(y, a.test_probs) for a in lever]) - np.mean([score(y, a.test_probs) for a in base])
        assert d[k][0] == pytest.approx(want, abs=1e-9) and d[k][1] <= d[k][0] <= d[k][2]
    assert d["acc"][0] > 0  # less noise, more right answers
    assert paired_delta(base, base, n=50) == {"auc": (0.0, 0.0, 0.0), "acc": (0.0, 0.0, 0.0)}
    with pytest.raises(SystemExit):
        paired_delta(base, [SimpleNamespace(test_labels=y[::-1], test_probs=base[0].test_probs)], n=10)


def test_parse_lever_keeps_commas_inside_values() -> None:
    name, overrides = parse_lever("two=train.seeds=[0, 1],preprocess.size=40")
    assert name == "two" and overrides == ["train.seeds=[0, 1]", "preprocess.size=40"]
    with pytest.raises(SystemExit):
        parse_lever("no-overrides")
    assert expand_lever(["strategies.*.epochs=2", "train.seed=1"], ["frozen", "full"]) == [
        "strategies.frozen.epochs=2", "strategies.full.epochs=2", "train.seed=1"]


def test_bench_accuracy_npz_route_with_ablation_row(tmp_path: Path) -> None:
    """--npz runs configs/breastmnist.yaml on another file beside that file's published rows; a
    --lever adds a row with what it changed in the selected arm, paired over the same test images."""
    npz = rgb_medmnist(tmp_path / "dermamnist.npz")
    results = tmp_path / "RESULTS.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDTL_PROGRESS": "0"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_accuracy.py"), "--smoke", "--results", str(results), "--npz", str(npz),
           "--datasets", "breastmnist", "--backbones", "efficientnet_lite0", "--lever", "bigger=preprocess.size=40,strategies.*.epochs=1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    text = results.read_text()
    assert "<!-- bench_accuracy-dermamnist-breastmnist:start -->" in text
    assert "configs/breastmnist.yaml run unchanged but for `data.npz` (dermamnist.npz)" in text
    label = r"dermamnist \(configs/breastmnist\.yaml\)"
    assert re.search(rf"^\| {label} \| \*\*(frozen|full)\*\* \(selected\) \|", text, re.M)
    assert re.search(rf"^\| {label} \| MedMNIST v2 \(published, dermamnist\) \| ResNet-18, .*\| 0\.917 \| 0\.735 \|", text, re.M)
    assert re.search(rf"^\| {label} \| 0\.917 / 0\.735 \| (frozen|full): [\d.]+ / [\d.]+ \| (yes|NO)", text, re.M)
    row = re.search(rf"^\| {label} \| bigger \| `preprocess.size=40`, `strategies.\*.epochs=1` \| (\w+) → (\w+) \| ([\d.]+) → ([\d.]+) \(([+-][\d.]+)\) \| "
                    r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\] \| ([+-][\d.]+) \[", text, re.M)
    assert row, "no ablation row for the lever"
    before, after, delta = float(row.group(3)), float(row.group(4)), float(row.group(5))
    assert abs((after - before) - delta) < 2e-3
    d_auc, low, high = map(float, row.group(6, 7, 8))
    assert low <= d_auc + 1e-9 and d_auc <= high + 1e-9


def test_bench_accuracy_refuses_unknown_lever_bar_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Usage errors: one line, exit 2, before any training."""
    for extra, said in ((["--levers", "nope"], "unknown lever(s) ['nope']"), (["--published", "nomnist"], "--published nomnist: no published row"),
                        (["--npz", str(tmp_path / "absent.npz")], "absent.npz: file not found"),
                        (["--set", f"data.npz={tmp_path / 'gone.npz'}"], "gone.npz: file not found")):
        assert main(["--smoke", *extra]) == 2
        assert said in capsys.readouterr().err
