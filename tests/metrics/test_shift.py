"""Shift metrics on features whose answer is known."""

import numpy as np
import pytest
from scipy.stats import ortho_group

from medtl.metrics.shift import coral, frechet, frechet_from_moments, linear_cka, mmd, proxy_a_distance, shift_metrics


@pytest.fixture(scope="module")
def same():
    rng = np.random.default_rng(1)
    return rng.normal(size=(150, 16)), rng.normal(size=(150, 16))


@pytest.fixture(scope="module")
def shifted():
    rng = np.random.default_rng(2)
    return rng.normal(size=(150, 16)), rng.normal(size=(150, 16)) + 1.5


def test_identical_distributions_are_not_told_apart(same) -> None:
    x, y = same
    r = mmd(x, y, permutations=200)
    assert abs(r.mmd) < 0.02 and r.p_value > 0.05
    assert proxy_a_distance(x, y) < 0.35


def test_shifted_distributions_are(shifted) -> None:
    x, y = shifted
    r = mmd(x, y, permutations=200)
    assert r.mmd > 0.1 and r.p_value < 0.01
    assert r.p_value == pytest.approx(1 / 201)  # no permutation reached the observed value
    assert proxy_a_distance(x, y) > 1.8


def test_mmd_p_value_is_calibrated_under_the_null() -> None:
    """Under H0 the permutation p-value is uniform: about 5% of repeats fall under 0.05."""
    rng = np.random.default_rng(3)
    ps = [mmd(rng.normal(size=(30, 4)), rng.normal(size=(30, 4)), permutations=99, seed=i).p_value for i in range(60)]
    assert 0.3 < np.mean(ps) < 0.7
    assert np.mean(np.array(ps) < 0.05) <= 0.15


def test_coral_is_zero_for_equal_covariances_and_grows_with_the_difference() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 8))
    assert coral(x, x + 5.0) == pytest.approx(0.0, abs=1e-12)  # a mean shift leaves covariances equal
    assert coral(x, x @ ortho_group.rvs(8, random_state=0) * 1.0) < coral(x, 3.0 * x)
    d = 8
    expected = np.sum((np.cov(x, rowvar=False) * (1 - 9)) ** 2) / (4 * d * d)
    assert coral(x, 3.0 * x) == pytest.approx(expected)


def test_frechet_matches_the_closed_form_for_two_gaussians() -> None:
    rng = np.random.default_rng(5)
    d = 6
    mu1, mu2 = np.zeros(d), np.linspace(0, 1, d)
    s1, s2 = np.diag(np.linspace(0.5, 2, d)), np.diag(np.linspace(2, 0.5, d))
    closed = float(np.sum((mu1 - mu2) ** 2) + np.sum(np.diag(s1) + np.diag(s2) - 2 * np.sqrt(np.diag(s1) * np.diag(s2))))
    assert frechet_from_moments(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-9)
    x = rng.multivariate_normal(mu1, s1, size=20000)
    y = rng.multivariate_normal(mu2, s2, size=20000)
    assert frechet(x, y) == pytest.approx(closed, rel=0.03)


def test_frechet_equals_the_sqrtm_formula_on_sample_moments() -> None:
    """The nuclear-norm trace equals scipy's sqrtm route, also when n < d (rank-deficient covariances)."""
    rng = np.random.default_rng(6)
    for n, d in ((300, 10), (20, 40)):
        x, y = rng.normal(size=(n, d)), rng.normal(size=(n + 7, d)) * 1.3 + 0.2
        ref = frechet_from_moments(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
        assert frechet(x, y) == pytest.approx(ref, rel=1e-6, abs=1e-6)
    assert frechet(x, x) == pytest.approx(0.0, abs=1e-8)


def test_cka_is_one_on_itself_and_invariant_to_rotation_and_scale() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(100, 12))
    q = ortho_group.rvs(12, random_state=1)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x @ q) == pytest.approx(1.0)
    assert linear_cka(x, 7.5 * x) == pytest.approx(1.0)
    y = rng.normal(size=(100, 20))
    assert linear_cka(x, y @ np.eye(20)) == pytest.approx(linear_cka(x, 3.0 * y @ ortho_group.rvs(20, random_state=2)))
    assert linear_cka(x, y) < 0.5  # independent features are far from 1
    with pytest.raises(ValueError, match="same images"):
        linear_cka(x, y[:50])


def test_shift_metrics_names(shifted) -> None:
    out = shift_metrics(*shifted, permutations=20)
    assert set(out) == {"mmd", "mmd_p", "coral", "frechet", "proxy_a_distance"}
    assert all(np.isfinite(v) for v in out.values())
