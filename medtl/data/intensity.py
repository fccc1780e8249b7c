"""Intensity: Hounsfield windows for CT, percentiles for MR and the rest, MONOCHROME1 inverted.

Readers already put CT in Hounsfield units (RescaleSlope/Intercept, also from enhanced files'
functional groups). Each rule maps to [0, 1] through MONAI's own scaling transforms.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.transforms import MapTransform, ScaleIntensityRange, Transform

from medtl.config import WINDOWS, PreprocessConfig, WindowConfig
from medtl.errors import ConfigError, ScanError
from medtl.data.readers import ScanInfo


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


_PERCENTILE_VOXELS = 2_000_000
INTENSITY = "intensity_map"  # the data-dict key of a scan's planned IntensityMap


def _as_numpy(img: torch.Tensor) -> np.ndarray:
    return (img.as_tensor() if hasattr(img, "as_tensor") else img).detach().cpu().numpy()


def nonfinite_count(img: torch.Tensor) -> int:
    """NaN and inf voxels, counted with numpy (one pass, no copy of the tensor)."""
    a = _as_numpy(img)
    return 0 if bool(np.isfinite(a).all()) else int(a.size - np.isfinite(a).sum())


class CheckFinite(Transform):
    """NaN and inf are an error by default, or filled with the lowest finite value when asked."""

    def __init__(self, policy: str = "error") -> None:
        self.policy = policy

    def __call__(self, img: torch.Tensor, path: str = "") -> torch.Tensor:
        bad = nonfinite_count(img)
        if not bad:
            return img
        finite = torch.isfinite(img)
        if self.policy == "error" or not bool(finite.any()):
            raise ScanError(path or None, f"{bad} non-finite voxel(s) (NaN or inf); set preprocess.nonfinite: fill to replace them")
        low = img[finite].min()
        return torch.where(finite, img, low)


class IntensityMap(NamedTuple):
    """``lo`` -> 0 and ``hi`` -> 1, clipped; ``invert`` then flips it (MONOCHROME1: bright = dense)."""

    lo: float
    hi: float
    invert: bool
    text: str


class ScanIntensity(Transform):
    """Map a scan to [0, 1] by its rule, then invert MONOCHROME1 so bright is always dense.

    ``plan`` decides the mapping from the whole scan (a window is fixed; percentiles come from
    the whole volume); ``apply`` maps any part of it. The pipeline plans on the volume and
    applies to the plane the slice rule took: the same numbers as mapping the volume (the map
    is monotonic, so it commutes with taking slices and maximum projections) for a fraction of
    the work on large volumes. Called directly, it does both.
    """

    def __init__(self, pp: PreprocessConfig) -> None:
        self.pp = pp

    def plan(self, img: torch.Tensor, info: ScanInfo) -> IntensityMap:
        rule = intensity_rule(info, self.pp)
        invert = info.photometric == "MONOCHROME1"
        if rule == "window":
            if not in_hu(info, self.pp):
                raise ScanError(info.path, f"window '{self.pp.window}' needs CT in Hounsfield units; "
                                           f"this scan is {info.modality or info.kind}")
            level, width = resolve_window(self.pp.window)
            name = self.pp.window if isinstance(self.pp.window, str) else "custom"
            lo, hi, text = level - width / 2, level + width / 2, f"CT window {name} (level {level:g}, width {width:g} HU)"
        elif rule == "fixed":
            lo, hi, text = 0.0, 255.0, "8-bit values 0..255"
        else:
            lo, hi = self._percentiles(img)
            q0, q1 = self.pp.percentiles
            text = f"percentiles {q0:g}..{q1:g} of this scan ({lo:.4g}..{hi:.4g})"
            if hi <= lo:
                text = "constant scan: all 0"
        text = f"intensity: {text} to [0, 1]" + ("; MONOCHROME1 inverted (bright = dense)" if invert else "")
        return IntensityMap(float(lo), float(hi), invert, text)

    def _percentiles(self, img: torch.Tensor) -> tuple[float, float]:
        """Safe for (nearly) constant scans: equal percentiles fall back to min..max. On volumes of
        more than ~2M voxels they are taken on a regular grid (every 2nd or 3rd voxel along each
        axis): the same numbers to a fraction of a grey level, at a tenth of the cost."""
        step = max(1, int(np.ceil((img[0].numel() / _PERCENTILE_VOXELS) ** (1 / max(1, img.ndim - 1)))))
        grid = img[(slice(None), *[slice(None, None, step)] * (img.ndim - 1))] if step > 1 else img
        lo, hi = (float(v) for v in np.percentile(_as_numpy(grid), self.pp.percentiles))
        if hi <= lo:
            lo, hi = float(img.min()), float(img.max())
        return lo, hi

    @staticmethod
    def apply(img: torch.Tensor, m: IntensityMap) -> torch.Tensor:
        out = torch.zeros_like(img) if m.hi <= m.lo else ScaleIntensityRange(m.lo, m.hi, 0.0, 1.0, clip=True)(img)
        return 1.0 - out if m.invert else out

    def __call__(self, img: torch.Tensor, info: ScanInfo) -> torch.Tensor:
        return self.apply(img, self.plan(img, info))

    def map_batch(self, stack: torch.Tensor, info: ScanInfo) -> torch.Tensor:
        """A batch (N, C, H, W) of 2D images that share one ``ScanInfo`` (an in-memory split) to [0, 1],
        each image by the map its own scan gets: one map for a fixed range or a CT window; otherwise
        each image's own percentiles, vectorised, with ``_percentiles``' fallbacks (min..max, then 0)."""
        if intensity_rule(info, self.pp) != "percentile":
            return self.apply(stack, self.plan(stack[:1, 0], info))
        flat = stack.reshape(len(stack), -1).numpy()
        lo, hi = np.percentile(flat, self.pp.percentiles, axis=1)
        same = hi <= lo
        lo = np.where(same, flat.min(axis=1), lo).astype(np.float64)
        hi = np.where(same, flat.max(axis=1), hi).astype(np.float64)
        const = hi <= lo
        shape = (-1,) + (1,) * (stack.ndim - 1)
        scale = torch.as_tensor(np.where(const, 1.0, hi - lo), dtype=torch.float32).view(shape)
        out = ((stack - torch.as_tensor(lo, dtype=torch.float32).view(shape)) / scale).clamp_(0.0, 1.0)
        out[torch.as_tensor(const)] = 0.0
        return 1.0 - out if info.photometric == "MONOCHROME1" else out

    def describe(self, info: ScanInfo, img: torch.Tensor | None = None) -> str:
        """The rule a scan gets, in words (for ``inspect`` and ``preview``)."""
        return self.plan(img if img is not None else torch.zeros(1, 2, 2), info).text


class PlanIntensityd(MapTransform):
    """Decide each scan's intensity map on the whole volume (stored under ``map_key``)."""

    def __init__(self, keys: Any, pp: PreprocessConfig, info_key: str = "scan_info", map_key: str = INTENSITY) -> None:
        super().__init__(keys)
        self.t, self.info_key, self.map_key = ScanIntensity(pp), info_key, map_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            d[self.map_key] = self.t.plan(d[k], d[self.info_key])
        return d


class ApplyIntensityd(MapTransform):
    """Map to [0, 1] by the planned map (after the slice rule: only the plane is touched)."""

    def __init__(self, keys: Any, info_key: str = "scan_info", map_key: str = INTENSITY) -> None:
        super().__init__(keys)
        self.info_key, self.map_key = info_key, map_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        m: IntensityMap = d.pop(self.map_key)
        for k in self.key_iterator(d):
            d[k] = ScanIntensity.apply(d[k], m)
        d[self.info_key] = d[self.info_key].with_step(m.text)
        return d
