"""Features of the frozen backbone, extracted once per split and kept on disk.

One pass stores the pooled output of every layer group, so the ``frozen`` arm, ``lp-ft``'s probe
and a layer sweep all read the same file. The key hashes everything that decides the numbers:
backbone, weights checksum (or the seed of a random init), input specification, preprocessing
settings, data fingerprint, split and numerics (bf16 on CUDA or fp32), so a change to any of them
is a different file and never a stale hit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from medtl.hashing import json_sha256
from medtl.models.averaging import views
from medtl.models.transfer import GroupedBackbone
from medtl.progress import track
from medtl.training.loop import autocast

Features = dict[str, Any]  # {"features": {layer: (N, D) float32}, "labels": (N,) int64}
FORMAT = 2  # bump when the file layout changes: old files then miss instead of misreading


def feature_key(**parts: Any) -> str:
    return json_sha256({"format": FORMAT, **parts})[:24]


@dataclass
class FeatureCache:
    root: Path
    write: bool = True  # False on every rank but 0 under torchrun: one writer per file
    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def path(self, key: str) -> Path:
        return Path(self.root) / f"{key}.pt"

    def get_or_extract(self, key: str, backbone: GroupedBackbone, loader: DataLoader, device: torch.device,
                       amp: bool = True, description: str = "extracting features", channels_last: bool = True,
                       flip: str | None = None) -> Features:
        p = self.path(key)
        if p.is_file():
            self.hits.append(key)
            return torch.load(p, map_location="cpu", weights_only=True)
        self.misses.append(key)
        out = extract_features(backbone, loader, device, amp, description, channels_last, flip)
        if not self.write:
            return out
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{os.getpid()}.tmp")  # two runs extracting the same key do not share a file
        torch.save(out, tmp)
        tmp.replace(p)  # a killed extraction leaves no half-written cache entry
        return out


@torch.no_grad()
def extract_features(backbone: GroupedBackbone, loader: DataLoader, device: torch.device, amp: bool = True,
                     description: str = "extracting features", channels_last: bool = True, flip: str | None = None) -> Features:
    """Pooled features of every layer group, in loader order (bf16 autocast on CUDA; channels_last
    on any device, where oneDNN's NHWC convolutions also run faster on the CPU).

    Written into tensors allocated once for the whole split: collecting per-batch pieces and
    concatenating them held every feature twice at the end (measured in benchmarks/bench_memory.py).
    ``flip``: the features of each image's flipped copy (a test-time view, ``medtl.models.averaging.FLIPS``).
    """
    backbone.eval().to(device)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    n = len(loader.sampler) if hasattr(loader.sampler, "__len__") else len(loader.dataset)  # type: ignore[arg-type]
    feats: dict[str, torch.Tensor] = {}
    labels = torch.empty(n, dtype=torch.long)
    at = 0
    for batch in track(loader, description, total=len(loader)):
        x = batch["image"].to(device, non_blocking=True)
        if flip is not None:
            x = views(x, [flip])[1]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out = backbone.forward_all(x)
        b = len(x)
        if at + b > n:
            raise RuntimeError(f"{description}: the loader gave more than the {n} images its sampler announced")
        for layer, f in out.items():
            if layer not in feats:
                feats[layer] = torch.empty(n, f.shape[1], dtype=torch.float32)
            feats[layer][at:at + b] = f.float().cpu()
        labels[at:at + b] = torch.as_tensor(batch["label"]).long()
        at += b
    if channels_last:  # the backbone goes on to other arms and to MLflow in the usual layout
        backbone.to(memory_format=torch.contiguous_format)
    return {"features": {k: v[:at] for k, v in feats.items()}, "labels": labels[:at]}
