"""How far apart two sets of features are, and how far fine-tuning moved a network's features.

Inputs are ``(n, d)`` feature matrices of the same network on two sets of images (source vs target
domain), or of two networks on the same images (CKA). The metrics:

* ``mmd``: squared maximum mean discrepancy with a sum of RBF kernels at several bandwidths
  (multiples of the median pairwise distance, as Gretton et al. 2012 / Long et al. 2015), the
  unbiased U-statistic, with a permutation-test p-value (the pooled rows relabelled at random).
* ``coral``: CORAL distance ``||C_s - C_t||_F^2 / (4 d^2)`` between feature covariances (Sun &
  Saenko 2016).
* ``frechet``: Fréchet distance between Gaussians fitted to the two sets (as FID computes it).
* ``proxy_a_distance``: ``2 (1 - 2 err)`` of a cross-validated domain classifier (Ben-David et al.
  2007; scikit-learn's ridge classifier and ``cross_val_predict``): 0 when the domains cannot
  be told apart, 2 when they always can.
* ``linear_cka``: linear centred kernel alignment (Kornblith et al. 2019) between two
  representations of the same images.

Written by hand where no maintained library computes the metric on arbitrary features: torchmetrics
has no RBF MMD, CORAL or feature-level CKA, and its FID wraps an Inception network. The Fréchet
trace term uses the nuclear norm of ``A B^T`` (A, B the centred samples) when rows are fewer than
features, instead of scipy's ``sqrtm`` of a d x d product: the same number (a test holds it to
scipy's) in O(n^2 d) instead of O(d^3), which matters at d = 1280 for dozens of domains. The proxy A-distance uses scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

BANDWIDTH_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)  # x the median pairwise distance of the pooled sample


def _as64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = a.astype(np.float64, copy=False)
    if a.ndim != 2:
        raise ValueError(f"features must be (n, d), got shape {a.shape}")
    return a


def _kernel(z: np.ndarray, multipliers: tuple[float, ...]) -> np.ndarray:
    """Sum of RBF kernels on the pooled sample, bandwidths scaled by its median pairwise distance."""
    zt = torch.from_numpy(z)
    d2 = torch.cdist(zt, zt).pow(2).numpy()
    off = d2[~np.eye(len(z), dtype=bool)]
    med = float(np.median(off)) if off.size else 1.0
    med = med if med > 0 else 1.0
    return sum(np.exp(-d2 / (2.0 * m * m * med)) for m in multipliers)


def _mmd2_from_kernel(k: np.ndarray, n: int) -> float:
    """Unbiased MMD^2 for the first ``n`` rows against the rest."""
    m = len(k) - n
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(xx + yy - 2.0 * kxy.mean())


@dataclass
class MMDResult:
    mmd: float
    p_value: float
    permutations: int


def mmd(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, permutations: int = 200, seed: int = 0,
        multipliers: tuple[float, ...] = BANDWIDTH_MULTIPLIERS) -> MMDResult:
    """Multi-bandwidth RBF MMD^2 (unbiased) and its permutation-test p-value ((1 + #{perm >= obs}) / (1 + P))."""
    a, b = _as64(x), _as64(y)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("MMD needs at least two rows in each set")
    k = _kernel(np.vstack([a, b]), multipliers)
    n = len(a)
    observed = _mmd2_from_kernel(k, n)
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations):
        idx = rng.permutation(len(k))
        hits += _mmd2_from_kernel(k[np.ix_(idx, idx)], n) >= observed
    return MMDResult(observed, (1 + hits) / (1 + permutations), permutations)


def _cov(a: np.ndarray) -> np.ndarray:
    return np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1])


def coral(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """CORAL distance: squared Frobenius distance of the covariances over 4 d^2."""
    a, b = _as64(x), _as64(y)
    d = a.shape[1]
    return float(np.sum((_cov(a) - _cov(b)) ** 2) / (4.0 * d * d))


def frechet_from_moments(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)`` with scipy's matrix square root (reference)."""
    from scipy.linalg import sqrtm

    r1 = sqrtm(s1)
    cross = sqrtm(r1 @ s2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.real(np.trace(cross)))


def frechet(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to ``x`` and ``y`` (sample means and covariances).

    ``tr((S1^1/2 S2 S1^1/2)^1/2)`` is the sum of the square roots of the eigenvalues of ``S1 S2``,
    which equal the squared singular values of ``A B^T / sqrt((n1-1)(n2-1))`` (A, B the centred
    samples): with more features than rows the trace is that small matrix's nuclear norm; otherwise
    it comes from the symmetric eigendecomposition of the d x d covariances.
    """
    a, b = _as64(x), _as64(y)
    ac, bc = a - a.mean(0), b - b.mean(0)
    n1, n2 = len(a) - 1, len(b) - 1
    if a.shape[1] <= min(len(a), len(b)):  # few features: through the d x d covariances (symmetric eigh)
        w, v = np.linalg.eigh(ac.T @ ac / n1)
        r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        cross = float(np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ (bc.T @ bc / n2) @ r1), 0, None)).sum())
    else:  # many features, few rows: the n1 x n2 cross product's nuclear norm
        cross = float(np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt(n1 * n2))
    tr1, tr2 = float(np.sum(ac * ac) / n1), float(np.sum(bc * bc) / n2)
    return float(max(0.0, np.sum((a.mean(0) - b.mean(0)) ** 2) + tr1 + tr2 - 2.0 * cross))


def proxy_a_distance(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, folds: int = 5, seed: int = 0) -> float:
    """``2 (1 - 2 err)`` from a cross-validated linear domain classifier, floored at 0.

    Balanced sets are drawn (the larger is subsampled) so chance error is 0.5 whatever the sizes.
    """
    a, b = _as64(x), _as64(y)
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    if n < 2:
        raise ValueError(f"proxy A-distance needs at least 2 rows per domain, got {n}")
    folds = min(folds, n)  # tiny domains: fewer folds rather than no answer
    a, b = a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]
    z, dom = np.vstack([a, b]), np.r_[np.zeros(n), np.ones(n)]
    # a ridge classifier: linear like the SVM of Ben-David et al., solved in closed form (logistic regression's
    # iterative fit took seconds per domain on 1280-d features of separable domains)
    clf = make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0))
    pred = cross_val_predict(clf, z, dom, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    err = float(np.mean(pred != dom))
    return float(max(0.0, 2.0 * (1.0 - 2.0 * err)))


def linear_cka(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Linear CKA ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on centred features of the same rows."""
    a, b = _as64(x), _as64(y)
    if len(a) != len(b):
        raise ValueError(f"CKA compares two representations of the same images: {len(a)} vs {len(b)} rows")
    a, b = a - a.mean(0), b - b.mean(0)
    num = np.linalg.norm(b.T @ a) ** 2
    den = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(num / den) if den > 0 else float("nan")


def shift_metrics(source: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, permutations: int = 200,
                  seed: int = 0) -> dict[str, float]:
    """Every distance between two feature sets, named as MLflow's ``shift.*`` metrics (without the prefix).

    NaN throughout when either set has fewer than two rows (nothing to measure a spread on). BLAS runs
    single-threaded here: these matrices are small, and on a busy machine a multi-threaded BLAS
    spinning for cores took the same work from 0.4 s to 4 s (measured, 2 cores, load 8).
    """
    from threadpoolctl import threadpool_limits

    if min(len(source), len(target)) < 2:
        return dict.fromkeys(("mmd", "mmd_p", "coral", "frechet", "proxy_a_distance"), float("nan"))
    with threadpool_limits(1, user_api="blas"):
        m = mmd(source, target, permutations, seed)
        return {"mmd": m.mmd, "mmd_p": m.p_value, "coral": coral(source, target), "frechet": frechet(source, target),
                "proxy_a_distance": proxy_a_distance(source, target, seed=seed)}
