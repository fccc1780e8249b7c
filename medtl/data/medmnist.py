"""MedMNIST ``.npz`` files as manifests: one row per image, official splits kept.

Rows point into the file (``FILE.npz#SPLIT/INDEX``, read by ``medtl.data.readers``), so nothing
is copied and ``curate``, ``inspect``, ``preview`` and training read MedMNIST like any scan.
MedMNIST ships no patient ids: each image becomes its own pseudo-patient
(``<name>-<split>-<index>``, hashed like any id), so patient-level checks run per image and
cannot see two images of one person; the official splits are kept as published.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.manifest import SPLITS
from medtl.errors import DataError


def read_medmnist(npz: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images, labels)}`` of a MedMNIST file, checked: single-label 2D images only."""
    path = Path(npz)
    if not path.is_file():
        raise DataError(path, "npz file not found")
    try:
        with np.load(path) as z:
            arrays = {s: (z[f"{s}_images"], np.asarray(z[f"{s}_labels"])) for s in SPLITS}
    except KeyError as e:
        raise DataError(path, f"not a MedMNIST npz (missing {e}; needs train/val/test _images and _labels)") from None
    except Exception as e:  # noqa: BLE001
        raise DataError(path, f"unreadable npz ({type(e).__name__})") from None
    for split, (images, labels) in arrays.items():
        if len(images) != len(labels):
            raise DataError(path, f"{split}: {len(images)} images but {len(labels)} labels")
        if labels.ndim == 2 and labels.shape[1] > 1:
            raise DataError(path, f"multi-label MedMNIST ({labels.shape[1]} labels per image) is not supported: "
                                  "medtl trains single-label classifiers")
        color = images.ndim == 4 and images.shape[-1] in (3, 4)
        if images.ndim - int(color) != 3:
            raise DataError(path, f"{split}_images has shape {images.shape}: medtl reads 2D MedMNIST "
                                  "(N, H, W) or (N, H, W, 3); 3D MedMNIST is not supported")
    return {s: (im, lab.reshape(-1)) for s, (im, lab) in arrays.items()}


def medmnist_manifest(npz: str | Path, out_dir: str | Path, limit: int | None = None, domain: str | None = None) -> pd.DataFrame:
    """The manifest rows for ``npz``, paths relative to ``out_dir``; ``limit`` keeps the first N per split."""
    # absolute but not symlink-resolved: a link (a shared data folder, a mounted volume) stays the path as given
    path = Path(os.path.abspath(npz))
    arrays = read_medmnist(path)
    name = path.name.removesuffix(".npz")
    rel = os.path.relpath(path, os.path.abspath(out_dir))
    rows = []
    for split, (_, labels) in arrays.items():
        n = len(labels) if limit is None else min(limit, len(labels))
        rows += [{"path": f"{rel}#{split}/{i}", "label": str(int(labels[i])), "patient_id": f"{name}-{split}-{i}",
                  "domain": domain or name, "split": split} for i in range(n)]
    return pd.DataFrame(rows, columns=["path", "label", "patient_id", "domain", "split"])


def import_medmnist(npz: str | Path, out_dir: str | Path, limit: int | None = None, domain: str | None = None) -> Path:
    """Write ``out_dir/manifest.csv`` for a MedMNIST file; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = medmnist_manifest(npz, out, limit, domain)
    target = out / "manifest.csv"
    df.to_csv(target, index=False)
    return target
