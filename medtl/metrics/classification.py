"""Classification metrics with MedMNIST's definitions, and bootstrap intervals.

MedMNIST (``medmnist.evaluator``): binary AUC from the positive-class score, multi-class AUC as
the mean of one-vs-rest AUCs; binary ACC at score > 0.5, multi-class ACC by argmax. Beside them:
balanced accuracy, sensitivity and specificity (binary: of the positive class; multi-class:
macro means), F1 (binary: positive class; multi-class: macro) and expected calibration error
(top-label, 15 bins, torchmetrics). Intervals: percentile bootstrap, resampling patients (all of a
patient's scans together) when patient ids are given, otherwise scans.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score
from torchmetrics.functional.classification import multiclass_calibration_error


def predicted_labels(probs: np.ndarray) -> np.ndarray:
    if probs.shape[1] == 2:
        return (probs[:, 1] > 0.5).astype(int)
    return probs.argmax(axis=1)


def auc_score(y: np.ndarray, probs: np.ndarray) -> float:
    """MedMNIST AUC; NaN when a class is missing from ``y`` (undefined, not 0.5)."""
    y = np.asarray(y).astype(int).ravel()
    k = probs.shape[1]
    if k == 2:
        if len(np.unique(y)) < 2:
            return float("nan")
        return float(roc_auc_score(y, probs[:, 1]))
    aucs = []
    for c in range(k):
        pos = y == c
        if pos.all() or not pos.any():
            return float("nan")
        aucs.append(roc_auc_score(pos.astype(int), probs[:, c]))
    return float(np.mean(aucs))


def acc_score(y: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean(predicted_labels(probs) == np.asarray(y).astype(int).ravel()))


def ece_score(y: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    k = probs.shape[1]
    return float(multiclass_calibration_error(torch.as_tensor(probs, dtype=torch.float32), torch.as_tensor(y).long(),
                                              num_classes=k, n_bins=n_bins, norm="l1"))


def sens_spec(y: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    k = probs.shape[1]
    cm = confusion_matrix(y, predicted_labels(probs), labels=list(range(k))).astype(float)
    tp = np.diag(cm)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens, spec = tp / (tp + fn), tn / (tn + fp)
    if k == 2:
        return float(sens[1]), float(spec[1])
    return float(np.nanmean(sens)), float(np.nanmean(spec))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auc": auc_score,
    "acc": acc_score,
    "balanced_acc": lambda y, p: float(balanced_accuracy_score(y, predicted_labels(p))),
    "sensitivity": lambda y, p: sens_spec(y, p)[0],
    "specificity": lambda y, p: sens_spec(y, p)[1],
    "f1": lambda y, p: float(f1_score(y, predicted_labels(p), average="binary" if p.shape[1] == 2 else "macro",
                                      labels=None if p.shape[1] == 2 else list(range(p.shape[1])), zero_division=0)),
    "ece": ece_score,
}


def classification_metrics(y: np.ndarray, probs: np.ndarray, names: Sequence[str] | None = None) -> dict[str, float]:
    y = np.asarray(y).astype(int).ravel()
    return {n: METRICS[n](y, probs) for n in (names or METRICS)}


def bootstrap_ci(
    y: np.ndarray,
    probs: np.ndarray,
    groups: Sequence[str] | None = None,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    names: Sequence[str] | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals; whole patients are resampled when ``groups`` (patient ids) are given."""
    y = np.asarray(y).astype(int).ravel()
    names = list(names or METRICS)
    if n <= 0 or len(y) < 2:
        return {k: (float("nan"), float("nan")) for k in names}
    rng = np.random.default_rng(seed)
    if groups is not None and len(set(groups)) > 1:
        codes, uniq = _codes(groups)
        members = [np.flatnonzero(codes == i) for i in range(len(uniq))]
        draw = lambda: np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])  # noqa: E731
    else:
        draw = lambda: rng.integers(0, len(y), len(y))  # noqa: E731
    samples: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(n):
        idx = draw()
        for k in names:
            samples[k].append(METRICS[k](y[idx], probs[idx]))
    alpha = (1 - level) / 2
    out = {}
    for k, vals in samples.items():
        v = np.asarray(vals, float)
        v = v[np.isfinite(v)]
        out[k] = (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) if len(v) else (float("nan"), float("nan"))
    return out


def _codes(groups: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    uniq = sorted(set(groups))
    index = {g: i for i, g in enumerate(uniq)}
    return np.array([index[g] for g in groups]), uniq
