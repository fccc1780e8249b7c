"""Curation: every row checked, failures quarantined with a reason, patient-level splits.

Nothing is silently dropped: a row either lands in ``manifest.csv`` (with a split) or in
``quarantine.csv`` (with the reason), and ``report.md`` counts both.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from monai.transforms import Compose
from sklearn.model_selection import StratifiedGroupKFold

from medtl.config import PreprocessConfig
from medtl.data.manifest import DEFAULT_DOMAIN, SPLITS, class_names, read_manifest
from medtl.data.transforms import scan_transforms
from medtl.errors import DataError, MedtlError
from medtl.hashing import array_sha256
from medtl.models.registry import InputSpec
from medtl.progress import track

# Validation runs the whole pipeline at a small size: it proves the scan decodes and becomes a
# backbone input without paying for full-size resizes.
_CHECK_SPEC = InputSpec(size=32, channels=3, mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="bilinear", source="curation check")


@dataclass
class CurationResult:
    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    duplicates: list[list[str]] = field(default_factory=list)
    leaking_patients: list[str] = field(default_factory=list)
    report: str = ""


def split_patients(df: pd.DataFrame, seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> pd.Series:
    """Train/val/test by patient, stratified on label and domain, reproducible from ``seed``."""
    if abs(sum(fractions) - 1) > 1e-6:
        raise DataError("fractions", f"split fractions must sum to 1, got {fractions}")
    patients = df["patient_id"].to_numpy()
    strata = (df["label"].astype(str) + "|" + df["domain"].astype(str)).to_numpy()
    n_pat = len(set(patients))
    _, counts = np.unique(strata, return_counts=True)
    k = max(3, min(20, n_pat, int(counts.max())))  # folds of ~5% where the data allow
    folds = np.zeros(len(df), dtype=int)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # strata smaller than k: sklearn warns, the split is still grouped
        warnings.simplefilter("ignore", UserWarning)
        for i, (_, test_idx) in enumerate(cv.split(np.zeros(len(df)), strata, groups=patients)):
            folds[test_idx] = i
    # whole folds to splits, by the wanted fractions (at least one fold each)
    n_test = max(1, int(fractions[2] * k + 0.5)) if fractions[2] > 0 else 0
    n_val = max(1, int(fractions[1] * k + 0.5)) if fractions[1] > 0 else 0
    n_train = k - n_val - n_test
    names = np.where(folds < n_train, "train", np.where(folds < n_train + n_val, "val", "test"))
    return pd.Series(names, index=df.index, name="split")


def _check_row(path: str, pipeline: Compose) -> tuple[str | None, str | None]:
    """(pixel hash, None) for a good scan, (None, reason) for a bad one; the file is read once."""
    load, rest = pipeline.transforms[0], Compose(pipeline.transforms[1:], map_items=False)
    try:
        loaded = load({"image": path})
        digest = array_sha256(np.asarray(loaded["image"]))
        rest(loaded)
    except MedtlError as e:
        return None, e.problem
    except Exception as e:  # noqa: BLE001 - whatever breaks, the row is quarantined with why
        return None, f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
    return digest, None


def curate(
    manifest: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    labels: list[str] | None = None,
    preprocess: PreprocessConfig | None = None,
) -> CurationResult:
    """Validate, deduplicate-report and split a manifest; write manifest.csv, quarantine.csv, report.md."""
    pp = preprocess or PreprocessConfig()
    df = read_manifest(manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    allowed = set(map(str, labels)) if labels else None

    pipeline = scan_transforms(_CHECK_SPEC, pp)
    hashes: dict[int, str] = {}
    bad: list[dict[str, str]] = []
    for idx, row in track(list(df.iterrows()), "checking scans", total=len(df)):
        if allowed is not None and str(row["label"]) not in allowed:
            bad.append({"path": row["path"], "reason": f"unknown label '{row['label']}'"})
            continue
        digest, reason = _check_row(row["path"], pipeline)
        if reason is not None:
            bad.append({"path": row["path"], "reason": reason})
        else:
            hashes[idx] = digest  # type: ignore[assignment]
    good = df.loc[list(hashes)].copy()
    good["pixel_sha256"] = [hashes[i] for i in good.index]
    quarantine = pd.DataFrame(bad, columns=["path", "reason"])
    if good.empty:
        raise DataError(manifest, f"no usable rows: all {len(df)} quarantined (see {out / 'quarantine.csv'})")

    has_split = "split" in good.columns and (good["split"] != "").all()
    if not has_split:
        good["split"] = split_patients(good, seed, fractions)

    groups: dict[str, list[str]] = defaultdict(list)
    for path, digest in zip(good["path"], good["pixel_sha256"]):
        groups[digest].append(path)
    duplicates = [paths for paths in groups.values() if len(paths) > 1]
    per_patient = good.groupby("patient_id")["split"].nunique()
    leaking = sorted(per_patient[per_patient > 1].index)

    result = CurationResult(good, quarantine, duplicates, leaking)
    result.report = render_report(result, total=len(df), seed=seed, split_given=has_split)
    good.to_csv(out / "manifest.csv", index=False)
    quarantine.to_csv(out / "quarantine.csv", index=False)
    (out / "report.md").write_text(result.report)
    return result


def _table(df: pd.DataFrame, by: str) -> str:
    counts = df.groupby([by, "split"]).size().unstack("split", fill_value=0)
    counts = counts.reindex(columns=[s for s in SPLITS if s in counts.columns])
    head = f"| {by} | " + " | ".join(counts.columns) + " |"
    rule = "|" + "---|" * (len(counts.columns) + 1)
    rows = [f"| {k} | " + " | ".join(str(int(v)) for v in r) + " |" for k, r in counts.iterrows()]
    return "\n".join([head, rule, *rows])


def render_report(r: CurationResult, total: int, seed: int, split_given: bool) -> str:
    m = r.manifest
    order = {c: i for i, c in enumerate(class_names(m["label"]))}
    m = m.assign(label=pd.Categorical(m["label"], categories=sorted(order, key=order.get)))
    lines = [
        "# Curation report",
        "",
        f"- rows: {total}; kept {len(m)}; quarantined {len(r.quarantine)}",
        f"- patients: {m['patient_id'].nunique()} (ids are keyed hashes)",
        f"- splits: {'as given in the manifest' if split_given else f'patient-level, stratified by label and domain, seed {seed}'}",
        "",
        "## Per split", "", _table(m.assign(all="rows"), "all"), "",
        "## Per label", "", _table(m, "label"), "",
        "## Per domain", "", _table(m.assign(domain=m["domain"].replace("", DEFAULT_DOMAIN)), "domain"), "",
        "## Exact duplicates (same pixels)", "",
    ]
    lines += [f"- {len(g)} rows: " + ", ".join(Path(p).name for p in g) for g in r.duplicates] or ["none"]
    lines += ["", "## Patients in more than one split (leakage)", ""]
    lines += [f"- {p}: " + ", ".join(sorted(set(m.loc[m['patient_id'] == p, 'split']))) for p in r.leaking_patients] or ["none"]
    lines += ["", "## Quarantined", ""]
    lines += [f"- {Path(p).name}: {why}" for p, why in zip(r.quarantine["path"], r.quarantine["reason"])] or ["none"]
    return "\n".join(lines) + "\n"
