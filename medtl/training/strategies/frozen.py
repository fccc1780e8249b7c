"""``frozen``: a head on features cached from the frozen backbone, optionally one per layer group (a sweep).

The backbone never trains and never runs per epoch: its pooled features of every layer group are
extracted once per comparison (``medtl.training.feature_cache``) and a head is fitted on them. With
``layers``, a head per candidate group, the best on validation (AUC, then loss, then the deeper
group) being the arm's model; the test split never picks a layer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch.utils.data import DataLoader, TensorDataset

from medtl.config import FrozenConfig, TrainConfig
from medtl.errors import ConfigError
from medtl.models.averaging import HeadOverViews
from medtl.models.transfer import TransferModel, make_head
from medtl.training.distributed import SINGLE
from medtl.training.feature_cache import Features
from medtl.training.loop import Checkpointer, FitOptions, FitResult, fit, seed_everything, selection_score
from medtl.training.schedule import HEAD, Schedule, head_only
from medtl.training.strategies.base import Arm, Strategy, Trained, register


def fit_head(head: torch.nn.Module, feats: dict[str, Features], layer: str, schedule: Schedule, opts: FitOptions,
             ckpt: Checkpointer | None, on_epoch: Callable[[int, dict[str, float]], None] | None, batch_size: int,
             flipped_val: Sequence[Features] = ()) -> FitResult:
    """Train a head on cached features of one layer (on the CPU: a head is too small to gain from a GPU;
    under torchrun every rank trains the same head, rank 0 alone writes its checkpoint). ``flipped_val``:
    the validation features of flipped copies, averaged with the plain ones (test-time augmentation)."""
    train = DataLoader(TensorDataset(feats["train"]["features"][layer], feats["train"]["labels"]), batch_size=batch_size,
                       shuffle=True, generator=torch.Generator().manual_seed(opts.seed))
    val = DataLoader(TensorDataset(stacked_views(feats["val"], flipped_val, layer), feats["val"]["labels"]), batch_size=batch_size)
    head_opts = replace(opts, device=torch.device("cpu"), amp=False, channels_last=False, dist=SINGLE)
    return fit(head, OrderedDict([(HEAD, head)]), schedule, train, val, head_opts, ckpt, on_epoch,
               evaluate=HeadOverViews(head) if flipped_val else None)


def stacked_views(plain: Features, flipped: Sequence[Features], layer: str) -> torch.Tensor:
    """``(N, D)`` features, or ``(N, 1 + flips, D)`` with the flipped copies' (what ``HeadOverViews`` reads)."""
    x = plain["features"][layer]
    return torch.stack([x, *(f["features"][layer] for f in flipped)], 1) if flipped else x


def sweep_layers(s: FrozenConfig, groups: list[str]) -> list[str]:
    """The layer groups a ``frozen`` arm tries: its ``layers`` (a sweep), else its one ``layer``."""
    wanted = groups if s.layers == "all" else list(s.layers or [s.layer or groups[-1]])
    unknown = [g for g in wanted if g not in groups]
    if unknown:
        key = "layers" if s.layers is not None else "layer"
        raise ConfigError(f"strategies.{s.name}.{key}", f"unknown layer group(s) {unknown} (groups: {', '.join(groups)})")
    return list(dict.fromkeys(wanted))


def _selection_key(r: FitResult, order: int) -> tuple[float, float, int]:
    """As the loop chooses epochs (``selection_score``), then the deeper layer."""
    return (*selection_score({"val_auc": r.best_val_auc, "val_loss": r.best_val_loss}), order)


@register
class Frozen(Strategy):
    kind = "frozen"
    trains_backbone = False
    config: FrozenConfig

    def check(self, groups: tuple[str, ...], train: TrainConfig) -> None:
        super().check(groups, train)
        sweep_layers(self.config, list(groups))

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
        trials: dict[str, tuple[torch.nn.Module, FitResult]] = {}
        for layer in layers:
            seed_everything(arm.seed)  # every layer's head starts from the same draw, whatever the order
            head = make_head(built.feature_dims[layer], arm.num_classes, s.head)
            ckpt = arm.data.checkpointer(arm.folder / (f"head-{layer}" if sweeping else "head"))
            trials[layer] = head, fit_head(head, feats, layer, schedule, arm.opts, ckpt, None if sweeping else arm.on_epoch,
                                           arm.train.batch_size, flipped["val"])
        best = max(layers, key=lambda g: _selection_key(trials[g][1], names.index(g)))
        head, result = trials[best]
        sweep = None
        if sweeping:
            for row in result.history:  # the chosen layer's curves, as a single-layer arm logs them
                arm.on_epoch(int(row["epoch"]), row)
            sweep = {g: {"val_auc": r.best_val_auc, "val_loss": r.best_val_loss, "best_epoch": float(r.best_epoch),
                         "dim": float(built.feature_dims[g])} for g, (_, r) in trials.items()}
        model = TransferModel(built.backbone, head, None if best == names[-1] else best)
        test = arm.data.features_for(built, arm.seed, "test")
        head.eval()
        with torch.no_grad():
            x = stacked_views(test, flipped["test"], best)
            probs = torch.softmax((HeadOverViews(head) if s.tta else head)(x), 1).numpy()
        return Trained(model, result, probs, test["labels"].numpy(), head=s.head, sweep=sweep)
