"""`medtl compare` killed (SIGKILL) in the middle of an arm, then `--resume`d, ends exactly where an
uninterrupted run ends: same metrics, same test scores, same weights."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from medtl.experiment.results import ArmResult

EPOCHS = 8


def _config(manifest: Path, folder: Path) -> Path:
    cfg = {
        "name": "killed",
        "data": {"manifest": str(manifest)},
        "preprocess": {"assume_modality": "CT", "window": "lung", "size": 32},
        "backbone": {"name": "efficientnet_lite0"},
        "strategies": [{"name": "frozen", "epochs": 3}, {"name": "lp-ft", "probe_epochs": 2, "epochs": EPOCHS}],
        "train": {"batch_size": 8, "lr": 1e-3, "bootstrap": 50, "seed": 0,
                  "augment": [{"name": "RandFlipd", "prob": 0.5, "spatial_axis": 1}]},
        "tracking": {"experiment": "killed", "model_name": "killed"},
    }
    path = folder / "killed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _medtl(cfg: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    # one thread each: the two runs go side by side on two cores; equality holds at any fixed thread count
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", "MEDTL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "medtl", "compare", str(cfg), *extra], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _arms(cwd: Path) -> dict[str, ArmResult]:
    return {p.parent.name: ArmResult.load(p.parent) for p in cwd.glob(".medtl/runs/*/*/result.pt")}


def test_killed_and_resumed_equals_uninterrupted(marker_data, tmp_path) -> None:
    cfg = _config(marker_data, tmp_path)
    (whole := tmp_path / "whole").mkdir()
    (killed := tmp_path / "killed").mkdir()
    uninterrupted = _medtl(cfg, whole)

    victim = _medtl(cfg, killed)
    deadline = time.time() + 600
    last = None
    while time.time() < deadline and victim.poll() is None:
        last = next(killed.glob(".medtl/runs/*/lp-ft-seed0/model/last.pt"), None)
        if last is not None:
            break
        time.sleep(0.02)
    assert last is not None, f"lp-ft never checkpointed: {victim.communicate()[1][-2000:]}"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] < EPOCHS - 1 and not (last.parent.parent / "result.pt").exists(), "killed too late: the arm had finished"
    frozen_result = next(killed.glob(".medtl/runs/*/frozen-seed0/result.pt"))
    frozen_mtime = frozen_result.stat().st_mtime_ns

    resumed = _medtl(cfg, killed, "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    out_whole, err_whole = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, err_whole[-3000:]

    assert frozen_result.stat().st_mtime_ns == frozen_mtime, "the finished frozen arm was retrained, not reloaded"
    a, b = _arms(whole), _arms(killed)
    assert set(a) == set(b) == {"frozen-seed0", "lp-ft-seed0"}
    assert b["lp-ft-seed0"].fit.resumed_from == state["epoch"] + 1
    for name in a:
        assert a[name].metrics == b[name].metrics, name
        np.testing.assert_array_equal(a[name].test_probs, b[name].test_probs)
        assert a[name].fit.history == b[name].fit.history
        sa, sb = a[name].model.state_dict(), b[name].model.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert "lp-ft" in out and "frozen" in out
