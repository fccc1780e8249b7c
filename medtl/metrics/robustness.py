"""Robustness in MedMNIST-C's terms (Di Salvo et al. 2024; ``medmnistc.eval.Evaluator``).

Balanced error ``E = 1 - balanced accuracy`` (binary at a score of 0.5, multi-class by argmax). Per
corruption c, with ``E_c`` the mean over its severities: ``BE_c = E_c / E_c(AlexNet)`` and
``rBE_c = (E_c - E_clean) / (E_c(AlexNet) - E_clean(AlexNet))``; ``BE`` and ``rBE`` are their means
over corruptions. AlexNet's errors are the package's published baselines
(``medtl.data.corruptions.ALEXNET``). Without a baseline for the dataset, only the raw errors are given.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np

from medtl.data.corruptions import ALEXNET, parse_domain


def balanced_errors(balanced_acc: Mapping[str, float]) -> dict[str, float]:
    return {d: 1.0 - v for d, v in balanced_acc.items()}


def robustness(errors: Mapping[str, float], clean_error: float, dataset: str | None = None) -> dict[str, float]:
    """``error.<c>``, ``be.<c>``, ``rbe.<c>``, ``be``, ``rbe`` from each corruption domain's balanced error."""
    per: dict[str, list[float]] = defaultdict(list)
    for domain, err in errors.items():
        parsed = parse_domain(domain)
        if parsed is not None:
            per[parsed[0]].append(err)
    out: dict[str, float] = {"error.clean": float(clean_error)}
    base = ALEXNET.get(dataset or "")
    be, rbe = [], []
    for c, errs in per.items():
        e = float(np.mean(errs))
        out[f"error.{c}"] = e
        if base is not None and c in base["corrupted"]:
            a = base["corrupted"][c]
            out[f"be.{c}"] = e / a
            out[f"rbe.{c}"] = (e - clean_error) / (a - base["clean"])
            be.append(out[f"be.{c}"])
            rbe.append(out[f"rbe.{c}"])
    if be:
        out["be"], out["rbe"] = float(np.mean(be)), float(np.mean(rbe))
    return out
