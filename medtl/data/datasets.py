"""Datasets for training: rows from a curated manifest or a MedMNIST ``.npz``, cached by MONAI.

Items are dicts ``{"image": path or array, "label": int, "patient": hashed id, "domain": str,
"path": str}``. Besides train/val/test, a bundle may hold a ``target`` split: the target sites'
*training* scans without their labels (``label`` -1), for arms that adapt to a new site and for
label-free model selection. From a manifest: the target domains' ``train`` rows (with
``data.source_domains`` set); for MedMNIST-C: corrupted copies of training images
(``data.corruptions.train_per_domain``), never of test images. Their true labels are kept apart
(``DataBundle.target_labels``) and read only by ``few_shot_items`` (the ``few-shot`` arm, whose
point is to see ``k`` of them). Deterministic transforms are cached (MONAI ``CacheDataset`` in memory, filled by
a thread pool, or ``PersistentDataset`` on disk, filled by the loader's worker processes);
random augmentations run after the cache, every epoch, in worker processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import worker_init_fn
from monai.transforms import Randomizable, Transform
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Subset

from medtl.config import CorruptionConfig, DataConfig, PreprocessConfig
from medtl.data.batched import BatchedArrays, batchable
from medtl.data.manifest import SPLITS, class_names, data_fingerprint, missing_classes, read_manifest
from medtl.data.medmnist import read_medmnist
from medtl.data.transforms import scan_transforms
from medtl.errors import ConfigError, DataError
from medtl.hashing import file_sha256, json_sha256
from medtl.models.registry import InputSpec

Item = dict[str, Any]


@dataclass
class DataBundle:
    classes: list[str]
    splits: dict[str, list[Item]]
    fingerprint: str  # changes when any row, label, split or file changes
    source: str
    notes: list[str] = field(default_factory=list)
    # the true labels of splits["target"], row for row: only few_shot_items reads them
    target_labels: list[int] = field(default_factory=list, repr=False)

    def domains(self) -> list[str]:
        return sorted({it["domain"] for items in self.splits.values() for it in items})


def load_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    bundle = _from_npz(cfg.npz) if cfg.npz is not None else _from_manifest(cfg.manifest)  # type: ignore[arg-type]
    if cfg.corruptions is None:
        _check_domains(cfg, bundle)
    if cfg.source_domains:  # training and model selection see source domains only
        _unlabelled_target(bundle, cfg)
        for split in ("train", "val"):
            bundle.splits[split] = [it for it in bundle.splits[split] if it["domain"] in cfg.source_domains]
        bundle.notes.append(f"train/val restricted to source domains {cfg.source_domains}")
    if cfg.subset:
        for split, n in cfg.subset.items():
            before = len(bundle.splits[split])
            bundle.splits[split] = stratified_subset(bundle.splits[split], n, seed)
            bundle.notes.append(f"{split}: stratified subset of {len(bundle.splits[split])} of {before} (seed {seed})")
        bundle.fingerprint = json_sha256([bundle.fingerprint, cfg.subset, seed])
    if cfg.corruptions is not None:  # after the subset: every corruption domain is the same test images
        add_corruptions(bundle, cfg.corruptions, seed, cfg.target_domains)
        _check_domains(cfg, bundle)
    for split in SPLITS:
        if not bundle.splits[split]:
            raise DataError(bundle.source, f"the {split} split is empty")
    check_classes(bundle)
    return bundle


def check_classes(bundle: DataBundle) -> None:
    """Refuse data that cannot answer the question, before any training: one class is nothing to
    learn, and a split without a class leaves AUC (MedMNIST's macro one-vs-rest) undefined there,
    so validation could not choose a model nor test report one."""
    if len(bundle.classes) < 2:
        raise DataError(bundle.source, f"only one class ({', '.join(bundle.classes)}): a classifier needs at least two")
    labels = {split: [bundle.classes[it["label"]] for it in items] for split, items in bundle.splits.items()
              if split in SPLITS}  # the unlabelled target split has no labels to check
    gone = missing_classes(labels, bundle.classes)
    if gone:
        split, missing = next(iter(gone.items()))
        raise DataError(bundle.source, f"the {split} split has no scan of class(es) {missing} (classes: "
                                       f"{', '.join(bundle.classes)}), so its AUC is undefined; curate again with more "
                                       "patients of that class, or another seed or split")


def _check_domains(cfg: DataConfig, bundle: DataBundle) -> None:
    known = set(bundle.domains())
    for key in ("source_domains", "target_domains"):
        unknown = sorted(set(getattr(cfg, key) or []) - known)
        if unknown:
            raise DataError(f"data.{key}", f"unknown domain(s) {unknown} (present: {sorted(known)})")


def _hide_labels(bundle: DataBundle, items: list[Item]) -> None:
    """Append ``items`` to the unlabelled target split, their labels set aside."""
    bundle.splits.setdefault("target", [])
    for it in items:
        bundle.target_labels.append(int(it["label"]))
        bundle.splits["target"].append({**it, "label": -1})


def _unlabelled_target(bundle: DataBundle, cfg: DataConfig) -> None:
    """A manifest's target-domain ``train`` rows become the unlabelled target split."""
    source = set(cfg.source_domains or [])
    rows = [it for it in bundle.splits["train"] if it["domain"] not in source
            and (cfg.target_domains is None or it["domain"] in cfg.target_domains)]
    if rows:
        _hide_labels(bundle, rows)
        bundle.notes.append(f"target: {len(rows)} training scan(s) of {sorted({it['domain'] for it in rows})} "
                            "used without their labels")


def few_shot_items(bundle: DataBundle, shots: int, seed: int) -> list[Item]:
    """``shots`` labelled target scans per class (fewer where a class has fewer), drawn with ``seed``.

    The one reader of ``target_labels``: the ``few-shot`` arm's labelled handful.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(bundle.target_labels, dtype=int)
    picked: list[Item] = []
    for c in range(len(bundle.classes)):
        idx = np.flatnonzero(labels == c)
        for i in sorted(rng.choice(idx, min(shots, len(idx)), replace=False).tolist()):
            picked.append({**bundle.splits["target"][i], "label": int(labels[i])})
    return picked


def add_corruptions(bundle: DataBundle, cc: CorruptionConfig, seed: int = 0, targets: list[str] | None = None) -> None:
    """MedMNIST-C target domains: the test split's clean images under each corruption and severity;
    with ``cc.train_per_domain``, also that many training images per target domain, corrupted alike,
    as the unlabelled target split (never a test image: the test set stays unseen)."""
    from medtl.data.corruptions import corrupt_set, corruption_table, domain_name

    table = corruption_table(cc.dataset)
    names = list(table) if cc.names == "all" else list(cc.names)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ConfigError("data.corruptions.names", f"{unknown} not MedMNIST-C corruptions of {cc.dataset} (its: {', '.join(table)})")
    clean = [it for it in bundle.splits["test"] if it["domain"] == "clean"]
    images = [np.asarray(it["image"]) for it in clean]
    for name in names:
        for sev in cc.severities:
            dom = domain_name(name, sev)
            for it, img in zip(clean, corrupt_set(images, cc.dataset, name, sev, seed, cc.size)):
                bundle.splits["test"].append({**it, "image": img, "domain": dom, "path": f"{it['path']}@{dom}"})
    bundle.notes.append(f"test: MedMNIST-C ({cc.dataset} parameters) {len(names)} corruption(s) x severities "
                        f"{cc.severities} of the {len(clean)} clean test images, corrupted at {cc.size or 'native'} px")
    if cc.train_per_domain:
        train = [it for it in bundle.splits["train"] if it["domain"] == "clean"]
        doms = [(name, sev) for name in names for sev in cc.severities if targets is None or domain_name(name, sev) in targets]
        for j, (name, sev) in enumerate(doms):
            dom = domain_name(name, sev)
            pick = np.random.default_rng([seed, 7, j]).choice(len(train), min(cc.train_per_domain, len(train)), replace=False)
            rows = [train[i] for i in sorted(pick.tolist())]
            images = corrupt_set([np.asarray(it["image"]) for it in rows], cc.dataset, name, sev, seed + 1_000_003, cc.size)
            _hide_labels(bundle, [{**it, "image": img, "domain": dom, "path": f"{it['path']}@{dom}"} for it, img in zip(rows, images)])
        bundle.notes.append(f"target: {min(cc.train_per_domain, len(train))} training image(s) per target domain "
                            f"({len(doms)} domain(s)), corrupted alike and used without their labels")
    bundle.fingerprint = json_sha256([bundle.fingerprint, cc.model_dump(mode="json"), seed])


def stratified_subset(items: list[Item], n: int, seed: int) -> list[Item]:
    if n >= len(items):
        return items
    labels = [it["label"] for it in items]
    idx = np.arange(len(items))
    try:
        keep, _ = train_test_split(idx, train_size=n, stratify=labels, random_state=seed)
    except ValueError:  # a class too rare to stratify
        keep, _ = train_test_split(idx, train_size=n, random_state=seed)
    return [items[i] for i in sorted(keep)]


def _from_manifest(path: Path) -> DataBundle:
    df = read_manifest(path, require_split=True)
    classes = class_names(df["label"])
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for row in df.itertuples(index=False):
        splits[row.split].append({"image": row.path, "label": index[str(row.label)], "patient": row.patient_id,
                                  "domain": row.domain, "path": row.path})
    return DataBundle(classes, splits, data_fingerprint(df), str(path))


def _from_npz(path: Path) -> DataBundle:
    """MedMNIST layout, official splits kept; images stay in memory (no patient ids: one per image)."""
    arrays = read_medmnist(path)
    labels = sorted({int(v) for _, (_, y) in arrays.items() for v in y})
    classes = [str(v) for v in range(max(labels) + 1)]
    name = Path(path).name
    splits = {
        s: [{"image": img, "label": int(lab), "patient": f"{s}-{i}", "domain": "clean", "path": f"{name}#{s}/{i}"}
            for i, (img, lab) in enumerate(zip(imgs, ys))]
        for s, (imgs, ys) in arrays.items()
    }
    return DataBundle(classes, splits, file_sha256(path), str(path))


def _random_after_cache(transform: Any) -> bool:
    return transform.get_index_of_first(lambda t: isinstance(t, Randomizable) or not isinstance(t, Transform)) is not None


def image_dataset(items: list[Item], transform: Any, cache: str = "memory", cache_dir: Path | None = None) -> Dataset:
    if cache == "memory":
        # Transforms after the cache (augmentations, then normalisation) must work on a copy: a
        # random transform that does not fire hands the cached tensor on, and MONAI's
        # NormalizeIntensity writes into it, so the cache would drift epoch after epoch.
        return CacheDataset(items, transform, num_workers=None, progress=False,
                            copy_cache=_random_after_cache(transform))
    if cache == "disk":
        folder = Path(cache_dir or ".medtl/cache/images")
        folder.mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, transform, cache_dir=folder)
    return Dataset(items, transform)


def prepared_dataset(items: list[Item], spec: InputSpec, pp: PreprocessConfig, augment: list[Transform] | None = None,
                     cache: str = "memory", cache_dir: Path | None = None) -> Any:
    """The dataset a split trains and is measured on: backbone inputs by ``scan_transforms``.

    In-memory arrays of one shape (MedMNIST) with ``cache: memory`` are prepared a batch at a time
    (``BatchedArrays``: the same tensors, without ~3 ms of per-image transform overhead, and only the
    small planes kept); scans on disk go through MONAI's datasets and caches (``image_dataset``).
    """
    if cache == "memory" and batchable(items):
        return BatchedArrays(items, spec, pp, augment or [])
    return image_dataset(items, scan_transforms(spec, pp, augment=augment), cache, cache_dir)


def resolve_workers(num_workers: int | str = "auto") -> int:
    """``auto``: one worker process per core beyond the one that trains, at most four."""
    if num_workers == "auto":
        return min(4, max(0, (os.cpu_count() or 1) - 1))
    return int(num_workers)


def fully_cached(ds: Any) -> bool:
    """An in-memory cache holding every item's final tensor (or batched arrays without augmentation):
    worker processes would only copy it."""
    if isinstance(ds, Subset):  # a fold of a pooled split (cross-validation)
        return fully_cached(ds.dataset)
    if isinstance(ds, BatchedArrays):
        return ds.transform is None
    return isinstance(ds, CacheDataset) and ds.cache_num >= len(ds) and not _random_after_cache(ds.transform)


def loader(ds: Any, batch_size: int, shuffle: bool, num_workers: int | str = "auto", seed: int = 0) -> DataLoader:
    """Batches in worker processes where there is work to do (reading, caching to disk, augmenting).

    Workers are forked per epoch and their random transforms reseeded by MONAI's
    ``worker_init_fn`` from the loader's generator, so an epoch is reproducible from ``seed``
    for a given number of workers.
    """
    gen = torch.Generator().manual_seed(seed)
    workers = 0 if fully_cached(ds) else resolve_workers(num_workers)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=gen,
                      collate_fn=_collate, persistent_workers=False, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=worker_init_fn if workers else None)


def _collate(batch: list[Item]) -> dict[str, Any]:
    """Images and labels as tensors; everything else (paths, domains, patients) as lists."""
    out: dict[str, Any] = {"image": torch.stack([b["image"] for b in batch]),
                           "label": torch.as_tensor([b["label"] for b in batch], dtype=torch.long)}
    for k in batch[0]:
        if k not in out:
            out[k] = [b[k] for b in batch]
    return out


def class_weights(items: list[Item], num_classes: int) -> torch.Tensor:
    """'balanced' weights (n / (k * count)), as scikit-learn computes them."""
    counts = np.bincount([it["label"] for it in items], minlength=num_classes).astype(float)
    counts[counts == 0] = 1.0
    return torch.as_tensor(len(items) / (num_classes * counts), dtype=torch.float32)


def to_frame(items: list[Item]) -> pd.DataFrame:
    return pd.DataFrame([{k: v for k, v in it.items() if k != "image"} for it in items])
