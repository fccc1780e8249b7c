"""Figures a person would rather look at than read. Each returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence

from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, roc_curve

from medtl.metrics.classification import predicted_labels


def _subplots(*grid: int, figsize: tuple[float, float], **kw: Any) -> tuple[Figure, Any]:
    """A figure outside pyplot: no backend is chosen (a notebook's stays as it was) and nothing is
    kept in pyplot's list of open figures, so it is freed with its last reference."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kw)


def learning_curves(history: list[dict[str, float]], title: str) -> Figure:
    """Losses, validation AUC, and each layer group's learning rate with the number of unfrozen groups."""
    h = pd.DataFrame(history)
    x = h["epoch"] + 1
    lrs = [c for c in h.columns if c.startswith("lr.")]
    fig, axes = _subplots(1, 3 if lrs else 2, figsize=(13 if lrs else 9, 3.4))
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


def confusion(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    k = len(classes)
    cm = confusion_matrix(y, predicted_labels(probs), labels=list(range(k)))
    fig, ax = _subplots(figsize=(1.0 + 0.45 * k + 2, 0.45 * k + 2))
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


def roc(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    fig, ax = _subplots(figsize=(4.2, 4))
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


def calibration(y: np.ndarray, probs: np.ndarray, title: str, n_bins: int = 10) -> Figure:
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
    fig, ax = _subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.scatter(mids, accs, s=np.asarray(counts) * 200 / max(counts or [1]), alpha=0.7)
    ax.plot(mids, accs)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def comparison_chart(table: pd.DataFrame, metrics: Sequence[str] = ("test_auc", "test_acc")) -> Figure:
    """Strategies side by side with their 95% intervals."""
    fig, axes = _subplots(1, len(metrics), figsize=(4.5 * len(metrics), 0.5 * len(table) + 1.8), squeeze=False)
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


def _domain_colours(domains: np.ndarray, source: Sequence[str]) -> np.ndarray:
    """Domains as colour groups: each domain when few, else source vs each corruption family (name before ``_s``)."""
    if len(set(domains)) > 10:
        return np.array(["source" if d in source else d.rpartition("_s")[0] or d for d in domains])
    return domains


def embedding(emb: dict, source: Sequence[str], title: str) -> Figure:
    """2D PCA of the frozen extractor's and the model's features on the same images, by domain and by label."""
    from sklearn.decomposition import PCA

    groups = _domain_colours(np.asarray(emb["domain"]), source)
    fig, axes = _subplots(2, 2, figsize=(10, 8.5))
    for row, key in enumerate(("extractor", "model")):
        z = PCA(2, random_state=0).fit_transform(emb[key])
        for col, (colour_by, values) in enumerate((("domain", groups), ("label", np.asarray(emb["label"])))):
            ax = axes[row, col]
            for i, v in enumerate(sorted(set(values.tolist()), key=str)):
                m = values == v
                ax.scatter(z[m, 0], z[m, 1], s=6, alpha=0.6, label=str(v), color=matplotlib.colormaps["tab20"](i % 20),
                           marker="o" if colour_by == "label" or v in source or v == "source" else ".")
            ax.set_title(f"{'frozen ImageNet extractor' if key == 'extractor' else 'this model'}, by {colour_by}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2)
    fig.suptitle(f"{title}: PCA of penultimate features")
    fig.tight_layout()
    return fig


def cka_profile(profiles: dict[str, dict[str, float]]) -> Figure:
    """Linear CKA between the frozen extractor and each model, per layer group (1: unchanged by fine-tuning)."""
    fig, ax = _subplots(figsize=(6, 3.6))
    for name, prof in profiles.items():
        ax.plot(list(prof), list(prof.values()), marker="o", label=name)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("linear CKA with the frozen extractor")
    ax.set_xlabel("layer group")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def domain_bars(metrics: dict[str, float], domains: Sequence[str], metric: str, title: str) -> Figure:
    """One bar per domain with its 95% interval; the AdaBN and TENT values beside it where there are some."""
    vals = np.array([metrics.get(f"test_{metric}.{d}", np.nan) for d in domains])
    lo = np.array([metrics.get(f"test_{metric}_ci_low.{d}", np.nan) for d in domains])
    hi = np.array([metrics.get(f"test_{metric}_ci_high.{d}", np.nan) for d in domains])
    y = np.arange(len(domains))
    fig, ax = _subplots(figsize=(6.5, 0.18 * len(domains) + 1.6))
    err = np.nan_to_num(np.vstack([vals - lo, hi - vals]).clip(0, None))
    ax.barh(y, vals, xerr=err, height=0.6, color="C0", alpha=0.8, label=f"{metric} (95% CI)", error_kw={"lw": 0.8})
    for method, label, color in (("adabn", "after AdaBN", "C3"), ("tent", "after TENT", "C2")):
        after = np.array([metrics.get(f"{method}.test_{metric}.{d}", np.nan) for d in domains])
        if np.isfinite(after).any():
            ax.scatter(after, y, color=color, marker="|", s=80, label=label, zorder=3)
    ax.set_yticks(y, domains, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel(metric)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def gradcam_grid(items: Sequence[tuple[np.ndarray, np.ndarray, str]], title: str) -> Figure:
    """Scans with their Grad-CAM heat maps overlaid."""
    n = len(items)
    fig, axes = _subplots(1, n, figsize=(2.2 * n, 2.6), squeeze=False)
    for ax, (img, cam, caption) in zip(axes[0], items):
        ax.imshow(img, cmap="gray")
        ax.imshow(cam, cmap="jet", alpha=0.4)
        ax.set_title(caption, fontsize=6)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
