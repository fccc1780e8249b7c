"""``frozen``: a head on features cached from the frozen backbone, optionally one per layer choice (a sweep).

The backbone never trains and never runs per epoch: its pooled features of every layer group are
extracted once per comparison (``medtl.training.feature_cache``) and a head is fitted on them: on
one group's, or on several groups' concatenated (``layer: concat`` or a list), read from the same
cache. With ``layers``, a head per candidate, the best on validation (AUC, then loss, then the deeper
and then the smaller choice) being the arm's model; the test split never picks a layer. ``head:
logreg`` fits scikit-learn's logistic regression instead of running the loop
(``medtl.training.logreg``), C chosen on the training split alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from medtl.config import CONCAT, FrozenConfig, TrainConfig
from medtl.errors import ConfigError
from medtl.models.averaging import HeadOverViews
from medtl.models.transfer import Layer, TransferModel, concat_features, layer_label, make_head, read_layers
from medtl.training.distributed import SINGLE
from medtl.training.feature_cache import Features
from medtl.training.logreg import check_logreg_folds, fit_logreg
from medtl.training.loop import (Checkpointer, FitOptions, FitResult, fit, seed_everything, selection_score,
                                 validation_scores)
from medtl.training.schedule import HEAD, Schedule, head_only
from medtl.training.strategies.base import Arm, Strategy, Trained, register


def head_input(feats: Features, layer: Layer) -> torch.Tensor:
    """The cached features a head on ``layer`` reads (several groups: concatenated)."""
    per_group = feats["features"]
    return concat_features(per_group, read_layers(layer, list(per_group)))


def stacked_views(plain: Features, flipped: Sequence[Features], layer: Layer) -> torch.Tensor:
    """``(N, D)`` features, or ``(N, 1 + flips, D)`` with the flipped copies' (what ``HeadOverViews`` reads)."""
    x = head_input(plain, layer)
    return torch.stack([x, *(head_input(f, layer) for f in flipped)], 1) if flipped else x


def fit_head(head: torch.nn.Module, feats: dict[str, Features], layer: Layer, schedule: Schedule, opts: FitOptions,
             ckpt: Checkpointer | None, on_epoch: Callable[[int, dict[str, float]], None] | None, batch_size: int,
             flipped_val: Sequence[Features] = ()) -> FitResult:
    """Train a head on cached features of one layer choice (on the CPU: a head is too small to gain from a GPU;
    under torchrun every rank trains the same head, rank 0 alone writes its checkpoint). ``flipped_val``:
    the validation features of flipped copies, averaged with the plain ones (test-time augmentation)."""
    train = DataLoader(TensorDataset(head_input(feats["train"], layer), feats["train"]["labels"]), batch_size=batch_size,
                       shuffle=True, generator=torch.Generator().manual_seed(opts.seed))
    val = DataLoader(TensorDataset(stacked_views(feats["val"], flipped_val, layer), feats["val"]["labels"]), batch_size=batch_size)
    # no mixing of cached feature vectors: train.mixup mixes images, for arms that see them
    head_opts = replace(opts, device=torch.device("cpu"), amp=False, channels_last=False, dist=SINGLE, mixup=None)
    return fit(head, OrderedDict([(HEAD, head)]), schedule, train, val, head_opts, ckpt, on_epoch,
               evaluate=HeadOverViews(head) if flipped_val else None)


def fit_logreg_head(s: FrozenConfig, feats: dict[str, Features], layer: tuple[str, ...], num_classes: int,
                    patients: list[str], opts: FitOptions, flipped_val: Sequence[Features] = ()) -> tuple[torch.nn.Linear, FitResult]:
    """``head: logreg``: fitted on the training split (C by its own cross-validation), then scored on
    validation as the loop scores an epoch, as one epoch of history."""
    train_x, val_x = head_input(feats["train"], layer), stacked_views(feats["val"], flipped_val, layer)
    lr = fit_logreg(train_x, feats["train"]["labels"], num_classes, patients, opts.class_weights, s.logreg_cs,
                    s.logreg_folds, opts.seed, s.logreg_scoring, f"strategies.{s.name}.logreg_folds")
    with torch.no_grad():
        train_loss = torch.nn.functional.cross_entropy(lr.head(train_x), feats["train"]["labels"], weight=opts.class_weights)
        val_probs = torch.softmax((HeadOverViews(lr.head) if flipped_val else lr.head)(val_x), 1).numpy()
    row = {"epoch": 0.0, "train_loss": float(train_loss), "unfrozen_groups": 0.0, "logreg_C": lr.C, "logreg_folds": float(lr.folds)}
    if opts.refit_epochs is not None:  # a cross-validation refit: nothing held out to score
        return lr.head, FitResult([{**row, "val_loss": float("nan"), "val_auc": float("nan")}], 0, float("nan"), False)
    val_loss, val_auc = validation_scores(val_probs, feats["val"]["labels"].numpy(), opts.class_weights)
    row.update({"val_loss": val_loss, "val_auc": val_auc})
    return lr.head, FitResult([row], 0, float(val_auc), False, None, val_probs, feats["val"]["labels"].numpy())


def sweep_layers(s: FrozenConfig, groups: list[str]) -> list[tuple[str, ...]]:
    """The layer choices a ``frozen`` arm tries: its ``layers`` (a sweep), else its one ``layer``; each
    the tuple of groups the head reads, in group order (``concat``: every group)."""
    wanted = groups if s.layers == "all" else list(s.layers or [s.layer or groups[-1]])
    choices = []
    for w in wanted:
        chosen = groups if w == CONCAT else [w] if isinstance(w, str) else w
        unknown = [g for g in chosen if g not in groups]
        if unknown:
            key = "layers" if s.layers is not None else "layer"
            raise ConfigError(f"strategies.{s.name}.{key}", f"unknown layer group(s) {unknown} (groups: {', '.join(groups)})")
        choices.append(tuple(sorted(set(chosen), key=groups.index)))
    return list(dict.fromkeys(choices))


def _selection_key(r: FitResult, layer: tuple[str, ...], names: list[str]) -> tuple[float, float, int, int]:
    """As the loop chooses epochs (``selection_score``), then the deeper, then the smaller layer choice."""
    return (*selection_score({"val_auc": r.best_val_auc, "val_loss": r.best_val_loss}), max(map(names.index, layer)), -len(layer))


@register
class Frozen(Strategy):
    kind = "frozen"
    trains_backbone = False
    config: FrozenConfig

    def check(self, groups: tuple[str, ...], train: TrainConfig) -> None:
        super().check(groups, train)
        sweep_layers(self.config, list(groups))

    def check_data(self, data: Any) -> None:
        super().check_data(data)
        if self.config.head == "logreg":  # its C is cross-validated on the training split's patients
            check_logreg_folds(data.splits["train"], data.classes, f"strategies.{self.config.name}.logreg_folds")

    def schedule(self, groups: tuple[str, ...], train: TrainConfig) -> Schedule:
        return head_only((HEAD,), self.epochs(train), self.config.lr or train.head_lr, train.schedule)

    def train(self, arm: Arm) -> Trained:
        s, built = self.config, arm.built
        names = built.backbone.group_names
        layers = sweep_layers(s, names)
        feats = {sp: arm.data.features_for(built, arm.seed, sp) for sp in ("train", "val")}
        flipped = {sp: [arm.data.features_for(built, arm.seed, sp, f) for f in s.tta] for sp in ("val", "test")}
        schedule = self.schedule((HEAD,), arm.train)
        sweeping = s.layers is not None
        trials: dict[tuple[str, ...], tuple[torch.nn.Module, FitResult]] = {}
        for layer in layers:
            if s.head == "logreg":
                trials[layer] = fit_logreg_head(s, feats, layer, arm.num_classes, arm.data.patients("train"), arm.opts,
                                                flipped["val"])
                continue
            seed_everything(arm.seed)  # every layer's head starts from the same draw, whatever the order
            head = make_head(sum(built.feature_dims[g] for g in layer), arm.num_classes, s.head)
            label = layer_label(layer, names)
            ckpt = arm.data.checkpointer(arm.folder / (f"head-{label}" if sweeping else "head"))
            trials[layer] = head, fit_head(head, feats, layer, schedule, arm.opts, ckpt, None if sweeping else arm.on_epoch,
                                           arm.train.batch_size, flipped["val"])
        best = max(layers, key=lambda g: _selection_key(trials[g][1], g, names))
        head, result = trials[best]
        sweep = None
        if sweeping or s.head == "logreg":
            for row in result.history:  # the chosen layer's curves, as a single-layer arm logs them
                arm.on_epoch(int(row["epoch"]), row)
        if sweeping:
            sweep = {layer_label(g, names): {"val_auc": r.best_val_auc, "val_loss": r.best_val_loss,
                                             "best_epoch": float(r.best_epoch), "dim": float(sum(built.feature_dims[n] for n in g))}
                     for g, (_, r) in trials.items()}
        model_layer = None if best == (names[-1],) else best[0] if len(best) == 1 else list(best)
        model = TransferModel(built.backbone, head, model_layer)
        test = arm.data.features_for(built, arm.seed, "test")
        head.eval()
        with torch.no_grad():
            x = stacked_views(test, flipped["test"], best)
            probs = torch.softmax((HeadOverViews(head) if s.tta else head)(x), 1).numpy()
        # a logistic regression is served as the linear head it was folded into
        return Trained(model, result, probs, test["labels"].numpy(), head="linear" if s.head == "logreg" else s.head, sweep=sweep)
