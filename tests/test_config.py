"""Config traps a first try falls into: overrides no arm uses, a whole comparison made short, and a
reference of every key that cannot drift from the models."""

import warnings

import pytest

from medtl.config import load_config, plan_arms
from medtl.config.reference import missing_descriptions, reference_keys, reference_markdown
from medtl.errors import MedtlWarning
from tests.conftest import ROOT


def _cfg(**train: object) -> dict:
    return {"data": {"npz": "x.npz"}, "train": dict(train),
            "strategies": [{"name": "frozen", "epochs": 30}, {"name": "full", "epochs": 5},
                           {"name": "lp-ft", "probe_epochs": 20}]}


def test_override_that_every_strategy_shadows_says_so() -> None:
    cfg = _cfg()
    cfg["strategies"] = cfg["strategies"][:2]
    with pytest.warns(MedtlWarning, match=r"train.epochs changes nothing: every strategy sets its own epochs \(frozen 30, full 5\)"):
        loaded = load_config(cfg, ["train.epochs=2"])
    assert [s.epochs for s in loaded.strategies] == [30, 5]


def test_override_some_strategies_shadow_names_them() -> None:
    with pytest.warns(MedtlWarning, match="does not reach frozen, full"):
        load_config(_cfg(), ["train.epochs=2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedtlWarning)
        load_config(_cfg(), ["train.batch_size=4", "strategies.full.epochs=2"])  # no strategy has its own: silent


def test_epochs_scale_shortens_every_arm_once() -> None:
    cfg = load_config(_cfg(epochs=10), ["train.epochs_scale=0.2"])
    by = {s.name: s for s in cfg.strategies}
    assert (cfg.train.epochs, by["frozen"].epochs, by["full"].epochs) == (2, 6, 1)
    assert by["lp-ft"].probe_epochs == 4 and by["lp-ft"].epochs is None  # unset: follows train.epochs (2)
    assert by["lp-ft"].warmup_epochs == 0.5, "a warm-up is a fraction of an epoch, not an epoch count"
    assert cfg.train.epochs_scale == 1.0, "applied at load: a logged resolved config reloads to the same epochs"
    assert "probe_epochs" not in by["frozen"].model_fields_set, "scaling must not turn defaults into settings"
    assert [a["epochs"] for a in plan_arms(cfg)] == [6, 1, 2]


def test_every_key_has_a_meaning_and_strategy_keys_name_their_kinds() -> None:
    assert missing_descriptions() == []
    keys = {k.key: k for k in reference_keys()}
    assert keys["preprocess.size"].default == "null" and "backbone's weights" in keys["preprocess.size"].meaning
    assert "config file's folder" in keys["data.manifest"].meaning
    assert keys["strategies.<name>.unfreeze_every"].kinds == ("progressive",)
    assert set(keys["strategies.<name>.epochs"].kinds or ()) == {"frozen", "progressive", "full", "lp-ft", "surgical", "scratch",
                                                                  "dann", "coral", "mcc", "few-shot"}
    assert set(keys["strategies.<name>.align_layer"].kinds or ()) == {"dann", "coral"}  # a setting of the kinds it means something for
    assert keys["strategies.<name>.temperature"].kinds == ("mcc",)


def test_docs_config_md_matches_the_models() -> None:
    """docs/config.md is generated; when a model changes, regenerate it: medtl config --reference > docs/config.md"""
    assert (ROOT / "docs" / "config.md").read_text() == reference_markdown(), \
        "docs/config.md is stale: run `medtl config --reference > docs/config.md`"


def test_reference_walks_a_union_of_one_model_per_kind() -> None:
    """Strategies as a discriminated union (one model per kind): each key applies to the kinds whose model has it."""
    from typing import Annotated, Literal, Union

    from pydantic import BaseModel, Discriminator, Field, Tag

    class A(BaseModel):
        name: str = Field(description="n")
        kind: Literal["a"] = Field("a", description="k")
        epochs: int = Field(1, description="e")
        only_a: int = Field(2, description="x")

    class B(BaseModel):
        name: str = Field(description="n")
        kind: Literal["b"] = Field("b", description="k")
        epochs: int = Field(1, description="e")

    Entry = Annotated[Union[Annotated[A, Tag("a")], Annotated[B, Tag("b")]],
                      Discriminator(lambda v: v.get("kind") if isinstance(v, dict) else v.kind)]

    class Top(BaseModel):
        strategies: list[Entry] = Field(default_factory=list, description="arms")

    keys = {k.key: k for k in reference_keys(Top)}
    assert keys["strategies.<name>.only_a"].kinds == ("a",)
    assert keys["strategies.<name>.epochs"].kinds == ("a", "b")
    assert keys["strategies.<name>.kind"].type == "a | b"
