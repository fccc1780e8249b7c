"""MedMNIST-C corruptions (Di Salvo et al. 2024), under their MedMNIST-C names and published parameters.

The ``medmnistc`` package (0.1.0) is the reference, but it cannot be imported where ImageMagick's
``libmagickwand`` is missing: its registry imports the filter module, which imports ``wand`` at the
top for motion blur. So the corruptions BreastMNIST and OrganAMNIST use are written here with the
parameters of ``medmnistc.corruptions.registry.CORRUPTIONS_DS``, each as the package computes it
(PIL resampling and enhancers, PIL's JPEG codec, torchvision's ``adjust_gamma`` and
``gaussian_blur``, scikit-image's salt-and-pepper noise); the tests hold every corruption whose
module imports to medmnistc's own output. The exception is ``motion_blur``: medmnistc calls
ImageMagick's ``MotionBlurImage`` (a one-sided Gaussian-weighted line at a random angle); here it is
that kernel, built by hand and applied with scipy's ``ndimage.correlate`` (close, not bit-identical).

As medmnistc does: images are corrupted as 8-bit RGB at ``size`` pixels (224: the resolution its
parameters were set for; smaller MedMNIST images are resized up first, bilinear), then turned back
into greyscale for grey datasets. Severities are 1..5. Noise is drawn from a generator seeded per
corruption and severity, so a domain is the same images on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from medtl.errors import ConfigError

Corruption = Callable[[Image.Image, Any, np.random.Generator], np.ndarray]


def pixelate(img: Image.Image, factor: float, rng: np.random.Generator) -> np.ndarray:
    w, h = img.size
    small = img.resize((int(w * factor), int(h * factor)), Image.BOX)
    return np.array(small.resize((w, h), Image.BOX))


def jpeg_compression(img: Image.Image, quality: int, rng: np.random.Generator) -> np.ndarray:
    buf = BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return np.array(Image.open(buf))


def _unit(img: Image.Image) -> np.ndarray:
    return np.array(img) / 255.0


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def gaussian_noise(img: Image.Image, scale: float, rng: np.random.Generator) -> np.ndarray:
    x = _unit(img)
    return _u8(x + rng.normal(size=x.shape, scale=scale))


def speckle_noise(img: Image.Image, scale: float, rng: np.random.Generator) -> np.ndarray:
    x = _unit(img)
    return _u8(x + x * rng.normal(size=x.shape, scale=scale))


def shot_noise(img: Image.Image, mult: float, rng: np.random.Generator) -> np.ndarray:
    x = _unit(img)
    return _u8(rng.poisson(x * mult) / mult)


def impulse_noise(img: Image.Image, amount: float, rng: np.random.Generator) -> np.ndarray:
    from skimage.util import random_noise

    return _u8(random_noise(_unit(img), mode="s&p", amount=amount, rng=rng))


def gaussian_blur(img: Image.Image, kernel: int, rng: np.random.Generator) -> np.ndarray:
    import torchvision.transforms.functional as TF

    return np.array(TF.gaussian_blur(img, kernel_size=kernel)).astype(np.uint8)


def motion_blur(img: Image.Image, radius_sigma: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """ImageMagick's motion blur: a one-sided line of Gaussian weights (sigma), ``radius`` long, at an angle in [-45, 45)."""
    from scipy.ndimage import correlate

    radius, sigma = radius_sigma
    angle = np.deg2rad(rng.uniform(-45, 45))
    width = int(radius) if radius > 0 else int(np.ceil(3 * sigma))
    k = np.zeros((2 * width + 1, 2 * width + 1), np.float32)
    for i in range(width + 1):  # from the pixel backwards along the direction of motion
        w = np.exp(-(i * i) / (2.0 * sigma * sigma))
        y, x = width - int(round(i * np.sin(angle))), width - int(round(i * np.cos(angle)))
        k[y, x] += w
    k /= k.sum()
    x = np.array(img).astype(np.float32)
    out = np.stack([correlate(x[..., c], k, mode="nearest") for c in range(x.shape[-1])], -1)
    return np.clip(out, 0, 255).astype(np.uint8)


def brightness(img: Image.Image, factor: float, rng: np.random.Generator) -> np.ndarray:
    return np.array(ImageEnhance.Brightness(img).enhance(factor)).astype(np.uint8)


def contrast(img: Image.Image, factor: float, rng: np.random.Generator) -> np.ndarray:
    return np.array(ImageEnhance.Contrast(img).enhance(factor)).astype(np.uint8)


def gamma(img: Image.Image, g: float, rng: np.random.Generator) -> np.ndarray:
    import torchvision.transforms.functional as TF

    return np.array(TF.adjust_gamma(img, g, gain=1)).astype(np.uint8)


# medmnistc.corruptions.registry.CORRUPTIONS_DS, severities 1..5 (gaussian_blur lists a sixth, unused)
_ORGAN = {
    "pixelate": (pixelate, [0.7, 0.6, 0.5, 0.40, 0.35]),
    "jpeg_compression": (jpeg_compression, [50, 30, 15, 10, 7]),
    "gaussian_noise": (gaussian_noise, [0.04, 0.08, 0.12, 0.16, 0.20]),
    "speckle_noise": (speckle_noise, [0.05, 0.10, 0.20, 0.30, 0.40]),
    "impulse_noise": (impulse_noise, [0.01, 0.02, 0.03, 0.05, 0.08]),
    "shot_noise": (shot_noise, [200, 100, 50, 25, 15]),
    "gaussian_blur": (gaussian_blur, [11, 13, 15, 17, 21]),
    "brightness_up": (brightness, [1.2, 1.3, 1.4, 1.5, 1.6]),
    "brightness_down": (brightness, [0.8, 0.75, 0.7, 0.65, 0.60]),
    "contrast_up": (contrast, [1.3, 1.4, 1.6, 1.7, 1.8]),
    "contrast_down": (contrast, [0.8, 0.7, 0.6, 0.55, 0.5]),
    "gamma_corr_up": (gamma, [1.3, 1.4, 1.6, 1.8, 2.0]),
    "gamma_corr_down": (gamma, [0.9, 0.8, 0.7, 0.6, 0.4]),
}
CORRUPTIONS: dict[str, dict[str, tuple[Corruption, list[Any]]]] = {
    "organamnist": _ORGAN,
    "organcmnist": _ORGAN,
    "organsmnist": _ORGAN,
    "breastmnist": {
        "pixelate": (pixelate, [0.30, 0.25, 0.20, 0.15, 0.10]),
        "jpeg_compression": (jpeg_compression, [50, 30, 15, 10, 7]),
        "speckle_noise": (speckle_noise, [0.10, 0.15, 0.20, 0.25, 0.30]),
        "motion_blur": (motion_blur, [(5, 5), (9, 7), (9, 10), (13, 10), (17, 12)]),
        "brightness_up": (brightness, [1.4, 1.5, 1.6, 1.8, 2.0]),
        "brightness_down": (brightness, [0.55, 0.5, 0.45, 0.4, 0.3]),
        "contrast_down": (contrast, [0.9, 0.8, 0.7, 0.6, 0.4]),
    },
}

# AlexNet's balanced errors on MedMNIST-C (medmnistc.utils.baselines.BASELINES): BE and rBE are
# normalised by them, as the paper reports (clean error, then mean error over severities per corruption)
ALEXNET: dict[str, dict[str, Any]] = {
    "breastmnist": {"clean": 0.14536340852130336, "corrupted": {
        "pixelate": 0.46127819548872184, "jpeg_compression": 0.2986215538847118, "speckle_noise": 0.38709273182957393,
        "motion_blur": 0.25902255639097743, "brightness_up": 0.3197994987468672, "brightness_down": 0.21127819548872181,
        "contrast_down": 0.15864661654135334}},
    "organamnist": {"clean": 0.050053710403475504, "corrupted": {
        "pixelate": 0.07589728744538755, "jpeg_compression": 0.10233182799848468, "gaussian_noise": 0.558867512509986,
        "speckle_noise": 0.5008977196696448, "impulse_noise": 0.6005122792556206, "shot_noise": 0.5704549211261293,
        "gaussian_blur": 0.23340661727240267, "brightness_up": 0.14763547790322412, "brightness_down": 0.2646445055204496,
        "contrast_up": 0.10977873034814234, "contrast_down": 0.1268424696095805, "gamma_corr_up": 0.10360009998047674,
        "gamma_corr_down": 0.10577092296366888}},
}


def domain_name(corruption: str, severity: int) -> str:
    return f"{corruption}_s{severity}"


def parse_domain(domain: str) -> tuple[str, int] | None:
    """``(corruption, severity)`` of a corruption domain's name, None for any other domain."""
    name, _, sev = domain.rpartition("_s")
    return (name, int(sev)) if name and sev.isdigit() else None


def corruption_table(dataset: str) -> dict[str, tuple[Corruption, list[Any]]]:
    if dataset not in CORRUPTIONS:
        raise ConfigError("data.corruptions.dataset", f"no MedMNIST-C parameters for '{dataset}' (known: {', '.join(CORRUPTIONS)})")
    return CORRUPTIONS[dataset]


def corrupt(image: np.ndarray, dataset: str, corruption: str, severity: int, rng: np.random.Generator,
            size: int | None = 224) -> np.ndarray:
    """One image (H, W) or (H, W, 3) uint8, corrupted as MedMNIST-C does; grey in, grey out."""
    table = corruption_table(dataset)
    if corruption not in table:
        raise ConfigError("data.corruptions.names", f"'{corruption}' is not a MedMNIST-C corruption of {dataset} "
                                                    f"(its corruptions: {', '.join(table)})")
    if not 1 <= severity <= 5:
        raise ConfigError("data.corruptions.severities", f"severity {severity} is not in 1..5")
    fn, params = table[corruption]
    grey = image.ndim == 2
    img = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    out = fn(img, params[severity - 1], rng)
    return np.array(Image.fromarray(out).convert("L")) if grey else out


def corrupt_set(images: list[np.ndarray], dataset: str, corruption: str, severity: int, seed: int = 0,
                size: int | None = 224) -> list[np.ndarray]:
    """A whole domain, with its own generator (seeded by seed, corruption and severity)."""
    names = list(corruption_table(dataset))
    rng = np.random.default_rng([seed, names.index(corruption) if corruption in names else 0, severity])
    return [corrupt(im, dataset, corruption, severity, rng, size) for im in images]
