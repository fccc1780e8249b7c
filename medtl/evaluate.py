"""``medtl evaluate``: a model from any MLflow URI on a manifest, overall and per domain, with intervals.

Metrics use the definitions and the patient-level bootstrap of ``medtl.metrics`` (the same numbers
a comparison logs). A scan that cannot be read costs only its own row: it is reported and left
out, never silently scored. Domain-shift metrics between the manifest's domains belong beside these
(INTERFACE.md); ``domain_shift`` is where they plug in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtl.errors import DataError
from medtl.metrics.classification import METRICS
from medtl.metrics.summary import summarize

PREFIX = "eval"


@dataclass
class Evaluation:
    model_uri: str
    manifest: str
    split: str | None
    classes: list[str]
    domains: list[str]
    metrics: dict[str, float]  # summarize(): eval_<metric>[_ci_low|_ci_high][.<domain>], eval_n[.<domain>]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "error"} per unreadable scan
    shift: dict[str, float] | None = None  # domain-shift metrics; None until ``domain_shift`` computes them

    def _part(self, suffix: str) -> dict[str, Any]:
        m = self.metrics
        out: dict[str, Any] = {"n": int(m[f"{PREFIX}_n{suffix}"])}
        for name in METRICS:
            out[name] = _num(m[f"{PREFIX}_{name}{suffix}"])
            out[f"{name}_ci"] = [_num(m[f"{PREFIX}_{name}_ci_low{suffix}"]), _num(m[f"{PREFIX}_{name}_ci_high{suffix}"])]
        return out

    def as_dict(self) -> dict[str, Any]:
        per_domain = {d: self._part(f".{d}") for d in self.domains} if len(self.domains) > 1 else {}
        return {"model_uri": self.model_uri, "manifest": self.manifest, "split": self.split, "classes": self.classes,
                "overall": self._part(""), "domains": per_domain, "shift": self.shift, "skipped": self.skipped}

    def table(self) -> pd.DataFrame:
        """One row for all scans and one per domain; each metric beside its 95% interval."""
        d = self.as_dict()
        rows = [("all", d["overall"])] + list(d["domains"].items())
        out = []
        for name, part in rows:
            row: dict[str, Any] = {"domain": name, "n": part["n"]}
            for m in METRICS:
                row[m] = part[m]
                if m in ("auc", "acc"):
                    row[f"{m}_ci"] = tuple(part[f"{m}_ci"])
            out.append(row)
        return pd.DataFrame(out)


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def domain_shift(classifier: Any, items: pd.DataFrame) -> dict[str, float] | None:
    """Domain-shift metrics (``shift.mmd``, ``shift.coral``, ``shift.frechet``, ``shift.proxy_a_distance``)
    between the manifest's domains, on the classifier's backbone features.

    The hook for the domain-shift work (a later issue): it returns None, and ``medtl evaluate`` shows
    no shift numbers, until that code computes real ones here.
    """
    return None


def evaluate(classifier: Any, manifest: str | Path, split: str | None = None, n_boot: int = 1000, seed: int = 0,
             model_uri: str = "") -> Evaluation:
    from medtl.data.manifest import read_manifest

    df = read_manifest(manifest)
    if split is not None:
        if "split" not in df.columns:
            raise DataError(manifest, f"no 'split' column, so --split {split} selects nothing")
        df = df[df["split"] == split]
        if df.empty:
            raise DataError(manifest, f"no rows in split '{split}'")
    index = {str(c): i for i, c in enumerate(classifier.classes)}
    unknown = sorted(set(df["label"].astype(str)) - set(index))
    if unknown:
        raise DataError(manifest, f"label(s) {unknown} unknown to the model (its classes: {list(classifier.classes)})")
    probs, errors = classifier.predict_each(df["path"].tolist())
    ok = np.array([e is None for e in errors], bool)
    skipped = [{"path": p, "error": e} for p, e in zip(df["path"], errors) if e is not None]
    if not ok.any():
        raise DataError(manifest, f"none of the {len(df)} scans could be read (first: {skipped[0]['error']})")
    kept = df[ok].reset_index(drop=True)
    y = np.array([index[str(v)] for v in kept["label"]])
    metrics = summarize(y, probs[ok], kept["domain"].tolist(), kept["patient_id"].tolist(), PREFIX, n_boot, seed)
    domains = sorted(set(kept["domain"]))
    return Evaluation(model_uri, str(manifest), split, list(classifier.classes), domains, metrics, skipped,
                      domain_shift(classifier, kept))
