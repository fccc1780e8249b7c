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
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from medtl.config import ExperimentConfig, StrategyConfig
from medtl.data.datasets import DataBundle, class_weights, image_dataset, load_data, loader
from medtl.data.transforms import build_augmentations, scan_transforms
from medtl.hashing import json_sha256
from medtl.metrics.summary import summarize
from medtl.models.registry import InputSpec, get_backbone
from medtl.models.transfer import TransferModel, create_model
from medtl.training.feature_cache import FeatureCache, feature_key
from medtl.training.loop import Checkpointer, FitOptions, FitResult, fit, predict_probs, resolve_device, seed_everything
from medtl.training.strategies import HEAD, build_schedule, probe_schedule

FEATURE_KINDS = ("frozen", "lp-ft")


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

    RESULT = "result.pt"

    def save(self, folder: Path) -> Path:
        """Everything the tracker needs, on local disk; loads with ``weights_only=True``."""
        fits = {k: None if f is None else {"history": f.history, "best_epoch": f.best_epoch, "best_val_auc": f.best_val_auc,
                                           "stopped_early": f.stopped_early} for k, f in (("fit", self.fit), ("probe", self.probe))}
        state = {"strategy": self.strategy, "kind": self.kind, "seed": self.seed, "val_auc": self.val_auc,
                 "metrics": self.metrics, "test_probs": torch.as_tensor(self.test_probs),
                 "test_labels": torch.as_tensor(self.test_labels), "test_items": self.test_items.to_dict("list"),
                 "weights_id": self.weights_id, "weights_sha256": self.weights_sha256, "seconds": self.seconds,
                 "build": self.build, "model": self.model.state_dict(), **fits}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (self.RESULT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(folder / self.RESULT)
        return folder / self.RESULT

    @classmethod
    def load(cls, folder: Path) -> ArmResult:
        st = torch.load(folder / cls.RESULT, map_location="cpu", weights_only=True)
        model, _ = create_model(st["build"]["backbone"], st["build"]["num_classes"], pretrained=False,
                                head=st["build"]["head"], layer=st["build"]["layer"])
        model.load_state_dict(st["model"])
        model.eval()
        fit_of = lambda d: None if d is None else FitResult(d["history"], d["best_epoch"], d["best_val_auc"], d["stopped_early"])  # noqa: E731
        return cls(st["strategy"], st["kind"], st["seed"], model, fit_of(st["fit"]), st["val_auc"], st["metrics"],
                   st["test_probs"].numpy(), st["test_labels"].numpy(), pd.DataFrame(st["test_items"]), st["weights_id"],
                   st["weights_sha256"], st["seconds"], fit_of(st["probe"]), folder, st["build"])


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

    def table(self) -> pd.DataFrame:
        return results_table(self.arms)


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


def results_table(arms: list[ArmResult]) -> pd.DataFrame:
    """One row per strategy (mean over seeds, with the std when there are several)."""
    rows = []
    for name in dict.fromkeys(a.strategy for a in arms):
        group = [a for a in arms if a.strategy == name]
        m = lambda k: float(np.mean([a.metrics[k] for a in group]))  # noqa: E731
        row: dict[str, Any] = {"strategy": name, "seeds": len(group), "val_auc": float(np.mean([a.val_auc for a in group]))}
        for k in ("auc", "acc"):
            row[f"test_{k}"] = m(f"test_{k}")
            row[f"test_{k}_ci"] = (m(f"test_{k}_ci_low"), m(f"test_{k}_ci_high"))
            if len(group) > 1:
                row[f"test_{k}_std"] = float(np.std([a.metrics[f"test_{k}"] for a in group], ddof=1))
        for key in sorted(group[0].metrics):
            if key.startswith(("test_auc.", "test_acc.")):
                row[key] = m(key)
        row["minutes"] = sum(a.seconds for a in group) / 60
        rows.append(row)
    return pd.DataFrame(rows)


def _val_loss(arm: ArmResult) -> float:
    rows = [h for h in arm.fit.history if int(h["epoch"]) == arm.fit.best_epoch]
    return rows[0]["val_loss"] if rows else float("inf")


def pick_best(arms: list[ArmResult]) -> ArmResult:
    """Highest mean validation AUC over seeds; ties (common on easy data) go to the lower validation loss."""
    def score(name: str) -> tuple[float, float]:
        group = [a for a in arms if a.strategy == name]
        return float(np.mean([a.val_auc for a in group])), -float(np.mean([_val_loss(a) for a in group]))

    best_name = max(dict.fromkeys(a.strategy for a in arms), key=score)
    return max((a for a in arms if a.strategy == best_name), key=lambda a: (a.val_auc, -_val_loss(a)))


def run_folder(cfg: ExperimentConfig, root: Path | None = None) -> Path:
    """Where a config's checkpoints live: one folder per config (its hash), so --resume finds it."""
    key = json_sha256(cfg.model_dump(mode="json", exclude={"tracking"}))[:16]
    return Path(root or Path.cwd() / ".medtl" / "runs") / f"{cfg.name}-{key}"


class _Shared:
    """Datasets, loaders and the frozen feature cache, built once per comparison."""

    def __init__(self, cfg: ExperimentConfig, data: DataBundle, spec: InputSpec, folder: Path, device: torch.device) -> None:
        self.cfg, self.data, self.spec, self.device = cfg, data, spec, device
        self.eval_tf = scan_transforms(spec, cfg.preprocess)
        self.train_tf = scan_transforms(spec, cfg.preprocess, augment=build_augmentations(cfg.train.augment))
        self._ds: dict[str, Any] = {}
        cache_root = cfg.data.cache_dir or Path.cwd() / ".medtl" / "cache"
        self.features = FeatureCache(Path(cache_root) / "features")
        self.folder = folder

    def dataset(self, split: str, train: bool = False) -> Any:
        key = f"{split}-{'train' if train else 'eval'}"
        if key not in self._ds:
            tf = self.train_tf if train else self.eval_tf
            self._ds[key] = image_dataset(self.data.splits[split], tf, self.cfg.data.cache,
                                          None if self.cfg.data.cache_dir is None else self.cfg.data.cache_dir / "images")
        return self._ds[key]

    def loader(self, split: str, train: bool = False, seed: int = 0) -> Any:
        return loader(self.dataset(split, train), self.cfg.train.batch_size, shuffle=train,
                      num_workers=self.cfg.data.num_workers, seed=seed)

    def features_for(self, backbone: torch.nn.Module, layer: str | None, weights_sha: str | None, split: str) -> dict[str, torch.Tensor]:
        key = feature_key(backbone=self.cfg.backbone.name, weights=weights_sha, layer=layer, spec=self.spec.as_dict(),
                          preprocess=self.cfg.preprocess.model_dump(mode="json"), data=self.data.fingerprint, split=split)
        return self.features.get_or_extract(key, backbone, layer, self.loader(split), self.device,
                                            f"extracting {split} features")


def _fit_options(cfg: ExperimentConfig, data: DataBundle, seed: int, device: torch.device, name: str) -> FitOptions:
    k = len(data.classes)
    weights = class_weights(data.splits["train"], k) if cfg.train.class_weighting == "balanced" else None
    return FitOptions(optimizer=cfg.train.optimizer, weight_decay=cfg.train.weight_decay, momentum=cfg.train.momentum,
                      class_weights=weights, patience=cfg.train.patience, seed=seed, device=device, amp=cfg.train.amp,
                      channels_last=cfg.train.channels_last, description=name)


def _train_head_on_features(model: TransferModel, shared: _Shared, built_sha: str | None, s: StrategyConfig,
                            schedule: Any, opts: FitOptions, ckpt: Checkpointer | None, on_epoch: Any) -> FitResult:
    feats = {sp: shared.features_for(model.backbone, model.layer, built_sha, sp) for sp in ("train", "val")}
    bs = shared.cfg.train.batch_size
    gen = torch.Generator().manual_seed(opts.seed)
    train = torch.utils.data.DataLoader(TensorDataset(feats["train"]["features"], feats["train"]["labels"]), batch_size=bs,
                                        shuffle=True, generator=gen)
    val = torch.utils.data.DataLoader(TensorDataset(feats["val"]["features"], feats["val"]["labels"]), batch_size=bs)
    head_opts = FitOptions(**{**opts.__dict__, "device": torch.device("cpu"), "amp": False, "channels_last": False})
    return fit(model.head, OrderedDict([(HEAD, model.head)]), schedule, train, val, head_opts, ckpt, on_epoch)


def run_arm(s: StrategyConfig, seed: int, shared: _Shared, tracker: Tracker, folder: Path) -> ArmResult:
    """Train and evaluate one arm; a finished arm found on disk (``--resume``) is loaded, not retrained."""
    if (folder / ArmResult.RESULT).is_file():
        return ArmResult.load(folder)
    cfg, data, device = shared.cfg, shared.data, shared.device
    start = time.perf_counter()
    seed_everything(seed)
    build = {"backbone": cfg.backbone.name, "num_classes": len(data.classes),
             "head": s.head if s.kind == "frozen" else "linear", "layer": s.layer if s.kind == "frozen" else None}
    model, built = create_model(build["backbone"], build["num_classes"], head=build["head"], layer=build["layer"],
                                pretrained=(s.kind != "scratch" and cfg.backbone.weights == "imagenet"))
    opts = _fit_options(cfg, data, seed, device, s.name)
    probe = None
    if s.kind == "frozen":
        result = _train_head_on_features(model, shared, built.weights_sha256, s, build_schedule(s, (HEAD,), cfg.train),
                                         opts, Checkpointer(folder / "head"), tracker.log_epoch)
        test = shared.features_for(model.backbone, model.layer, built.weights_sha256, "test")
        model.eval()
        with torch.no_grad():
            probs = torch.softmax(model.head(test["features"]), 1).numpy()
        labels = test["labels"].numpy()
    else:
        if s.kind == "lp-ft":  # the probe is a frozen arm's head on the cached features
            probe = _train_head_on_features(model, shared, built.weights_sha256, s, probe_schedule(s, cfg.train), opts,
                                            Checkpointer(folder / "probe"), None)
        groups = model.groups()
        schedule = build_schedule(s, tuple(groups), cfg.train)
        result = fit(model, groups, schedule, shared.loader("train", train=True, seed=seed), shared.loader("val"), opts,
                     Checkpointer(folder / "model"), tracker.log_epoch)
        probs, labels = predict_probs(model, shared.loader("test"), device, cfg.train.amp, "testing")
    model.cpu().eval()
    items = pd.DataFrame([{"path": it["path"], "domain": it["domain"], "patient": it["patient"]} for it in data.splits["test"]])
    metrics = summarize(labels, probs, items["domain"].tolist(), items["patient"].tolist(), "test", cfg.train.bootstrap, seed)
    metrics["val_auc"] = result.best_val_auc
    arm = ArmResult(s.name, str(s.kind), seed, model, result, result.best_val_auc, metrics, probs, labels, items,
                    built.weights_id, built.weights_sha256, time.perf_counter() - start, probe, folder, build)
    arm.save(folder)
    return arm


def compare(cfg: ExperimentConfig, tracker: Tracker | None = None, resume: bool = False, workdir: Path | None = None) -> Comparison:
    """Run every strategy of ``cfg``; the best (mean validation AUC) is marked for registration."""
    tracker = tracker or NullTracker()
    device = resolve_device(cfg.train.device)
    data = load_data(cfg.data, cfg.train.seed)
    spec = get_backbone(cfg.backbone.name).weights.input_spec().with_size(cfg.preprocess.size)
    folder = run_folder(cfg, workdir)
    if not resume and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    comparison = Comparison(cfg, data, spec, folder=folder)
    shared = _Shared(cfg, data, spec, folder, device)
    tracker.start(comparison)
    for seed in cfg.train.all_seeds:
        for s in cfg.strategies:
            tracker.start_arm(s, seed)
            arm = run_arm(s, seed, shared, tracker, folder / f"{s.name}-seed{seed}")
            comparison.arms.append(arm)
            tracker.end_arm(arm, comparison)
    comparison.best = pick_best(comparison.arms)
    tracker.finish(comparison)
    return comparison
