"""The ``frozen`` arm with its feature cache vs re-extracting features every epoch.

Same data (BreastMNIST from ../shared), same backbone, same head initialisation, same batches in
the same order, same number of epochs, validation every epoch in both. The cached arm runs the
backbone once per split (timed cold, cache empty, and warm, cache on disk); the other runs it
over every training and validation image every epoch, as a head on a frozen backbone does without
a cache. Both heads must end with the same validation AUC: the cache changes the cost, not the
result.

    python benchmarks/bench_frozen_cache.py            # full run, writes its section of RESULTS.md
    python benchmarks/bench_frozen_cache.py --smoke    # seconds; a test runs it
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import MEDMNIST, header, load_average, publish  # noqa: E402
from medtl.experiment.shared import SharedData  # noqa: E402
from medtl.config import load_config  # noqa: E402
from medtl.data.datasets import load_data  # noqa: E402
from medtl.models.registry import input_spec  # noqa: E402
from medtl.models.transfer import TransferModel, build_backbone, make_head  # noqa: E402
from medtl.training.loop import fit, resolve_device, seed_everything  # noqa: E402
from medtl.training.schedule import HEAD, head_only  # noqa: E402
from medtl.training.strategies import build_schedule  # noqa: E402
from medtl.training.strategies.frozen import fit_head  # noqa: E402

SECTION = "bench_frozen_cache"
NPZ = MEDMNIST / "breastmnist.npz"


def config(args: argparse.Namespace) -> dict:
    data: dict = {"npz": str(NPZ)}
    if args.smoke:
        data["subset"] = {"train": 64, "val": 32, "test": 32}
    return {
        "name": "bench-frozen-cache",
        "data": data,
        "preprocess": {"intensity": "fixed", "size": args.size},
        "backbone": {"name": args.backbone},
        "strategies": [{"name": "frozen", "epochs": args.epochs}],
        "train": {"batch_size": 32, "head_lr": 3e-3, "seed": 0, "bootstrap": 0},
    }


def cached_arm(cfg, data, spec, device, cache: Path) -> tuple[float, float]:  # noqa: ANN001
    """Seconds and final validation AUC of the frozen arm as ``compare`` runs it (features from the cache).

    Neither arm writes checkpoints here: the comparison is of compute, not of disk writes."""
    shared = SharedData(cfg, data, spec, cache, device)
    shared.dataset("train"), shared.dataset("val")  # preprocessed images: shared by both arms, not timed
    built = build_backbone(cfg.backbone.name)
    start = time.perf_counter()
    feats = {sp: shared.features_for(built, 0, sp) for sp in ("train", "val")}
    seed_everything(0)
    head = make_head(built.feature_dims[built.backbone.group_names[-1]], len(data.classes), "linear")
    s = cfg.strategies[0]
    result = fit_head(head, feats, built.backbone.group_names[-1], build_schedule(s, (HEAD,), cfg.train),
                       shared.fit_options(0, "cached", torch.device("cpu")), None, None, cfg.train.batch_size)
    return time.perf_counter() - start, result.history[-1]["val_auc"]


def reextract_arm(cfg, data, spec, device, cache: Path) -> tuple[float, float]:  # noqa: ANN001
    """The same head, the same epochs, the backbone run over the images every epoch."""
    shared = SharedData(cfg, data, spec, cache, device)
    shared.dataset("train"), shared.dataset("val")
    built = build_backbone(cfg.backbone.name)
    start = time.perf_counter()
    seed_everything(0)
    head = make_head(built.feature_dims[built.backbone.group_names[-1]], len(data.classes), "linear")
    model = TransferModel(built.backbone, head)
    groups = model.groups()
    s = cfg.strategies[0]
    schedule = head_only(tuple(groups), s.epochs or cfg.train.epochs, cfg.train.head_lr, cfg.train.schedule)
    result = fit(model, groups, schedule, shared.loader("train", train=True, seed=0), shared.loader("val"),
                 shared.fit_options(0, "re-extracting"), None)
    return time.perf_counter() - start, result.history[-1]["val_auc"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="a 64-image subset at 32 px, 3 epochs; writes nothing unless --results")
    p.add_argument("--epochs", type=int, default=None, help="head epochs in both arms (default 40; smoke 3)")
    p.add_argument("--size", type=int, default=None, help="input size (default 64, as configs/breastmnist.yaml; smoke 32)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--results", type=Path, default=None, help="RESULTS.md to update (default: benchmarks/RESULTS.md; smoke: none)")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (3 if args.smoke else 40)
    args.size = args.size or (32 if args.smoke else 64)
    if not NPZ.is_file():
        print(f"needs {NPZ} (the shared MedMNIST data; set MEDTL_SHARED)", file=sys.stderr)
        return 2
    load_before = load_average()
    cfg = load_config(config(args))
    data = load_data(cfg.data, cfg.train.seed)
    spec = input_spec(cfg.backbone.name, cfg.preprocess.size)
    device = resolve_device(cfg.train.device)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.data.cache_dir = Path(tmp)
        cold, auc_cold = cached_arm(cfg, data, spec, device, Path(tmp))
        warm, auc_warm = cached_arm(cfg, data, spec, device, Path(tmp))  # the features are on disk now
        slow, auc_slow = reextract_arm(cfg, data, spec, device, Path(tmp))
    n = {s: len(v) for s, v in data.splits.items()}
    rows = [("frozen, features cached (cold: extracted once)", cold, auc_cold),
            ("frozen, features cached (warm: read from disk)", warm, auc_warm),
            ("frozen, features re-extracted every epoch", slow, auc_slow)]
    table = ["| arm | seconds | final val AUC | speed-up |", "|---|---:|---:|---:|"]
    table += [f"| {name} | {sec:.1f} | {auc:.4f} | {slow / sec:.1f}x |" for name, sec, auc in rows]
    body = "\n".join([
        "## Frozen arm: feature cache vs re-extracting every epoch",
        "",
        *header("bench_frozen_cache.py", argv, load_before, load_average()),
        "",
        f"{cfg.backbone.name} (ImageNet) at {args.size} px, BreastMNIST train {n['train']} / val {n['val']} images, "
        f"linear head, {args.epochs} epochs, batch {cfg.train.batch_size}, validation every epoch, device {device.type}.",
        "",
        *table,
        "",
        f"Cached (cold) is **{slow / cold:.1f}x** faster than re-extracting for the same {args.epochs} epochs; "
        f"both heads end at the same validation AUC (difference {abs(auc_cold - auc_slow):.1e}).",
    ])
    publish(body, SECTION, args.results, args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
