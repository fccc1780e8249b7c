"""``benchmarks/bench_startup.py --smoke`` runs end to end and writes its section (figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_startup_benchmark_smoke(tmp_path) -> None:
    out = tmp_path / "RESULTS.md"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_startup.py"), "--smoke", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    assert "before: medtl inspect" in text and "after: medtl inspect" in text and "load average before" in text
