"""Test-time flips and ensembles: one module (``Averaged``) whose softmax is the mean of its members' probabilities."""

import pytest
import torch
from torch import nn

from medtl.models.averaging import Averaged, HeadOverViews, with_tta


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


def test_tta_probabilities_are_the_mean_over_flipped_inputs() -> None:
    net, x = _net(0), torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    p = lambda z: torch.softmax(net(z), 1)  # noqa: E731
    got = torch.softmax(with_tta(net, ["hflip", "vflip"])(x), 1)
    torch.testing.assert_close(got, (p(x) + p(x.flip(3)) + p(x.flip(2))) / 3, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.softmax(with_tta(net, ["hflip"])(x), 1), (p(x) + p(x.flip(3))) / 2, rtol=0, atol=1e-6)
    assert with_tta(net, []) is net  # off: the model itself, its numbers untouched
    assert not torch.allclose(got, p(x), atol=1e-4)  # the flips changed something (the check above could fail)


def test_an_ensemble_is_the_mean_of_its_members_each_over_its_own_flips() -> None:
    a, b, x = _net(0), _net(1), torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    p = lambda m, z: torch.softmax(m(z), 1)  # noqa: E731
    got = torch.softmax(Averaged([a, b], [["vflip"], []])(x), 1)
    want = ((p(a, x) + p(a, x.flip(2))) / 2 + p(b, x)) / 2
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_a_head_over_cached_views_equals_the_model_over_flipped_images() -> None:
    body, head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()).eval(), nn.Linear(4 * 6 * 6, 2)
    x = torch.randn(3, 3, 8, 8)
    feats = torch.stack([body(x), body(x.flip(3))], 1)  # what the frozen arm reads from its feature cache
    torch.testing.assert_close(torch.softmax(HeadOverViews(head)(feats), 1),
                               torch.softmax(with_tta(nn.Sequential(body, head), ["hflip"])(x), 1), rtol=0, atol=1e-6)


def test_an_unknown_flip_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        Averaged([_net(0)], [["rot90"]])
