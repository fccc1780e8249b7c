"""Time and peak memory of each strategy and of feature extraction as the training set grows.

Each measurement runs in its own process (``--child``), so its RSS high-water mark
(``getrusage``) is its own: one epoch of one strategy through ``medtl.api.compare`` (untracked,
no loader worker processes, so everything happens in the measured process), or one feature
extraction of the training split, on a stratified OrganAMNIST subset of 1k, 4k and 16k images.
The caches are reported on their own: medtl keeps the images in memory (for MedMNIST's in-memory
arrays ``BatchedArrays``: each image's [0, 1] plane at its own size, resized per batch; for scans on
disk MONAI's ``CacheDataset`` of final tensors) and the frozen features of every layer on disk and
in memory, both by design proportional to the data. What must stay flat is the rest: peak minus the baseline of the
process minus the caches.

    python benchmarks/bench_memory.py            # full run; updates benchmarks/RESULTS.md
    python benchmarks/bench_memory.py --smoke    # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import MEDMNIST, RESULTS, header, load_average, markdown_table, write_section  # noqa: E402

SECTION = "bench_memory"
NPZ = MEDMNIST / "organamnist.npz"
KINDS = ("extract", "frozen", "full", "lp-ft", "progressive", "scratch")
MiB = 2**20
FLAT_MIB = 64  # growth beyond the caches from the smallest to the largest set that still counts as flat


def strategy(kind: str) -> dict[str, Any]:
    """One epoch of each strategy (``lp-ft``: one probe epoch and one fine-tuning epoch)."""
    s: dict[str, Any] = {"name": kind, "epochs": 1}
    if kind == "lp-ft":
        s["probe_epochs"] = 1
    return s


def config(kind: str, n: int, size: int, eval_n: int) -> dict[str, Any]:
    return {
        "name": f"bench-memory-{kind}-{n}",
        "data": {"npz": str(NPZ), "subset": {"train": n, "val": eval_n, "test": eval_n}, "num_workers": 0},
        "preprocess": {"intensity": "fixed", "size": size},
        "backbone": {"name": "efficientnet_lite0"},
        "strategies": [strategy("frozen" if kind == "extract" else kind)],
        "train": {"batch_size": 64, "bootstrap": 0, "seed": 0},
    }


def _nbytes(obj: Any) -> int:
    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _rss() -> int:
    """Resident memory now (not the high-water mark): what a cache occupies is the RSS its fill added."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def child(kind: str, n: int, size: int, eval_n: int) -> dict[str, Any]:
    """One measurement in this process: seconds, baseline and peak RSS, and the caches' bytes."""
    from monai.data import CacheDataset

    import medtl.experiment.shared
    from medtl import api
    from medtl.config import load_config
    from medtl.data.batched import BatchedArrays
    from medtl.data.datasets import load_data, loader, prepared_dataset
    from medtl.models.registry import input_spec
    from medtl.models.transfer import build_backbone
    from medtl.training.feature_cache import extract_features
    from medtl.training.loop import resolve_device

    cfg = load_config(config(kind, n, size, eval_n))
    datasets: list[tuple[Any, int]] = []  # the comparison's datasets and the RSS each one's fill added

    def recording(*a: Any, **k: Any) -> Any:
        before = _rss()
        ds = prepared_dataset(*a, **k)  # a CacheDataset fills in its constructor, BatchedArrays keeps its planes
        datasets.append((ds, _rss() - before))
        return ds

    baseline = _peak()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "extract":
            data = load_data(cfg.data, 0)
            spec = input_spec(cfg.backbone.name, size)
            ds = recording(data.splits["train"], spec, cfg.preprocess, cache="memory")
            feats = extract_features(build_backbone(cfg.backbone.name).backbone, loader(ds, cfg.train.batch_size, False, 0),
                                     resolve_device(cfg.train.device), cfg.train.amp)
            feature_bytes = _nbytes(feats)
        else:
            cfg.data.cache_dir = Path(tmp)
            medtl.experiment.shared.prepared_dataset = recording  # type: ignore[attr-defined]
            old = Path.cwd()
            os.chdir(tmp)
            try:
                api.compare(cfg, track=False)
            finally:
                os.chdir(old)
                medtl.experiment.shared.prepared_dataset = prepared_dataset  # type: ignore[attr-defined]
            feature_bytes = sum(f.stat().st_size for f in (Path(tmp) / "features").glob("*.pt"))
    seconds = time.perf_counter() - start
    cached = [(ds, added) for ds, added in datasets if isinstance(ds, (CacheDataset, BatchedArrays))]
    tensors = sum(_nbytes(ds._cache if isinstance(ds, CacheDataset) else ds.planes) for ds, _ in cached)
    cache = sum(added for _, added in cached)
    return {"kind": kind, "n": n, "seconds": seconds, "baseline": baseline, "peak": _peak(), "image_cache": cache,
            "image_tensors": tensors, "feature_cache": feature_bytes}


def measure(kind: str, n: int, size: int, eval_n: int, in_process: bool = False) -> dict[str, Any]:
    """``child`` in a fresh process (``in_process``: in this one, for the smoke test: quick, figures meaningless)."""
    if in_process:
        return child(kind, n, size, eval_n)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--images", str(n), "--size", str(size),
           "--eval-images", str(eval_n)]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MEDTL_PROGRESS": "0"})
    if p.returncode != 0:
        raise SystemExit(f"bench_memory: {kind} at {n} images failed: {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def beyond_caches(r: dict[str, Any], image: str = "image_cache") -> float:
    """Peak over baseline less the caches, the image cache counted by ``image``: ``image_cache`` (the
    RSS its fill added, which also keeps what the allocator held on to after the fill's temporaries)
    or ``image_tensors`` (the exact bytes of its tensors, which leaves its item dicts in the rest)."""
    return (r["peak"] - r["baseline"] - r[image] - r["feature_cache"]) / MiB


def tables(results: list[dict[str, Any]], sizes: list[int]) -> tuple[str, str]:
    rows = [[r["kind"], r["n"], f"{r['seconds']:.1f}", f"{r['n'] / r['seconds']:.0f}", f"{r['peak'] / MiB:.0f}",
             f"{r['baseline'] / MiB:.0f}", f"{r['image_cache'] / MiB:.0f} ({r['image_tensors'] / MiB:.0f})",
             f"{r['feature_cache'] / MiB:.0f}",
             f"{beyond_caches(r):.0f}", f"{beyond_caches(r, 'image_tensors'):.0f}"] for r in results]
    detail = markdown_table(["strategy", "train images", "seconds", "train images/s", "peak RSS MiB", "baseline MiB",
                             "image cache MiB (tensors)", "feature cache MiB", "peak - baseline - caches MiB",
                             "the same, image cache as its tensors MiB"], rows,
                            right=range(1, 10))  # type: ignore[arg-type]
    growth = []
    for kind in dict.fromkeys(r["kind"] for r in results):
        by_n = {r["n"]: r for r in results if r["kind"] == kind}
        if len(by_n) < 2:
            continue
        lo, hi = by_n[min(by_n)], by_n[max(by_n)]
        d = beyond_caches(hi) - beyond_caches(lo)
        d_tensors = beyond_caches(hi, "image_tensors") - beyond_caches(lo, "image_tensors")
        cache_d = (hi["image_cache"] + hi["feature_cache"] - lo["image_cache"] - lo["feature_cache"]) / MiB
        flat = abs(d) <= FLAT_MIB and abs(d_tensors) <= FLAT_MIB
        growth.append([kind, f"{hi['seconds'] / lo['seconds']:.1f}x for {hi['n'] / lo['n']:.0f}x the images ({lo['n']} -> {hi['n']})",
                       f"{cache_d:+.0f}", f"{d:+.0f}", f"{d_tensors:+.0f}", "yes" if flat else "NO"])
    summary = markdown_table(["strategy", "time, smallest -> largest set", "caches MiB",
                              "rest (peak - baseline - caches) MiB", "rest, image cache as its tensors MiB",
                              f"flat (both within {FLAT_MIB} MiB)?"], growth, right=(2, 3, 4))
    return detail, summary


def section(results: list[dict[str, Any]], argv: list[str] | None, load_before: str, sizes: list[int],
            train_sizes: list[int], size: int, eval_n: int) -> str:
    from medtl.data.batched import CHUNK

    detail, summary = tables(results, sizes)
    return "\n".join([
        "## Time and peak memory against training-set size",
        "",
        *header("bench_memory.py", argv, load_before, load_average(), "monai"),
        f"- data: OrganAMNIST training split, stratified subsets of {', '.join(map(str, sizes))} images (seed 0), "
        f"{eval_n} validation and {eval_n} test images; efficientnet_lite0 (ImageNet) at {size} px, batch 64; "
        f"training strategies at {', '.join(map(str, train_sizes))} images",
        "- each row: its own process; one epoch (`lp-ft`: one probe epoch, one fine-tuning epoch; `progressive`: its "
        "first epoch, which trains the head only; `frozen`: a head per layer group on cached features); "
        "no loader worker processes; `extract`: the training split's features of every layer, nothing else",
        "- peak RSS: the process's high-water mark (getrusage); baseline: the high-water mark after imports; "
        "image cache: the resident memory the datasets added when built (every dataset of the run; MedMNIST arrays: "
        "`BatchedArrays`, each image's [0, 1] plane at 28 px, resized to the input size per batch), in brackets the "
        "bytes of the tensors they hold; the difference is their own overhead (item dicts, and what the allocator "
        f"keeps of the temporaries freed while the planes are made, {CHUNK} images at a time); the last column counts the "
        "image cache by its tensors instead; feature cache: the frozen features of every "
        "layer (train, val and test; on disk and loaded in memory)",
        "",
        detail,
        "",
        "Growth from the smallest to the largest training set:",
        "",
        summary,
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="training-set sizes (default 1000 4000 16000; smoke 32 64)")
    p.add_argument("--kinds", nargs="+", default=None, choices=KINDS, help="default: all (smoke: extract full)")
    p.add_argument("--size", type=int, default=None, help="backbone input size (default 32: the scaling, not the figure, "
                                                           "is the point; smoke 32)")
    p.add_argument("--eval-images", type=int, default=None, help="validation and test images (default 256; smoke 16)")
    p.add_argument("--train-sizes", type=int, nargs="+", default=None,
                   help="sizes at which the training strategies run (default: --sizes); extract and frozen run at every size")
    p.add_argument("--smoke", action="store_true", help="two tiny sizes, two kinds, in this process (the code path, not "
                                                         "the figures); writes nothing unless --results")
    p.add_argument("--results", type=Path, default=None, help="RESULTS.md to update (default benchmarks/RESULTS.md; smoke: none)")
    p.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--images", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size = args.size or 32
    eval_n = args.eval_images or (16 if args.smoke else 256)
    if args.child:
        print(json.dumps(child(args.child, args.images, size, eval_n)))
        return 0
    if not NPZ.is_file():
        print(f"bench_memory: needs {NPZ} (the shared MedMNIST data; set MEDTL_SHARED)", file=sys.stderr)
        return 2
    sizes = args.sizes or ([32, 64] if args.smoke else [1000, 4000, 16000])
    kinds = args.kinds or (["extract", "full"] if args.smoke else list(KINDS))
    load_before = load_average()
    results_path = args.results or (None if args.smoke else RESULTS)
    train_sizes = args.train_sizes or sizes
    results: list[dict[str, Any]] = []
    body = ""
    for kind in kinds:  # one kind at every size, then the next: a cut-short run still shows growth
        for n in sizes:
            if kind not in ("extract", "frozen") and n not in train_sizes:
                continue
            results.append(measure(kind, n, size, eval_n, in_process=args.smoke))
            print(f"{kind} {n}: {results[-1]['seconds']:.1f} s, peak {results[-1]['peak'] / MiB:.0f} MiB", flush=True)
            body = section(results, argv, load_before, sizes, train_sizes, size, eval_n)
            if results_path is not None:  # after every measurement: a long run keeps what it has
                write_section(results_path, SECTION, body)
    print(body)
    if results_path is not None:
        print(f"\nwrote {results_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
