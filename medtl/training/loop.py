"""The one training loop: every strategy is a ``Schedule`` it reads, never a copy of it.

Per epoch it freezes and unfreezes groups (``requires_grad`` off and eval mode, so frozen
parameters and batch-norm statistics stay bit-identical), sets each group's learning rate from
the schedule (base rate x warm-up since its unfreeze x the cosine/one-cycle shape), trains,
validates (AUC with MedMNIST's definition), keeps a real copy of the best weights, stops early on
validation AUC, and checkpoints so that a killed run resumes to the same result. Every epoch
reseeds from (seed, epoch), which is what makes a resumed run equal an uninterrupted one; the
caller's global generators are put back as they were when ``fit`` returns.
"""

from __future__ import annotations

import copy
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from medtl.metrics.classification import auc_score
from medtl.progress import track
from medtl.training.distributed import SINGLE, DistContext, ddp, gather_rows, global_sum, synced_batchnorm
from medtl.training.extra_loss import ExtraLoss, Step, endless, images
from medtl.training.mixing import BatchMixer
from medtl.training.schedule import HEAD, Schedule


@dataclass
class FitOptions:
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    class_weights: torch.Tensor | None = None
    patience: int | None = None
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: bool = True
    channels_last: bool = True
    description: str = "training"
    # under torchrun: the loaders are this rank's (medtl.training.distributed.distributed_loader)
    dist: DistContext = SINGLE
    # a refit (cross-validation chose the epoch count elsewhere): train this many epochs of the schedule,
    # validate never, keep the last weights; None: validate every epoch and keep the best
    refit_epochs: int | None = None
    label_smoothing: float = 0.0  # of the training loss's targets; validation loss is on the plain labels
    mixup: BatchMixer | None = None  # mixes each training batch (train.mixup); None: off


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_val_auc: float
    stopped_early: bool
    resumed_from: int | None = None
    # validation probabilities and labels at the kept epoch (what an ensemble chooses its members on)
    val_probs: np.ndarray | None = None
    val_labels: np.ndarray | None = None

    @property
    def best_val_loss(self) -> float:
        """Validation loss at the epoch whose weights were kept."""
        return next((h["val_loss"] for h in self.history if int(h["epoch"]) == self.best_epoch), float("inf"))


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators; call it inside ``rng_restored``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def rng_restored(device: torch.device | None = None) -> Iterator[None]:
    """Seed and draw from the global generators freely inside; on leaving, python's, numpy's and
    torch's (the CPU's and ``device``'s when it is a GPU) are as the caller had them, so medtl's
    seeds never leak into the caller's process (scikit-learn's rule: no hidden global state)."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device is not None and device.type == "cuda" else []
    py, npy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _shape(kind: str, step: int, total: int) -> float:
    t = min(step / max(total, 1), 1.0)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if kind == "onecycle":  # 30% linear rise, then cosine to zero
        return t / 0.3 if t < 0.3 else 0.5 * (1.0 + math.cos(math.pi * (t - 0.3) / 0.7))
    return 1.0


def lr_factor(schedule: Schedule, group: str, step: int, steps_per_epoch: int) -> float:
    """Multiplier of a group's base rate at a global step: 0 while frozen, warm-up, then the shape.

    Written by hand (one ``LambdaLR`` per group) because torch's schedulers have no notion of a
    group that starts training mid-run and warms up from there.
    """
    start_epoch = schedule.unfreeze_epoch[group]
    if start_epoch is None:
        return 0.0
    start = start_epoch * steps_per_epoch
    if step < start:
        return 0.0
    warm = schedule.warmup_epochs * steps_per_epoch
    w = min(1.0, (step - start + 1) / warm) if warm > 0 else 1.0
    return w * _shape(schedule.shape, step, schedule.epochs * steps_per_epoch)


def set_trainable(groups: OrderedDict[str, nn.Module], trainable: Iterable[str], bn_stats: str = "trainable") -> None:
    """Train mode and gradients for ``trainable`` groups; eval mode and no gradients for the rest.

    ``bn_stats``: whose batch-norm layers normalise by batch statistics and update their running
    statistics: the trainable groups' (``trainable``), nobody's (``frozen``) or everybody's (``all``).
    """
    on = set(trainable)
    for name, module in groups.items():
        module.requires_grad_(name in on)
        module.train(name in on)
        if bn_stats != "trainable":
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train(bn_stats == "all")


def autocast(device: torch.device, enabled: bool):  # noqa: ANN202
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def predict_probs(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = True, description: str = "predicting",
                  dist: DistContext = SINGLE) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and labels over a loader, in loader order (under torchrun: each rank's
    contiguous shard, gathered in rank order on every rank)."""
    model.eval()
    probs, labels = [], []
    for batch in track(loader, description, total=len(loader)):
        x, y = _xy(batch)
        with autocast(device, amp):
            logits = model(x.to(device, non_blocking=True))
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(y.cpu())
    if dist.active:
        return gather_rows((torch.cat(probs).numpy() if probs else np.zeros((0, 0), np.float32),
                            torch.cat(labels).numpy() if labels else np.zeros(0, np.int64)), dist)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def _global_mean_loss(logits: torch.Tensor, y: torch.Tensor, loss_fn: nn.CrossEntropyLoss, dist: DistContext,
                      device: torch.device) -> tuple[torch.Tensor, float, int]:
    """This rank's share of the global batch's (class-weighted) mean loss, scaled so that DDP's
    gradient average over ranks is exactly the one-process gradient; also the global batch's mean
    loss and size, for the epoch's ``train_loss``. ``y``: class indices, or soft targets (mixup)."""
    local = nn.functional.cross_entropy(logits, y, weight=loss_fn.weight, reduction="sum", label_smoothing=loss_fn.label_smoothing)
    w = _target_weight(y, loss_fn.weight)
    loss_sum, w_sum, n = global_sum([float(local.detach()), w, float(len(y))], dist, device)
    return local * (dist.world_size / w_sum), loss_sum / w_sum, int(n)


def _target_weight(y: torch.Tensor, weight: torch.Tensor | None) -> float:
    """What a batch's class-weighted summed loss is divided by: its targets' weights, as torch's mean does for
    class indices. Soft targets (mixup) get the same sum, not torch's batch size, so a mixed batch's loss is
    exactly lambda * loss(labels) + (1 - lambda) * loss(paired labels), the mixup criterion, weights included."""
    if weight is None:
        return float(len(y))
    return float(weight[y].sum()) if y.ndim == 1 else float((y @ weight).sum())


def _mean_loss(logits: torch.Tensor, y: torch.Tensor, loss_fn: nn.CrossEntropyLoss) -> torch.Tensor:
    """The batch's (class-weighted, smoothed) mean loss; ``y``: class indices (torch's own mean), or soft targets."""
    if y.ndim == 1:
        return loss_fn(logits, y)
    total = nn.functional.cross_entropy(logits, y, weight=loss_fn.weight, reduction="sum", label_smoothing=loss_fn.label_smoothing)
    return total / _target_weight(y, loss_fn.weight)


def _empty_batch(loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-sample batch, for a rank whose share of a short last global batch is empty."""
    x, _ = _xy(loader.collate_fn.collate([loader.dataset[0]]))  # type: ignore[attr-defined]
    return x[:0], torch.zeros(0, dtype=torch.long)


def _xy(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["image"], torch.as_tensor(batch["label"]).long()
    return batch[0], batch[1].long()


class Checkpointer:
    """``last.pt`` after every epoch; everything in it loads with ``weights_only=True``.
    ``write=False`` (every rank but 0 under torchrun) reads it on resume and never writes it."""

    def __init__(self, folder: str | Path, write: bool = True) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "last.pt"
        self.write = write

    def save(self, state: dict[str, Any]) -> None:
        if not self.write:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)  # never a half-written checkpoint

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)


def fit(
    model: nn.Module,
    groups: OrderedDict[str, nn.Module],
    schedule: Schedule,
    train_loader: DataLoader,
    val_loader: DataLoader,
    opts: FitOptions,
    checkpoint: Checkpointer | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    target: Iterable[Any] | None = None,
    extra: ExtraLoss | None = None,
    evaluate: nn.Module | None = None,
) -> FitResult:
    """Train ``model`` by ``schedule``; on return the model holds its best-validation weights (with
    ``opts.refit_epochs``: its weights after that many epochs, ``val_loader`` never read).

    ``evaluate``: what validation scores, when it is not ``model`` itself (``model`` averaged over
    test-time flips, ``medtl.models.averaging``); it must share ``model``'s parameters.

    ``target``: unlabelled target batches, cycled alongside the source batches and handed to ``extra``
    (``medtl.training.extra_loss``), whose named losses join the classification loss. Both default to
    none, and the loop is then the plain supervised loop.
    """
    if target is not None and extra is None:
        raise ValueError("a target stream needs an extra loss that uses it")
    device = opts.device
    model.to(device)
    # channels_last on the CPU too: oneDNN's convolutions in NHWC trained efficientnet_lite0 2.0x
    # faster at 64 px and 1.5x at 128 px on 2 cores (benchmarks/RESULTS.md, bench_speed)
    channels_last = opts.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    names = [g for g in schedule.groups if g in groups]
    param_groups = [{"params": list(groups[g].parameters()), "lr": schedule.lr[g], "name": g} for g in names]
    if opts.optimizer == "sgd":
        optim: torch.optim.Optimizer = torch.optim.SGD(param_groups, lr=schedule.lr[HEAD], momentum=opts.momentum, weight_decay=opts.weight_decay)
    else:
        optim = torch.optim.AdamW(param_groups, lr=schedule.lr[HEAD], weight_decay=opts.weight_decay)
    steps = max(1, len(train_loader))
    lambdas = [(lambda step, g=g: lr_factor(schedule, g, step, steps)) for g in names]
    if extra is not None:
        extra.to(device)
        if extra_params := list(extra.parameters()):  # a discriminator: trained as the head is
            optim.add_param_group({"params": extra_params, "lr": schedule.lr[HEAD], "name": "extra"})
            lambdas.append(lambda step: lr_factor(schedule, HEAD, step, steps))
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambdas)
    loss_fn = nn.CrossEntropyLoss(weight=None if opts.class_weights is None else opts.class_weights.to(device),
                                  label_smoothing=opts.label_smoothing)

    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_val: tuple[np.ndarray, np.ndarray] | None = None
    best_epoch, bad_epochs, start, resumed = -1, 0, 0, None
    if checkpoint is not None and (state := checkpoint.load()) is not None:
        model.load_state_dict(state["model"])
        if extra is not None:
            extra.load_state_dict(state["extra"])
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        best_state, best_epoch = state["best_state"], state["best_epoch"]
        bad_epochs, history = state["bad_epochs"], state["history"]
        best_val = None if state.get("best_val") is None else (state["best_val"][0].numpy(), state["best_val"][1].numpy())
        start = resumed = state["epoch"] + 1
    best = selection_score(history[best_epoch]) if best_epoch >= 0 else (-math.inf, -math.inf)

    stopped = False
    dist = opts.dist
    refit = opts.refit_epochs is not None
    epochs = min(opts.refit_epochs, schedule.epochs) if opts.refit_epochs is not None else schedule.epochs
    net, wrapped_for = model, None  # under torchrun: the DDP wrapper of the current trainable set
    with synced_batchnorm(model, dist), rng_restored(device):
        for epoch in range(start, epochs):
            if not refit and opts.patience is not None and bad_epochs >= opts.patience:
                stopped = True
                break
            seed_everything(opts.seed * 1_000_003 + epoch)
            _reseed_loader(train_loader, opts.seed * 1_000_003 + epoch)
            trainable = schedule.trainable(epoch)
            set_trainable(groups, trainable, schedule.bn_stats)
            if dist.active and wrapped_for != set(trainable):  # DDP fixes its parameter set when built
                net, wrapped_for = ddp(model, device), set(trainable)
            total, count = 0.0, 0
            peak = dict.fromkeys(names, 0.0)  # the highest rate each group trained at this epoch
            extra_sums: dict[str, float] = {}
            targets = None
            if extra is not None:
                extra.train()
                if target is not None:
                    _reseed_loader(target, opts.seed * 1_000_003 + epoch)
                    targets = endless(target)
            for i, batch in enumerate(track(train_loader, f"{opts.description} epoch {epoch + 1}/{schedule.epochs}",
                                            total=len(train_loader))):
                x, y = _xy(batch) if batch is not None else _empty_batch(train_loader)
                x, soft = opts.mixup(x, y) if opts.mixup is not None else (x, None)
                x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=True)
                y_loss = y if soft is None else soft.to(device, non_blocking=True)  # what the loss compares with
                with autocast(device, opts.amp):
                    if extra is not None:
                        xt = None if targets is None else _to_device(images(next(targets)), device, channels_last)
                        logits, extra_losses = extra(net if dist.active else model,
                                                     Step(x, y, xt, epoch, (epoch * steps + i) / (schedule.epochs * steps)))
                    else:
                        logits, extra_losses = (net if dist.active else model)(x), {}
                    if dist.active:
                        loss, batch_loss, n = _global_mean_loss(logits.float(), y_loss, loss_fn, dist, device)
                    else:
                        loss = _mean_loss(logits.float(), y_loss, loss_fn)
                        batch_loss, n = float(loss.detach()), len(y)
                    for name, value in extra_losses.items():
                        loss = loss + value
                        extra_sums[name] = extra_sums.get(name, 0.0) + float(value.detach()) * n
                optim.zero_grad(set_to_none=True)
                loss.backward()
                for g, pg in zip(names, optim.param_groups):
                    peak[g] = max(peak[g], float(pg["lr"]))
                optim.step()
                sched.step()
                total += batch_loss * n
                count += n
            if refit:  # nothing held out: the schedule's epoch count is the choice
                val_loss = val_auc = float("nan")
            else:
                probs, labels = predict_probs(evaluate or model, val_loader, device, opts.amp, "validating", dist)
                val_loss, val_auc = validation_scores(probs, labels, opts.class_weights)
            row = {"epoch": float(epoch), "train_loss": total / max(count, 1), "val_loss": val_loss, "val_auc": val_auc,
                   "unfrozen_groups": float(len([g for g in trainable if g != HEAD]))}
            row.update({f"lr.{g}": peak[g] for g in names})
            row.update({f"{name}_loss": v / max(count, 1) for name, v in extra_sums.items()})
            history.append(row)
            if refit:
                best_epoch = epoch  # the weights in the model, kept as they are
            elif selection_score(row) > best:
                best, best_epoch, bad_epochs = selection_score(row), epoch, 0
                best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
                best_val = probs, labels
            else:
                bad_epochs += 1
            if checkpoint is not None:
                checkpoint.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optim.state_dict(),
                                 "scheduler": sched.state_dict(), "best_state": best_state, "best_epoch": best_epoch,
                                 "bad_epochs": bad_epochs, "history": history,
                                 "best_val": None if best_val is None else [torch.as_tensor(a) for a in best_val],
                                 **({"extra": extra.state_dict()} if extra is not None else {})})
            if on_epoch is not None:
                on_epoch(epoch, row)
    if best_state is not None and not refit:
        model.load_state_dict(best_state)
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    best_auc = history[best_epoch]["val_auc"] if best_epoch >= 0 else float("nan")
    return FitResult(history, best_epoch, float(best_auc), stopped, resumed, *(best_val or (None, None)))


def probs_loss(probs: np.ndarray, labels: np.ndarray, class_weights: torch.Tensor | None = None) -> float:
    """The (class-weighted) cross-entropy of probabilities: the validation loss of ``fit`` and of an ensemble."""
    return float(nn.functional.nll_loss(torch.log(torch.as_tensor(probs).clamp_min(1e-12)), torch.as_tensor(labels).long(),
                                        weight=None if class_weights is None else class_weights.cpu()))


def validation_scores(probs: np.ndarray, labels: np.ndarray, class_weights: torch.Tensor | None) -> tuple[float, float]:
    """An epoch's validation loss (class-weighted like training's) and AUC (MedMNIST's definition)."""
    return probs_loss(probs, labels, class_weights), auc_score(labels, probs)


def selection_score(row: dict[str, float]) -> tuple[float, float]:
    """What "better" means for keeping weights and early stopping: higher validation AUC, ties
    (frequent at AUC 1.0) to lower validation loss; where AUC is undefined (a class missing from a
    small validation split), validation loss alone."""
    auc = row["val_auc"]
    return (auc if math.isfinite(auc) else -math.inf), -row["val_loss"]


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def _reseed_loader(loader: DataLoader, seed: int) -> None:
    gen = getattr(loader, "generator", None)
    if gen is not None:
        gen.manual_seed(seed)
    ds = loader.dataset
    transform = getattr(ds.dataset if isinstance(ds, Subset) else ds, "transform", None)  # a fold is a Subset
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed % 2**32)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
