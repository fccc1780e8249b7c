"""MedMNIST's metric definitions, held against scikit-learn and torchmetrics on the same inputs."""

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score
from torchmetrics.functional.classification import multiclass_calibration_error

from medtl.metrics.classification import (NAMES, acc_score, auc_score, bootstrap_ci, classification_metrics, paired_bootstrap_delta,
                                          predicted_labels)
from medtl.metrics.summary import summarize


def _data(rng: np.random.Generator, n: int, k: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]  # informative, not perfect
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if ties:
        p = np.round(p, 1)
        p = p / p.sum(1, keepdims=True)
    return y, p


@pytest.mark.parametrize("k,ties", [(2, False), (2, True), (3, False), (11, False), (11, True)])
def test_metrics_equal_the_reference_libraries(rng, k: int, ties: bool) -> None:
    y, p = _data(rng, 300, k, ties)
    m = classification_metrics(y, p)
    if k == 2:  # MedMNIST: AUC of the class-1 score, ACC at score > 0.5, F1 of class 1
        assert m["auc"] == pytest.approx(roc_auc_score(y, p[:, 1]), abs=1e-12)
        assert m["acc"] == pytest.approx(np.mean((p[:, 1] > 0.5) == y))
        assert m["f1"] == pytest.approx(f1_score(y, p[:, 1] > 0.5))
    else:  # mean one-vs-rest AUC, argmax ACC, macro F1
        assert m["auc"] == pytest.approx(np.mean([roc_auc_score(y == c, p[:, c]) for c in range(k)]), abs=1e-12)
        assert m["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
        assert m["acc"] == pytest.approx(np.mean(p.argmax(1) == y))
        assert m["f1"] == pytest.approx(f1_score(y, p.argmax(1), average="macro", labels=list(range(k)), zero_division=0))
    pred = predicted_labels(p)
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
    if not ties:  # rounded scores sit on bin edges, where torchmetrics' float32 edges and ours (float64) part
        ece = float(multiclass_calibration_error(torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(y), num_classes=k, n_bins=15))
        assert m["ece"] == pytest.approx(ece, abs=1e-6)


def test_binary_threshold_and_sensitivity_by_hand() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    p1 = np.array([0.9, 0.6, 0.5, 0.5, 0.4, 0.7, 0.1])  # 0.5 is not > 0.5: predicted 0
    m = classification_metrics(y, np.stack([1 - p1, p1], 1))
    # predicted 1: rows 0, 1, 5 -> TP 2, FN 1, FP 1, TN 3
    assert m["acc"] == pytest.approx(5 / 7)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["balanced_acc"] == pytest.approx((2 / 3 + 3 / 4) / 2)


def test_auc_undefined_with_one_class() -> None:
    p = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert np.isnan(auc_score(np.array([1, 1]), p))


def test_bootstrap_resamples_patients_not_scans(rng) -> None:
    """Ten scans per patient, identical within a patient: scan resampling pretends to 10x the data."""
    patients = 30
    y_pat = rng.integers(0, 2, patients)
    s_pat = np.clip(0.5 + (y_pat - 0.5) * 0.3 + rng.normal(0, 0.3, patients), 0.01, 0.99)
    y, s = np.repeat(y_pat, 10), np.repeat(s_pat, 10)
    ids = [f"p{i}" for i in np.repeat(np.arange(patients), 10)]
    p = np.stack([1 - s, s], 1)
    by_patient = bootstrap_ci(y, p, ids, n=400, seed=0, names=["auc"])["auc"]
    by_scan = bootstrap_ci(y, p, None, n=400, seed=0, names=["auc"])["auc"]
    point = auc_score(y, p)
    assert by_patient[0] <= point <= by_patient[1]
    assert (by_patient[1] - by_patient[0]) > 2 * (by_scan[1] - by_scan[0])
    assert bootstrap_ci(y, p, ids, n=50, seed=3) == bootstrap_ci(y, p, ids, n=50, seed=3)


def test_patient_draw_keeps_each_patients_scans_together(monkeypatch) -> None:
    """Patients of 1, 2 and 3 scans: a resample of 3 patients has 3 to 9 scans (scan resampling: always 6)."""
    from medtl.metrics import classification as cls

    ids = ["a", "b", "b", "c", "c", "c"]
    y = np.array([0, 1, 1, 0, 0, 0])
    p = np.tile([[0.5, 0.5]], (6, 1))
    sizes, real = [], cls._ResampleStats.metrics
    monkeypatch.setattr(cls._ResampleStats, "metrics",
                        lambda self, w, names: (sizes.extend(w.sum(axis=1).astype(int).tolist()), real(self, w, names))[1])
    bootstrap_ci(y, p, ids, n=40, seed=1, names=["acc"])
    assert len(sizes) == 40
    assert set(sizes) <= set(range(3, 10)) and len(set(sizes)) > 3


def test_summary_names_and_domains(rng) -> None:
    y, p = _data(rng, 80, 2)
    doms = ["a"] * 40 + ["b"] * 40
    out = summarize(y, p, doms, None, "test", n_boot=20)
    for name in NAMES:
        assert {f"test_{name}", f"test_{name}_ci_low", f"test_{name}_ci_high", f"test_{name}.a", f"test_{name}.b"} <= set(out)
    assert out["test_n.a"] == 40
    assert out["test_auc.a"] == pytest.approx(auc_score(y[:40], p[:40]))


def test_metric_registry_by_name(rng) -> None:
    from medtl.metrics.classification import METRICS

    y, p = _data(rng, 50, 3)
    assert tuple(METRICS) == NAMES
    assert {n: f(y, p) for n, f in METRICS.items()} == classification_metrics(y, p)


@pytest.mark.parametrize("k,ties", [(2, False), (2, True), (5, False), (5, True)])
def test_vectorised_bootstrap_equals_metrics_of_each_resample(k: int, ties: bool) -> None:
    """Same draws as a loop of ``classification_metrics`` over ``y[idx]``: the same intervals."""
    rng = np.random.default_rng(k)
    n = 60
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    p = rng.dirichlet(np.ones(k), n)
    if ties:  # rounded scores: many ties, the case ranks must average
        p = np.round(p, 1)
        p[:, 0] = 1 - p[:, 1:].sum(axis=1)
    ids = [f"p{i // 3}" for i in range(n)]
    for groups in (None, ids):
        draws = np.random.default_rng(7)
        if groups is None:
            idx = [draws.integers(0, n, n) for _ in range(200)]
        else:
            from medtl.metrics.classification import _codes

            codes, uniq = _codes(groups)
            order = np.argsort(codes, kind="stable")
            starts = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
            lens = np.diff(starts)
            idx = []
            for _ in range(200):
                g = draws.integers(0, len(uniq), len(uniq))
                idx.append(np.concatenate([order[starts[j]:starts[j] + lens[j]] for j in g]))
        want = {}
        for name in NAMES:
            v = np.array([classification_metrics(y[i], p[i], [name])[name] for i in idx])
            v = v[np.isfinite(v)]
            want[name] = (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975)))
        got = bootstrap_ci(y, p, groups, n=200, seed=7)
        for name in NAMES:
            assert got[name] == pytest.approx(want[name], abs=1e-12), name


def test_paired_bootstrap_delta_equals_a_plain_loop_over_the_same_resamples() -> None:
    """The paired interval from resample counts equals resampling indices and scoring each side with the
    plain metrics; the same scans score both sides, so an arm against itself differs by exactly zero."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 15)
    noisy = lambda s: np.eye(3)[y] + rng.random((45, 3)) * s  # noqa: E731
    base, other = [noisy(2.0), noisy(2.0)], [noisy(0.7)]
    got = paired_bootstrap_delta(y, base, other, n=60, seed=5)
    draw = np.random.default_rng(5)
    diffs = {"auc": [], "acc": []}
    for _ in range(60):
        idx = draw.integers(0, len(y), len(y))
        for k, score in (("auc", auc_score), ("acc", acc_score)):
            diffs[k].append(np.mean([score(y[idx], p[idx]) for p in other]) - np.mean([score(y[idx], p[idx]) for p in base]))
    for k, score in (("auc", auc_score), ("acc", acc_score)):
        point = np.mean([score(y, p) for p in other]) - np.mean([score(y, p) for p in base])
        assert got[k][0] == pytest.approx(point, abs=1e-12)
        assert got[k][1:] == pytest.approx((np.quantile(diffs[k], 0.025), np.quantile(diffs[k], 0.975)), abs=1e-12)
    assert paired_bootstrap_delta(y, base, base, n=30) == {"auc": (0.0, 0.0, 0.0), "acc": (0.0, 0.0, 0.0)}
