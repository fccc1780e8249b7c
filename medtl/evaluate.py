"""``medtl evaluate``: a model from any MLflow URI on a manifest, overall and per domain, with intervals.

Metrics use the definitions and the patient-level bootstrap of ``medtl.metrics`` (the same numbers
a comparison logs). A scan that cannot be read costs only its own row: it is reported and left
out, never silently scored. Domain-shift metrics between the manifest's domains belong beside these
(INTERFACE.md); ``domain_shift`` is where they plug in.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtl.errors import DataError, MedtlWarning
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
    shift: dict[str, Any] | None = None  # {"reference": domain, "shift.<m>[.<domain>]": value} (``domain_shift``); None with one domain
    rows_scored: str = ""  # which rows, in words: "the test split", "every row (no split column)", ...

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

    def shift_table(self) -> pd.DataFrame:
        """One row per comparison with the reference domain (all others pooled, then each): the distances."""
        if not self.shift:
            return pd.DataFrame()
        keys = [k for k in self.shift if k.startswith("shift.")]
        names = list(dict.fromkeys(k.split(".")[1] for k in keys))
        others = list(dict.fromkeys(k.split(".", 2)[2] for k in keys if k.count(".") >= 2))
        rows = [{"vs": "others pooled", **{n: self.shift.get(f"shift.{n}") for n in names}}]
        rows += [{"vs": d, **{n: self.shift.get(f"shift.{n}.{d}") for n in names}} for d in others]
        return pd.DataFrame(rows)

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


def domain_shift(classifier: Any, items: pd.DataFrame, max_items: int = 200, permutations: int = 200,
                 seed: int = 0) -> dict[str, Any] | None:
    """Feature distances between the manifest's domains, on the model's penultimate features.

    The reference is the domain with the most scans (the first by name on ties): ``shift.<m>`` against all
    other domains pooled, ``shift.<m>.<domain>`` against each (m: mmd, mmd_p, coral, frechet,
    proxy_a_distance; ``medtl.metrics.shift``), on at most ``max_items`` scans per domain (a seeded draw).
    None with a single domain.
    """
    import torch

    from medtl.metrics.shift import shift_metrics

    counts = items["domain"].value_counts()
    if len(counts) < 2:
        return None
    reference = sorted(counts.index, key=lambda d: (-counts[d], d))[0]
    rng = np.random.default_rng(seed)
    picked = {d: sorted(rng.choice(np.flatnonzero(items["domain"].to_numpy() == d), min(int(counts[d]), max_items),
                                   replace=False).tolist()) for d in sorted(counts.index)}
    feats: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for d, idx in picked.items():
            xs = [classifier._prepare(items["path"].iloc[i]) for i in idx]
            feats[d] = torch.cat([classifier.model.features(torch.stack(xs[j:j + 16])) for j in range(0, len(xs), 16)]).numpy()
    others = [d for d in feats if d != reference]
    pooled = np.vstack([feats[d] for d in others])
    pooled = pooled[rng.choice(len(pooled), min(len(pooled), max_items), replace=False)]
    out = {f"shift.{k}": v for k, v in shift_metrics(feats[reference], pooled, permutations, seed).items()}
    for d in others:
        out.update({f"shift.{k}.{d}": v for k, v in shift_metrics(feats[reference], feats[d], permutations, seed).items()})
    return {"reference": reference, **{k: _num(v) for k, v in out.items()}}


def evaluate(classifier: Any, manifest: str | Path, split: str | None = None, n_boot: int = 1000, seed: int = 0,
             model_uri: str = "") -> Evaluation:
    from medtl.data.manifest import read_manifest

    df = read_manifest(manifest)
    df, split, rows_scored = _rows_to_score(df, manifest, split)
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
    shift = domain_shift(classifier, kept, seed=seed)
    return Evaluation(model_uri, str(manifest), split, list(classifier.classes), domains, metrics, skipped, shift, rows_scored)


def _rows_to_score(df: pd.DataFrame, manifest: str | Path, split: str | None) -> tuple[pd.DataFrame, str | None, str]:
    """The rows an evaluation scores: the test split by default when the manifest has splits (a model
    scored on rows it trained on looks better than it is), ``all`` for every row, with a warning
    whenever training rows are among them."""
    has_split = "split" in df.columns and df["split"].astype(str).str.strip().ne("").any()
    if split is None:
        split = "test" if has_split else "all"
    if split == "all":
        n_train = int((df["split"] == "train").sum()) if has_split else 0
        words = "every row (no split column)" if not has_split else "every row, all splits"
    else:
        if not has_split:
            raise DataError(manifest, f"no 'split' column, so --split {split} selects nothing (--split all scores every row)")
        df = df[df["split"] == split]
        if df.empty:
            raise DataError(manifest, f"no rows in split '{split}' (--split all scores every row)")
        n_train = len(df) if split == "train" else 0
        words = f"the {split} split"
    if n_train:
        warnings.warn(f"{manifest}: scoring {n_train} row(s) of the train split; a model scores better on scans it "
                      "was trained on, so these numbers overstate it (the default is the test split)", MedtlWarning, stacklevel=3)
    return df, split, words
