"""Data-parallel fine-tuning under torchrun (2 CPU processes, gloo) against one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from torch.utils.data import BatchSampler, RandomSampler

from medtl import api
from medtl.training.distributed import DistContext, GlobalBatchSampler, shard_range
from tests.conftest import ROOT, tiny_config

# Same global batch, same permutation, global-batch batch norm, exact global-mean loss: what is left
# is floating-point summation order. Measured on 2 CPU cores: losses agree to ~2e-6, test
# probabilities to ~5e-7. The tolerance leaves a factor of ~50 for other CPUs and BLAS builds.
TOL = 1e-4


def test_rank_shares_make_up_the_single_process_batches() -> None:
    """Each global batch is split between ranks, none lost or repeated, also a last batch shorter than the world."""
    for n, batch, world in ((30, 8, 2), (13, 4, 4), (9, 6, 3)):
        g = torch.Generator()
        single = [list(b) for b in BatchSampler(RandomSampler(range(n), generator=g.manual_seed(5)), batch, False)]
        shares = []
        for rank in range(world):
            s = GlobalBatchSampler(BatchSampler(RandomSampler(range(n), generator=torch.Generator().manual_seed(5)), batch, False), rank, world)
            shares.append(list(s))
            assert len(s) == len(single), "every rank takes the same number of steps (an all-reduce each)"
        for k, b in enumerate(single):
            assert sorted(i for r in range(world) for i in shares[r][k]) == sorted(b)
        assert [len(shares[r][-1]) for r in range(world)] != [0] * world
    assert [list(shard_range(10, DistContext(r, 3))) for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def _runs(db: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("ddp")
    return client, client.search_runs([exp.experiment_id])


def _trace(client: MlflowClient, run, tmp: Path) -> dict:
    hist = {k: [m.value for m in sorted(client.get_metric_history(run.info.run_id, k), key=lambda m: m.step)]
            for k in ("train_loss", "val_loss", "val_auc")}
    pred = json.loads(Path(client.download_artifacts(run.info.run_id, "predictions.json", str(tmp))).read_text())
    cols = pred["columns"]
    probs = np.array([[row[cols.index(c)] for c in cols if c.startswith("p_")] for row in pred["data"]])
    return {"history": hist, "probs": probs, "metrics": run.data.metrics}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None and shutil.which("torchrun") is None,
                    reason="torchrun is not installed beside this Python")
def test_full_fine_tuning_under_torchrun_matches_one_process(marker_data, tmp_path, monkeypatch) -> None:
    cfg = tiny_config(marker_data, name="ddp", strategies=[{"name": "full", "epochs": 2}])
    cfg["train"].update(lr=1e-2, batch_size=8)  # global batch 8: 4 per rank; 30 training scans, so the last batch is 6
    cfg["tracking"] = {"experiment": "ddp", "model_name": "ddp-model", "system_metrics": False}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))

    one, two = tmp_path / "single", tmp_path / "torchrun"
    one.mkdir(), two.mkdir()
    monkeypatch.chdir(one)
    api.compare(cfg, tracking_uri=f"sqlite:///{one / 'mlflow.db'}")

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{two / 'mlflow.db'}", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(ROOT / "tests" / "training" / "ddp_entry.py"),
                        "compare", str(tmp_path / "cfg.yaml")], cwd=two, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    run_ids = [line for line in p.stdout.splitlines() if len(line) == 32 and line.isalnum()]
    assert len(run_ids) == 1, f"rank 0 alone prints the table and the run id: {p.stdout[-2000:]}"

    client, runs = _runs(two / "mlflow.db")
    parents = [r for r in runs if r.data.tags.get("medtl.role") == "comparison"]
    children = [r for r in runs if "medtl.strategy" in r.data.tags]
    assert len(runs) == 2 and len(parents) == 1 and len(children) == 1, "exactly one set of runs: rank 0 tracks"
    assert parents[0].info.run_id == run_ids[0] and parents[0].info.status == "FINISHED"
    assert len(client.search_model_versions("name = 'ddp-model'")) == 1
    ddp = _trace(client, children[0], tmp_path)
    client1, runs1 = _runs(one / "mlflow.db")
    single = _trace(client1, next(r for r in runs1 if "medtl.strategy" in r.data.tags), tmp_path)

    for key in ("train_loss", "val_loss", "val_auc"):
        np.testing.assert_allclose(ddp["history"][key], single["history"][key], atol=TOL, err_msg=key)
    assert single["history"]["train_loss"][0] != pytest.approx(single["history"]["train_loss"][1], abs=1e-3), "it trained"
    np.testing.assert_allclose(ddp["probs"], single["probs"], atol=TOL)
    for key in ("test_auc", "test_acc", "best_val_auc"):
        assert ddp["metrics"][key] == pytest.approx(single["metrics"][key], abs=TOL), key
    # only rank 0 wrote: one checkpoint folder, no stray temporary files from a second writer
    written = sorted(p.relative_to(two / ".medtl" / "runs").as_posix() for p in (two / ".medtl" / "runs").rglob("*") if p.is_file())
    assert any(w.endswith("full-seed0/result.pt") for w in written) and not [w for w in written if w.endswith(".tmp")]
