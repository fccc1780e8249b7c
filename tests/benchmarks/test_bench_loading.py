"""``benchmarks/bench_loading.py --smoke`` runs end to end and writes its section (figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_loading_benchmark_smoke(tmp_path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_loading.py"), "--smoke", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    assert "kept" in text, "other sections of RESULTS.md survive"
    for row in ("plain reader", "medtl first read", "medtl cached epoch, memory", "medtl cached epoch, disk"):
        assert text.count(row) == 2, row  # one row per workload: DICOM series and NIfTI
    assert "bench_loading.py --smoke" in text and "load average before" in text
