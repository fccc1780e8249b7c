"""Frozen parameters stay bit-identical; trained ones move. One loop for every strategy."""

import torch

from medtl.models.transfer import create_model
from medtl.training.loop import FitOptions, fit
from medtl.training.schedule import HEAD, Schedule, head_only
from tests.conftest import state_of, toy_loaders


def test_head_only_leaves_backbone_bit_identical() -> None:
    model, _ = create_model("tiny", num_classes=2)
    groups = model.groups()
    before_backbone, before_head = state_of(model.backbone), state_of(model.head)
    schedule = head_only(tuple(groups), epochs=2, lr=1e-2, shape="constant")
    train, val = toy_loaders()
    fit(model, groups, schedule, train, val, FitOptions(weight_decay=0.1))
    after = state_of(model.backbone)
    for k, v in before_backbone.items():
        assert torch.equal(v, after[k]), f"frozen {k} changed (running BN statistics included)"
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in before_head.items()), "the head did not train"


def test_full_fine_tuning_moves_every_group() -> None:
    model, _ = create_model("tiny", num_classes=2)
    groups = model.groups()
    before = {g: state_of(m) for g, m in groups.items()}
    schedule = Schedule(tuple(groups), 2, {g: 0 for g in groups}, {g: 1e-2 for g in groups}, shape="constant")
    train, val = toy_loaders()
    result = fit(model, groups, schedule, train, val, FitOptions())
    for g, m in groups.items():
        now = m.state_dict()
        assert any(not torch.equal(v, now[k]) for k, v in before[g].items()), f"group {g} did not train"
    assert len(result.history) == 2 and {"train_loss", "val_auc", "val_loss", f"lr.{HEAD}"} <= set(result.history[0])


def test_best_weights_are_a_real_copy() -> None:
    """The model ends with the weights of its best validation epoch, not the last epoch's."""
    model, _ = create_model("tiny", num_classes=2)
    groups = model.groups()
    train, val = toy_loaders()
    seen = []
    res = fit(model, groups, head_only(tuple(groups), 4, 0.5, "constant"), train, val, FitOptions(),
              on_epoch=lambda epoch, row: seen.append((row["val_auc"], state_of(model.head))))
    best_auc, best_state = seen[res.best_epoch]
    assert best_auc == max(a for a, _ in seen) == res.best_val_auc
    for k, v in best_state.items():
        assert torch.equal(v, model.head.state_dict()[k])
