"""All six strategies through ``compare`` on the tiny backbone: what each arm trains, what it leaves alone."""

from pathlib import Path

import numpy as np
import pytest
import torch

from medtl.experiment.results import ArmResult
from medtl.experiment.run import compare
from medtl.config import load_config
from medtl.data.datasets import image_dataset, loader
from medtl.data.transforms import scan_transforms
from medtl.training.strategies import finetune, frozen
from medtl.models.transfer import build_backbone
from tests.conftest import same_state, state_of, tiny_config

SIX = [
    {"name": "frozen", "epochs": 4, "layers": "all"},
    {"name": "progressive", "epochs": 4, "unfreeze_every": 1},
    {"name": "full", "epochs": 2},
    {"name": "lp-ft", "probe_epochs": 3, "epochs": 2},
    {"name": "surgical", "groups": ["stage2"], "epochs": 2},
    {"name": "scratch", "epochs": 2},
]


@pytest.fixture(scope="module")
def six(marker_data, tmp_path_factory):
    """One comparison of all six strategies, with the head states lp-ft's probe and fine-tuning saw."""
    mp = pytest.MonkeyPatch()
    work = tmp_path_factory.mktemp("six")
    mp.chdir(work)
    seen: dict = {"probe_in": [], "probe_out": [], "ft_in": {}}
    real_head, real_fit = frozen.fit_head, finetune.fit

    def fit_head(head, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen["probe_in"].append(state_of(head))
        r = real_head(head, *a, **k)
        seen["probe_out"].append(state_of(head))
        return r

    def fit(model, groups, schedule, train, val, opts, checkpoint=None, on_epoch=None, *rest):  # noqa: ANN001, ANN002, ANN202
        if hasattr(model, "head"):  # the whole model, not a head on cached features
            seen["ft_in"][checkpoint.folder.parent.name] = state_of(model.head)  # <run>/<arm>/model/last.pt
        return real_fit(model, groups, schedule, train, val, opts, checkpoint, on_epoch, *rest)

    mp.setattr(frozen, "fit_head", fit_head)
    mp.setattr(finetune, "fit", fit)
    cfg = load_config(tiny_config(marker_data, strategies=SIX))
    comp = compare(cfg)
    mp.undo()
    yield comp, seen, work


def _arm(comp, name: str) -> ArmResult:
    return next(a for a in comp.arms if a.strategy == name)


def test_every_strategy_runs_and_is_tabled(six) -> None:
    comp, _, _ = six
    assert [a.strategy for a in comp.arms] == [s["name"] for s in SIX]
    table = comp.table()
    assert list(table["strategy"]) == [s["name"] for s in SIX]
    for k in ("auc", "acc", "balanced_acc", "sensitivity", "specificity", "f1", "ece"):
        assert all(lo <= v <= hi for v, (lo, hi) in zip(table[f"test_{k}"], table[f"test_{k}_ci"]) if np.isfinite(lo))


def test_frozen_backbone_is_bit_identical_and_the_sweep_picks_on_validation(six) -> None:
    comp, _, _ = six
    arm = _arm(comp, "frozen")
    imagenet = build_backbone("tiny", pretrained=True).backbone.state_dict()
    assert same_state(state_of(arm.model.backbone), imagenet)
    assert set(arm.sweep) == {"stem", "stage1", "stage2"}
    best = max(arm.sweep, key=lambda g: arm.sweep[g]["val_auc"])
    assert arm.sweep[best]["val_auc"] == arm.val_auc
    assert (arm.model.layer or "stage2") == best and arm.build["layer"] == arm.model.layer
    assert {f"sweep.val_auc.{g}" for g in arm.sweep} <= set(arm.metrics)
    sweep = comp.sweep_table()
    assert list(sweep["layer"]) == ["stem", "stage1", "stage2"] and sweep["chosen"].tolist().count("1/1") == 1
    # the cached features are what the model computes from the images: its own forward gives the same test scores
    ds = image_dataset(comp.data.splits["test"], scan_transforms(comp.spec, comp.config.preprocess), "none")
    probs = torch.cat([torch.softmax(arm.model(b["image"]), 1) for b in loader(ds, 8, shuffle=False)]).detach().numpy()
    np.testing.assert_allclose(probs, arm.test_probs, rtol=1e-5, atol=1e-6)
    again = ArmResult.load(arm.folder)
    assert again.sweep == arm.sweep and again.model.layer == arm.model.layer


def test_lp_ft_fine_tunes_from_the_probe_head(six) -> None:
    _, seen, _ = six
    # fit_head calls: frozen's sweep (3 layers), then lp-ft's probe
    probe_in, probe_out = seen["probe_in"][-1], seen["probe_out"][-1]
    assert not same_state(probe_in, probe_out), "the probe did not train"
    ft = seen["ft_in"]
    assert same_state(ft["lp-ft-seed0"], probe_out), "fine-tuning did not start from the probe's head"
    assert not same_state(ft["full-seed0"], probe_out)


def test_surgical_and_scratch(six) -> None:
    comp, _, _ = six
    imagenet = build_backbone("tiny", pretrained=True).backbone
    surg = _arm(comp, "surgical").model.backbone
    for g in ("stem", "stage1"):
        assert same_state(state_of(surg.stages[g]), state_of(imagenet.stages[g])), f"surgical moved {g}"
    assert not same_state(state_of(surg.stages["stage2"]), state_of(imagenet.stages["stage2"]))
    scratch = _arm(comp, "scratch")
    assert scratch.weights_sha256 is None and scratch.weights_id == "random"
    assert _arm(comp, "full").weights_sha256 == "tiny-fixed-seed"


def test_checkpoints_load_weights_only(six) -> None:
    _, _, work = six
    files = list(Path(work, ".medtl").rglob("*.pt"))
    assert any(f.name == "last.pt" for f in files) and any(f.name == "result.pt" for f in files)
    for f in files:
        torch.load(f, map_location="cpu", weights_only=True)


def test_feature_cache_reused_and_rebuilt_when_preprocessing_changes(marker_data, tmp_path, monkeypatch) -> None:
    import medtl.training.feature_cache as FC

    monkeypatch.chdir(tmp_path)
    calls: list[int] = []
    real = FC.extract_features
    monkeypatch.setattr(FC, "extract_features", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    frozen = [{"name": "frozen", "epochs": 2}]
    first = compare(load_config(tiny_config(marker_data, strategies=frozen)))
    assert len(calls) == 3  # train, val, test
    again = compare(load_config(tiny_config(marker_data, strategies=frozen)))
    assert len(calls) == 3, "a second run re-extracted features"
    assert again.arms[0].metrics == first.arms[0].metrics
    lpft = [{"name": "lp-ft", "probe_epochs": 2, "epochs": 1}]
    compare(load_config(tiny_config(marker_data, strategies=lpft)))
    assert len(calls) == 3, "lp-ft's probe should read the frozen arm's cache"
    cfg = tiny_config(marker_data, strategies=frozen)
    cfg["preprocess"] = {**cfg["preprocess"], "size": 24}
    compare(load_config(cfg))
    assert len(calls) == 6, "preprocessing changed, the cache must be rebuilt"
    cfg["preprocess"]["window"] = "mediastinum"
    compare(load_config(cfg))
    assert len(calls) == 9
    assert len(list((tmp_path / ".medtl" / "cache" / "features").glob("*.pt"))) == 9


def test_same_seed_same_metrics_other_seed_not(marker_data, tmp_path, monkeypatch) -> None:
    strategies = [{"name": "progressive", "epochs": 3}, {"name": "frozen", "epochs": 3}]
    augment = [{"name": "RandFlipd", "prob": 0.5, "spatial_axis": 1}, {"name": "RandGaussianNoised", "prob": 0.5, "std": 0.05}]

    def run(seed: int, where: str):  # noqa: ANN202
        (tmp_path / where).mkdir()
        monkeypatch.chdir(tmp_path / where)
        train = {"batch_size": 8, "lr": 1e-3, "bootstrap": 50, "seed": seed, "augment": augment}
        return compare(load_config(tiny_config(marker_data, strategies=strategies, train=train)))

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    for x, y in zip(a.arms, b.arms):
        assert x.metrics == y.metrics
        np.testing.assert_array_equal(x.test_probs, y.test_probs)
        assert x.fit.history == y.fit.history
    assert not np.array_equal(a.arms[0].test_probs, c.arms[0].test_probs)


def test_augmentation_never_writes_into_the_cache(marker_data, tmp_path, monkeypatch) -> None:
    """Steps after the first random transform run on a copy: a cached image looks the same every epoch
    (otherwise normalisation would compound epoch after epoch and a resumed run would differ)."""
    from medtl.data.datasets import load_data
    from medtl.data.augment import build_augmentations

    cfg = load_config(tiny_config(marker_data))
    spec = build_backbone("tiny").spec
    items = load_data(cfg.data).splits["train"][:2]
    never = build_augmentations([{"name": "RandFlipd", "prob": 0.0, "spatial_axis": 1}])
    ds = image_dataset(items, scan_transforms(spec, cfg.preprocess, augment=never), "memory")
    first = ds[0]["image"].clone()
    for _ in range(3):
        torch.testing.assert_close(ds[0]["image"], first, rtol=0, atol=0)


def test_several_seeds_give_mean_and_std(marker_data, tmp_path, monkeypatch, capsys) -> None:
    from medtl.cli import print_comparison

    monkeypatch.chdir(tmp_path)
    train = {"batch_size": 8, "lr": 1e-3, "bootstrap": 50, "seeds": [0, 1, 2]}
    comp = compare(load_config(tiny_config(marker_data, strategies=[{"name": "frozen", "epochs": 2, "layers": ["stage1", "stage2"]}],
                                           train=train)))
    assert [a.seed for a in comp.arms] == [0, 1, 2]
    row = comp.table().iloc[0]
    aucs = [a.metrics["test_auc"] for a in comp.arms]
    assert row["seeds"] == 3 and row["test_auc"] == pytest.approx(np.mean(aucs))
    assert row["test_auc_std"] == pytest.approx(np.std(aucs, ddof=1))
    sweep = comp.sweep_table()
    assert sweep["val_auc"].tolist() == pytest.approx([np.mean([a.sweep[g]["val_auc"] for a in comp.arms]) for g in ("stage1", "stage2")])
    print_comparison(comp, "seeds")
    out = capsys.readouterr().out
    assert f"{row['test_auc']:.3f} ± {row['test_auc_std']:.3f}" in out and "layer sweep" in out
