"""The hostile corpus: what medtl does with every kind of broken input, and the memory a lying header costs.

    python benchmarks/bench_hostile.py            # full run; updates benchmarks/RESULTS.md
    python benchmarks/bench_hostile.py --smoke    # the same corpus, one memory probe per side

The corpus is ``tests/data/broken.py`` (each file written from a valid one and broken one way: DICOM,
NIfTI and image formats, series folders, what the operating system throws, lying headers), mixed
with good scans in one manifest and curated: the table gives each kind's outcome (its quarantine
reason) and whether every good row survived.

Peak memory: each lying-header file is read in a fresh process (``read_scan``) and the process's
peak resident set size (``VmHWM``) is compared with the limit on claimed voxel bytes (``MEDTL_MAX_SCAN_BYTES``,
default 4 GiB). The obvious alternative, nibabel's ``get_fdata()`` on the same kind of file, runs
in the same way on a smaller claim (on a 2 GiB claim it peaked at 5 GB, too much for a shared
machine): it allocates what the header claims before finding the data missing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import header, load_average, markdown_table, publish  # noqa: E402
from medtl.data.curate import curate  # noqa: E402
from medtl.data.readers.nifti import max_scan_bytes  # noqa: E402
from medtl.data.synthetic import write_ct_dicom, write_nifti  # noqa: E402
from tests.data.broken import build_corpus, lying_nifti  # noqa: E402

SECTION = "bench_hostile"
MiB = 2**20

# a fresh process: peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which keeps the parent's) after the
# imports, then after reading the file
PROBE = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
side, path = sys.argv[1], sys.argv[2]
if side == "medtl":
    from medtl.data.readers import read_scan
    from medtl.errors import ScanError
    read, expected = read_scan, ScanError
else:
    import nibabel as nib
    read, expected = (lambda p: nib.load(p).get_fdata()), Exception
before = hwm_kib()
t = time.perf_counter()
try:
    read(path)
    outcome = "read"
except expected as e:
    outcome = f"{type(e).__name__}: {getattr(e, 'problem', ' '.join(str(e).split()))[:100]}"
seconds = time.perf_counter() - t
after = hwm_kib()
print(json.dumps({"before_kib": before, "after_kib": after, "seconds": seconds, "outcome": outcome}))
"""


def probe(side: str, path: Path) -> dict:
    p = subprocess.run([sys.executable, "-c", PROBE, side, str(path)], capture_output=True, text=True, timeout=600,
                       cwd=ROOT, env=None)
    if p.returncode != 0:
        raise SystemExit(f"probe failed on {path}: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def good_rows(root: Path) -> list[dict[str, str]]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        label = "marker" if i % 2 else "clear"
        rows.append({"path": str(write_ct_dicom(root / f"g{i}.dcm", rng.normal(0, 200, (40, 40)), 0.8, f"G{i}", "Good^G")),
                     "label": label, "patient_id": f"G{i}"})
        rows.append({"path": str(write_nifti(root / f"g{i}.nii.gz", rng.normal(0, 200, (3, 40, 40)), 0.8, 3.0)),
                     "label": label, "patient_id": f"G{i}"})
    return rows


def corpus_table(work: Path) -> tuple[str, dict]:
    corpus = build_corpus(work / "broken")
    good = good_rows(work / "good")
    rows = good + [{"path": str(b.path), "label": "clear", "patient_id": f"B{i}"} for i, b in enumerate(corpus)]
    pd.DataFrame(rows).to_csv(work / "manifest.csv", index=False)
    t = time.perf_counter()
    result = curate(work / "manifest.csv", work / "curated", seed=0)
    seconds = time.perf_counter() - t
    reasons = dict(zip(result.quarantine["path"], result.quarantine["reason"]))
    kept = set(result.manifest["path"])
    table = [[b.name, f"`{b.path.name}`", "quarantined: " + reasons[str(b.path)] if str(b.path) in reasons else "**kept**",
              "yes" if reasons.get(str(b.path)) == b.problem else "**no**"] for b in corpus]
    summary = {"kinds": len(corpus), "quarantined": sum(str(b.path) in reasons for b in corpus),
               "exact": sum(reasons.get(str(b.path)) == b.problem for b in corpus),
               "good": len(good), "good_kept": sum(r["path"] in kept for r in good), "seconds": seconds}
    text = markdown_table(["kind", "file", "outcome in `medtl curate`", "reason as expected"], table)
    return text, summary


def memory_table(work: Path, smoke: bool) -> str:
    files = work / "lying"
    files.mkdir()
    limit = max_scan_bytes()
    cases = [("medtl", lying_nifti(files / "claims_2gib.nii.gz", (1024, 1024, 512)), 2 * 2**30)]
    if not smoke:
        cases += [("medtl", lying_nifti(files / "claims_64gib.nii.gz", (4096, 4096, 1024)), 64 * 2**30),
                  ("medtl", lying_nifti(files / "claims_256mib.nii.gz", (512, 512, 256)), 256 * MiB),
                  # within gzip's 1032x of its 29 KiB: decompressed, then found short (the bound this leaves)
                  ("medtl", lying_nifti(files / "claims_19mib.nii.gz", (320, 320, 48)), 320 * 320 * 48 * 4)]
    small = (256, 256, 256) if not smoke else (256, 256, 64)
    claim = int(np.prod(small)) * 4
    cases.append(("nibabel get_fdata()", lying_nifti(files / f"claims_{claim // MiB}mib_plain.nii.gz", small), claim))
    rows = []
    for side, path, claimed in cases:
        r = probe("medtl" if side == "medtl" else "nibabel", path)
        rows.append([side, f"`{path.name}` ({path.stat().st_size / 1024:.0f} KiB)", f"{claimed / MiB:,.0f}",
                     f"{r['before_kib'] / 1024:,.0f}", f"{r['after_kib'] / 1024:,.0f}",
                     f"{(r['after_kib'] - r['before_kib']) / 1024:,.0f}", f"{limit / MiB:,.0f}",
                     f"{r['seconds'] * 1000:.0f}", r["outcome"]])
    return markdown_table(["reader", "file (size)", "claimed MiB", "RSS after imports MiB", "peak RSS MiB",
                           "peak - imports MiB", "limit MiB", "ms", "outcome"], rows, right=(2, 3, 4, 5, 6, 7))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="one memory probe per side, a smaller alternative claim")
    ap.add_argument("--results", type=Path, help="write the section here (default: benchmarks/RESULTS.md, not in --smoke)")
    args = ap.parse_args(argv)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus, s = corpus_table(work)
        memory = memory_table(work, args.smoke)
    body = "\n".join([
        "## Hostile corpus: every kind of broken input, and the memory a lying header costs",
        "",
        *header("bench_hostile.py", argv, load_before, load_average(), "pydicom", "nibabel"),
        f"- corpus: {s['kinds']} broken inputs (tests/data/broken.py) mixed with {s['good']} good scans in one manifest; "
        f"`curate` quarantined {s['quarantined']} of {s['kinds']}, {s['exact']} with exactly the expected reason; "
        f"kept {s['good_kept']} of {s['good']} good rows; {s['seconds']:.1f} s for the whole manifest",
        "",
        corpus,
        "",
        "Peak memory of one read in a fresh process (`VmHWM`), against the limit on claimed voxel bytes. medtl "
        "judges the header before decompressing; nibabel allocates the claim first (run on a smaller claim: on 2 GiB "
        "it peaked near 5 GB).",
        "",
        memory,
    ])
    publish(body, SECTION, args.results, args.smoke)
    return 0 if s["exact"] == s["kinds"] and s["good_kept"] == s["good"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
