"""MedMNIST-C corruptions against the medmnistc package's own code, where it imports without ImageMagick."""

import importlib

import numpy as np
import pytest
from PIL import Image

from medtl.data.corruptions import CORRUPTIONS, corrupt, corrupt_set, parse_domain
from medtl.errors import ConfigError
from medtl.metrics.robustness import robustness


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    y, x = np.mgrid[:28, :28]
    return ((np.sin(x / 3.0) + np.cos(y / 5.0) + 2) * 60).astype(np.uint8)


def _medmnistc(module: str, cls: str):
    try:
        return getattr(importlib.import_module(f"medmnistc.corruptions.{module}"), cls)
    except ImportError as e:
        pytest.skip(f"medmnistc's {module} module does not import here ({e})")


DETERMINISTIC = [("compression", "Pixelate", "pixelate"), ("compression", "JPEGCompression", "jpeg_compression"),
                 ("enhance", "Brightness", "brightness_up"), ("enhance", "Brightness", "brightness_down"),
                 ("enhance", "Contrast", "contrast_up"), ("enhance", "Contrast", "contrast_down"),
                 ("enhance", "GammaCorrection", "gamma_corr_up"), ("enhance", "GammaCorrection", "gamma_corr_down")]


@pytest.mark.parametrize("module,cls,name", DETERMINISTIC)
def test_deterministic_corruptions_equal_medmnistc(image, module, cls, name) -> None:
    ref_cls = _medmnistc(module, cls)
    params = CORRUPTIONS["organamnist"][name][1]
    ref = ref_cls(severity_params=params)
    for sev in (1, 3, 5):
        big = Image.fromarray(image).convert("RGB").resize((224, 224), Image.BILINEAR)
        expected = np.array(Image.fromarray(ref.apply(big, sev - 1)).convert("L"))
        got = corrupt(image, "organamnist", name, sev, np.random.default_rng(0))
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("cls,name", [("GaussianNoise", "gaussian_noise"), ("SpeckleNoise", "speckle_noise"),
                                      ("ShotNoise", "shot_noise")])
def test_noise_equals_medmnistc_on_the_same_random_stream(image, cls, name) -> None:
    """medmnistc draws from numpy's global RandomState; the same stream gives the same pixels."""
    ref = _medmnistc("noise", cls)(severity_params=CORRUPTIONS["organamnist"][name][1])
    big = Image.fromarray(image).convert("RGB").resize((224, 224), Image.BILINEAR)
    np.random.seed(3)
    expected = np.array(Image.fromarray(ref.apply(big, 2)).convert("L"))
    got = corrupt(image, "organamnist", name, 3, np.random.RandomState(3))
    np.testing.assert_array_equal(got, expected)


def test_impulse_noise_equals_medmnistc(image) -> None:
    ref = _medmnistc("noise", "ImpulseNoise")(severity_params=CORRUPTIONS["organamnist"]["impulse_noise"][1])
    ref.rng = np.random.default_rng(5)
    big = Image.fromarray(image).convert("RGB").resize((224, 224), Image.BILINEAR)
    expected = np.array(Image.fromarray(ref.apply(big, 4)).convert("L"))
    np.testing.assert_array_equal(corrupt(image, "organamnist", "impulse_noise", 5, np.random.default_rng(5)), expected)


def test_blurs_blur_more_with_severity(image) -> None:
    for ds, name in (("organamnist", "gaussian_blur"), ("breastmnist", "motion_blur")):
        rng = np.random.default_rng(0)
        big = np.array(Image.fromarray(image).resize((224, 224), Image.BILINEAR)).astype(float)
        grads = [np.abs(np.diff(corrupt(image, ds, name, s, rng).astype(float), axis=1)).mean() for s in (1, 5)]
        assert grads[1] < grads[0] < np.abs(np.diff(big, axis=1)).mean(), name
        assert corrupt(image, ds, name, 3, rng).shape == (224, 224)


def test_domains_are_reproducible_and_named(image) -> None:
    a = corrupt_set([image, image], "breastmnist", "speckle_noise", 2, seed=0)
    b = corrupt_set([image, image], "breastmnist", "speckle_noise", 2, seed=0)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], a[1])  # fresh noise per image
    assert parse_domain("gamma_corr_up_s4") == ("gamma_corr_up", 4) and parse_domain("clean") is None
    with pytest.raises(ConfigError, match="not a MedMNIST-C corruption of breastmnist"):
        corrupt(image, "breastmnist", "gaussian_noise", 1, np.random.default_rng(0))


def test_be_and_rbe_as_medmnistc_computes_them() -> None:
    ev_mod = pytest.importorskip("medmnistc.eval")
    errors = {f"{c}_s{s}": 0.2 + 0.03 * s + 0.01 * i for i, c in enumerate(CORRUPTIONS["breastmnist"]) for s in range(1, 6)}
    ours = robustness(errors, 0.12, "breastmnist")
    ev = ev_mod.Evaluator("breastmnist", [[0], [1]], list(CORRUPTIONS["breastmnist"]), ".", "any", "binary-class")
    ev.clean_score = 0.12
    for c in ev.corruption_types:
        ev.corruption_errors[c] = [errors[f"{c}_s{s}"] for s in range(1, 6)]
    ev.output_log = {}
    ev.populate_summary()
    assert ours["be"] == pytest.approx(ev.output_log["metrics"]["be"])
    assert ours["rbe"] == pytest.approx(ev.output_log["metrics"]["rbe"])
    for c in ev.corruption_types:
        assert ours[f"rbe.{c}"] == pytest.approx(ev.output_log["rbe_scores"][c])
