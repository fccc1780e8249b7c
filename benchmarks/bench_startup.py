"""Start-up: how long ``medtl inspect FILE`` takes to answer on one small file, as a new process.

    python benchmarks/bench_startup.py            # full run; updates benchmarks/RESULTS.md
    python benchmarks/bench_startup.py --smoke    # one run per row; writes only with --out

A one-file ``inspect`` spends nearly all its time importing. Rows, each the median wall time of
``--repeats`` fresh processes, run interleaved so every row sees the same machine load:

* floor: ``python -c "import torch"`` and ``python -c "import monai"``, what any MONAI tool pays.
* before: MONAI's optional dependencies imported eagerly (``MEDTL_EAGER_MONAI=1``: mlflow,
  torchvision and torch._dynamo, scikit-learn, tifffile, OpenCV...) and the backbone's input spec
  read by importing timm (an empty cache folder), as ``medtl inspect`` ran before this change.
* after, first run on a machine: deferred MONAI imports, the input spec read from timm once.
* after: deferred MONAI imports, the input spec remembered (``~/.cache/medtl/input_specs.json``).

``python -X importtime -m medtl inspect FILE`` shows where the rest goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import SHARED, header, load_average, markdown_table, write_section  # noqa: E402

SECTION = "bench_startup"
WHERE = (
    '- where the time went before (`python -X importtime -m medtl inspect FILE`): `import monai` imports '
    "every MONAI submodule, which pulled in mlflow (MONAI's MLflow handler), torchvision and "
    "torch._dynamo (MONAI's FPN blocks), scikit-learn and pandas (MONAI's metrics), tifffile and OpenCV; "
    "reading the backbone's input spec imported timm, every timm model definition and torchvision again. "
    'After: those load when first used (`medtl/_lazy_monai.py`, command line only) and the spec is '
    "remembered per timm version; what is left is torch, MONAI's own modules, nibabel/scipy and "
    'matplotlib (imported by MONAI directly)'
)


def _scan(work: Path) -> tuple[Path, str]:
    real = SHARED / "dicom" / "single" / "CT_small.dcm"
    if real.is_file():
        return real, "shared/data/dicom/single/CT_small.dcm (128x128 CT)"
    import numpy as np

    from medtl.data.synthetic import write_ct_dicom

    return write_ct_dicom(work / "ct.dcm", np.zeros((32, 32)), 0.8, "BENCH", "Bench^Mark"), "synthetic 32x32 CT"


def _rows(scan: Path, cache: Path, empty_cache: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    py, inspect = sys.executable, [sys.executable, "-m", "medtl", "inspect", str(scan)]
    return [
        ("floor: python -c 'import torch'", [py, "-c", "import torch"], {}),
        ("floor: python -c 'import monai'", [py, "-c", "import monai"], {}),
        ("before: medtl inspect (MONAI imports eager, spec from timm)", inspect,
         {"MEDTL_EAGER_MONAI": "1", "XDG_CACHE_HOME": str(empty_cache)}),
        ("after, first run on a machine (spec read from timm once)", inspect, {"XDG_CACHE_HOME": str(empty_cache)}),
        ("after: medtl inspect", inspect, {"XDG_CACHE_HOME": str(cache)}),
    ]


def measure(scan: Path, repeats: int, work: Path, smoke: bool = False) -> list[dict]:
    cache, empty = work / "cache", work / "empty"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDTL_PROGRESS": "0"}
    rows = _rows(scan, cache, empty)
    if smoke:  # before and after only: the smoke run checks the script, not the figures
        rows = [r for r in rows if r[0].startswith(("before", "after:"))]
    subprocess.run(rows[-1][1], env={**env, **rows[-1][2]}, capture_output=True, check=True)  # fills the cache, warms files
    times: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    for _ in range(repeats):
        for name, cmd, extra in rows:
            if empty.exists():
                for f in empty.rglob("*.json"):
                    f.unlink()
            t0 = time.perf_counter()
            p = subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True)
            times[name].append(time.perf_counter() - t0)
            if p.returncode != 0:
                raise SystemExit(f"{name}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
    return [{"row": name, "median_s": statistics.median(t), "min_s": min(t), "runs": len(t)} for name, t in times.items()]


def table(rows: list[dict]) -> str:
    before = next(r["median_s"] for r in rows if r["row"].startswith("before"))
    return markdown_table(["what", "median s", "min s", "runs", "x before"],
                          [(r["row"], f"{r['median_s']:.2f}", f"{r['min_s']:.2f}", r["runs"], f"{r['median_s'] / before:.2f}")
                           for r in rows], right=(1, 2, 3, 4))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="one run per row; writes only with --out")
    ap.add_argument("--repeats", type=int, default=None, help="fresh processes per row (default 5, smoke 1)")
    ap.add_argument("--out", type=Path, default=None, help="results file (default benchmarks/RESULTS.md; smoke: none)")
    a = ap.parse_args(argv)
    repeats = a.repeats or (1 if a.smoke else 5)
    out = a.out if a.out is not None else (None if a.smoke else ROOT / "benchmarks" / "RESULTS.md")
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="medtl-bench-") as tmp:
        scan, desc = _scan(Path(tmp))
        rows = measure(scan, repeats, Path(tmp), a.smoke)
    load_after = load_average()
    body = "\n".join([
        "## Start-up: one-file `medtl inspect` (`benchmarks/bench_startup.py`)", "",
        *header("bench_startup.py", argv, load_before, load_after, "monai", "timm", "torchvision", "mlflow"),
        f"- scan: {desc}; wall time of a fresh `python -m medtl inspect` process (imports, reading, the whole "
        f"pipeline to the backbone input), median of {repeats} interleaved runs per row",
        WHERE, "",
        table(rows),
    ])
    print(body)
    if out is not None:
        write_section(out, SECTION, body)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
