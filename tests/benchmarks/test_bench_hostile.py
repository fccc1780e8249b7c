"""bench_hostile --smoke: the whole corpus through curate with the expected reason for every kind, every good
row kept, and a peak-memory probe of a lying header that stays far below what the header claims."""

from __future__ import annotations

import re
from pathlib import Path

from tests.benchmarks.test_bench_smoke import smoke


def test_bench_hostile_smoke(tmp_path: Path) -> None:
    smoke("bench_hostile", tmp_path / "RESULTS.md")
    text = (tmp_path / "RESULTS.md").read_text()
    m = re.search(r"corpus: (\d+) broken inputs .* quarantined (\d+) of \1, (\d+) with exactly the expected reason; "
                  r"kept (\d+) of (\d+) good rows", text)
    assert m and int(m[1]) >= 40 and m[1] == m[2] == m[3] and m[4] == m[5]
    row = re.search(r"^\| medtl \| `claims_2gib.nii.gz` .*? \| 2,048 \| [\d,]+ \| [\d,]+ \| ([\d,]+) \| 4,096 \|", text, re.M)
    assert row and int(row[1].replace(",", "")) < 100, "judged from the header: no 2 GiB allocation"
