"""The ``--smoke`` mode of bench_accuracy, bench_speed and bench_memory runs end to end, prints its
tables and rewrites only its own section of a RESULTS.md (the figures are not checked: a smoke
run is too small to mean anything)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, shared_path

OTHER = "# Benchmark results\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n"


def smoke(script: str, results: Path, *extra: str, section: str | None = None) -> subprocess.CompletedProcess:
    section = section or script
    results.write_text(OTHER + f"\n<!-- {section}:start -->\nstale\n<!-- {section}:end -->\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDTL_PROGRESS": "0"}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--smoke", "--results", str(results), *extra],
                       capture_output=True, text=True, timeout=600, env=env, cwd=results.parent)
    assert p.returncode == 0, p.stderr[-3000:]
    text = results.read_text()
    assert "keep me" in text and "stale" not in text and text.count(f"<!-- {section}:start -->") == 1
    assert "load average before" in text and f"python benchmarks/{script}.py --smoke" in text
    return p


def test_bench_accuracy_smoke(tmp_path: Path) -> None:
    shared_path("medmnist", "breastmnist.npz")
    smoke("bench_accuracy", tmp_path / "RESULTS.md", "--datasets", "breastmnist", section="bench_accuracy-breastmnist")
    text = (tmp_path / "RESULTS.md").read_text()
    selected = []
    for strategy in ("frozen", "full"):
        row = re.search(rf"^\| breastmnist \| (\*\*{strategy}\*\* \(selected\)|{strategy}) \| efficientnet_lite0, ImageNet .*\| "
                        r"32 px \(28 px upsampled\) \| 1 \| ([\d.]+) \| ([\d.]+) \[([\d.]+), ([\d.]+)\] \| ([\d.]+) \[", text, re.M)
        assert row, f"no {strategy} row"
        selected += [strategy] if "selected" in row.group(1) else []
        val, auc, low, high, acc = map(float, row.groups()[1:])
        assert 0 <= val <= 1 and low <= auc <= high and 0 <= acc <= 1
    assert len(selected) == 1, "exactly one arm is marked as the one validation selects"
    assert text.count("MedMNIST v2 (published, breastmnist)") == 3 and "| 0.901 | 0.863 |" in text
    assert re.search(r"^\| breastmnist \| MedMNIST\+ best at 28 px \(published, breastmnist\) \| AlexNet, .*\| 0\.891 \| 0\.865 \|", text, re.M)
    assert "Ablation:" not in text  # the smoke ablates only the levers it is given (--lever)
    for arch in ("resnet18", "resnet50"):  # no torchvision checkpoint here: said, not silently dropped
        assert re.search(rf"\| {arch} \|.*(skipped: checkpoint absent|ImageNet)", text), arch
    # the bar: the best published AUC and the best published ACC, MedMNIST+ included
    assert re.search(r"^\| breastmnist \| 0\.901 / 0\.865 \| \w[\w-]*: [\d.]+ / [\d.]+ \| (yes|NO)", text, re.M)


def test_bench_speed_smoke(tmp_path: Path) -> None:
    shared_path("medmnist", "organamnist.npz")
    p = smoke("bench_speed", tmp_path / "RESULTS.md")
    assert re.search(r"\| cpu \(fp32, channels_last\) \| medtl: prepared_dataset.*\| [\d.]+ \| >= 0.9 \| (yes|NO) \|", p.stdout)
    assert re.search(r"\| cpu \(fp32, channels_last\) \| medtl per image: .*\| \d+ \| [\d.]+ \|", p.stdout)
    assert "plain torchvision loop" in p.stdout and "feature cache" in p.stdout
    assert "cosine similarity" in p.stdout
    diff = re.search(r"batch path against its per-image path: largest feature difference ([\d.e+-]+)", p.stdout)
    assert diff and float(diff.group(1)) < 1e-3, "the batch path must compute what the per-image path computes"


@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS from getrusage is in KiB on Linux only")
def test_bench_memory_smoke(tmp_path: Path) -> None:
    shared_path("medmnist", "organamnist.npz")
    p = smoke("bench_memory", tmp_path / "RESULTS.md")
    rows = re.findall(r"^\| (extract|full) \| (\d+) \| [\d.]+ \| \d+ \| (\d+) \| (\d+) \|", p.stdout, re.M)
    assert {(k, int(n)) for k, n, _, _ in rows} == {("extract", 32), ("extract", 64), ("full", 32), ("full", 64)}
    assert all(int(peak) >= int(base) > 0 for _, _, peak, base in rows)
    assert "Growth from the smallest to the largest training set" in p.stdout


def test_bench_memory_child_measures_in_its_own_process(tmp_path: Path) -> None:
    """The real mode's path: one measurement in a fresh process, reported as one JSON line."""
    shared_path("medmnist", "organamnist.npz")
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_memory import measure

    r = measure("extract", 32, 32, 16)
    assert r["n"] == 32 and r["peak"] >= r["baseline"] > 0 and r["image_cache"] > 0 and r["feature_cache"] > 0


def test_bench_demo_smoke(tmp_path: Path) -> None:
    """The demo's pieces are timed (data, curation, each arm, the rest) from the demo's own config."""
    smoke("bench_demo", tmp_path / "RESULTS.md")
    row = re.search(r"^\| demo \(now\) \| 32 px \| 1/1 \|(.*)\|$", (tmp_path / "RESULTS.md").read_text(), re.M)
    assert row and len(row.group(1).split("|")) == 8
