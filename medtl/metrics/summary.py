"""Overall and per-domain metrics with intervals, named as INTERFACE.md names them in MLflow."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medtl.metrics.classification import NAMES, bootstrap_ci, classification_metrics


def summarize(
    y: np.ndarray,
    probs: np.ndarray,
    domains: Sequence[str],
    patients: Sequence[str] | None = None,
    prefix: str = "test",
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """``{prefix}_{metric}``, ``..._ci_low``/``..._ci_high``, and ``{prefix}_{metric}.{domain}`` for each domain."""
    y = np.asarray(y).astype(int).ravel()
    out: dict[str, float] = {}
    doms = np.asarray(list(domains))
    pats = None if patients is None else np.asarray(list(patients))
    parts: list[tuple[str, np.ndarray]] = [("", np.ones(len(y), bool))]
    if len(set(doms)) > 1:
        parts += [(f".{d}", doms == d) for d in sorted(set(doms))]
    for suffix, mask in parts:
        yy, pp = y[mask], probs[mask]
        point = classification_metrics(yy, pp)
        ci = bootstrap_ci(yy, pp, None if pats is None else list(pats[mask]), n=n_boot, seed=seed)
        for name in NAMES:
            out[f"{prefix}_{name}{suffix}"] = point[name]
            out[f"{prefix}_{name}_ci_low{suffix}"] = ci[name][0]
            out[f"{prefix}_{name}_ci_high{suffix}"] = ci[name][1]
        out[f"{prefix}_n{suffix}"] = float(mask.sum())
    return out
