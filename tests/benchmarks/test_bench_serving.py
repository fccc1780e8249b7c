"""benchmarks/bench_serving.py --smoke: a real `mlflow models serve` and the in-process pyfunc, one table row each per batch size."""

import re
from pathlib import Path

from tests.benchmarks.test_bench_smoke import smoke
from tests.conftest import shared_path


def test_bench_serving_smoke(tmp_path: Path) -> None:
    shared_path("dicom", "single", "693_UNCR.dcm")
    p = smoke("bench_serving", tmp_path / "RESULTS.md")
    rows = re.findall(r"^\| (pyfunc in-process, main|pyfunc in-process, worker|REST, mlflow models serve)[^|]* \| (\d+) \| 3 \| "
                      r"([\d.]+) \| (\d+) \| (\d+) \|", p.stdout, re.M)
    kinds = ("pyfunc in-process, main", "pyfunc in-process, worker", "REST, mlflow models serve")
    assert {(how, int(b)) for how, b, *_ in rows} == {(h, b) for h in kinds for b in (1, 4)}
    assert all(float(rate) > 0 and int(p95) >= int(p50) for *_, rate, p50, p95 in rows)
