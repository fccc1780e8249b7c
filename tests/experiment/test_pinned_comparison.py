"""A small comparison's numbers, pinned: moving code between rooms must not change what a comparison computes.

The values in ``pinned_comparison.json`` were produced by this test on the code before the house was
restructured (issue 19); regenerate them only for an intended change of behaviour, with
``MEDTL_PIN_WRITE=1 pytest tests/experiment/test_pinned_comparison.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from medtl import api
from tests.conftest import tiny_config

PINNED = Path(__file__).with_name("pinned_comparison.json")
STRATEGIES = [
    {"name": "frozen", "epochs": 2, "layers": ["stage1", "stage2"]},
    {"name": "lp-ft", "probe_epochs": 2, "epochs": 1},
    {"name": "progressive", "epochs": 2},
]


def _numbers(comp) -> dict:  # noqa: ANN001
    arms = {}
    for a in comp.arms:
        arms[f"{a.strategy}-seed{a.seed}"] = {
            "kind": a.kind, "val_auc": a.val_auc, "metrics": dict(sorted(a.metrics.items())),
            "history": a.fit.history, "probe_history": None if a.probe is None else a.probe.history,
            "probs_sum": float(a.test_probs.sum()), "layer": a.model.layer, "sweep": a.sweep}
    return {"best": comp.best.strategy, "shift_extractor": dict(sorted(comp.shift_extractor.items())), "arms": arms}


def _close(a, b, where: str = "") -> None:  # noqa: ANN001
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ ({sorted(set(a) ^ set(b))})"
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_a_small_comparison_gives_the_pinned_numbers(marker_data, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(marker_data, strategies=STRATEGIES)
    cfg["data"].update(source_domains=["scanner_a"], target_domains=["scanner_b"])
    cfg["shift"] = {"max_items": 10, "permutations": 10, "adabn": True, "gradcam": 0}
    cfg["selection"] = {"enabled": False}  # label-free validators came later: they add select.* metrics, change nothing else
    got = json.loads(json.dumps(_numbers(api.compare(cfg, track=False))))  # tuples -> lists, as stored
    if os.environ.get("MEDTL_PIN_WRITE") == "1":
        PINNED.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    _close(got, json.loads(PINNED.read_text()))
