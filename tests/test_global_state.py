"""Importing medtl or calling it changes no process-wide state (issue 19): no warning filters, no
environment, no MLflow current experiment, no seeds left in the caller's global generators."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from medtl.config import load_config
from medtl.models.transfer import create_model
from medtl.training.loop import FitOptions, fit
from medtl.training.schedule import head_only
from tests.conftest import ROOT, tiny_config

# In a fresh interpreter: the libraries medtl uses are imported first (their own import-time
# effects are theirs), then a snapshot, then medtl's modules, then a second snapshot.
SNAPSHOT = r"""
import json, logging, os, random, sys, warnings
import numpy as np, torch, mlflow, mlflow.tracking.fluent as fluent, pandas, pydantic, scipy.sparse, scipy.stats
import monai.data, monai.transforms, pydicom, nibabel

def snap():
    return {
        "warnings.filters": [repr(f) for f in warnings.filters],
        "os.environ": dict(os.environ),
        "loggers": {n: l.level for n, l in logging.Logger.manager.loggerDict.items() if isinstance(l, logging.Logger)},
        "mlflow": [mlflow.get_tracking_uri(), mlflow.get_registry_uri(), fluent._active_experiment_id, repr(mlflow.active_run())],
        "torch": [torch.random.get_rng_state().tolist(), str(torch.get_default_dtype()), torch.get_num_threads(),
                  torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark],
        "numpy": repr(np.random.get_state()), "random": repr(random.getstate()),
    }

before = snap()
for m in sys.argv[1:]:
    __import__(m)
after = snap()
print(json.dumps({k: [before[k], after[k]] for k in before if before[k] != after[k]}, default=str))
"""


def test_importing_medtl_changes_no_process_wide_state(tmp_path: Path) -> None:
    modules = ["medtl", "medtl.api", "medtl.cli", "medtl.models", "medtl.training.loop", "medtl.tracking.store",
               "medtl.data.readers", "medtl.data.transforms", "medtl.data.batched"]
    p = subprocess.run([sys.executable, "-c", SNAPSHOT, *modules], cwd=tmp_path, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    changed = json.loads(p.stdout.strip().splitlines()[-1])
    loggers = changed.pop("loggers", [{}, {}])
    assert {k: v for k, v in loggers[1].items() if loggers[0].get(k, 0) != v} == {}, "logger levels set on import"
    assert changed == {}, f"importing {modules} changed: {sorted(changed)}"


def _rng_state() -> tuple:
    return random.getstate(), np.random.get_state()[1].tolist(), torch.random.get_rng_state()


def _same_state(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_fit_leaves_the_callers_generators_as_it_found_them() -> None:
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    model, _ = create_model("tiny", num_classes=2)  # draws the head from the caller's generator
    before = _rng_state()
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ds = torch.utils.data.TensorDataset(x, (x.mean((1, 2, 3)) > 0).long())
    train = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    val = torch.utils.data.DataLoader(ds, batch_size=8)
    groups = model.groups()
    fit(model, groups, head_only(tuple(groups), 2, 1e-2, "constant"), train, val, FitOptions(seed=7))
    assert _same_state(before, _rng_state()), "fit left its per-epoch seeds in the global generators"


def test_a_comparison_leaves_the_callers_generators_and_warning_filters(marker_data, tmp_path, monkeypatch) -> None:
    import warnings

    from medtl import api

    monkeypatch.chdir(tmp_path)
    cfg = load_config(tiny_config(marker_data, strategies=[{"name": "frozen", "epochs": 1}, {"name": "full", "epochs": 1}]))
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    before, filters = _rng_state(), list(warnings.filters)
    api.compare(cfg, track=False)
    assert _same_state(before, _rng_state()), "compare left an arm's seed in the global generators"
    assert warnings.filters == filters
