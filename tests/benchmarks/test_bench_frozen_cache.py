"""benchmarks/bench_frozen_cache.py --smoke runs, prints its table and rewrites only its own section."""

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, shared_path


def test_bench_frozen_cache_smoke(tmp_path: Path) -> None:
    shared_path("medmnist", "breastmnist.npz")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n\n"
                       "<!-- bench_frozen_cache:start -->\nstale\n<!-- bench_frozen_cache:end -->\n")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_frozen_cache.py"), "--smoke", "--results", str(results)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    aucs = [float(a) for a in re.findall(r"^\| frozen, features [^|]+\| [\d.]+ \| ([\d.]+) \|", p.stdout, re.M)]
    assert len(aucs) == 3 and max(aucs) - min(aucs) < 1e-3, "the cache must not change the head's result"
    text = results.read_text()
    assert "keep me" in text and "stale" not in text and text.count("bench_frozen_cache:start") == 1
    assert "re-extracted every epoch" in text and "--smoke" in text
