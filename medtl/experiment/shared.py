"""What a comparison builds once and lends every arm: datasets, loaders, the frozen backbone's features.

``SharedData`` is the ``ArmData`` of ``medtl.training.strategies`` (what a strategy may ask for) and
what the shift analysis measures on; one per comparison, so preprocessing and feature extraction are
never repeated between arms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medtl.config import ExperimentConfig
from medtl.data.datasets import DataBundle, class_weights, loader, prepared_dataset
from medtl.data.augment import build_augmentations
from medtl.models.registry import InputSpec
from medtl.models.transfer import BuiltBackbone
from medtl.training.distributed import SINGLE, DistContext, distributed_loader
from medtl.training.feature_cache import Features, FeatureCache, feature_key
from medtl.training.loop import Checkpointer, FitOptions
from medtl.training.mixing import BatchMixer


class SharedData:
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
        return self.loader_of(self.dataset(split, train), train, seed, shard)

    def loader_of(self, ds: Any, train: bool = False, seed: int = 0, shard: bool = False) -> Any:
        """The loader of any dataset of this comparison (a split, or a fold's part of one)."""
        single = loader(ds, self.cfg.train.batch_size, shuffle=train, num_workers=self.cfg.data.num_workers, seed=seed)
        return distributed_loader(single, self.ctx, train) if shard and self.ctx.active else single

    def extra_split(self, key: str, build: Any) -> str:
        """A split a strategy makes from the data (``build(bundle) -> items``; few-shot's source + shots), built once."""
        if key not in self.data.splits:
            self.data.splits[key] = build(self.data)
        return key

    def checkpointer(self, folder: Path) -> Checkpointer:
        return Checkpointer(folder, write=self.ctx.is_main)

    def features_for(self, built: BuiltBackbone, seed: int, split: str, flip: str | None = None) -> Features:
        """Every layer's pooled features of the frozen backbone on ``split`` (from the disk cache when it can);
        ``flip``: of each image's flipped copy (test-time augmentation)."""
        weights = built.weights_sha256 or f"random-init-seed{seed}"  # a random backbone differs per seed
        bf16 = self.cfg.train.amp and self.device.type == "cuda"
        key = feature_key(backbone=built.backbone.name, weights=weights, spec=built.spec.as_dict(),
                          preprocess=self.cfg.preprocess.model_dump(mode="json"), data=self.data.fingerprint, split=split,
                          numerics="bf16-autocast" if bf16 else "fp32", **({"flip": flip} if flip else {}))
        if key not in self._feats:
            self._feats[key] = self.features.get_or_extract(key, built.backbone, self.loader(split), self.device,
                                                            self.cfg.train.amp,
                                                            f"extracting {split} features" + (f" ({flip})" if flip else ""),
                                                            self.cfg.train.channels_last, flip)
        return self._feats[key]

    def patients(self, split: str) -> list[str]:
        """Each item's patient, in the order of ``split``'s loader and features (cross-validation inside a
        split groups by them, as the splits do)."""
        return [str(it["patient"]) for it in self.data.splits[split]]

    def fit_options(self, seed: int, description: str, device: torch.device | None = None,
                    train_items: list[dict[str, Any]] | None = None) -> FitOptions:
        """The loop's options for one arm: the config's optimiser and class weighting (of ``train_items``,
        by default the train split), this seed."""
        t = self.cfg.train
        items = self.data.splits["train"] if train_items is None else train_items
        weights = class_weights(items, len(self.data.classes)) if t.class_weighting == "balanced" else None
        return FitOptions(optimizer=t.optimizer, weight_decay=t.weight_decay, momentum=t.momentum, class_weights=weights,
                          patience=t.patience, seed=seed, device=device or self.device, amp=t.amp,
                          channels_last=t.channels_last, description=description, dist=self.ctx,
                          label_smoothing=t.label_smoothing,
                          mixup=None if t.mixup is None else BatchMixer(len(self.data.classes), **t.mixup.model_dump()))
