"""The one loop's seams for strategies that learn from a target site: a target stream and extra losses."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medtl.models.transfer import create_model
from medtl.training.extra_loss import ExtraLoss, Step
from medtl.training.loop import Checkpointer, FitOptions, fit
from medtl.training.schedule import all_at
from tests.conftest import same_state, state_of, toy_loaders


def _model():  # noqa: ANN202
    torch.manual_seed(0)
    model, _ = create_model("tiny", num_classes=2)
    return model, model.groups()


def _train(extra: ExtraLoss | None = None, target=None, ckpt=None):  # noqa: ANN001, ANN202
    model, groups = _model()
    train, val = toy_loaders()
    schedule = all_at(tuple(groups), 2, 1e-2, "cosine", warmup=0.5)
    result = fit(model, groups, schedule, train, val, FitOptions(seed=3), ckpt, target=target, extra=extra)
    return model, result


class Recorder(ExtraLoss):
    """Plain cross-entropy training (no added term beyond a zero), recording what each step offered."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[Step] = []

    def forward(self, model: nn.Module, step: Step):  # noqa: ANN201
        self.steps.append(step)
        logits = model(step.x)
        return logits, {"nothing": logits.sum() * 0.0}


class Discriminator(ExtraLoss):
    """A domain classifier on pooled features, with parameters of its own (as DANN's)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(32, 2)

    def forward(self, model: nn.Module, step: Step):  # noqa: ANN201
        feats = model.features(torch.cat([step.x, step.target]))
        domain = torch.cat([torch.zeros(len(step.x)), torch.ones(len(step.target))]).long()
        n = len(step.x)
        return model.head(feats[:n]), {"domain": 0.1 * nn.functional.cross_entropy(self.net(feats), domain)}


def test_an_extra_loss_that_adds_nothing_trains_bit_identically_and_is_logged() -> None:
    plain, plain_result = _train()
    rec = Recorder()
    hooked, result = _train(rec)
    assert same_state(state_of(plain), state_of(hooked))
    assert [{k: v for k, v in r.items() if k != "nothing_loss"} for r in result.history] == plain_result.history
    assert [r["nothing_loss"] for r in result.history] == [0.0, 0.0]
    assert all(s.target is None for s in rec.steps)
    progress = [s.progress for s in rec.steps]
    assert progress == sorted(progress) and progress[0] == 0.0 and progress[-1] < 1.0 and [s.epoch for s in rec.steps][-1] == 1


def test_the_target_stream_is_cycled_beside_the_source_batches(tmp_path) -> None:
    g = torch.Generator().manual_seed(5)
    target_images = torch.randn(12, 3, 32, 32, generator=g)
    target = DataLoader(TensorDataset(target_images), batch_size=5)  # 3 batches (5, 5, 2) against 4 source batches
    disc = Discriminator()
    before = state_of(disc)
    _, result = _train(disc, target, Checkpointer(tmp_path))
    assert not same_state(before, state_of(disc)), "the discriminator's own parameters did not train"
    assert all(r["domain_loss"] > 0 for r in result.history)
    assert same_state(torch.load(tmp_path / "last.pt", weights_only=True)["extra"], state_of(disc))

    rec = Recorder()
    seen: list[torch.Tensor] = []
    rec.forward = lambda model, step: (seen.append(step.target), Recorder.forward(rec, model, step))[1]  # type: ignore[method-assign]
    _train(rec, target)
    first_epoch = seen[:4]
    assert [len(t) for t in first_epoch] == [5, 5, 2, 5]  # round again after the last target batch
    assert torch.equal(first_epoch[3], first_epoch[0]) and torch.equal(first_epoch[0], target_images[:5])


def test_a_target_stream_without_an_extra_loss_is_refused() -> None:
    target = DataLoader(TensorDataset(torch.zeros(4, 3, 32, 32)), batch_size=2)
    with pytest.raises(ValueError, match="target stream needs an extra loss"):
        _train(None, target)
