"""Features of the frozen backbone, extracted once per split and kept on disk.

The key hashes everything that decides the numbers: backbone, weights checksum, layer, the
input specification, the preprocessing settings and the data fingerprint, so any change to one
of them is a different file and never a stale hit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from medtl.hashing import json_sha256
from medtl.progress import track


def feature_key(**parts: Any) -> str:
    return json_sha256(parts)[:24]


@dataclass
class FeatureCache:
    root: Path
    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def path(self, key: str) -> Path:
        return Path(self.root) / f"{key}.pt"

    def get_or_extract(self, key: str, backbone: nn.Module, layer: str | None, loader: DataLoader,
                       device: torch.device, description: str = "extracting features") -> dict[str, torch.Tensor]:
        p = self.path(key)
        if p.is_file():
            self.hits.append(key)
            return torch.load(p, map_location="cpu", weights_only=True)
        self.misses.append(key)
        out = extract_features(backbone, layer, loader, device, description)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        torch.save(out, tmp)
        tmp.replace(p)
        return out


@torch.no_grad()
def extract_features(backbone: nn.Module, layer: str | None, loader: DataLoader, device: torch.device,
                     description: str = "extracting features") -> dict[str, torch.Tensor]:
    backbone.eval().to(device)
    feats, labels = [], []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for batch in track(loader, description, total=len(loader)):
        x = batch["image"].to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            f = backbone(x, layer)
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(batch["label"]).long())
    return {"features": torch.cat(feats), "labels": torch.cat(labels)}
