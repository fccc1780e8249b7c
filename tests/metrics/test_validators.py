"""Label-free validators: SND, entropy and DEV on inputs whose answer is known."""

import numpy as np
import pytest
import torch

from medtl.metrics.validators import dev, dev_risk, importance_weights, neg_entropy, pick, snd, validator_scores


def _snd_reference(probs: np.ndarray, t: float) -> float:
    """The formula pytorch-adapt's tests hold its SNDValidator to."""
    p = torch.nn.functional.normalize(torch.as_tensor(probs, dtype=torch.float64), dim=1)
    sim = p @ p.T
    n = len(sim)
    sim = sim[~torch.eye(n, dtype=torch.bool)].view(n, n - 1)
    q = torch.softmax(sim / t, dim=1)
    return float(-(q * torch.log(q)).sum(1).mean())


def test_snd_higher_for_clustered_than_random_predictions() -> None:
    rng = np.random.default_rng(0)
    clustered = np.repeat(np.eye(3) * 0.9 + 0.1 / 3, 20, axis=0) + rng.normal(0, 0.01, (60, 3))
    clustered = np.clip(clustered, 1e-3, None)
    clustered /= clustered.sum(1, keepdims=True)
    scattered = rng.dirichlet(np.ones(3) * 0.5, 60)
    assert snd(clustered) > snd(scattered)
    assert snd(scattered) == pytest.approx(_snd_reference(scattered, 0.05), rel=1e-9)
    with pytest.raises(ValueError, match="three"):
        snd(clustered[:2])


def test_neg_entropy() -> None:
    assert neg_entropy(np.full((4, 2), 0.5)) == pytest.approx(-np.log(2))
    assert neg_entropy(np.array([[1.0, 0.0]])) == pytest.approx(0.0, abs=1e-9)


def test_dev_risk_known_answers() -> None:
    losses = np.array([0.2, 0.4, 0.9, 0.1])
    assert dev_risk(losses, np.ones(4)) == pytest.approx(losses.mean())  # no shift: the plain validation loss
    # a constant loss: the control variate cancels the weights' noise exactly
    assert dev_risk(np.ones(3), np.array([1.0, 2.0, 3.0])) == pytest.approx(1.0)


def test_importance_weights_recover_the_density_ratio() -> None:
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(0, 1, (2000, 1)), rng.normal(1, 1, (2000, 1))
    w = importance_weights(xs, xt, seed=0)
    true = np.exp(xs[:, 0] - 0.5)  # N(1,1) / N(0,1)
    core = np.abs(xs[:, 0]) < 1.5
    assert np.median(np.abs(np.log(w[core] / true[core]))) < 0.1
    # DEV of a classifier that is right near the target and wrong far from it is worse than its plain source loss
    probs = np.where(xs > 0.5, 0.9, 0.6)
    probs = np.hstack([1 - probs, probs])
    labels = np.where(xs[:, 0] > 0.5, 1, 0)  # right (p 0.9) above 0.5, wrong (p 0.4 on the truth) below
    plain = float(-np.log(probs[np.arange(len(labels)), labels]).mean())
    assert dev(xs, probs, labels, xt) < plain  # the target lives where the model is right


def test_validator_scores_and_pick() -> None:
    rng = np.random.default_rng(1)
    probs_t = rng.dirichlet(np.ones(2), 20)
    s = validator_scores(0.8, probs_t)
    assert set(s) == {"source_val", "snd", "entropy"} and s["source_val"] == 0.8
    scores = {"a": {"source_val": 0.9, "dev": 0.5}, "b": {"source_val": 0.7, "dev": 0.3}, "c": {"source_val": float("nan")}}
    assert pick(scores, "source_val") == "a" and pick(scores, "dev") == "b"  # dev is a risk: lower wins
    assert pick(scores, "snd") is None
