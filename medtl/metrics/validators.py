"""Choosing a model for a new site without its labels: unsupervised validation scores.

A comparison's default pick is the best source-validation AUC, which says nothing about the target
site. These scores read only the target's *unlabelled* scans (and the labelled source validation
split), so they can be computed where the target has no labels at all:

* ``snd``: soft neighbourhood density (Saito et al. 2021): the mean entropy of each target scan's
  softmax-weighted similarity to the other target scans, on L2-normalised class probabilities
  (temperature 0.05). Higher: predictions form dense, consistent neighbourhoods.
* ``entropy``: minus the mean entropy of the target predictions (Morerio et al. 2018). Higher:
  more confident on the target. A weak baseline: a collapsed model is very confident.
* ``dev``: deep embedded validation (You et al. 2019): the source-validation loss re-weighted by
  the density ratio p_target(x) / p_source(x) estimated by a domain classifier on the model's
  features (scikit-learn's logistic regression, out-of-fold), with the control variate that
  reduces its variance. A risk: lower is better; ``score`` returns it negated so that higher is
  better for every validator.

Hand-written (pytorch-adapt implements SND and DEV, but pulls in pytorch-ignite and
pytorch-metric-learning for a few lines each); tests hold SND to the formula pytorch-adapt tests
against, and DEV's importance weights to the exact density ratio on Gaussians.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

VALIDATORS = ("source_val", "snd", "entropy", "dev")
HIGHER_IS_BETTER = {"source_val": True, "snd": True, "entropy": True, "dev": False}


def snd(probs_t: np.ndarray, temperature: float = 0.05) -> float:
    """Soft neighbourhood density of target class probabilities ``(n, k)`` (higher is better)."""
    p = torch.as_tensor(np.asarray(probs_t), dtype=torch.float64)
    if len(p) < 3:
        raise ValueError("SND needs at least three target scans")
    z = torch.nn.functional.normalize(p, dim=1)
    sim = z @ z.T
    n = len(sim)
    sim = sim[~torch.eye(n, dtype=torch.bool)].view(n, n - 1)  # a scan is not its own neighbour
    q = torch.softmax(sim / temperature, dim=1)
    return float(-(q * torch.log(q.clamp_min(1e-300))).sum(1).mean())


def neg_entropy(probs_t: np.ndarray) -> float:
    """Minus the mean entropy of target class probabilities (higher: more confident)."""
    p = np.clip(np.asarray(probs_t, dtype=np.float64), 1e-12, 1.0)
    return float((p * np.log(p)).sum(1).mean())


def importance_weights(feats_s: np.ndarray, feats_t: np.ndarray, seed: int = 0, folds: int = 5) -> np.ndarray:
    """Density ratio p_t(x) / p_s(x) at each source row, from an out-of-fold domain classifier."""
    x = np.vstack([np.asarray(feats_s, np.float64), np.asarray(feats_t, np.float64)])
    y = np.r_[np.zeros(len(feats_s)), np.ones(len(feats_t))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    k = max(2, min(folds, len(feats_s), len(feats_t)))
    p_t = cross_val_predict(clf, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    p_t = np.clip(p_t[: len(feats_s)], 1e-6, 1 - 1e-6)
    return p_t / (1.0 - p_t) * (len(feats_s) / len(feats_t))


def dev_risk(losses_s: np.ndarray, weights: np.ndarray) -> float:
    """DEV's controlled importance-weighted risk of per-row source-validation losses (lower is better)."""
    w = np.asarray(weights, np.float64)
    wl = w * np.asarray(losses_s, np.float64)
    var = np.var(w, ddof=1)
    eta = -np.cov(wl, w, ddof=1)[0, 1] / var if var > 0 else 0.0
    return float(wl.mean() + eta * w.mean() - eta)


def dev(feats_s: np.ndarray, probs_s: np.ndarray, labels_s: np.ndarray, feats_t: np.ndarray, seed: int = 0) -> float:
    """DEV risk of a model from its source-validation features, probabilities and labels and its target features."""
    p = np.clip(np.asarray(probs_s, np.float64)[np.arange(len(labels_s)), np.asarray(labels_s, int)], 1e-12, 1.0)
    return dev_risk(-np.log(p), importance_weights(feats_s, feats_t, seed))


def validator_scores(val_auc: float, probs_t: np.ndarray, feats_s: np.ndarray | None = None,
                     probs_s: np.ndarray | None = None, labels_s: np.ndarray | None = None,
                     feats_t: np.ndarray | None = None, seed: int = 0) -> dict[str, float]:
    """Every validator's raw value for one model (``dev`` only when source-validation features are given)."""
    out = {"source_val": float(val_auc), "snd": snd(probs_t), "entropy": neg_entropy(probs_t)}
    if feats_s is not None and probs_s is not None and labels_s is not None and feats_t is not None:
        out["dev"] = dev(feats_s, probs_s, labels_s, feats_t, seed)
    return out


def pick(scores: Mapping[str, Mapping[str, float]], validator: str) -> str | None:
    """The candidate (arm name) a validator prefers among ``{candidate: {validator: value}}``; None if none scored."""
    values = {c: s[validator] for c, s in scores.items() if validator in s and np.isfinite(s[validator])}
    if not values:
        return None
    sign = 1.0 if HIGHER_IS_BETTER[validator] else -1.0
    return max(values, key=lambda c: sign * values[c])
