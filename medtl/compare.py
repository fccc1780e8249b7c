"""A comparison: every strategy of a config on the same data, splits and seeds, tracked.

compare(config) = for each seed and strategy: build the model, run its schedule with the one
loop, evaluate overall and per domain, hand the result to the tracker. Datasets, their caches
and the frozen backbone's features are built once and shared by all arms. Each finished arm is
kept on local disk (``.medtl/runs/<config hash>/<arm>/``), so ``resume=True`` skips what is done
and continues an interrupted arm from its last epoch.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from medtl.config import ExperimentConfig, StrategyConfig
from medtl.errors import ConfigError
from medtl.data.datasets import DataBundle, class_weights, load_data, loader, prepared_dataset
from medtl.data.transforms import build_augmentations
from medtl.hashing import json_sha256
from medtl.domains import ShiftProbe
from medtl.selection import SelectionProbe
from medtl.metrics.summary import summarize
from medtl.models.registry import InputSpec, input_spec
from medtl.models.transfer import BuiltBackbone, TransferModel, build_backbone, create_model
from medtl.training.distributed import SINGLE, DistContext, barrier, distributed_loader, process_group
from medtl.training.feature_cache import Features, FeatureCache, feature_key
from medtl.training.loop import (Checkpointer, FitOptions, FitResult, resolve_device, rng_restored, seed_everything,
                                 selection_score)
from medtl.training.strategies import Arm, strategy_for

@dataclass
class ArmResult:
    strategy: str
    kind: str
    seed: int
    model: TransferModel
    fit: FitResult
    val_auc: float
    metrics: dict[str, float]
    test_probs: np.ndarray
    test_labels: np.ndarray
    test_items: pd.DataFrame  # path, domain, patient (hashed) per test row
    weights_id: str
    weights_sha256: str | None
    seconds: float
    probe: FitResult | None = None
    folder: Path | None = None
    build: dict[str, Any] = field(default_factory=dict)  # create_model arguments that rebuild ``model``
    # frozen arms with a layer sweep: layer -> {val_auc, val_loss, best_epoch, dim}; the chosen one is build["layer"]
    sweep: dict[str, dict[str, float]] | None = None
    shift: Any = None  # medtl.domains.ShiftReport of this run (pictures); its numbers are in ``metrics``

    RESULT = "result.pt"

    def save(self, folder: Path) -> Path:
        """Everything the tracker needs, on local disk; loads with ``weights_only=True``."""
        fits = {k: None if f is None else {"history": f.history, "best_epoch": f.best_epoch, "best_val_auc": f.best_val_auc,
                                           "stopped_early": f.stopped_early, "resumed_from": f.resumed_from}
                for k, f in (("fit", self.fit), ("probe", self.probe))}
        state = {"strategy": self.strategy, "kind": self.kind, "seed": self.seed, "val_auc": self.val_auc,
                 "metrics": self.metrics, "test_probs": torch.as_tensor(self.test_probs),
                 "test_labels": torch.as_tensor(self.test_labels), "test_items": self.test_items.to_dict("list"),
                 "weights_id": self.weights_id, "weights_sha256": self.weights_sha256, "seconds": self.seconds,
                 "build": self.build, "sweep": self.sweep, "model": self.model.state_dict(), **fits}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (self.RESULT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(folder / self.RESULT)
        return folder / self.RESULT

    @classmethod
    def load(cls, folder: Path) -> ArmResult:
        st = torch.load(folder / cls.RESULT, map_location="cpu", weights_only=True)
        b = st["build"]
        model, _ = create_model(b["backbone"], b["num_classes"], pretrained=False, head=b["head"], layer=b["layer"],
                                spec=InputSpec.from_dict(b["spec"]) if "spec" in b else None)
        model.load_state_dict(st["model"])
        model.eval()
        fit_of = lambda d: None if d is None else FitResult(d["history"], d["best_epoch"], d["best_val_auc"], d["stopped_early"],  # noqa: E731
                                                            d.get("resumed_from"))
        return cls(st["strategy"], st["kind"], st["seed"], model, fit_of(st["fit"]), st["val_auc"], st["metrics"],
                   st["test_probs"].numpy(), st["test_labels"].numpy(), pd.DataFrame(st["test_items"]), st["weights_id"],
                   st["weights_sha256"], st["seconds"], fit_of(st["probe"]), folder, st["build"], st.get("sweep"))


@dataclass
class Comparison:
    config: ExperimentConfig
    data: DataBundle
    spec: InputSpec
    arms: list[ArmResult] = field(default_factory=list)
    best: ArmResult | None = None
    run_id: str | None = None
    registry: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None  # the run folder: finished arms on local disk (trackers journal here too)
    # the frozen ImageNet extractor's feature distances (shift.<m>[.<domain>]); empty without target domains
    shift_extractor: dict[str, float] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        return results_table(self.arms)

    def shift_table(self) -> pd.DataFrame:
        from medtl.domains import shift_table

        return shift_table(self.arms)

    def sweep_table(self) -> pd.DataFrame:
        return sweep_table(self.arms)

    def selection_table(self) -> pd.DataFrame:
        from medtl.selection import selection_table

        return selection_table(self.arms)


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


TABLE_METRICS = ("auc", "acc", "balanced_acc", "sensitivity", "specificity", "f1", "ece")


def results_table(arms: list[ArmResult]) -> pd.DataFrame:
    """One row per strategy: each test metric's mean over seeds, its 95% bootstrap interval (per
    seed, bounds averaged over seeds) and, with several seeds, the standard deviation over seeds."""
    rows = []
    for name in dict.fromkeys(a.strategy for a in arms):
        group = [a for a in arms if a.strategy == name]
        m = lambda k: float(np.mean([a.metrics.get(k, np.nan) for a in group]))  # noqa: E731
        sd = lambda vals: float(np.std(vals, ddof=1))  # noqa: E731
        row: dict[str, Any] = {"strategy": name, "kind": getattr(group[0], "kind", None), "seeds": len(group),
                               "val_auc": float(np.mean([a.val_auc for a in group]))}
        if len(group) > 1:
            row["val_auc_std"] = sd([a.val_auc for a in group])
        for k in TABLE_METRICS:
            row[f"test_{k}"] = m(f"test_{k}")
            row[f"test_{k}_ci"] = (m(f"test_{k}_ci_low"), m(f"test_{k}_ci_high"))
            if len(group) > 1:
                row[f"test_{k}_std"] = sd([a.metrics.get(f"test_{k}", np.nan) for a in group])
        for key in sorted(group[0].metrics):
            if key.startswith(("test_auc.", "test_acc.")):
                row[key] = m(key)
        row["minutes"] = sum(a.seconds for a in group) / 60
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_table(arms: list[ArmResult]) -> pd.DataFrame:
    """Layer sweeps of ``frozen`` arms: validation AUC per layer (mean and std over seeds), and how
    often each layer was chosen. Selection is on validation only; the test set never picks a layer."""
    rows = []
    for name in dict.fromkeys(a.strategy for a in arms if a.sweep):
        group = [a for a in arms if a.strategy == name and a.sweep]
        for layer in group[0].sweep or {}:
            aucs = [a.sweep[layer]["val_auc"] for a in group if a.sweep and layer in a.sweep]
            chosen = sum((a.build.get("layer") or a.model.backbone.group_names[-1]) == layer for a in group)
            rows.append({"strategy": name, "layer": layer, "dim": int(group[0].sweep[layer]["dim"]),
                         "val_auc": float(np.mean(aucs)), "val_auc_std": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else float("nan"),
                         "chosen": f"{chosen}/{len(group)}"})
    return pd.DataFrame(rows, columns=["strategy", "layer", "dim", "val_auc", "val_auc_std", "chosen"])


def pick_best(arms: list[ArmResult]) -> ArmResult:
    """Highest mean validation AUC over seeds; ties (common on easy data) go to the lower validation loss."""
    def score(group: list[ArmResult]) -> tuple[float, float]:
        return selection_score({"val_auc": float(np.mean([a.val_auc for a in group])),
                                "val_loss": float(np.mean([a.fit.best_val_loss for a in group]))})

    best_name = max(dict.fromkeys(a.strategy for a in arms), key=lambda n: score([a for a in arms if a.strategy == n]))
    return max((a for a in arms if a.strategy == best_name), key=lambda a: score([a]))


def check_target_data(cfg: ExperimentConfig, data: DataBundle) -> None:
    """Arms that learn from the target site need its training scans: say so before any work."""
    for s in cfg.strategies:
        if strategy_for(s).uses_target and not data.splits.get("target"):
            raise ConfigError(f"strategies.{s.name}", f"{s.kind} needs the target site's training scans, and there are none: "
                              "set data.source_domains (a manifest's other domains' train rows become the target) or "
                              "data.corruptions.train_per_domain (MedMNIST-C)")


def run_folder(cfg: ExperimentConfig, root: Path | None = None) -> Path:
    """Where a config's checkpoints live: one folder per config (its hash), so --resume finds it."""
    key = json_sha256(cfg.model_dump(mode="json", exclude={"tracking"}))[:16]
    return Path(root or Path.cwd() / ".medtl" / "runs") / f"{cfg.name}-{key}"


class _Shared:
    """Datasets, loaders and the frozen feature cache, built once per comparison."""

    def __init__(self, cfg: ExperimentConfig, data: DataBundle, spec: InputSpec, folder: Path, device: torch.device,
                 ctx: DistContext = SINGLE) -> None:
        self.cfg, self.data, self.spec, self.device, self.ctx = cfg, data, spec, device, ctx
        self._ds: dict[str, Any] = {}
        cache_root = cfg.data.cache_dir or Path.cwd() / ".medtl" / "cache"
        self.features = FeatureCache(Path(cache_root) / "features", write=ctx.is_main)
        self._feats: dict[str, Features] = {}
        self.folder = folder

    def dataset(self, split: str, train: bool = False) -> Any:
        key = f"{split}-{'train' if train else 'eval'}"
        if key not in self._ds:
            augment = build_augmentations(self.cfg.train.augment) if train else None
            self._ds[key] = prepared_dataset(self.data.splits[split], self.spec, self.cfg.preprocess, augment,
                                             self.cfg.data.cache,
                                             None if self.cfg.data.cache_dir is None else self.cfg.data.cache_dir / "images")
        return self._ds[key]

    def loader(self, split: str, train: bool = False, seed: int = 0, shard: bool = False) -> Any:
        """``shard``: under torchrun, this rank's part (of each global batch when training)."""
        single = loader(self.dataset(split, train), self.cfg.train.batch_size, shuffle=train,
                        num_workers=self.cfg.data.num_workers, seed=seed)
        return distributed_loader(single, self.ctx, train) if shard and self.ctx.active else single

    def extra_split(self, key: str, build: Any) -> str:
        """A split a strategy makes from the data (``build(bundle) -> items``; few-shot's source + shots), built once."""
        if key not in self.data.splits:
            self.data.splits[key] = build(self.data)
        return key

    def checkpointer(self, folder: Path) -> Checkpointer:
        return Checkpointer(folder, write=self.ctx.is_main)

    def features_for(self, built: BuiltBackbone, seed: int, split: str) -> Features:
        """Every layer's pooled features of the frozen backbone on ``split`` (from the disk cache when it can)."""
        weights = built.weights_sha256 or f"random-init-seed{seed}"  # a random backbone differs per seed
        bf16 = self.cfg.train.amp and self.device.type == "cuda"
        key = feature_key(backbone=built.backbone.name, weights=weights, spec=built.spec.as_dict(),
                          preprocess=self.cfg.preprocess.model_dump(mode="json"), data=self.data.fingerprint, split=split,
                          numerics="bf16-autocast" if bf16 else "fp32")
        if key not in self._feats:
            self._feats[key] = self.features.get_or_extract(key, built.backbone, self.loader(split), self.device,
                                                            self.cfg.train.amp, f"extracting {split} features",
                                                            self.cfg.train.channels_last)
        return self._feats[key]


def _fit_options(cfg: ExperimentConfig, data: DataBundle, seed: int, device: torch.device, name: str,
                 dist: DistContext = SINGLE) -> FitOptions:
    k = len(data.classes)
    weights = class_weights(data.splits["train"], k) if cfg.train.class_weighting == "balanced" else None
    return FitOptions(optimizer=cfg.train.optimizer, weight_decay=cfg.train.weight_decay, momentum=cfg.train.momentum,
                      class_weights=weights, patience=cfg.train.patience, seed=seed, device=device, amp=cfg.train.amp,
                      channels_last=cfg.train.channels_last, description=name, dist=dist)


def run_arm(s: StrategyConfig, seed: int, shared: _Shared, tracker: Tracker, folder: Path, shift: ShiftProbe | None = None) -> ArmResult:
    """Train and evaluate one arm; a finished arm found on disk (``--resume``) is loaded, not retrained."""
    if (folder / ArmResult.RESULT).is_file():
        return ArmResult.load(folder)
    cfg, data, device = shared.cfg, shared.data, shared.device
    k = len(data.classes)
    start = time.perf_counter()
    strategy = strategy_for(s)
    seed_everything(seed)  # a scratch backbone's random init is drawn here
    built = build_backbone(cfg.backbone.name, pretrained=(strategy.pretrained and cfg.backbone.weights == "imagenet"),
                           spec=shared.spec)
    opts = _fit_options(cfg, data, seed, device, s.name, shared.ctx)
    trained = strategy.train(Arm(shared, cfg.train, built, k, seed, opts, folder, tracker.log_epoch))
    model, result, probs, labels, sweep = trained.model, trained.fit, trained.probs, trained.labels, trained.sweep
    model.cpu().eval()
    build = {"backbone": model.backbone.name, "num_classes": k, "head": trained.head, "layer": model.layer,
             "spec": model.spec.as_dict()}
    items = pd.DataFrame([{"path": it["path"], "domain": it["domain"], "patient": it["patient"]} for it in data.splits["test"]])
    metrics = summarize(labels, probs, items["domain"].tolist(), items["patient"].tolist(), "test", cfg.train.bootstrap, seed)
    metrics["val_auc"] = result.best_val_auc
    for g, row in (sweep or {}).items():
        metrics[f"sweep.val_auc.{g}"] = row["val_auc"]
    arm = ArmResult(s.name, str(s.kind), seed, model, result, result.best_val_auc, metrics, probs, labels, items,
                    built.weights_id, built.weights_sha256, time.perf_counter() - start, trained.probe, folder, build, sweep)
    if shift is not None and shift.active:
        arm.shift = shift.analyse(arm, seed)
        arm.metrics.update(arm.shift.metrics)
    if shared.ctx.is_main:
        arm.save(folder)
    return arm


def compare(cfg: ExperimentConfig, tracker: Tracker | None = None, resume: bool = False, workdir: Path | None = None) -> Comparison:
    """Run every strategy of ``cfg``; the best (mean validation AUC) is marked for registration.

    Under ``torchrun`` every rank runs this: fine-tuning arms train data-parallel (DDP), frozen heads
    are trained alike on every rank, and only rank 0 tracks (other ranks get no tracker) and writes.
    """
    ctx = DistContext.from_env()
    tracker = tracker if tracker is not None and ctx.is_main else NullTracker()
    device = ctx.device(cfg.train.device) if ctx.active else resolve_device(cfg.train.device)
    data = load_data(cfg.data, cfg.train.seed)
    check_target_data(cfg, data)
    spec = input_spec(cfg.backbone.name, cfg.preprocess.size)  # made once; every model built here carries it
    folder = run_folder(cfg, workdir)
    with process_group(ctx, device), rng_restored(device):  # arms seed the global generators; the caller's come back
        if ctx.is_main:
            if not resume and folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
        barrier(ctx)  # nobody looks for finished arms before rank 0 has cleared the folder
        comparison = Comparison(cfg, data, spec, folder=folder)
        shared = _Shared(cfg, data, spec, folder, device, ctx)
        shift = ShiftProbe(shared, cfg.train.seed)
        select = SelectionProbe(shared, cfg.train.seed)
        if shift.active:  # the frozen ImageNet extractor, measured once on the same images as every arm
            seed_everything(cfg.train.seed)
            shift.prepare(build_backbone(cfg.backbone.name, pretrained=cfg.backbone.weights == "imagenet", spec=spec))
            comparison.shift_extractor = shift.extractor_metrics
        tracker.start(comparison)
        for seed in cfg.train.all_seeds:
            for s in cfg.strategies:
                tracker.start_arm(s, seed)
                arm = run_arm(s, seed, shared, tracker, folder / f"{s.name}-seed{seed}", shift)
                arm.metrics.update(select.score(arm))  # label-free validators (select.<validator>)
                comparison.arms.append(arm)
                tracker.end_arm(arm, comparison)
        comparison.best = pick_best(comparison.arms)
        tracker.finish(comparison)
    return comparison
