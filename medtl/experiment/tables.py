"""The tables of a comparison: results per strategy, layer sweeps, and the shift table (means over seeds).

Pure functions of arm results (anything with ``strategy``, ``seed``, ``metrics`` ...), so that the
tracker and ``medtl results`` (which rebuilds arms from MLflow) print the same table as ``compare``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medtl.models.transfer import layer_label

TABLE_METRICS = ("auc", "acc", "balanced_acc", "sensitivity", "specificity", "f1", "ece")
TEST_TIME = ("adabn", "tent")  # test-time methods (medtl.experiment.shift), as metric prefixes and `<arm>+<method>` lines


def results_table(arms: list[Any]) -> pd.DataFrame:
    """One row per strategy: each test metric's mean over seeds, its 95% bootstrap interval (per
    seed, bounds averaged over seeds) and, with several seeds, the standard deviation over seeds."""
    rows = []
    for name in dict.fromkeys(a.strategy for a in arms):
        group = [a for a in arms if a.strategy == name]
        m = lambda k: float(np.mean([a.metrics.get(k, np.nan) for a in group]))  # noqa: E731
        sd = lambda vals: float(np.std(vals, ddof=1))  # noqa: E731
        row: dict[str, Any] = {"strategy": name, "kind": getattr(group[0], "kind", None), "seeds": len(group),
                               "val_auc": float(np.mean([a.val_auc for a in group]))}
        if len(group) > 1:
            row["val_auc_std"] = sd([a.val_auc for a in group])
        if "cv.val_auc" in group[0].metrics:  # cross-validated: the mean over folds and its std (means over seeds)
            row["cv_val_auc"] = m("cv.val_auc")
            row["cv_val_auc_std"] = m("cv.val_auc_std")
        for k in TABLE_METRICS:
            row[f"test_{k}"] = m(f"test_{k}")
            row[f"test_{k}_ci"] = (m(f"test_{k}_ci_low"), m(f"test_{k}_ci_high"))
            if len(group) > 1:
                row[f"test_{k}_std"] = sd([a.metrics.get(f"test_{k}", np.nan) for a in group])
        for key in sorted(group[0].metrics):
            if key.startswith(("test_auc.", "test_acc.")):
                row[key] = m(key)
        row["minutes"] = sum(a.seconds for a in group) / 60
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_table(arms: list[Any]) -> pd.DataFrame:
    """Layer sweeps of ``frozen`` arms: validation AUC per layer (mean and std over seeds), and how
    often each layer was chosen. Selection is on validation only; the test set never picks a layer."""
    rows = []
    for name in dict.fromkeys(a.strategy for a in arms if a.sweep):
        group = [a for a in arms if a.strategy == name and a.sweep]
        for layer in group[0].sweep or {}:
            aucs = [a.sweep[layer]["val_auc"] for a in group if a.sweep and layer in a.sweep]
            chosen = sum(layer_label(a.build.get("layer"), a.model.backbone.group_names) == layer for a in group)
            rows.append({"strategy": name, "layer": layer, "dim": int(group[0].sweep[layer]["dim"]),
                         "val_auc": float(np.mean(aucs)), "val_auc_std": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else float("nan"),
                         "chosen": f"{chosen}/{len(group)}"})
    return pd.DataFrame(rows, columns=["strategy", "layer", "dim", "val_auc", "val_auc_std", "chosen"])


def cka_profile(arm: Any) -> dict[str, float]:
    """An arm's ``cka.<group>`` metrics in the backbone's layer order (stem first), not alphabetical."""
    order = arm.model.backbone.group_names
    return {g: float(arm.metrics[f"cka.{g}"]) for g in order if f"cka.{g}" in arm.metrics}


def shift_table(arms: list[Any]) -> pd.DataFrame:
    """One row per strategy (and per strategy with AdaBN): source and target AUC/ACC with intervals, drop, BE, rBE,
    feature distances and the CKA profile. Means over seeds."""
    rows = []
    for name in dict.fromkeys(a.strategy for a in arms):
        group = [a for a in arms if a.strategy == name]
        for prefix, label in (("", name), *((f"{m}.", f"{name}+{m}") for m in TEST_TIME)):
            if f"{prefix}target.test_auc" not in group[0].metrics:
                continue
            m = lambda k: float(np.mean([a.metrics.get(k, np.nan) for a in group]))  # noqa: E731
            row: dict[str, Any] = {"strategy": label}
            for side in ("source", "target"):
                for met in ("auc", "acc"):
                    key = f"{prefix}{side}.test_{met}"
                    row[f"{side}_{met}"] = m(key)
                    row[f"{side}_{met}_ci"] = (m(f"{key}_ci_low"), m(f"{key}_ci_high"))
            row["drop_auc"] = m(f"{prefix}drop.test_auc")
            row["drop_acc"] = m(f"{prefix}drop.test_acc")
            row["be"] = m(f"{prefix}shift.be")
            row["rbe"] = m(f"{prefix}shift.rbe")
            for k in ("mmd", "coral", "frechet", "proxy_a_distance"):
                row[k] = m(f"shift.{k}") if not prefix else float("nan")
            for g in cka_profile(group[0]):  # one column per layer group, in the backbone's order
                row[f"cka.{g}"] = m(f"cka.{g}") if not prefix else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)
