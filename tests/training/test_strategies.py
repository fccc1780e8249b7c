"""Strategy kinds: one config model and one home each, chosen by ``kind``; nobody else branches on kinds."""

import pytest

from medtl.config import TrainConfig, load_config, strategy_config
from medtl.errors import ConfigError
from medtl.training.schedule import HEAD
from medtl.training.strategies import build_schedule

GROUPS = ("stem", "stage1", "stage2", HEAD)


def test_build_schedule_per_kind() -> None:
    train = TrainConfig(lr=1e-3, head_lr=1e-2, epochs=4)
    full = build_schedule(strategy_config(name="full"), GROUPS, train)
    assert set(full.unfreeze_epoch.values()) == {0} and set(full.lr.values()) == {1e-3}
    lpft = build_schedule(strategy_config(name="lp-ft", ft_lr_scale=0.1), GROUPS, train)
    assert all(v == pytest.approx(1e-4) for v in lpft.lr.values()) and set(lpft.unfreeze_epoch.values()) == {0}
    frozen = build_schedule(strategy_config(name="frozen", epochs=7), (HEAD,), train)
    assert frozen.groups == (HEAD,) and frozen.lr[HEAD] == 1e-2 and frozen.epochs == 7
    surg = build_schedule(strategy_config(name="s1", kind="surgical", groups=["stem"]), GROUPS, train)
    assert surg.trainable(0) == ["stem", HEAD]
    with pytest.raises(ConfigError, match="strategies.s2.groups"):
        build_schedule(strategy_config(name="s2", kind="surgical", groups=["stage9"]), GROUPS, train)


@pytest.mark.parametrize("strategy,message", [
    ({"name": "full", "unfreeze_every": 2}, "unfreeze_every does not apply"),
    ({"name": "progressive", "layer": "stage2"}, "layer does not apply"),
    ({"name": "frozen", "layer": "stem", "layers": "all"}, "not both"),
    ({"name": "surgical"}, "needs 'groups'"),
    ({"name": "mine"}, "needs a kind"),
    ({"name": "scratch", "bn_stats": "frozen"}, "no ImageNet statistics"),
    ({"name": "frozen", "bn_stats": "all"}, "bn_stats does not apply"),
])
def test_strategy_settings_that_do_not_apply_are_errors(strategy: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({"data": {"npz": "x.npz"}, "strategies": [strategy]})


def test_every_kind_of_the_config_has_one_home_and_every_shipped_config_loads() -> None:
    from medtl.config import STRATEGY_KINDS, TRAINED_KINDS
    from medtl.training.strategies import registered_kinds, strategy_for
    from tests.conftest import ROOT

    assert sorted(registered_kinds()) == sorted(TRAINED_KINDS)  # the ensemble trains nothing: medtl/experiment/ensemble.py
    assert set(STRATEGY_KINDS) - set(TRAINED_KINDS) == {"ensemble"}
    for kind in TRAINED_KINDS:
        assert strategy_for(strategy_config(name=f"my-{kind}", kind=kind, **{"surgical": {"groups": ["stem"]}, "few-shot": {"shots": 2}}.get(kind, {}))).kind == kind
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert all(s.kind in STRATEGY_KINDS for s in cfg.strategies), path


def test_strategy_kinds_are_known_only_under_training_and_config() -> None:
    """No module outside medtl/training/ and medtl/config/ compares anything with a strategy kind: the
    orchestration, tracking and serving treat every kind alike (issue 19)."""
    import ast

    from medtl.config import STRATEGY_KINDS
    from tests.conftest import ROOT

    found = []
    for path in sorted((ROOT / "medtl").rglob("*.py")):
        rel = path.relative_to(ROOT / "medtl").as_posix()
        if rel.startswith(("training/", "config/")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                consts = [c for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in STRATEGY_KINDS]
                found += [f"{rel}:{node.lineno}" for _ in consts[:1]]
    assert not found, f"strategy kinds branched on outside medtl/training: {found}"
