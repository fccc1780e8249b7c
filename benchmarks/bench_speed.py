"""Feature-extraction throughput: medtl (its data pipeline included) against a plain torchvision loop
over the same in-memory images, in the same run.

* medtl: the items of ``load_data`` (MedMNIST arrays in memory) -> ``prepared_dataset`` (for
  in-memory arrays ``BatchedArrays``: the intensity map once, MONAI's resize and normalisation a
  batch at a time) -> ``loader`` -> ``extract_features`` (pooled output of every layer group),
  i.e. what the ``frozen`` arm and ``lp-ft``'s probe run.
* medtl, per image: the same items through ``scan_transforms`` one image at a time in MONAI's
  ``CacheDataset`` (what scans read from disk go through), for the ratio the batch path buys.
* plain: what a researcher writes by hand: the same uint8 images as one tensor, a ``DataLoader``
  over it, ``torchvision.transforms.v2.functional`` (to float, 3 channels, resize with the
  weights' interpolation, normalise) and the same backbone's forward.

Both run the same backbone module in eval mode without gradients, timed alternately so that both
see the same machine load; the table gives the median of ``--repeats`` runs. Target: medtl at
least 0.9 x plain. A third row reads the features back from medtl's feature cache, which is what
every later epoch and arm does (the whole-arm comparison is ``bench_frozen_cache.py``). Where
CUDA is present, both sides also run with bf16 autocast + channels_last against fp32.

    python benchmarks/bench_speed.py            # full run; updates benchmarks/RESULTS.md
    python benchmarks/bench_speed.py --smoke    # seconds
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import MEDMNIST, RESULTS, header, load_average, markdown_table, publish  # noqa: E402
from medtl.config import DataConfig, PreprocessConfig  # noqa: E402
from medtl.data.datasets import image_dataset, load_data, loader, prepared_dataset  # noqa: E402
from medtl.data.transforms import scan_transforms  # noqa: E402
from medtl.models.registry import InputSpec, input_spec  # noqa: E402
from medtl.models.transfer import GroupedBackbone, build_backbone  # noqa: E402
from medtl.training.feature_cache import FeatureCache, extract_features  # noqa: E402
from medtl.training.loop import autocast  # noqa: E402

SECTION = "bench_speed"
TARGET = 0.9
NPZ = MEDMNIST / "organamnist.npz"


def medtl_extract(items: list[dict], spec: InputSpec, pp: PreprocessConfig, backbone: GroupedBackbone, batch: int,
                  device: torch.device, amp: bool, channels_last: bool) -> dict:
    """From the in-memory items to every layer's pooled features, as the frozen arm runs it (dataset built included)."""
    ds = prepared_dataset(items, spec, pp)  # what compare builds for a split
    return extract_features(backbone, loader(ds, batch, shuffle=False), device, amp, channels_last=channels_last)


def per_image_extract(items: list[dict], spec: InputSpec, pp: PreprocessConfig, backbone: GroupedBackbone, batch: int,
                      device: torch.device, amp: bool, channels_last: bool) -> dict:
    """The per-image path: ``scan_transforms`` on each item, MONAI's CacheDataset (filled by a thread pool)."""
    ds = image_dataset(items, scan_transforms(spec, pp), cache="memory")
    return extract_features(backbone, loader(ds, batch, shuffle=False), device, amp, channels_last=channels_last)


@torch.no_grad()
def plain_extract(images: torch.Tensor, spec: InputSpec, backbone: GroupedBackbone, batch: int, device: torch.device,
                  amp: bool, channels_last: bool) -> torch.Tensor:
    """The hand-written loop: uint8 (N, H, W) -> float, 3 channels, resize, normalise -> features."""
    backbone.eval().to(device)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    mode = InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else InterpolationMode.BILINEAR
    out = []
    for (x,) in DataLoader(TensorDataset(images), batch_size=batch):
        x = x.to(device).unsqueeze(1).float().div_(255).expand(-1, spec.channels, -1, -1)
        x = TF.resize(x, [spec.size, spec.size], interpolation=mode, antialias=True)
        x = TF.normalize(x, list(spec.mean), list(spec.std))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out.append(backbone(x).float().cpu())
    backbone.to(memory_format=torch.contiguous_format)
    return torch.cat(out)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def frozen_cache_reference() -> str:
    """The cached-vs-re-extracting ratio as ``bench_frozen_cache.py`` last measured it, if RESULTS.md has it."""
    text = RESULTS.read_text() if RESULTS.is_file() else ""
    m = re.search(r"Cached \(cold\) is \*\*([\d.]+)x\*\*", text)
    return (f"the whole `frozen` arm, features cached against re-extracted every epoch: **{m.group(1)}x** "
            "(section *Frozen arm: feature cache vs re-extracting every epoch*, target >= 10x)") if m else \
        "the whole `frozen` arm, cached against re-extracting: run `benchmarks/bench_frozen_cache.py`"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=None, help="OrganAMNIST training images (default 2048; smoke 64)")
    p.add_argument("--size", type=int, default=None, help="backbone input size (default 64, as the configs; smoke 32)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 3; smoke 1)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--smoke", action="store_true", help="64 images at 32 px, one run; writes nothing unless --results")
    p.add_argument("--results", type=Path, default=None, help="RESULTS.md to update (default benchmarks/RESULTS.md; smoke: none)")
    args = p.parse_args(argv)
    n = args.images or (64 if args.smoke else 2048)
    size = args.size or (32 if args.smoke else 64)
    repeats = args.repeats or (1 if args.smoke else 3)
    if not NPZ.is_file():
        print(f"bench_speed: needs {NPZ} (the shared MedMNIST data; set MEDTL_SHARED)", file=sys.stderr)
        return 2
    load_before = load_average()
    data = load_data(DataConfig(npz=NPZ, subset={"train": n}), seed=0)
    items = data.splits["train"]
    images = torch.from_numpy(__import__("numpy").stack([it["image"] for it in items]))  # the same arrays, one tensor
    spec = input_spec(args.backbone, size)
    pp = PreprocessConfig(intensity="fixed", size=size)
    built = build_backbone(args.backbone)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    agreement = ""
    for device in devices:
        # (label, bf16 autocast, channels_last): medtl's defaults on each device, and on CUDA fp32 beside them
        settings = [("bf16 autocast + channels_last", True, True), ("fp32", False, False)] if device.type == "cuda" \
            else [("fp32, channels_last", False, True)]
        for numerics, amp, cl in settings:
            cpu = device.type == "cpu"
            sides: dict[str, Callable[[], object]] = {
                "plain": lambda: plain_extract(images, spec, built.backbone, args.batch, device, amp, cl),
                "medtl": lambda: medtl_extract(items, spec, pp, built.backbone, args.batch, device, amp, cl)}
            if cpu:  # the plain loop as most write it (NCHW), and medtl's per-image path, once each for context
                sides["plain-nchw"] = lambda: plain_extract(images, spec, built.backbone, args.batch, device, amp, False)
                sides["per-image"] = lambda: per_image_extract(items, spec, pp, built.backbone, args.batch, device, amp, cl)
            medtl_extract(items[: args.batch], spec, pp, built.backbone, args.batch, device, amp, cl)  # warm-up
            plain_extract(images[: args.batch], spec, built.backbone, args.batch, device, amp, cl)
            times: dict[str, list[float]] = {k: [] for k in sides}
            outs: dict[str, object] = {}
            order = list(sides)
            for r in range(repeats):  # alternate the order, so that every side sees the same machine
                for name in (order if r % 2 == 0 else order[::-1]):
                    sec, outs[name] = timed(sides[name])
                    times[name].append(sec)
            last = built.backbone.group_names[-1]
            medtl_out = outs["medtl"]
            cos = F.cosine_similarity(medtl_out["features"][last], outs["plain"], dim=1)  # type: ignore[index]
            if cpu:
                agreement = (f"final-layer features of the two sides: cosine similarity min {cos.min():.4f}, mean {cos.mean():.4f} "
                             "(the plain loop enlarges with torchvision's antialiased bicubic, PIL's kernel with a = -0.5; "
                             "MONAI's Resize, as medtl's pipeline, with torch's bicubic, a = -0.75)")
                same = float((outs["per-image"]["features"][last] - medtl_out["features"][last]).abs().max())  # type: ignore[index]
                agreement += (f". medtl's batch path against its per-image path: largest feature difference {same:.1e} "
                              "(the same preprocessing)")
            sec = {k: statistics.median(v) for k, v in times.items()}
            where = f"{device.type} ({numerics})"
            plain_s = sec["plain"]
            rows.append([where, "plain torchvision loop (same tensors, same backbone, same settings)", f"{n / plain_s:.0f}",
                         "1.00", "", ""])
            ratio = plain_s / sec["medtl"]
            rows.append([where, "medtl: prepared_dataset (MONAI steps a batch at a time) + extract_features (every layer)",
                         f"{n / sec['medtl']:.0f}", f"{ratio:.2f}", f">= {TARGET}", "yes" if ratio >= TARGET else "NO"])
            if cpu:
                rows.append([where, "medtl per image: scan_transforms in a CacheDataset (as for scans on disk) + extract_features",
                             f"{n / sec['per-image']:.0f}", f"{plain_s / sec['per-image']:.2f}", "", ""])
                rows.append(["cpu (fp32, NCHW)", "plain torchvision loop, default memory layout",
                             f"{n / sec['plain-nchw']:.0f}", f"{plain_s / sec['plain-nchw']:.2f}", "", ""])
            if device.type == "cpu":
                with tempfile.TemporaryDirectory() as tmp:  # what every later epoch and arm reads
                    cache = FeatureCache(Path(tmp))
                    torch.save(medtl_out, cache.path("k"))
                    hit = statistics.median(timed(lambda: cache.get_or_extract("k", built.backbone, None, device))[0]  # type: ignore[arg-type]
                                            for _ in range(max(3, repeats)))
                rows.append([where, "medtl: features read back from the feature cache (every later epoch / arm)",
                             f"{n / hit:.0f}", f"{plain_s / hit:.0f}", "", ""])
    load_after = load_average()
    gpu_note = [] if torch.cuda.is_available() else ["No GPU available in this run: the AMP + channels_last against "
                                                     "fp32 rows appear where CUDA is present."]
    body = "\n".join([
        "## Feature extraction: medtl against a plain torchvision loop",
        "",
        *header("bench_speed.py", argv, load_before, load_after, "monai", "torchvision", "timm"),
        f"- data: OrganAMNIST training images, a stratified subset of {n} (seed 0), uint8 28x28 in memory; "
        f"{args.backbone} (ImageNet) at {size} px, batch {args.batch}; median of {repeats} alternating runs per side",
        "",
        markdown_table(["device", "method", "images/s", "x plain", "target", "met"], rows, right=(2, 3)),
        "",
        agreement + ".",
        "",
        "Cached against re-extracting: the row above reads the features of this run back from medtl's feature "
        f"cache; for {frozen_cache_reference()}. Scan loading against plain pydicom / nibabel: section "
        "*Loading throughput*.",
        *([""] + gpu_note if gpu_note else []),
    ])
    publish(body, SECTION, args.results, args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
