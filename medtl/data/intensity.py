"""Intensity: Hounsfield windows for CT, percentiles for MR and the rest, MONOCHROME1 inverted.

Readers already put CT in Hounsfield units (RescaleSlope/Intercept, also from enhanced files'
functional groups). Each rule maps to [0, 1] through MONAI's own scaling transforms.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.transforms.utils_pytorch_numpy_unification import percentile

from medtl.config import PreprocessConfig, WindowConfig
from medtl.errors import ConfigError, ScanError
from medtl.data.readers import ScanInfo

# (level, width) in HU; the usual radiology presets (Radiopaedia "Windowing (CT)").
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (60.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (32.0, 8.0),
}


def resolve_window(window: str | WindowConfig) -> tuple[float, float]:
    if isinstance(window, WindowConfig):
        return window.level, window.width
    if window not in WINDOWS:
        raise ConfigError("preprocess.window", f"unknown window '{window}' (presets: {', '.join(WINDOWS)}, or level/width)")
    return WINDOWS[window]


def in_hu(info: ScanInfo, pp: PreprocessConfig) -> bool:
    """CT in Hounsfield units: rescaled DICOM CT, or a file without a modality declared CT by the config."""
    return info.in_hu or (info.modality is None and (pp.assume_modality or "").upper() == "CT")


def intensity_rule(info: ScanInfo, pp: PreprocessConfig) -> str:
    """Which rule a scan gets: ``window`` (CT in HU), ``fixed`` (8-bit display images) or ``percentile``."""
    if pp.intensity != "auto":
        return pp.intensity
    if in_hu(info, pp):
        return "window"
    if info.bits is not None and info.bits <= 8:
        return "fixed"
    return "percentile"


class CheckFinite(Transform):
    """NaN and inf are an error by default, or filled with the lowest finite value when asked."""

    def __init__(self, policy: str = "error") -> None:
        self.policy = policy

    def __call__(self, img: torch.Tensor, path: str = "") -> torch.Tensor:
        finite = torch.isfinite(img)
        if bool(finite.all()):
            return img
        bad = int((~finite).sum())
        if self.policy == "error" or not bool(finite.any()):
            raise ScanError(path or None, f"{bad} non-finite voxel(s) (NaN or inf); set preprocess.nonfinite: fill to replace them")
        low = img[finite].min()
        return torch.where(finite, img, low)


class ScanIntensity(Transform):
    """Map a scan to [0, 1] by its rule, then invert MONOCHROME1 so bright is always dense."""

    def __init__(self, pp: PreprocessConfig) -> None:
        self.pp = pp
        level, width = resolve_window(pp.window)
        self.window = ScaleIntensityRange(level - width / 2, level + width / 2, 0.0, 1.0, clip=True)
        self.fixed = ScaleIntensityRange(0.0, 255.0, 0.0, 1.0, clip=True)

    def percentile(self, img: torch.Tensor) -> torch.Tensor:
        """MONAI's ``ScaleIntensityRangePercentiles``, made safe for (nearly) constant scans:
        equal percentiles fall back to min..max, and a constant scan maps to 0."""
        lo, hi = (float(percentile(img, q)) for q in self.pp.percentiles)
        if hi <= lo:
            lo, hi = float(img.min()), float(img.max())
        if hi <= lo:
            return torch.zeros_like(img)
        return ScaleIntensityRange(lo, hi, 0.0, 1.0, clip=True)(img)

    def __call__(self, img: torch.Tensor, info: ScanInfo) -> torch.Tensor:
        rule = intensity_rule(info, self.pp)
        if rule == "window" and not in_hu(info, self.pp):
            raise ScanError(info.path, f"window '{self.pp.window}' needs CT in Hounsfield units; this scan is {info.modality or info.kind}")
        out = getattr(self, rule)(img)
        if info.photometric == "MONOCHROME1":
            out = 1.0 - out
        return out

    def describe(self, info: ScanInfo) -> str:
        """The rule a scan gets, in words (for ``inspect`` and ``preview``)."""
        rule = intensity_rule(info, self.pp)
        if rule == "window":
            level, width = resolve_window(self.pp.window)
            name = self.pp.window if isinstance(self.pp.window, str) else "custom"
            text = f"intensity: CT window {name} (level {level:g}, width {width:g} HU) to [0, 1]"
        elif rule == "fixed":
            text = "intensity: 8-bit values 0..255 to [0, 1]"
        else:
            lo, hi = self.pp.percentiles
            text = f"intensity: percentiles {lo:g}..{hi:g} of this scan to [0, 1]"
        return text + ("; MONOCHROME1 inverted (bright = dense)" if info.photometric == "MONOCHROME1" else "")


class ScanIntensityd(MapTransform):
    def __init__(self, keys: Any, pp: PreprocessConfig, info_key: str = "scan_info") -> None:
        super().__init__(keys)
        self.t, self.info_key = ScanIntensity(pp), info_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            info = d[self.info_key]
            d[k] = self.t(d[k], info)
            d[self.info_key] = info.with_step(self.t.describe(info))
        return d
