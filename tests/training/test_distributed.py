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
    client = MlflowClient(f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
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
    # NCHW on both sides: oneDNN's NHWC (channels_last) convolutions choose kernels by batch size and
    # threads, so 4-image rank batches round differently from 8-image ones (measured: val loss apart
    # by 1.5e-4 after two epochs at this lr, 1.5e-6 in NCHW); the test is of DDP, not of the layout
    cfg["train"]["channels_last"] = False
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


# -- the loop itself, two gloo processes against one: batch norm, class weights, an unfreeze, an empty share --
def _toy_fit(ctx: DistContext) -> tuple[dict, list]:
    from collections import OrderedDict

    from torch import nn
    from torch.utils.data import DataLoader

    from medtl.data.datasets import _collate
    from medtl.training.distributed import distributed_loader
    from medtl.training.loop import FitOptions, fit
    from medtl.training.schedule import Schedule

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(9, 3, 2, 2, generator=g), torch.tensor([0, 1, 0, 0, 1, 0, 1, 0, 0])
    items = [{"image": x[i], "label": int(y[i])} for i in range(9)]
    torch.manual_seed(0)
    # 2x2 images: batch norm has 4 values per channel even in a batch of one. SGD, not Adam: weights just
    # before batch norm have gradients that are zero up to rounding in some directions, which Adam's
    # normalisation would blow up into full steps of rounding noise (the torchrun test covers AdamW)
    body = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    head = nn.Linear(6, 2)
    model = nn.Sequential(body, head)
    # 9 samples in batches of 4: the last global batch has 1, so one of two ranks gets an empty share
    train = DataLoader(items, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0), collate_fn=_collate)
    val = DataLoader(items, batch_size=4, collate_fn=_collate)
    if ctx.active:
        train, val = distributed_loader(train, ctx, train=True), distributed_loader(val, ctx, train=False)
    schedule = Schedule(("body", "head"), 3, {"body": 1, "head": 0}, {"body": 0.05, "head": 0.05})  # body joins at epoch 1
    opts = FitOptions(optimizer="sgd", class_weights=torch.tensor([1.0, 3.0]), amp=False, channels_last=False, dist=ctx)
    result = fit(model, OrderedDict(body=body, head=head), schedule, train, val, opts)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, result.history


def _toy_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        state, history = _toy_fit(DistContext(rank, 2, rank))
        torch.save({"state": state, "history": history}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_take_the_one_process_steps(tmp_path) -> None:
    import torch.multiprocessing as mp

    from tests.tracking.conftest import free_port

    state, history = _toy_fit(DistContext())
    mp.spawn(_toy_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for k in state:
        torch.testing.assert_close(ranks[0]["state"][k], ranks[1]["state"][k], rtol=0, atol=0)  # ranks agree exactly
        torch.testing.assert_close(ranks[0]["state"][k].float(), state[k].float(), rtol=0, atol=1e-6, msg=k)  # measured: <= 6e-8
    assert int(state["0.1.num_batches_tracked"]) == 6, "the body's batch norm trained for epochs 1 and 2 (3 steps each)"
    for a, b in zip(ranks[0]["history"], history):
        for key in ("train_loss", "val_loss", "val_auc"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    assert history[0]["lr.body"] == 0 and history[1]["lr.body"] > 0
