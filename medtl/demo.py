"""``medtl demo``: the whole path on a small synthetic marker dataset, offline, in minutes on a CPU.

Writes real DICOM (scanner A) and NIfTI (scanner B) files, curates them, compares a head on the
frozen ImageNet extractor against full fine-tuning on the same split and seed, tracks both in
MLflow and registers the better model as ``champion``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEMO_CONFIG: dict[str, Any] = {
    "name": "demo",
    "data": {"manifest": "curated/manifest.csv", "cache": "memory"},
    # NIfTI carries no modality: the demo's volumes are CT in HU, so they get the same window
    # 128 px, not the weights' 224: the markers are large, and full fine-tuning costs ~3x less per epoch
    # (benchmarks/bench_demo.py measures both configs: pieces, minutes and AUCs)
    "preprocess": {"assume_modality": "CT", "window": "lung", "slice_rule": "middle", "size": 128},
    "backbone": {"name": "efficientnet_lite0", "weights": "imagenet"},
    "strategies": [
        {"name": "frozen", "head": "linear", "epochs": 30},
        {"name": "full", "epochs": 3},
    ],
    "train": {"batch_size": 16, "lr": 3e-4, "head_lr": 3e-3, "seed": 0, "bootstrap": 500},
    "tracking": {"experiment": "medtl-demo", "model_name": "medtl-demo"},
}


def write_demo(out: str | Path, patients_per_domain: int = 40, seed: int = 0) -> Path:
    """Data, curation and config under ``out``; returns the config path."""
    from medtl.data.curate import curate
    from medtl.data.synthetic import make_marker_dataset

    out = Path(out)
    manifest = make_marker_dataset(out / "data", patients_per_domain=patients_per_domain, seed=seed)
    curate(manifest, out / "curated", seed=seed)
    cfg_path = out / "demo.yaml"
    cfg_path.write_text(yaml.safe_dump(DEMO_CONFIG, sort_keys=False))
    return cfg_path


def example_scans(out: str | Path) -> list[Path]:
    """One DICOM (scanner A) and one NIfTI (scanner B) the demo wrote: files a printed command can name."""
    data = Path(out) / "data"
    return [p for p in (min((data / "scanner_a").glob("*.dcm"), default=None),
                        min((data / "scanner_b").glob("*.nii.gz"), default=None)) if p is not None]
