"""Schedules as data, read by the one loop: what unfreezes when, at which rate, and what stays bit-identical."""

import math

import pytest
import torch

from medtl.models.transfer import create_model
from medtl.training.loop import FitOptions, fit, lr_factor
from medtl.training.schedule import HEAD, head_only, progressive, surgical
from tests.conftest import same_state, state_of, toy_loaders

GROUPS = ("stem", "stage1", "stage2", HEAD)


def test_progressive_schedule_is_ulmfit() -> None:
    s = progressive(GROUPS, epochs=6, lr=1e-3, every=2, factor=2.6, warmup=0.5, shape="cosine")
    assert s.unfreeze_epoch == {HEAD: 0, "stage2": 2, "stage1": 4, "stem": None}  # stem's turn (6) is past the end
    assert any("stem stays frozen" in n for n in s.notes)
    for g in GROUPS:
        assert s.lr[g] == pytest.approx(1e-3 / 2.6 ** s.depth(g))
    assert [s.trainable(e) for e in (0, 1, 2, 4, 5)] == [[HEAD], [HEAD], ["stage2", HEAD], ["stage1", "stage2", HEAD], ["stage1", "stage2", HEAD]]


def test_warmup_restarts_at_each_unfreeze() -> None:
    s = progressive(GROUPS, epochs=6, lr=1.0, every=2, factor=2.6, warmup=0.5, shape="constant")
    steps = 10  # per epoch: warm-up is 5 steps
    assert lr_factor(s, "stage2", 2 * steps - 1, steps) == 0.0  # frozen until its epoch
    assert lr_factor(s, "stage2", 2 * steps, steps) == pytest.approx(1 / 5)
    assert lr_factor(s, "stage2", 2 * steps + 2, steps) == pytest.approx(3 / 5)
    assert lr_factor(s, "stage2", 2 * steps + 4, steps) == 1.0
    assert lr_factor(s, HEAD, 2 * steps, steps) == 1.0  # the head warmed up long ago
    cos = progressive(GROUPS, epochs=6, lr=1.0, every=2, factor=2.6, warmup=0.0, shape="cosine")
    assert lr_factor(cos, HEAD, 3 * steps, steps) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_progressive_unfreezes_exactly_on_schedule() -> None:
    """requires_grad flips at the scheduled epoch; until then the group (BN statistics too) is bit-identical;
    each group trains at base / 2.6**depth."""
    torch.manual_seed(0)
    model, _ = create_model("tiny", num_classes=2)
    groups = model.groups()
    assert tuple(groups) == GROUPS
    schedule = progressive(GROUPS, epochs=5, lr=1e-2, every=1, factor=2.6, warmup=0.25, shape="constant")
    initial = {g: state_of(m) for g, m in groups.items()}
    seen: list[dict[str, tuple[bool, bool]]] = []

    def record(epoch: int, row: dict) -> None:
        seen.append({g: (all(p.requires_grad for p in m.parameters()), same_state(initial[g], state_of(m))) for g, m in groups.items()})

    train, val = toy_loaders()
    result = fit(model, groups, schedule, train, val, FitOptions(), on_epoch=record)
    for epoch, state in enumerate(seen):
        for g, (grad, untouched) in state.items():
            on = schedule.unfreeze_epoch[g] is not None and schedule.unfreeze_epoch[g] <= epoch
            assert grad == on, f"epoch {epoch}: {g} requires_grad={grad}, scheduled {schedule.unfreeze_epoch[g]}"
            assert untouched == (not on), f"epoch {epoch}: {g} {'changed while frozen' if on is False else 'did not train'}"
    assert schedule.unfreeze_epoch == {HEAD: 0, "stage2": 1, "stage1": 2, "stem": 3}
    for row in result.history:  # the peak rate each group trained at, that epoch
        for g in GROUPS:
            expected = 1e-2 / 2.6 ** schedule.depth(g) if schedule.unfreeze_epoch[g] <= row["epoch"] else 0.0
            assert row[f"lr.{g}"] == pytest.approx(expected)


@pytest.mark.parametrize("bn_stats,frozen_moves,trained_moves", [("trainable", False, True), ("all", True, True),
                                                                  ("frozen", False, False)])
def test_whose_batchnorm_statistics_follow_the_new_data(bn_stats: str, frozen_moves: bool, trained_moves: bool) -> None:
    """Running statistics move only where asked; a frozen group's BN weights never move, a trained group's always do."""
    train, val = toy_loaders()
    torch.manual_seed(0)
    model, _ = create_model("tiny", num_classes=2)
    groups = model.groups()
    frozen_bn, trained_bn = model.backbone.stages["stem"][1], model.backbone.stages["stage2"][1]
    before = {"frozen": state_of(frozen_bn), "trained": state_of(trained_bn)}
    fit(model, groups, surgical(GROUPS, ["stage2"], 2, 1e-2, "constant", bn_stats=bn_stats), train, val, FitOptions())
    after = {"frozen": state_of(frozen_bn), "trained": state_of(trained_bn)}
    assert same_state({k: before["frozen"][k] for k in ("weight", "bias")}, {k: after["frozen"][k] for k in ("weight", "bias")})
    assert not torch.equal(before["trained"]["weight"], after["trained"]["weight"])
    assert (not torch.equal(before["frozen"]["running_mean"], after["frozen"]["running_mean"])) == frozen_moves
    assert (not torch.equal(before["trained"]["running_mean"], after["trained"]["running_mean"])) == trained_moves


def test_surgical_trains_only_the_named_groups() -> None:
    torch.manual_seed(0)
    model, _ = create_model("tiny", num_classes=2)
    groups = model.groups()
    before = {g: state_of(m) for g, m in groups.items()}
    train, val = toy_loaders()
    fit(model, groups, surgical(GROUPS, ["stem"], 2, 1e-2, "constant"), train, val, FitOptions())
    assert {g for g, m in groups.items() if not same_state(before[g], state_of(m))} == {"stem", HEAD}


def test_early_stopping_on_validation_auc() -> None:
    """A rate too small to change anything: validation AUC never improves after epoch 0, so training
    stops after ``patience`` more epochs, keeping epoch 0's weights."""
    torch.manual_seed(0)
    model, _ = create_model("tiny", num_classes=2)
    groups = model.groups()
    train, val = toy_loaders()
    schedule = head_only(GROUPS, epochs=8, lr=1e-30, shape="constant")
    result = fit(model, groups, schedule, train, val, FitOptions(patience=2))
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 0


def test_sgd_and_one_cycle() -> None:
    torch.manual_seed(0)
    model, _ = create_model("tiny", num_classes=2)
    groups = model.groups()
    before = state_of(model)
    train, val = toy_loaders()
    s = progressive(GROUPS, epochs=4, lr=1e-2, every=10, factor=2.6, warmup=0.0, shape="onecycle")
    result = fit(model, groups, s, train, val, FitOptions(optimizer="sgd"))
    peaks = [row[f"lr.{HEAD}"] for row in result.history]
    assert peaks[0] < peaks[1] and peaks[1] == pytest.approx(1e-2, rel=0.05) and peaks[3] < peaks[1]  # rise, then anneal
    assert not same_state(before, state_of(model))
