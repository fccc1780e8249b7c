"""The run of a comparison: every strategy of a config on the same data, splits and seeds, tracked.

compare(config) = for each seed and strategy: build the backbone, let the strategy of its kind
train it (``medtl.training.strategies``), evaluate overall and per domain, analyse the shift, hand
the result to the tracker. It never asks which kind an arm is. Datasets, their caches
and the frozen backbone's features are built once and shared by all arms. Each finished arm is
kept on local disk (``.medtl/runs/<config hash>/<arm>/``), so ``resume=True`` skips what is done
and continues an interrupted arm from its last epoch.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from collections.abc import Callable
from typing import Protocol

import pandas as pd

from medtl.config import ExperimentConfig, StrategyConfig
from medtl.data.datasets import DataBundle, load_data
from medtl.errors import ConfigError
from medtl.experiment.crossval import Fold, cross_validate, cv_folds
from medtl.experiment.ensemble import build_ensemble
from medtl.experiment.selection import SelectionProbe
from medtl.experiment.results import ArmResult, Comparison, pick_best
from medtl.experiment.shared import SharedData
from medtl.experiment.shift import ShiftProbe
from medtl.hashing import json_sha256
from medtl.metrics.summary import summarize
from medtl.models.averaging import Averaged
from medtl.models.registry import input_spec
from medtl.models.transfer import BuiltBackbone, build_backbone
from medtl.preflight import preflight
from medtl.training.distributed import DistContext, barrier, process_group
from medtl.training.loop import FitOptions, resolve_device, rng_restored, seed_everything
from medtl.training.strategies import Arm, ArmData, Trained, strategy_for


class Tracker(Protocol):
    """What the comparison tells its tracker; ``medtl.tracking`` implements it for MLflow."""

    def start(self, comparison: Comparison) -> None: ...
    def start_arm(self, strategy: StrategyConfig, seed: int) -> None: ...
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def end_arm(self, arm: ArmResult, comparison: Comparison) -> None: ...
    def finish(self, comparison: Comparison) -> None: ...


class NullTracker:
    def start(self, comparison: Comparison) -> None: ...
    def start_arm(self, strategy: StrategyConfig, seed: int) -> None: ...
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def end_arm(self, arm: ArmResult, comparison: Comparison) -> None: ...
    def finish(self, comparison: Comparison) -> None: ...


def check_data(cfg: ExperimentConfig, data: DataBundle) -> None:
    """Every arm's needs of the data (``Strategy.check_data``), before the first arm trains."""
    for s in cfg.trained:
        strategy_for(s).check_data(data)


def run_folder(cfg: ExperimentConfig, root: Path | None = None) -> Path:
    """Where a config's checkpoints live: one folder per config (its hash), so --resume finds it."""
    key = json_sha256(cfg.model_dump(mode="json", exclude={"tracking"}))[:16]
    return Path(root or Path.cwd() / ".medtl" / "runs") / f"{cfg.name}-{key}"


def train_one(s: StrategyConfig, seed: int, shared: SharedData, view: ArmData, folder: Path, opts: FitOptions,
              on_epoch: Callable[[int, dict[str, float]], None]) -> tuple[Trained, BuiltBackbone]:
    """One training of a strategy on a view of the data (the comparison's splits, or a fold of them)."""
    strategy = strategy_for(s)
    seed_everything(seed)  # a scratch backbone's random init is drawn here
    built = build_backbone(shared.cfg.backbone.name, pretrained=(strategy.pretrained and shared.cfg.backbone.weights == "imagenet"),
                           spec=shared.spec)
    trained = strategy.train(Arm(view, shared.cfg.train, built, len(shared.data.classes), seed, opts, folder, on_epoch))
    trained.model.cpu().eval()
    return trained, built


def run_arm(s: StrategyConfig, seed: int, shared: SharedData, tracker: Tracker, folder: Path, shift: ShiftProbe | None = None,
            select: SelectionProbe | None = None, folds: list[Fold] | None = None) -> ArmResult:
    """Train and evaluate one arm; a finished arm found on disk (``--resume``) is loaded, not retrained.
    With ``folds`` (``selection.method: cv``) the arm is cross-validated on them (``medtl.experiment.crossval``)."""
    if (folder / ArmResult.RESULT).is_file():
        return ArmResult.load(folder)
    cfg, data = shared.cfg, shared.data
    k = len(data.classes)
    start = time.perf_counter()
    cv = None
    if folds is None:
        trained, built = train_one(s, seed, shared, shared, folder, shared.fit_options(seed, s.name), tracker.log_epoch)
    else:  # fold and refit curves are logged with the arm's results (cv.*, fold<i>.*, refit.*), not as they run
        trained, built, cv = cross_validate(s, seed, shared, folder, folds, cfg.selection.then,
                                            lambda c, view, where, opts: train_one(c, seed, shared, view, where, opts,
                                                                                   lambda e, m: None))
    model, result, probs, labels, sweep = trained.model, trained.fit, trained.probs, trained.labels, trained.sweep
    model.cpu().eval()
    if isinstance(model, Averaged):  # selection.then ensemble: every fold model, rebuilt as an ensemble arm's are
        members = [{"backbone": m.backbone.name, "head": trained.head, "layer": m.layer, "spec": m.spec.as_dict(),
                    "tta": list(s.tta), "strategy": s.name, "seed": seed} for m in model.members]
        build = {**{key: members[0][key] for key in ("backbone", "spec")}, "num_classes": k, "head": "ensemble",
                 "layer": None, "members": members}
    else:
        build = {"backbone": model.backbone.name, "num_classes": k, "head": trained.head, "layer": model.layer,
                 "spec": model.spec.as_dict(), **({"tta": list(s.tta)} if s.tta else {})}
    items = pd.DataFrame([{"path": it["path"], "domain": it["domain"], "patient": it["patient"]} for it in data.splits["test"]])
    metrics = summarize(labels, probs, items["domain"].tolist(), items["patient"].tolist(), "test", cfg.train.bootstrap, seed)
    metrics["val_auc"] = result.best_val_auc
    if cv is not None:
        metrics.update(cv.metrics())
    for g, row in (sweep or {}).items():
        metrics[f"sweep.val_auc.{g}"] = row["val_auc"]
    arm = ArmResult(s.name, str(s.kind), seed, model, result, result.best_val_auc, metrics, probs, labels, items,
                    built.weights_id, built.weights_sha256, time.perf_counter() - start, trained.probe, folder, build, sweep,
                    val_probs=result.val_probs, val_labels=result.val_labels, cv=cv)
    if shift is not None and shift.active:
        arm.shift = shift.analyse(arm, seed)
        arm.metrics.update(arm.shift.metrics)
    if select is not None:
        arm.metrics.update(select.score(arm))  # label-free validators (select.<validator>)
    if shared.ctx.is_main:
        arm.save(folder)
    return arm


def compare(cfg: ExperimentConfig, tracker: Tracker | None = None, resume: bool = False, workdir: Path | None = None) -> Comparison:
    """Run every strategy of ``cfg``; the best (mean validation AUC) is marked for registration.

    Under ``torchrun`` every rank runs this: fine-tuning arms train data-parallel (DDP), frozen heads
    are trained alike on every rank, and only rank 0 tracks (other ranks get no tracker) and writes.
    """
    preflight(cfg)  # every arm's settings against the backbone and the machine, before any work
    ctx = DistContext.from_env()
    tracker = tracker if tracker is not None and ctx.is_main else NullTracker()
    device = ctx.device(cfg.train.device) if ctx.active else resolve_device(cfg.train.device)
    data = load_data(cfg.data, cfg.train.seed)
    check_data(cfg, data)
    folds: dict[int, list[Fold]] = {}  # cross-validation's, per seed: cut (or refused) before any work
    if cfg.selection.method == "cv":
        folds = {seed: cv_folds(data, cfg.selection.folds, seed) for seed in cfg.train.all_seeds}
    spec = input_spec(cfg.backbone.name, cfg.preprocess.size)  # made once; every model built here carries it
    folder = run_folder(cfg, workdir)
    with process_group(ctx, device), rng_restored(device):  # arms seed the global generators; the caller's come back
        if ctx.is_main:
            if not resume and folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
        barrier(ctx)  # nobody looks for finished arms before rank 0 has cleared the folder
        comparison = Comparison(cfg, data, spec, folder=folder)
        shared = SharedData(cfg, data, spec, folder, device, ctx)
        shift = ShiftProbe(shared, cfg.train.seed)
        select = SelectionProbe(shared, cfg.train.seed)
        if shift.active:  # the frozen ImageNet extractor, measured once on the same images as every arm
            seed_everything(cfg.train.seed)
            shift.prepare(build_backbone(cfg.backbone.name, pretrained=cfg.backbone.weights == "imagenet", spec=spec))
            comparison.shift_extractor = shift.extractor_metrics
        tracker.start(comparison)
        for seed in cfg.train.all_seeds:
            for s in cfg.trained:
                tracker.start_arm(s, seed)
                arm = run_arm(s, seed, shared, tracker, folder / f"{s.name}-seed{seed}", shift, select, folds.get(seed))
                comparison.arms.append(arm)
                tracker.end_arm(arm, comparison)
        trained = list(comparison.arms)
        for e in cfg.ensembles:  # after every seed of every trained arm: they average them
            tracker.start_arm(e, cfg.train.all_seeds[0])
            arm = build_ensemble(e, trained, cfg, shared.fit_options(cfg.train.seed, e.name).class_weights)
            arm.folder = folder / f"{e.name}-seed{arm.seed}"
            if ctx.is_main:
                arm.save(arm.folder)  # its members' weights too: Comparison.load finds it
            comparison.arms.append(arm)
            tracker.end_arm(arm, comparison)
        comparison.best = pick_best(comparison.arms)
        if ctx.is_main:
            comparison.save()
        tracker.finish(comparison)
        if ctx.is_main and comparison.registry:
            comparison.save()  # with the registry's decision
    return comparison
