"""Fine-tuning regularisers of the one loop: label smoothing and mixup / CutMix (train.label_smoothing, train.mixup)."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn
from torchvision.transforms import v2

from medtl.config import load_config
from medtl.experiment.run import compare
from medtl.models.transfer import create_model
from medtl.training import loop
from medtl.training.distributed import SINGLE
from medtl.training.loop import FitOptions, fit
from medtl.training.mixing import BatchMixer
from medtl.training.schedule import all_at
from tests.conftest import same_state, state_of, tiny_config, toy_loaders

WEIGHTS = torch.tensor([0.7, 1.9])


def _fit(opts: FitOptions, epochs: int = 1, n: int = 8, batch: int = 8):  # noqa: ANN202
    """The tiny model (its head drawn from seed 0) fine-tuned on the toy task; its initial state, result and a batch."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, _ = create_model("tiny", num_classes=2)
    start = state_of(model)
    groups = model.groups()
    train, val = toy_loaders(n, batch)
    result = fit(model, groups, all_at(tuple(groups), epochs, 1e-2, "constant"), train, val, opts)
    return model, start, result, next(iter(val))


def test_label_smoothing_trains_on_torchs_smoothed_loss() -> None:
    """One batch, one epoch: the logged training loss is torch's smoothed, class-weighted cross-entropy of the
    initial model's logits; unweighted, it is the textbook formula."""
    for weights in (WEIGHTS, None):
        model, start, result, (x, y) = _fit(FitOptions(label_smoothing=0.2, class_weights=weights, amp=False))
        model.load_state_dict(start)
        model.train()
        with torch.no_grad():
            logits = model(x)
        expected = nn.CrossEntropyLoss(weight=weights, label_smoothing=0.2)(logits, y)
        assert result.history[0]["train_loss"] == pytest.approx(float(expected), rel=1e-5)
        assert float(expected) != pytest.approx(float(nn.CrossEntropyLoss(weight=weights)(logits, y)), rel=1e-3)
        if weights is None:
            logp = torch.log_softmax(logits, 1)
            by_hand = -(0.8 * logp.gather(1, y[:, None]).squeeze(1) + 0.2 * logp.mean(1)).mean()
            assert float(expected) == pytest.approx(float(by_hand), rel=1e-6)


def test_mixed_loss_is_the_mixup_criterion_and_ddp_normalises_alike() -> None:
    """A mixed batch's loss is lambda * loss(y) + (1 - lambda) * loss(y paired), with class weights and label
    smoothing; under torchrun the per-rank share (here one rank) is the same number."""
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 2, generator=g), torch.tensor([0, 1, 1, 0, 1, 1])
    lam = 0.3
    soft = lam * nn.functional.one_hot(y, 2).float() + (1 - lam) * nn.functional.one_hot(y.roll(1), 2).float()
    loss_fn = nn.CrossEntropyLoss(weight=WEIGHTS, label_smoothing=0.1)
    criterion = lam * loss_fn(logits, y) + (1 - lam) * loss_fn(logits, y.roll(1))
    assert float(loop._mean_loss(logits, soft, loss_fn)) == pytest.approx(float(criterion), rel=1e-6)
    onehot = nn.functional.one_hot(y, 2).float()
    assert float(loop._mean_loss(logits, onehot, loss_fn)) == pytest.approx(float(loss_fn(logits, y)), rel=1e-6)
    for target in (y, soft):
        share, mean, n = loop._global_mean_loss(logits, target, loss_fn, SINGLE, torch.device("cpu"))
        assert float(share) == pytest.approx(float(loop._mean_loss(logits, target, loss_fn)), rel=1e-6)
        assert mean == pytest.approx(float(share), rel=1e-6) and n == 6


@pytest.mark.parametrize("mode", ["mixup", "cutmix", "either"])
def test_mixed_targets_are_convex_combinations_of_paired_labels(mode: str) -> None:
    torch.manual_seed(1)
    x = MetaTensor(torch.rand(8, 3, 32, 32))  # what MONAI's loaders yield
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    mixed, soft = BatchMixer(3, alpha=1.0, mode=mode)(x, y)
    assert soft is not None and soft.shape == (8, 3) and not torch.equal(mixed, x.as_tensor())
    assert torch.all(soft >= 0) and torch.allclose(soft.sum(1), torch.ones(8))
    lam = float(soft[0, y[0]])  # pairs differ in label here: the own label's share is lambda
    paired = y.roll(1)
    assert torch.allclose(soft, lam * nn.functional.one_hot(y, 3) + (1 - lam) * nn.functional.one_hot(paired, 3), atol=1e-6)
    if mode == "mixup":
        assert torch.allclose(mixed, lam * x.as_tensor() + (1 - lam) * x.as_tensor().roll(1, 0), atol=1e-6)
    elif mode == "cutmix":  # every pixel is one image's or its pair's; lambda is the share of its own
        own = (mixed == x.as_tensor()).all(1)
        assert torch.all(own | (mixed == x.as_tensor().roll(1, 0)).all(1))
        assert float(own[0].float().mean()) == pytest.approx(lam, abs=1e-6)


def test_mixup_off_or_never_drawn_changes_nothing() -> None:
    """prob 0 trains bit-identically to no mixup; a single image is never mixed."""
    model_a, _, res_a, _ = _fit(FitOptions(amp=False, class_weights=WEIGHTS), epochs=2, n=32)
    model_b, _, res_b, _ = _fit(FitOptions(amp=False, class_weights=WEIGHTS, mixup=BatchMixer(2, 0.4, prob=0.0)), epochs=2, n=32)
    assert same_state(state_of(model_a), state_of(model_b)) and res_a.history == res_b.history
    x, y = torch.rand(1, 3, 8, 8), torch.tensor([1])
    assert BatchMixer(2, 0.4)(x, y) == (x, None)


def test_mixup_in_the_limit_of_one_image_equals_no_mixup(monkeypatch) -> None:
    """lambda = 1 (alpha -> 0 draws 0 or 1): the mixed batch is the batch, its targets one-hot; training then
    equals plain training, class weights and label smoothing included; lambda < 1 does not. (SGD: Adam would blow
    the float-level gradient of a conv bias before batch norm, zero in exact arithmetic, up to full steps.)"""
    opts = {"amp": False, "class_weights": WEIGHTS, "label_smoothing": 0.1, "optimizer": "sgd"}
    model_a, _, res_a, _ = _fit(FitOptions(**opts), epochs=2, n=32)
    monkeypatch.setattr(v2.MixUp, "make_params", lambda self, flat: {"lam": 1.0})
    model_b, _, res_b, _ = _fit(FitOptions(**opts, mixup=BatchMixer(2, 0.4)), epochs=2, n=32)
    for k, v in state_of(model_a).items():
        assert torch.allclose(v.float(), state_of(model_b)[k].float(), atol=1e-5), k
    assert [r["train_loss"] for r in res_a.history] == pytest.approx([r["train_loss"] for r in res_b.history], rel=1e-5)
    monkeypatch.setattr(v2.MixUp, "make_params", lambda self, flat: {"lam": 0.6})
    _, _, res_c, _ = _fit(FitOptions(**opts, mixup=BatchMixer(2, 0.4)), epochs=2, n=32)
    assert [r["train_loss"] for r in res_c.history] != pytest.approx([r["train_loss"] for r in res_a.history], rel=1e-5)


def test_regularisers_with_monai_augmentation_through_compare(marker_data, tmp_path, monkeypatch) -> None:
    """train.augment (MONAI), label smoothing and CutMix-or-mixup together in a fine-tuning arm: the batches the
    model trains on are mixed (soft targets reach the loss) and the run is reproducible."""
    monkeypatch.chdir(tmp_path)
    seen = []
    real = loop._mean_loss

    def spy(logits, y, loss_fn):  # noqa: ANN001, ANN202
        seen.append((y.ndim, loss_fn.label_smoothing))
        return real(logits, y, loss_fn)

    monkeypatch.setattr(loop, "_mean_loss", spy)
    train = {"batch_size": 8, "lr": 1e-3, "bootstrap": 20, "seed": 0, "label_smoothing": 0.1,
             "mixup": {"alpha": 0.4, "prob": 1.0, "mode": "either"},
             "augment": [{"name": "RandFlipd", "prob": 0.5, "spatial_axis": 1}, {"name": "RandRotate90d", "prob": 0.5}]}
    cfg = tiny_config(marker_data, strategies=[{"name": "full", "epochs": 1}], train=train, shift={"enabled": False},
                      selection={"enabled": False})
    first = compare(load_config(cfg)).arms[0]
    assert seen and all(ndim == 2 and ls == 0.1 for ndim, ls in seen)
    again = compare(load_config(cfg)).arms[0]
    np.testing.assert_array_equal(first.test_probs, again.test_probs)
