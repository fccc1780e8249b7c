"""``medtl demo``, piece by piece: writing the DICOM/NIfTI data, curation, each arm, and the rest of the
comparison (loading, MLflow logging of runs and models, registration), for the demo's config and for
the config it had before (224 px, full fine-tuning for 5 epochs) in the same run, with the AUCs that
show the demo still separates its two arms.

``make demo`` is this plus creating .venv and installing medtl (not timed here: it is the network and
pip's cache, not medtl; the README states what was measured).

    python benchmarks/bench_demo.py            # the real measurement, writes its section of RESULTS.md
    python benchmarks/bench_demo.py --smoke    # seconds; a test runs it
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import header, load_average, markdown_table, publish  # noqa: E402
from medtl.demo import DEMO_CONFIG  # noqa: E402

SECTION = "bench_demo"


def before(cfg: dict) -> dict:
    """The demo's config until issue 20: the weights' own 224 px, full fine-tuning for 5 epochs."""
    old = copy.deepcopy(cfg)
    old["preprocess"].pop("size", None)
    old["strategies"] = [{"name": "frozen", "head": "linear", "epochs": 30}, {"name": "full", "epochs": 5}]
    return old


def run_demo(cfg: dict, work: Path, patients: int) -> dict[str, float]:
    """Seconds of each piece of ``medtl demo`` with ``cfg``, in a fresh folder and MLflow store."""
    from medtl import api
    from medtl.data.curate import curate
    from medtl.data.synthetic import make_marker_dataset

    work.mkdir(parents=True)
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    t0 = time.perf_counter()
    manifest = make_marker_dataset(work / "data", patients_per_domain=patients, seed=0)
    t1 = time.perf_counter()
    curate(manifest, work / "curated", seed=0)
    t2 = time.perf_counter()
    cfg = {**cfg, "data": {**cfg["data"], "manifest": str(work / "curated" / "manifest.csv")}}
    comp = api.compare(cfg)
    t3 = time.perf_counter()
    out = {"data": t1 - t0, "curate": t2 - t1, "compare": t3 - t2, "total": t3 - t0}
    for a in comp.arms:
        out[f"{a.strategy}_s"] = a.seconds
        out[f"{a.strategy}_val_auc"] = a.val_auc
        out[f"{a.strategy}_test_auc"] = a.metrics["test_auc"]
    out["rest"] = out["compare"] - sum(a.seconds for a in comp.arms)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a few patients at 32 px, one epoch per arm (seconds)")
    p.add_argument("--results", type=Path, help="RESULTS.md to write (default benchmarks/RESULTS.md; none with --smoke)")
    args = p.parse_args(argv)
    load_before = load_average()
    now = copy.deepcopy(DEMO_CONFIG)
    variants = {"demo (now)": now, "before (224 px, full 5 epochs)": before(now)}
    patients = 40
    if args.smoke:  # the demo's own config only, shrunk: the test proves the script runs, not the figures
        patients = 4
        variants.popitem()
        for cfg in variants.values():
            cfg["preprocess"]["size"] = 32
            cfg["strategies"] = [{**s, "epochs": 1} for s in cfg["strategies"]]
            cfg["train"]["bootstrap"] = 10
            cfg["tracking"] = {**cfg["tracking"], "system_metrics": False}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, cfg) in enumerate(variants.items()):
            r = run_demo(cfg, Path(tmp) / f"v{i}", patients)
            size = cfg["preprocess"].get("size") or 224
            epochs = "/".join(str(s["epochs"]) for s in cfg["strategies"])
            rows.append([name, f"{size} px", epochs, f"{r['data']:.0f}", f"{r['curate']:.0f}", f"{r['frozen_s']:.0f}",
                         f"{r['full_s']:.0f}", f"{r['rest']:.0f}", f"{r['total'] / 60:.1f}",
                         f"{r['frozen_val_auc']:.3f} / {r['full_val_auc']:.3f}", f"{r['frozen_test_auc']:.3f} / {r['full_test_auc']:.3f}"])
    table = markdown_table(["config", "input", "epochs frozen/full", "data s", "curate s", "frozen s", "full s",
                            "rest s", "total min", "val AUC frozen / full", "test AUC frozen / full"], rows,
                           right=range(3, 9))
    body = "\n".join([f"## `medtl demo`, piece by piece ({patients} patients per scanner, 2 scans each)", "",
                      *header("bench_demo.py", argv, load_before, load_average()), "",
                      "`rest`: the comparison's time outside the two arms (loading and caching the scans, the "
                      "MLflow runs, logging both models with their signatures and examples, registration). "
                      "Not included: creating .venv and installing medtl (`make install`).", "", table])
    publish(body, SECTION, args.results, args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
