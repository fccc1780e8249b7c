"""The manifest CSV (INTERFACE.md): path, label, patient_id, domain, split; extra columns kept.

Patient ids are replaced by their keyed hash as soon as a manifest is read, so nothing
downstream (splits, reports, MLflow) ever holds the raw identifier.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from medtl.data.readers import npz_ref
from medtl.data.readers.series_ref import series_ref
from medtl.errors import DataError
from medtl.privacy import hash_id, is_hashed

REQUIRED = ("path", "label", "patient_id")
SPLITS = ("train", "val", "test")
DEFAULT_DOMAIN = "all"


def read_csv_text(p: Path, what: str) -> pd.DataFrame:
    """A CSV of text cells (no value turned into NaN or a number), or a one-line ``DataError`` naming it."""
    if not p.is_file():
        raise DataError(p, f"{what} not found")
    try:
        return pd.read_csv(p, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001
        raise DataError(p, f"not a readable CSV ({' '.join(str(e).split())[:120]})") from None


def read_manifest(path: str | Path, require_split: bool = False) -> pd.DataFrame:
    """Read and check a manifest; ``path`` is resolved, ``patient_id`` hashed, ``domain`` filled."""
    p = Path(path)
    df = read_csv_text(p, "manifest")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(p, f"missing column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    if df.empty:
        raise DataError(p, "manifest has no rows")
    empty = df.index[(df["path"].str.strip() == "") | (df["label"].str.strip() == "")]
    if len(empty):
        raise DataError(p, f"row {int(empty[0]) + 2}: empty path or label")
    df = df.copy()
    df["path"] = [str(_resolve(p.parent, v)) for v in df["path"]]
    df["patient_id"] = [v if is_hashed(v) else hash_id(v) for v in df["patient_id"]]
    if "domain" not in df.columns:
        df["domain"] = DEFAULT_DOMAIN
    df["domain"] = df["domain"].replace("", DEFAULT_DOMAIN)
    if "split" in df.columns:
        bad = sorted(set(df["split"]) - set(SPLITS) - {""})
        if bad:
            raise DataError(p, f"unknown split value(s) {bad} (use train, val, test)")
    elif require_split:
        raise DataError(p, "no 'split' column: run `medtl curate MANIFEST --out DIR` and use DIR/manifest.csv")
    return df


def _resolve(base: Path, value: str) -> Path:
    """Absolute, but a symlink stays the path the manifest gave (never its target; a loop never raises)."""
    q = Path(value)
    return q if q.is_absolute() else Path(os.path.abspath(base / q))


def class_names(labels: pd.Series | list[str]) -> list[str]:
    """Sorted class names; numerically when every label is an integer (MedMNIST's 0..K-1)."""
    uniq = sorted(set(map(str, labels)))
    if all(u.lstrip("-").isdigit() for u in uniq):
        return sorted(uniq, key=int)
    return uniq


def missing_classes(labels_by_split: dict[str, list[str]], classes: list[str]) -> dict[str, list[str]]:
    """Per split, the classes it has no row of (splits that have them all are left out)."""
    out = {split: [c for c in classes if c not in set(map(str, labels))] for split, labels in labels_by_split.items()}
    return {split: gone for split, gone in out.items() if gone}


def data_fingerprint(df: pd.DataFrame) -> str:
    """Hash of what the rows point at (path, size, mtime) and their labels and splits."""
    h = hashlib.sha256()
    for row in df[[c for c in ("path", "label", "split", "domain") if c in df.columns]].itertuples(index=False):
        ref = npz_ref(row[0]) or series_ref(row[0])  # FILE.npz#SPLIT/INDEX, FOLDER#series/KEY: the file's or folder's
        path = ref[0] if ref else Path(row[0])
        stat = ""
        if path.exists():
            st = path.stat()
            stat = f"{st.st_size}:{st.st_mtime_ns}"
        h.update(("|".join(map(str, row)) + "|" + stat + "\n").encode())
    return h.hexdigest()

