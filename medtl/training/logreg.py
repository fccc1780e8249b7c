"""A scikit-learn logistic regression on cached features, folded into the ``nn.Linear`` head every frozen arm has.

The usual linear probe of the literature (CLIP's, SimCLR's): features standardised, L2-regularised
multinomial logistic regression by L-BFGS to convergence, its C chosen by cross-validation on the
training split alone (folds stratified and patient-level, like every split), so validation and test
labels never choose it. The fitted model is then an ``nn.Linear`` (standardisation and weights
folded together), so the arm predicts, is tracked, registered and served like any frozen arm.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

from medtl.errors import ConfigError


@dataclass
class LogRegFit:
    head: torch.nn.Linear
    C: float  # the regularisation cross-validation chose
    folds: int  # the folds it used (fewer than asked when a class has fewer patients)


def fold_linear(scaler: StandardScaler, coef: np.ndarray, intercept: np.ndarray, num_classes: int) -> torch.nn.Linear:
    """``nn.Linear`` whose softmax equals the classifier's ``predict_proba`` on raw features.

    ``coef @ ((x - mean) / scale) + b`` is ``(coef / scale) @ x + (b - coef @ (mean / scale))``; a binary
    classifier's one logit z becomes the pair (-z/2, z/2), whose softmax is (1 - sigmoid(z), sigmoid(z)).
    Folded in float64, stored in float32.
    """
    w = np.asarray(coef, np.float64) / scaler.scale_
    b = np.asarray(intercept, np.float64) - w @ scaler.mean_
    if num_classes == 2 and w.shape[0] == 1:
        w, b = np.concatenate([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
    head = torch.nn.Linear(w.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w))
        head.bias.copy_(torch.from_numpy(b))
    return head


# scikit-learn >= 1.8 asks for the L2 penalty as l1_ratios=(0,) and warns about its attributes' future shape;
# older releases (pyproject allows 1.4) know neither keyword
_MODERN = {k: v for k, v in {"l1_ratios": (0.0,), "use_legacy_attributes": False}.items()
           if k in inspect.signature(LogisticRegressionCV).parameters}
SCORING = {"auc": ("roc_auc", "roc_auc_ovr"), "log_loss": ("neg_log_loss", "neg_log_loss")}  # (binary, multi-class)


def check_logreg_folds(rows: Sequence[dict[str, Any]], classes: Sequence[str], setting: str) -> None:
    """Refuse training rows in which a class has fewer than two patients: C could not be cross-validated."""
    patients: list[set[str]] = [set() for _ in classes]
    for r in rows:
        patients[int(r["label"])].add(str(r["patient"]))
    fewest = min(range(len(classes)), key=lambda c: len(patients[c]))
    if len(patients[fewest]) < 2:
        raise ConfigError(setting, f"class '{classes[fewest]}' has {len(patients[fewest])} patient(s) in the training "
                                   "split: too few to cross-validate C (use head linear)")


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, patients: Sequence[str] | None = None,
               class_weights: torch.Tensor | None = None, cs: int = 10, folds: int = 5, seed: int = 0,
               scoring: str = "auc", setting: str = "logreg_folds") -> LogRegFit:
    """Fit on the training split's features ``x`` and labels ``y`` only; C from ``cs`` values log-spaced over
    1e-4..1e4, scored by ``scoring`` (auc, as arms are selected; or log_loss) over ``folds`` stratified folds
    grouped by ``patients`` (None: one per image)."""
    xs, ys = x.double().numpy(), y.numpy()
    groups = np.asarray(patients if patients is not None else np.arange(len(ys)))
    per_class = [len(np.unique(groups[ys == c])) for c in range(num_classes)]
    k = min(folds, min(per_class))
    if k < 2:
        raise ConfigError(setting, f"a class has {min(per_class)} patient(s) in the training split: too few to "
                                   "cross-validate C (use head linear)")
    splits = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed % 2**32).split(xs, ys, groups))
    scaler = StandardScaler().fit(xs)
    weight = None if class_weights is None else {c: float(w) for c, w in enumerate(class_weights.tolist())}
    clf = LogisticRegressionCV(Cs=np.logspace(-4, 4, cs) if cs > 1 else [1.0], cv=splits, max_iter=2000,
                               scoring=SCORING[scoring][num_classes > 2], class_weight=weight, random_state=seed % 2**32,
                               **_MODERN)
    clf.fit(scaler.transform(xs), ys)
    return LogRegFit(fold_linear(scaler, clf.coef_, clf.intercept_, num_classes), float(np.ravel(clf.C_)[0]), k)
