"""k-fold cross-validation on train+val (``selection.method: cv``): a choice small data can trust.

With 78 validation images the choice between arms is noise. Here train and val are pooled and cut into
``selection.folds`` patient-level folds, stratified on label and domain as every split of medtl is
(``medtl.data.curate.patient_folds``; a MedMNIST image is its own patient). Every arm trains once per
fold on the other folds and is validated on the held-out one; its epoch count is the epoch with the best
mean validation AUC over folds (ties: lower mean validation loss), and that mean, with its standard
deviation over folds, is the arm's validation AUC, by which the comparison picks its best arm. Then
``refit``: the arm's settings trained once more on all of train+val, for that many epochs of the same
schedule, its last weights kept (nothing is held out to choose others); or ``ensemble``: the fold
models averaged (their test probabilities; one ``medtl.models.averaging.Averaged`` model, logged and
registered with every fold model). An arm's validation predictions are its out-of-fold ones, so an
``ensemble`` arm (``kind: ensemble``) averages cross-validated arms as it averages holdout ones. The
test split is only ever predicted, never chosen on.

A fold is a view of the comparison's data (``FoldData``): its ``train`` and ``val`` are parts of the pooled
split's datasets and cached features, so images are prepared and features extracted once, not per fold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from medtl.config import FrozenConfig, StrategyConfig
from medtl.data.curate import patient_folds
from medtl.errors import ConfigError
from medtl.models.averaging import Averaged
from medtl.training.loop import FitResult, selection_score
from medtl.training.strategies import Trained

POOL = "train+val"  # the pooled split the folds are cut from

Fold = tuple[np.ndarray, np.ndarray]  # (train rows, held-out rows) of the pool


def pool_of(data: Any) -> list[dict[str, Any]]:
    """Train then val rows, as one split (registered once on the comparison's data)."""
    if POOL not in data.splits:
        data.splits[POOL] = data.splits["train"] + data.splits["val"]
    return data.splits[POOL]


def cv_folds(data: Any, k: int, seed: int) -> list[Fold]:
    """``k`` patient-level folds of train+val, stratified on label and domain, drawn with ``seed``; a fold
    whose held-out part lacks a class (its AUC undefined) is refused before any training."""
    items = pool_of(data)
    patients = np.array([str(it["patient"]) for it in items])
    n_patients = len(set(patients.tolist()))
    if n_patients < k:
        raise ConfigError("selection.folds", f"{k} folds need at least {k} patients in train+val, there are {n_patients}")
    labels = np.array([it["label"] for it in items])
    per_class = {c: len(set(patients[labels == c].tolist())) for c in range(len(data.classes))}
    rarest = min(per_class, key=per_class.__getitem__)
    if per_class[rarest] < k:  # some fold's held-out part could not hold this class
        raise ConfigError("selection.folds", f"class {data.classes[rarest]} has {per_class[rarest]} patient(s) in train+val, "
                          f"fewer than the {k} folds: use at most {per_class[rarest]} folds")
    strata = np.array([f"{it['label']}|{it['domain']}" for it in items])
    assignment = patient_folds(strata, patients, k, seed)
    folds = []
    for i in range(k):
        held = np.flatnonzero(assignment == i)
        missing = sorted(set(range(len(data.classes))) - set(labels[held].tolist()))
        if missing:
            raise ConfigError("selection.folds", f"fold {i + 1} of {k} holds no scan of class(es) "
                              f"{[data.classes[c] for c in missing]}, so its AUC is undefined: use fewer folds")
        folds.append((np.flatnonzero(assignment != i), held))
    return folds


class FoldData:
    """One fold's view of a comparison's data (an ``ArmData``): ``train`` and ``val`` are rows of the pooled
    train+val, every other split (test, target) is the comparison's own."""

    def __init__(self, shared: Any, fold: Fold, name: str) -> None:
        self.shared, self.name = shared, name
        self.parts = {"train": fold[0], "val": fold[1]}
        self.device, self.ctx = shared.device, shared.ctx

    def items(self, split: str) -> list[dict[str, Any]]:
        pool = pool_of(self.shared.data)
        return [pool[i] for i in self.parts[split]]

    def patients(self, split: str) -> list[str]:
        """Each row's patient, in the split's loader and feature order (a head that cuts its own folds groups by them)."""
        return [str(it["patient"]) for it in self.items(split)] if split in self.parts else self.shared.patients(split)

    def loader(self, split: str, train: bool = False, seed: int = 0, shard: bool = False) -> Any:
        if split not in self.parts:
            return self.shared.loader(split, train, seed, shard)
        pool_of(self.shared.data)
        return self.shared.loader_of(Subset(self.shared.dataset(POOL, train), self.parts[split].tolist()), train, seed, shard)

    def features_for(self, built: Any, seed: int, split: str, flip: str | None = None) -> dict[str, Any]:
        if split not in self.parts:
            return self.shared.features_for(built, seed, split, flip)
        pool_of(self.shared.data)
        feats = self.shared.features_for(built, seed, POOL, flip)  # extracted once, for every fold
        rows = torch.as_tensor(self.parts[split], dtype=torch.long)
        return {"features": {g: f[rows] for g, f in feats["features"].items()}, "labels": feats["labels"][rows]}

    def extra_split(self, key: str, build: Callable[[Any], list[dict[str, Any]]]) -> str:
        """A strategy's own split (few-shot's source + shots), made from this fold's train and val."""
        def of_fold(data: Any) -> list[dict[str, Any]]:
            return build(replace(data, splits={**data.splits, "train": self.items("train"), "val": self.items("val")}))
        return self.shared.extra_split(f"{self.name}/{key}", of_fold)

    def checkpointer(self, folder: Path) -> Any:
        return self.shared.checkpointer(folder)

    def fit_options(self, seed: int, description: str) -> Any:
        return self.shared.fit_options(seed, f"{description} {self.name}", train_items=self.items("train"))


@dataclass
class CrossValidation:
    """An arm's cross-validation: each fold's curves (validated on its held-out fold), the chosen epoch,
    and what came after (``refit``'s curves; ``ensemble``: none)."""

    folds: list[FitResult]
    epoch: int  # 0-based: the epoch with the best mean validation over folds
    then: str
    refit: FitResult | None = None
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (train, held-out) rows per fold

    def mean_curve(self, oof: tuple[np.ndarray, np.ndarray] | None = None) -> FitResult:
        """The per-epoch means over folds (epochs every fold ran), as the arm's own curves and choice; ``oof``:
        the out-of-fold validation probabilities and labels it carries (what an ``ensemble`` arm averages)."""
        n = min(len(f.history) for f in self.folds)
        rows = []
        for e in range(n):
            at = [f.history[e] for f in self.folds]
            row = {"epoch": float(e)}
            for key in ("train_loss", "val_loss", "val_auc"):
                row[key] = float(np.mean([r[key] for r in at]))
            row["val_auc_std"] = float(np.std([r["val_auc"] for r in at], ddof=1))
            rows.append(row)
        return FitResult(rows, self.epoch, rows[self.epoch]["val_auc"], any(f.stopped_early for f in self.folds), None,
                         *(oof or (None, None)))

    def metrics(self) -> dict[str, float]:
        """``cv.*`` on the arm's run: the mean and std over folds at the chosen epoch, each fold's value there."""
        at = [f.history[self.epoch] for f in self.folds]
        out = {"cv.folds": float(len(self.folds)), "cv.epochs": float(self.epoch + 1),
               "cv.val_auc": float(np.mean([r["val_auc"] for r in at])),
               "cv.val_auc_std": float(np.std([r["val_auc"] for r in at], ddof=1)),
               "cv.val_loss": float(np.mean([r["val_loss"] for r in at]))}
        for i, (r, f) in enumerate(zip(at, self.folds)):
            out[f"cv.fold{i}.val_auc"] = float(r["val_auc"])
            out[f"cv.fold{i}.val_loss"] = float(r["val_loss"])
            out[f"cv.fold{i}.best_val_auc"] = float(f.best_val_auc)
        return out

    def as_dict(self) -> dict[str, Any]:
        fit = lambda f: None if f is None else {"history": f.history, "best_epoch": f.best_epoch,  # noqa: E731
                                                "best_val_auc": f.best_val_auc, "stopped_early": f.stopped_early}
        return {"folds": [fit(f) for f in self.folds], "epoch": self.epoch, "then": self.then, "refit": fit(self.refit),
                "sizes": [list(s) for s in self.sizes]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CrossValidation:
        fit = lambda x: None if x is None else FitResult(x["history"], x["best_epoch"], x["best_val_auc"], x["stopped_early"])  # noqa: E731
        return cls([fit(f) for f in d["folds"]], d["epoch"], d["then"], fit(d["refit"]), [tuple(s) for s in d["sizes"]])


def chosen_epoch(folds: list[FitResult]) -> int:
    """The epoch whose mean over folds is best (``selection_score``: AUC, then loss); the earliest of ties."""
    n = min(len(f.history) for f in folds)
    if n == 0:
        raise ValueError("a fold ran no epoch")
    mean = lambda e, k: float(np.mean([f.history[e][k] for f in folds]))  # noqa: E731
    return max(range(n), key=lambda e: (selection_score({"val_auc": mean(e, "val_auc"), "val_loss": mean(e, "val_loss")}), -e))


TrainOne = Callable[[StrategyConfig, Any, Path, Any], tuple[Trained, Any]]  # (config, data view, folder, opts) -> trained, built


def layer_choices(s: FrozenConfig, groups: list[str]) -> list[FrozenConfig]:
    """A frozen layer sweep as one single-choice config per layer choice (each cross-validated on its own)."""
    from medtl.training.strategies.frozen import sweep_layers

    return [s.model_copy(update={"layers": None, "layer": c[0] if len(c) == 1 else list(c)}) for c in sweep_layers(s, groups)]


def _run_folds(s: StrategyConfig, seed: int, shared: Any, folder: Path, folds: list[Fold], then: str,
               train_one: TrainOne) -> tuple[list[Trained], Any, CrossValidation]:
    runs: list[Trained] = []
    built = None
    for i, fold in enumerate(folds):
        view = FoldData(shared, fold, f"fold{i + 1}of{len(folds)}")
        trained, built = train_one(s, view, folder / f"fold{i}", view.fit_options(seed, s.name))
        runs.append(trained)
    epoch = chosen_epoch([t.fit for t in runs])
    return runs, built, CrossValidation([t.fit for t in runs], epoch, then, sizes=[(len(a), len(b)) for a, b in folds])


def cross_validate(s: StrategyConfig, seed: int, shared: Any, folder: Path, folds: list[Fold], then: str,
                   train_one: TrainOne) -> tuple[Trained, Any, CrossValidation]:
    """Train ``s`` once per fold, choose its epoch count by the mean over folds, then refit or ensemble.

    A frozen layer sweep cross-validates every layer choice (heads on the cached features: cheap) and keeps the
    one with the best mean over folds (ties: as the holdout sweep, the deeper, then the smaller choice).
    Returns what a holdout arm's strategy returns (the model tested, its curves: here the mean over folds,
    the test probabilities, the sweep), the built backbone, and the cross-validation itself.
    """
    sweep = None
    if isinstance(s, FrozenConfig) and s.layers is not None:
        from medtl.preflight import backbone_groups
        from medtl.models.transfer import layer_label, read_layers

        names = backbone_groups(shared.cfg.backbone.name)
        tried = {}
        for c in layer_choices(s, names):
            label = layer_label(c.layer, names)
            tried[label] = (c, *_run_folds(c, seed, shared, folder / f"layer-{label}", folds, then, train_one))

        def key(label: str) -> tuple[float, float, int, int]:
            cv = tried[label][3]
            at = cv.mean_curve().history[cv.epoch]
            layer = read_layers(tried[label][0].layer, names)
            return (*selection_score(at), max(map(names.index, layer)), -len(layer))

        best = max(tried, key=key)
        sweep = {label: {"val_auc": cv.mean_curve().best_val_auc, "val_loss": cv.mean_curve().best_val_loss,
                         "best_epoch": float(cv.epoch), "dim": float(sum(b.feature_dims[g] for g in read_layers(c.layer, names)))}
                 for label, (c, _, b, cv) in tried.items()}
        s, (_, runs, built, cv) = tried[best][0], tried[best]
        folder = folder / f"layer-{best}"
    else:
        runs, built, cv = _run_folds(s, seed, shared, folder, folds, then, train_one)
    if then == "refit":
        everything = np.arange(len(pool_of(shared.data)))
        view = FoldData(shared, (everything, everything[:0]), "refit")
        opts = replace(view.fit_options(seed, s.name), refit_epochs=cv.epoch + 1)
        trained, built = train_one(s, view, folder / "refit", opts)
        cv.refit = trained.fit
        probs, labels, model, head = trained.probs, trained.labels, trained.model, trained.head
    else:  # the fold models' probabilities averaged on test, one model of every fold model
        probs = np.mean([t.probs for t in runs], axis=0)
        labels, head = runs[0].labels, runs[0].head
        model = Averaged([t.model for t in runs], [list(getattr(s, "tta", None) or [])] * len(runs)).eval()
    return Trained(model, cv.mean_curve(out_of_fold(runs, folds)), probs, labels, head=head, sweep=sweep), built, cv


def out_of_fold(runs: list[Trained], folds: list[Fold]) -> tuple[np.ndarray, np.ndarray] | None:
    """Every pooled scan's validation probabilities from the fold model that held it out (each at its kept
    epoch), in the pool's order: an arm's validation predictions under cv, as one split's are under holdout."""
    if any(t.fit.val_probs is None for t in runs):
        return None
    n = sum(len(held) for _, held in folds)
    probs = np.zeros((n, runs[0].fit.val_probs.shape[1]), dtype=runs[0].fit.val_probs.dtype)
    labels = np.zeros(n, dtype=runs[0].fit.val_labels.dtype)
    for t, (_, held) in zip(runs, folds):
        probs[held], labels[held] = t.fit.val_probs, t.fit.val_labels
    return probs, labels
