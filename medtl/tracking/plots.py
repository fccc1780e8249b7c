"""Figures a person would rather look at than read. Each returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import confusion_matrix, roc_curve  # noqa: E402

from medtl.metrics.classification import predicted_labels  # noqa: E402


def learning_curves(history: list[dict[str, float]], title: str) -> plt.Figure:
    """Losses, validation AUC, and each layer group's learning rate with the number of unfrozen groups."""
    h = pd.DataFrame(history)
    x = h["epoch"] + 1
    lrs = [c for c in h.columns if c.startswith("lr.")]
    fig, axes = plt.subplots(1, 3 if lrs else 2, figsize=(13 if lrs else 9, 3.4))
    a, b = axes[0], axes[1]
    a.plot(x, h["train_loss"], label="train loss")
    a.plot(x, h["val_loss"], label="val loss")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(x, h["val_auc"], color="C2", label="val AUC")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1.01)
    b.legend(loc="lower right")
    if lrs:
        c = axes[2]
        for col in lrs:
            c.plot(x, h[col].where(h[col] > 0), marker=".", label=col.removeprefix("lr."))
        c.set_yscale("log")
        c.set_xlabel("epoch")
        c.set_ylabel("learning rate (end of epoch)")
        c.legend(fontsize=7, loc="lower left")
        if "unfrozen_groups" in h and h["unfrozen_groups"].nunique() > 1:
            u = c.twinx()
            u.step(x, h["unfrozen_groups"], where="post", color="grey", alpha=0.5)
            u.set_ylabel("unfrozen groups")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], title: str) -> plt.Figure:
    k = len(classes)
    cm = confusion_matrix(y, predicted_labels(probs), labels=list(range(k)))
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * k + 2, 0.45 * k + 2))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def roc(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4.2, 4))
    pairs = [(1, classes[1])] if probs.shape[1] == 2 else list(enumerate(classes))
    for c, name in pairs:
        if 0 < (y == c).sum() < len(y):
            fpr, tpr, _ = roc_curve(y == c, probs[:, c])
            ax.plot(fpr, tpr, label=str(name), lw=1.2)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    if len(pairs) <= 12:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def calibration(y: np.ndarray, probs: np.ndarray, title: str, n_bins: int = 10) -> plt.Figure:
    conf = probs.max(1)
    correct = predicted_labels(probs) == y
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges) - 1, 0, n_bins - 1)
    mids, accs, counts = [], [], []
    for b in range(n_bins):
        m = idx == b
        if m.any():
            mids.append(conf[m].mean())
            accs.append(correct[m].mean())
            counts.append(m.sum())
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.scatter(mids, accs, s=np.asarray(counts) * 200 / max(counts or [1]), alpha=0.7)
    ax.plot(mids, accs)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def comparison_chart(table: pd.DataFrame, metrics: Sequence[str] = ("test_auc", "test_acc")) -> plt.Figure:
    """Strategies side by side with their 95% intervals."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 0.5 * len(table) + 1.8), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        vals = table[m].to_numpy()
        lo = np.array([c[0] for c in table[f"{m}_ci"]])
        hi = np.array([c[1] for c in table[f"{m}_ci"]])
        ypos = np.arange(len(table))
        ax.errorbar(vals, ypos, xerr=[np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)], fmt="o", capsize=4)
        ax.set_yticks(ypos, table["strategy"])
        ax.invert_yaxis()
        ax.set_xlabel(f"{m} (95% CI)")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
