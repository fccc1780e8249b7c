"""benchmarks/bench_shift.py --smoke: a real (tiny) MedMNIST-C comparison writes its RESULTS.md section."""

import importlib.util
from pathlib import Path

from tests.conftest import ROOT, shared_path


def test_bench_shift_smoke(mlflow_uri, tmp_path: Path) -> None:
    shared_path("medmnist", "breastmnist.npz")
    spec = importlib.util.spec_from_file_location("bench_shift", ROOT / "benchmarks" / "bench_shift.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    assert bench.main(["--smoke", "--results", str(results)]) == 0
    text = results.read_text()
    assert "kept" in text and text.count(bench.START) == 1 and text.count(bench.END) == 1
    section = text[text.index(bench.START):]
    for row in ("| frozen |", "| frozen+adabn |", "| frozen+tent |", "| full |", "| full+adabn |", "| dann |",
                "| dann+tent |", "| mcc |"):
        assert row in section
    assert "gain_auc_vs_full" in section and "gain_acc_vs_lp-ft" in section
    for validator in ("| source_val |", "| snd |", "| entropy |", "| dev |"):
        assert validator in section
    assert "every arm of today on both target AUC and ACC" in section
    assert "2 target domain(s)" in section and "command: `python benchmarks/bench_shift.py --smoke" in section
    bench.write_section(results, "second run")  # a later run replaces the section in place, not appended
    text = results.read_text()
    assert text.count(bench.START) == 1 and "second run" in text and "| frozen |" not in text and "kept" in text
