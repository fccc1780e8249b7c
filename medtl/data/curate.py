"""Curation: every row checked, failures quarantined with a reason, patient-level splits.

Nothing is silently dropped: a row either lands in ``manifest.csv`` (with a split) or in
``quarantine.csv`` (with the reason), and ``report.md`` counts both. Each scan is read once: the
same read gives its pixel hash (exact duplicates), its allow-listed header (domains) and the
proof that it becomes a backbone input. Patient ids are keyed hashes from the moment the
manifest is read; only the manifest's own columns and those the user declares are copied out.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monai.transforms import Compose
from sklearn.model_selection import StratifiedGroupKFold

from medtl.config import PreprocessConfig
from medtl.data.manifest import DEFAULT_DOMAIN, REQUIRED, SPLITS, class_names, missing_classes, read_manifest
from medtl.data.transforms import prepare_scan, scan_transforms, single_threaded
from medtl.errors import ConfigError, DataError, MedtlError
from medtl.hashing import array_sha256
from medtl.models.registry import InputSpec
from medtl.privacy import CONFIDENTIAL_KEYWORDS
from medtl.progress import track

# Validation runs the whole pipeline at a small size: it proves the scan decodes and becomes a
# backbone input without paying for full-size resizes.
_CHECK_SPEC = InputSpec(size=32, channels=3, mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="bilinear", source="curation check")

# --domain-from names -> allow-listed header fields (InstitutionName only ever as its keyed code)
DOMAIN_FIELDS: dict[str, str] = {
    "manufacturer": "Manufacturer",
    "model": "ManufacturerModelName",
    "institution": "InstitutionCode",
    "slice_thickness": "SliceThickness",
    "field_strength": "MagneticFieldStrength",
    "kernel": "ConvolutionKernel",
    "modality": "Modality",
    "body_part": "BodyPartExamined",
}
# manifest columns never copied out, beside the DICOM confidentiality profile's keywords
_IDENTIFIER_COLUMNS = {"name", "patient", "birthdate", "dob", "dateofbirth", "accession", "mrn",
                       "medicalrecordnumber", "ssn", "address", "phone", "telephone", "email", "institution"}


_GEOMETRY = "medtl.geometry"  # beside a row's header: what reading did to its slice geometry (tilt, uneven gaps)


@dataclass
class CurationResult:
    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    duplicates: list[list[str]] = field(default_factory=list)
    leaking_patients: list[str] = field(default_factory=list)
    geometry: dict[str, list[str]] = field(default_factory=dict)  # path -> gantry tilt / uneven gaps handled
    report: str = ""
    warnings: list[str] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)
    domain_source: str = "manifest"
    # files listed under more than one patient id: [path, number of patient ids]
    shared_files: list[tuple[str, int]] = field(default_factory=list)


def patient_folds(strata: np.ndarray, patients: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each row's fold (0..k-1): every scan of a patient in one fold, folds stratified on ``strata``
    (scikit-learn's ``StratifiedGroupKFold``, shuffled with ``seed``). The one cut into patient-level folds:
    the train/val/test split and cross-validation's folds both come from it."""
    folds = np.zeros(len(strata), dtype=int)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # strata smaller than k: sklearn warns, the split is still grouped
        warnings.simplefilter("ignore", UserWarning)
        for i, (_, test_idx) in enumerate(cv.split(np.zeros(len(strata)), strata, groups=patients)):
            folds[test_idx] = i
    return folds


def split_patients(df: pd.DataFrame, seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> pd.Series:
    """Train/val/test by patient, stratified on label and domain, reproducible from ``seed``."""
    if abs(sum(fractions) - 1) > 1e-6:
        raise DataError("fractions", f"split fractions must sum to 1, got {fractions}")
    patients = df["patient_id"].to_numpy()
    strata = (df["label"].astype(str) + "|" + df["domain"].astype(str)).to_numpy()
    n_pat = len(set(patients))
    if n_pat < 3:
        raise DataError("manifest", f"{n_pat} patient(s) cannot make train, val and test splits (need at least 3)")
    _, counts = np.unique(strata, return_counts=True)
    k = max(3, min(20, n_pat, int(counts.max())))  # folds of ~5% where the data allow
    folds = patient_folds(strata, patients, k, seed)
    # whole folds to splits, by the wanted fractions (at least one fold each)
    n_test = max(1, int(fractions[2] * k + 0.5)) if fractions[2] > 0 else 0
    n_val = max(1, int(fractions[1] * k + 0.5)) if fractions[1] > 0 else 0
    n_train = k - n_val - n_test
    names = np.where(folds < n_train, "train", np.where(folds < n_train + n_val, "val", "test"))
    return pd.Series(names, index=df.index, name="split")


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(value)).strip("-") or "unknown"


def header_domain(header: dict[str, Any], fields: list[str]) -> str | None:
    """A domain name from allow-listed header fields, e.g. ``SIEMENS_Prisma-fit_4mm``; None without a header."""
    if not header:
        return None
    parts = []
    for f in fields:
        v = header.get(DOMAIN_FIELDS[f])
        if v in (None, ""):
            parts.append(f"{f}-unknown")
        elif f == "slice_thickness":
            parts.append(f"{float(v):g}mm")
        elif f == "field_strength":
            parts.append(f"{float(v):g}T")
        else:
            parts.append(_slug(v))
    return "_".join(parts)


def _identifier_columns(columns: list[str]) -> list[str]:
    profile = {k.lower() for k in CONFIDENTIAL_KEYWORDS}
    keep = set(REQUIRED) | {"domain", "split"}
    norm = lambda c: re.sub(r"[^a-z0-9]", "", c.lower())  # noqa: E731
    return [c for c in columns if c not in keep and (norm(c) in profile or norm(c) in _IDENTIFIER_COLUMNS
                                                     or norm(c).removeprefix("patient") in _IDENTIFIER_COLUMNS)]


MANIFEST_COLUMNS = (*REQUIRED, "domain", "split")


def kept_columns(columns: list[str], declared: list[str] | None) -> list[str]:
    """The columns copied into the curated manifest: an allow-list (the manifest's own columns and the
    ones the user declared), never a guess at which names are identifiers (``first_name``,
    ``referring_physician``, ``mothers_maiden_name`` ... would slip past any list of bad names).
    A declared column must exist and must not be a known identifier."""
    declared = list(dict.fromkeys(declared or []))
    absent = [c for c in declared if c not in columns]
    if absent:
        raise ConfigError("--keep-columns", f"no column(s) {absent} in the manifest (its columns: {', '.join(columns)})")
    refused = _identifier_columns(declared)
    if refused:
        raise ConfigError("--keep-columns", f"{refused} hold patient identifiers (DICOM confidentiality profile); "
                                            "medtl never copies them")
    return [c for c in columns if c in MANIFEST_COLUMNS or c in declared]


def class_warnings(good: pd.DataFrame) -> list[str]:
    """Data that cannot answer the question: one class, or a split without a class (its AUC undefined;
    ``medtl compare`` refuses such a manifest before training)."""
    classes = class_names(good["label"])
    if len(classes) < 2:
        return [f"only one class ({', '.join(classes)}) among the kept rows: nothing to classify; compare will refuse it"]
    gone = missing_classes({s: list(good.loc[good["split"] == s, "label"]) for s in SPLITS}, classes)
    return [f"the {s} split has no row of class(es) {missing}: its AUC is undefined and compare will refuse it "
            "(more patients of that class, or another --seed)" for s, missing in gone.items()]


def _check_row(path: str, pp: PreprocessConfig, pipeline: Compose) -> tuple[str | None, dict[str, Any], str | None]:
    """(pixel hash, header, None) for a good scan, (None, {}, reason) for a bad one; one read."""
    try:
        prep = prepare_scan(path, _CHECK_SPEC, pp, pipeline=pipeline)
    except MedtlError as e:
        return None, {}, e.problem
    raw = np.asarray(prep.raw)
    lo, hi = float(raw.min()), float(raw.max())
    if lo == hi:
        return None, {}, f"blank image (every value is {lo:g})"
    geometry = [step.removeprefix("geometry: ") for step in prep.info.applied if step.startswith("geometry: ")]
    return array_sha256(raw), {**prep.info.header, _GEOMETRY: geometry}, None


def curate(
    manifest: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    labels: list[str] | None = None,
    preprocess: PreprocessConfig | None = None,
    domain_from: list[str] | None = None,
    keep_columns: list[str] | None = None,
) -> CurationResult:
    """Validate, deduplicate-check and split a manifest; write manifest.csv, quarantine.csv, report.md.

    ``labels``: the known labels (others are quarantined); ``domain_from``: header fields that
    name each DICOM row's domain (see ``DOMAIN_FIELDS``), replacing the manifest's ``domain``;
    ``keep_columns``: extra manifest columns to copy out (path, label, patient_id, domain and split
    always are; no other column is).
    """
    unknown = sorted(set(domain_from or []) - set(DOMAIN_FIELDS))
    if unknown:
        raise ConfigError("--domain-from", f"unknown field(s) {unknown} (known: {', '.join(DOMAIN_FIELDS)})")
    pp = preprocess or PreprocessConfig()
    df = read_manifest(manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    allowed = set(map(str, labels)) if labels else None
    keep = kept_columns(list(df.columns), keep_columns)
    dropped = [c for c in df.columns if c not in keep]
    df = df[keep]

    pipeline = scan_transforms(_CHECK_SPEC, pp, keep_info=True)
    hashes: dict[Any, str] = {}
    headers: dict[Any, dict[str, Any]] = {}
    bad: list[dict[str, str]] = []
    with single_threaded():
        for idx, row in track(list(df.iterrows()), "checking scans", total=len(df)):
            if allowed is not None and str(row["label"]) not in allowed:
                bad.append({"path": row["path"], "reason": f"unknown label '{row['label']}' (known: {', '.join(sorted(allowed))})"})
                continue
            digest, header, reason = _check_row(row["path"], pp, pipeline)
            if reason is not None:
                bad.append({"path": row["path"], "reason": reason})
            else:
                hashes[idx], headers[idx] = digest, header  # type: ignore[assignment]
    good = df.loc[list(hashes)].copy()
    good["pixel_sha256"] = [hashes[i] for i in good.index]
    quarantine = pd.DataFrame(bad, columns=["path", "reason"])
    quarantine.to_csv(out / "quarantine.csv", index=False)
    if good.empty:
        raise DataError(manifest, f"no usable rows: all {len(df)} quarantined (see {out / 'quarantine.csv'})")

    result = CurationResult(good, quarantine, dropped_columns=dropped)
    result.geometry = {good.at[i, "path"]: headers[i].pop(_GEOMETRY) for i in good.index if headers[i].get(_GEOMETRY)}
    for h in headers.values():
        h.pop(_GEOMETRY, None)
    result.warnings += label_warnings(df["label"], good["label"], checked=labels is not None)
    if domain_from:
        tagged = {i: header_domain(headers[i], domain_from) for i in good.index}
        if any(v is not None for v in tagged.values()):
            good["manifest_domain"] = good["domain"]
            good["domain"] = [tagged[i] or d for i, d in zip(good.index, good["domain"])]
        missing = sum(v is None for v in tagged.values())
        result.domain_source = f"DICOM headers ({', '.join(domain_from)})"
        if missing:
            result.warnings.append(f"{missing} row(s) have no DICOM header; they keep the manifest's domain")

    given = good["split"].astype(str).str.strip() != "" if "split" in good.columns else pd.Series(False, index=good.index)
    if given.any() and not given.all():
        raise DataError(manifest, f"the split column is filled for {int(given.sum())} of {len(good)} usable rows: "
                                  "fill it for every row or leave it empty for curate to split")
    split_given = bool(given.all())
    if not split_given:
        good["split"] = split_patients(good, seed, fractions)

    result.warnings += class_warnings(good)
    groups: dict[str, list[Any]] = defaultdict(list)
    for idx, digest in zip(good.index, good["pixel_sha256"]):
        groups[digest].append(idx)
    dup_groups = [g for g in groups.values() if len(g) > 1]
    result.duplicates = [list(good.loc[g, "path"]) for g in dup_groups]
    crossing = [g for g in dup_groups if good.loc[g, "split"].nunique() > 1]
    if crossing:
        result.warnings.append(f"{len(crossing)} group(s) of identical images sit in more than one split")
    result.shared_files = files_under_several_patients(good)
    if result.shared_files:
        result.warnings.append(f"{len(result.shared_files)} file(s) appear under more than one patient id "
                               "(listed under duplicates in report.md): one of the ids is wrong")
    per_patient = good.groupby("patient_id")["split"].nunique()
    result.leaking_patients = sorted(per_patient[per_patient > 1].index)
    if result.leaking_patients:
        result.warnings.append(f"{len(result.leaking_patients)} patient(s) appear in more than one split (leakage)")
    result.manifest = good
    result.report = render_report(result, total=len(df), seed=seed, split_given=split_given)
    good.to_csv(out / "manifest.csv", index=False)
    (out / "report.md").write_text(result.report)
    return result


def _label_key(label: Any) -> str:
    return " ".join(str(label).split()).casefold()


def label_warnings(labels: pd.Series, kept: pd.Series, checked: bool, splits: int = len(SPLITS)) -> list[str]:
    """Labels a person meant as one class (differing only by case or spacing), unless ``--labels``
    checked them; classes too small to appear in every split."""
    out = []
    if not checked:
        spellings: dict[str, set[str]] = defaultdict(set)
        for value in labels.astype(str):
            spellings[_label_key(value)].add(value)
        for variants in spellings.values():
            if len(variants) > 1:
                names = ", ".join(repr(v) for v in sorted(variants))
                out.append(f"labels {names} differ only by case or spacing and would train as {len(variants)} classes; "
                           "fix the manifest, or pass --labels to quarantine the stray spellings")
    counts = kept.astype(str).value_counts()
    for label, n in counts[counts < splits].items():
        out.append(f"class '{label}' has {n} usable row(s), fewer than the {splits} splits: it cannot be in train, "
                   "val and test alike (add rows, or merge or drop the class)")
    return out


def files_under_several_patients(rows: pd.DataFrame) -> list[tuple[str, int]]:
    """The same file (after links are followed) listed under different patient ids: a mislabelled row
    that also leaks one scan into two patients' splits."""
    real = rows["path"].map(os.path.realpath)
    ids = rows.groupby(real)["patient_id"].nunique()
    first = rows.groupby(real)["path"].first()
    return [(first[f], int(n)) for f, n in ids[ids > 1].items()]


def _table(df: pd.DataFrame, by: str) -> str:
    counts = df.groupby([by, "split"], observed=False).size().unstack("split", fill_value=0)
    counts = counts.reindex(columns=[s for s in SPLITS if s in counts.columns])
    head = f"| {by} | " + " | ".join(counts.columns) + " |"
    rule = "|" + "---|" * (len(counts.columns) + 1)
    rows = [f"| {k} | " + " | ".join(str(int(v)) for v in r) + " |" for k, r in counts.iterrows()]
    return "\n".join([head, rule, *rows])


def render_report(r: CurationResult, total: int, seed: int, split_given: bool) -> str:
    m = r.manifest
    order = {c: i for i, c in enumerate(class_names(m["label"]))}
    m = m.assign(label=pd.Categorical(m["label"], categories=sorted(order, key=order.get)))
    split_note = "as given in the manifest" if split_given else f"patient-level, stratified by label and domain, seed {seed}"
    lines = [
        "# Curation report",
        "",
        f"- rows: {total}; kept {len(m)}; quarantined {len(r.quarantine)}",
        f"- patients: {m['patient_id'].nunique()} (ids are keyed hashes, never the identifiers)",
        f"- splits: {split_note}",
        f"- domains: from {r.domain_source}" + ("; institutions appear only as keyed codes (site-...)"
                                                 if "institution" in r.domain_source else ""),
    ]
    if r.dropped_columns:
        lines.append(f"- not copied (columns not declared with --keep-columns): {', '.join(r.dropped_columns)}")
    lines += [f"- warning: {w}" for w in r.warnings]
    lines += [
        "",
        "## Per split", "", _table(m.assign(all="rows"), "all"), "",
        "## Per label", "", _table(m, "label"), "",
        "## Per domain", "", _table(m.assign(domain=m["domain"].replace("", DEFAULT_DOMAIN)), "domain"), "",
        "## Exact duplicates (same pixels)", "",
    ]
    split_of = dict(zip(m["path"], m["split"]))
    lines += [f"- {len(g)} rows in {', '.join(sorted({str(split_of[p]) for p in g}))}"
              + (f", under {n} patient ids" if (n := m.loc[m["path"].isin(g), "patient_id"].nunique()) > 1 else "")
              + ": " + ", ".join(Path(p).name for p in g) for g in r.duplicates] or ["none"]
    if r.shared_files:
        lines += ["", "The same file under more than one patient id:", ""]
        lines += [f"- {Path(p).name}: {n} patient ids" for p, n in r.shared_files]
    lines += ["", "## Patients in more than one split (leakage)", ""]
    lines += [f"- {p}: " + ", ".join(sorted(set(m.loc[m['patient_id'] == p, 'split']))) for p in r.leaking_patients] or ["none"]
    lines += ["", "## Slice geometry corrected (gantry tilt, uneven gaps)", ""]
    lines += [f"- {Path(p).name}: {'; '.join(notes)}" for p, notes in r.geometry.items()] or ["none"]
    lines += ["", "## Quarantined", ""]
    lines += [f"- {Path(p).name}: {why}" for p, why in zip(r.quarantine["path"], r.quarantine["reason"])] or ["none"]
    return "\n".join(lines) + "\n"
