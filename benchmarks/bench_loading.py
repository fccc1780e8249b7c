"""Loading throughput: medtl (MONAI ``LoadImage`` + medtl's readers and caches) against plain
pydicom / nibabel reading of the same files, in the same run.

    python benchmarks/bench_loading.py                 # full run; updates benchmarks/RESULTS.md
    python benchmarks/bench_loading.py --smoke         # a few seconds on tiny synthetic data

Workloads: a DICOM series folder (one scan = one folder of slices) and NIfTI volumes (one scan =
one file), the real files of ../shared/data when present (synthetic ones otherwise), each copied
``--copies`` times so that an epoch reads distinct paths. Every measurement runs after a warm-up
pass, so files sit in the OS page cache for both sides: this compares the CPU cost of reading
and decoding, not the disk.

Rows:
* plain: what a researcher writes by hand (pydicom: read every slice, sort along the slice
  normal, stack, float32; nibabel: ``get_fdata(dtype=float32)``).
* medtl first read: ``read_scan`` (LoadImage, geometry, checks), the same array in memory.
  Target: at least 0.8 x plain.
* medtl to backbone input: the whole deterministic pipeline, uncached (a first epoch).
* medtl cached epoch (memory / disk): MONAI ``CacheDataset`` / ``PersistentDataset`` after
  the cache is filled, as every later epoch reads it. Target: at least 5 x plain.
* DataLoader first epoch, 0 vs auto worker processes (uncached), to show what workers add here.
* DICOM export indexing (files/s, not scans/s): ``medtl index`` (header-only reads of the tags it
  needs, grouping, the side report) against a plain pydicom header walk (``os.walk`` +
  ``dcmread(stop_before_pixels=True)`` of every file) over the same mixed folder of series slices
  and single files under shuffled names.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import SHARED, header, load_average, write_section  # noqa: E402
from medtl.config import PreprocessConfig  # noqa: E402
from medtl.data.datasets import image_dataset, loader, resolve_workers  # noqa: E402
from medtl.data.index import index_export  # noqa: E402
from medtl.data.readers import read_scan  # noqa: E402
from medtl.data.synthetic import write_ct_series, write_nifti  # noqa: E402
from medtl.data.transforms import scan_transforms  # noqa: E402
from medtl.models.registry import input_spec  # noqa: E402

SECTION = "bench_loading"
TARGET_FIRST, TARGET_CACHED = 0.8, 5.0


# -- the plain readers ------------------------------------------------------------------------------


def plain_series(folder: Path) -> np.ndarray:
    slices = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    iop = np.asarray(slices[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, float))))
    vol = np.stack([d.pixel_array for d in slices], axis=-1).astype(np.float32)
    if "RescaleSlope" in slices[0]:
        vol = vol * np.float32(slices[0].RescaleSlope) + np.float32(slices[0].RescaleIntercept)
    return vol


def plain_nifti(path: Path) -> np.ndarray:
    return nib.load(str(path)).get_fdata(dtype=np.float32)


# -- data -----------------------------------------------------------------------------------------


def _series_source(work: Path, smoke: bool) -> tuple[Path, str]:
    real = SHARED / "dicom" / "series" / "mr_brain_t1_sag_siemens"
    if real.is_dir() and not smoke:
        return real, "shared/data/dicom/series/mr_brain_t1_sag_siemens (35 slices of 256x256, MR, uncompressed)"
    n, side = (4, 32) if smoke else (35, 256)
    vol = np.random.default_rng(0).normal(0, 300, (n, side, side))
    return write_ct_series(work / "synthetic_series", vol, 0.8, 2.0, "BENCH", "Bench^Mark"), \
        f"synthetic CT series ({n} slices of {side}x{side})"


def _nifti_sources(work: Path, smoke: bool) -> tuple[list[Path], str]:
    real = sorted((SHARED / "nifti").glob("*.nii*"))
    if real and not smoke:
        return real, "shared/data/nifti: " + ", ".join(p.name for p in real)
    side = 16 if smoke else 128
    rng = np.random.default_rng(1)
    files = [write_nifti(work / f"synthetic_{i}.nii.gz", rng.normal(0, 300, (side // 2, side, side)), 1.0, 2.0)
             for i in range(2)]
    return files, f"synthetic NIfTI volumes ({side // 2}x{side}x{side}, gzipped)"


def _copies(sources: list[Path], work: Path, copies: int) -> list[Path]:
    out = []
    for c in range(copies):
        for s in sources:
            dst = work / f"copy{c}" / s.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if s.is_dir() else shutil.copy)(s, dst)
            out.append(dst)
    return out


# -- timing ---------------------------------------------------------------------------------------


def _rate(fn: Callable[[], int], repeats: int) -> float:
    """Median scans/second of ``fn`` (which returns how many scans it handled) over ``repeats`` runs."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def _epoch(ds) -> int:  # noqa: ANN001
    for i in range(len(ds)):
        ds[i]
    return len(ds)


def bench_workload(name: str, paths: list[Path], plain: Callable[[Path], np.ndarray], repeats: int, work: Path,
                   size: int | None) -> list[dict]:
    spec = input_spec("efficientnet_lite0", size)
    tf = scan_transforms(spec, PreprocessConfig())
    items = [{"image": str(p), "label": 0, "patient": "p-0", "domain": "bench", "path": str(p)} for p in paths]

    for p in paths:  # warm-up: page cache, imports, decoder plugins
        plain(p), read_scan(p)
    plain_rate, read_rate = [], []
    per_file: dict[str, dict[str, float]] = {}
    for _ in range(repeats):  # interleaved scan by scan, so both sides see the same machine load
        spent = {"plain": 0.0, "medtl": 0.0}
        for p in paths:
            for side, fn in (("plain", plain), ("medtl", read_scan)):
                t0 = time.perf_counter()
                fn(p)
                took = time.perf_counter() - t0
                spent[side] += took
                per_file.setdefault(p.name, {"plain": 0.0, "medtl": 0.0})[side] += took
        plain_rate.append(len(paths) / spent["plain"])
        read_rate.append(len(paths) / spent["medtl"])
    plain_r, read_r = statistics.median(plain_rate), statistics.median(read_rate)
    by_file = {f: t["plain"] / t["medtl"] for f, t in per_file.items()}

    uncached = image_dataset(items, tf, cache="none")
    pipeline_r = _rate(lambda: _epoch(uncached), repeats)

    t0 = time.perf_counter()
    memory = image_dataset(items, tf, cache="memory")  # fills the cache (a thread pool)
    fill_memory = len(items) / (time.perf_counter() - t0)
    memory_r = _rate(lambda: _epoch(memory), max(3, repeats))

    disk = image_dataset(items, tf, cache="disk", cache_dir=work / f"cache-{name}")
    t0 = time.perf_counter()
    _epoch(disk)  # first epoch writes the cache
    fill_disk = len(items) / (time.perf_counter() - t0)
    disk_r = _rate(lambda: _epoch(disk), max(3, repeats))

    workers = resolve_workers("auto")
    serial_loader_r = _rate(lambda: sum(len(b["label"]) for b in loader(uncached, 4, False, num_workers=0)), repeats)
    worker_loader_r = _rate(lambda: sum(len(b["label"]) for b in loader(uncached, 4, False, num_workers=workers)), repeats)

    def row(method: str, rate: float, target: float | None = None) -> dict:
        ratio = rate / plain_r
        return {"workload": name, "method": method, "scans_s": rate, "ratio": ratio, "target": target,
                "met": None if target is None else ratio >= target, "by_file": by_file}

    return [
        row("plain reader (pydicom / nibabel)", plain_r),
        row("medtl first read (read_scan: LoadImage + checks + geometry)", read_r, TARGET_FIRST),
        row("medtl to backbone input, uncached (first epoch)", pipeline_r),
        row("cache fill, memory (CacheDataset, thread pool)", fill_memory),
        row("medtl cached epoch, memory (CacheDataset)", memory_r, TARGET_CACHED),
        row("cache fill, disk (PersistentDataset, first epoch)", fill_disk),
        row("medtl cached epoch, disk (PersistentDataset)", disk_r, TARGET_CACHED),
        row("DataLoader first epoch, 0 workers (uncached)", serial_loader_r),
        row(f"DataLoader first epoch, {workers} worker process(es) (uncached)", worker_loader_r),
    ]


def plain_header_walk(folder: Path) -> int:
    n = 0
    for root, _, files in os.walk(folder):
        for name in files:
            pydicom.dcmread(Path(root) / name, stop_before_pixels=True)
            n += 1
    return n


def bench_indexing(sources: list[Path], work: Path, copies: int, repeats: int) -> list[dict]:
    """An export of ``copies`` x every source file (series slices and single files) in one folder,
    shuffled names, every copy a distinct series/instance as on a real CD."""
    from pydicom.uid import generate_uid

    export = work / "export"
    export.mkdir()
    rng = np.random.default_rng(0)
    files = [f for s in sources for f in (sorted(s.iterdir()) if s.is_dir() else [s])]
    for c in range(copies):
        uids: dict[str, str] = {}
        for f in files:
            ds = pydicom.dcmread(f)
            ds.SeriesInstanceUID = uids.setdefault(str(ds.get("SeriesInstanceUID")), generate_uid())
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.save_as(export / f"{rng.integers(1 << 40):010x}")
    n = len(files) * copies
    plain_header_walk(export), index_export([export], work / "index.csv")  # warm-up
    plain_r = _rate(lambda: plain_header_walk(export), repeats)
    index_r = _rate(lambda: (index_export([export], work / "index.csv"), n)[1], repeats)
    name = f"DICOM export, {n} files (files/s)"
    return [{"workload": name, "method": "plain pydicom header walk (dcmread stop_before_pixels)", "scans_s": plain_r,
             "ratio": 1.0, "target": None, "met": None, "by_file": {}},
            {"workload": name, "method": "medtl index (tags it needs, grouping, report)", "scans_s": index_r,
             "ratio": index_r / plain_r, "target": None, "met": None, "by_file": {}}]


# -- report ---------------------------------------------------------------------------------------


def by_file_note(rows: list[dict]) -> str:
    """First-read ratio per source file: a fixed cost per scan weighs most on the smallest files."""
    parts = []
    for r in rows:
        if r["method"].startswith("medtl first read"):
            parts += [f"{f} {v:.2f}" for f, v in sorted(r["by_file"].items())]
    return ("first read / plain per source file (total time over all runs; a fixed cost per scan of about a "
            "millisecond in MONAI's LoadImage weighs most on the smallest file): " + "; ".join(parts))


def table(rows: list[dict]) -> str:
    lines = ["| workload | method | scans/s | x plain | target | met |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        target = f">= {r['target']:g}" if r["target"] is not None else ""
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"| {r['workload']} | {r['method']} | {r['scans_s']:.2f} | {r['ratio']:.2f} | {target} | {met} |")
    return "\n".join(lines)


def section(rows: list[dict], argv: list[str] | None, data: dict[str, str], load_before: str, load_after: str,
            copies: int, repeats: int, size: int | None) -> str:
    return "\n".join([
        "## Loading throughput (`benchmarks/bench_loading.py`)",
        "",
        *header("bench_loading.py", argv, load_before, load_after, "monai", "pydicom", "pylibjpeg", "nibabel", "numpy"),
        f"- data: series = {data['series']}; NIfTI = {data['nifti']}; each copied {copies}x; "
        f"median of {repeats} runs; files in the OS page cache (CPU cost, not disk)",
        f"- backbone input: efficientnet_lite0 ({'its own size' if size is None else f'size {size}'}), default preprocessing; "
        "one torch thread in the measuring process, as in DataLoader workers",
        f"- targets: first read >= {TARGET_FIRST} x plain; cached epochs >= {TARGET_CACHED} x plain",
        "",
        table(rows),
        "",
        by_file_note(rows),
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny synthetic data, one repeat; writes only with --out")
    ap.add_argument("--copies", type=int, default=None, help="copies of each source scan (default 6, smoke 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5, smoke 1)")
    ap.add_argument("--size", type=int, default=None, help="backbone input size (default: the weights' own)")
    ap.add_argument("--out", type=Path, default=None, help="results file (default benchmarks/RESULTS.md; smoke: none)")
    a = ap.parse_args(argv)
    copies = a.copies or (2 if a.smoke else 6)
    repeats = a.repeats or (1 if a.smoke else 5)
    out = a.out if a.out is not None else (None if a.smoke else ROOT / "benchmarks" / "RESULTS.md")
    warnings.simplefilter("ignore")
    os.environ.setdefault("MEDTL_PROGRESS", "0")
    torch.set_num_threads(1)  # loading runs in DataLoader workers, which use one torch thread each
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="medtl-bench-") as tmp:
        work = Path(tmp)
        series, series_desc = _series_source(work, a.smoke)
        niftis, nifti_desc = _nifti_sources(work, a.smoke)
        rows = bench_workload("DICOM series folder", _copies([series], work / "s", copies), plain_series, repeats, work, a.size)
        rows += bench_workload("NIfTI volumes", _copies(niftis, work / "n", copies), plain_nifti, repeats, work, a.size)
        singles = sorted((SHARED / "dicom" / "single").glob("*.dcm")) if not a.smoke else []
        rows += bench_indexing([series, *singles], work, copies * 5, repeats)
    load_after = load_average()
    print(table(rows))
    print(by_file_note(rows))
    print(f"load average before {load_before}, after {load_after}")
    if out is not None:
        write_section(out, SECTION, section(rows, argv, {"series": series_desc, "nifti": nifti_desc}, load_before,
                                            load_after, copies, repeats, a.size))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
