"""From a scan on disk (or an array) to exactly what the backbone expects, as a MONAI ``Compose``.

load → finite check → one volume of a 4D series → orientation → intensity to [0, 1] → 2D plane
→ channels → pad to square → resize → normalise (mean/std of the backbone's weights).

Stated rules:
* Volumes (NIfTI, DICOM series) are reoriented to LPS, then sliced along ``slice_axis``; slice
  indices count from the right, anterior or inferior end (for axial: as a position-sorted series). ``auto``
  finds the acquisition's through-plane axis: the axis with at most half the voxels of the
  others (a stack of few slices); else the axis with the largest spacing when it is over 10%
  coarser than the finest; else the axial axis. Multi-frame DICOM files are sliced along their
  frames, in stored order.
* Planes are shown in radiological display: rows run anterior→posterior (axial) or
  superior→inferior (coronal, sagittal); the patient's right is on the image's left. 2D files
  keep their stored rows and columns.
* ``middle``/``index`` take one slice, ``2.5d`` the slice and its two neighbours as the three
  channels (edges repeat the border slice), ``mip`` the maximum along the axis.
* 4D NIfTI: volume ``volume_index`` (default the first). One grey channel is repeated to the
  backbone's channel count; RGBA drops alpha.
* The plane is zero-padded to a square (nothing is cropped away: a marker at the edge stays),
  then resized with the weights' interpolation, antialiased when shrinking.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    Orientation,
    Resized,
    SpatialPad,
    Transform,
)

from medtl.config import PreprocessConfig
from medtl.data.intensity import CheckFinite, ScanIntensityd
from medtl.data.readers import ScanInfo, read_scan
from medtl.errors import ConfigError, ScanError
from medtl.models.registry import InputSpec

INFO = "scan_info"
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # in LPS


def array_scan(arr: np.ndarray, name: str = "array") -> tuple[MetaTensor, ScanInfo]:
    """An in-memory image (rows, cols) or (rows, cols, rgb), e.g. a MedMNIST sample."""
    a = np.asarray(arr)
    color = a.ndim == 3 and a.shape[-1] in (3, 4)
    if a.ndim - int(color) != 2:
        raise ScanError(name, f"expected a 2D image, got an array of shape {a.shape}")
    info = ScanInfo(path=name, kind="array", raw_shape=tuple(a.shape), color=color,
                    bits=8 if a.dtype == np.uint8 else None)
    t = torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
    t = t.permute(2, 1, 0) if color else t.T.unsqueeze(0)  # -> (C, x=cols, y=rows) like MONAI
    return MetaTensor(t), info


class LoadScand(MapTransform):
    """Path or array -> channel-first MetaTensor in the scan's units, plus its ``ScanInfo``."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            src = d[k]
            if isinstance(src, (str, Path)):
                d[k], d[INFO] = read_scan(src)
            else:
                d[k], d[INFO] = array_scan(src, str(d.get("path", "array")))
        return d


class CheckFinited(MapTransform):
    def __init__(self, keys: Any, policy: str) -> None:
        super().__init__(keys)
        self.t = CheckFinite(policy)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            d[k] = self.t(d[k], d[INFO].path)
        return d


class SelectVolumed(MapTransform):
    """4D series: keep volume ``index`` of the channel (time) axis; colour channels are kept."""

    def __init__(self, keys: Any, index: int = 0) -> None:
        super().__init__(keys)
        self.index = index

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        info: ScanInfo = d[INFO]
        for k in self.key_iterator(d):
            img = d[k]
            if img.shape[0] > 1 and not info.color:
                if self.index >= img.shape[0]:
                    raise ScanError(info.path, f"volume_index {self.index} but the series has {img.shape[0]} volumes")
                d[k] = img[self.index : self.index + 1]
        return d


class OrientVolumed(MapTransform):
    """Reorient true volumes (NIfTI, DICOM series) to LPS (DICOM's patient axes) with MONAI's ``Orientation``."""

    def __init__(self, keys: Any, axcodes: str = "LPS") -> None:
        super().__init__(keys)
        self.t = Orientation(axcodes=axcodes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        info: ScanInfo = d[INFO]
        for k in self.key_iterator(d):
            if d[k].ndim == 4 and info.kind in ("nifti", "dicom-series"):
                d[k] = self.t(d[k])
        return d


def _slice_axis(img: torch.Tensor, info: ScanInfo, choice: str) -> int:
    if info.kind == "dicom-multiframe" or choice == "auto" and not isinstance(img, MetaTensor):
        return 2
    if choice != "auto":
        return AXES[choice]
    n = np.asarray(img.shape[1:4], float)
    if n.min() * 2 <= np.sort(n)[1]:  # a stack of few slices: its short axis
        return int(np.argmin(n))
    sp = np.asarray(img.pixdim, float)[:3]
    if sp.max() > 1.1 * sp.min():
        return int(np.argmax(sp))
    return AXES["axial"]


class ToPlaned(MapTransform):
    """Volume -> 2D plane(s) by the slice rule, in display layout (C, rows, cols)."""

    def __init__(self, keys: Any, rule: str = "middle", index: int | None = None, axis: str = "auto") -> None:
        super().__init__(keys)
        self.rule, self.index, self.axis = rule, index, axis

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        info: ScanInfo = d[INFO]
        for k in self.key_iterator(d):
            img = d[k]
            axis = None
            if img.ndim == 4:
                axis = _slice_axis(img, info, self.axis)
                img = self._slice(img, axis, info)
            plane = torch.as_tensor(img).transpose(1, 2)  # (C, a, b) -> (C, rows=b, cols=a)
            if axis is not None and axis != AXES["axial"] and info.kind != "dicom-multiframe":
                plane = plane.flip(1)  # rows were S-increasing: superior goes to the top
            d[k] = plane.contiguous()
        return d

    def _slice(self, vol: torch.Tensor, axis: int, info: ScanInfo) -> torch.Tensor:
        v = torch.as_tensor(vol).movedim(axis + 1, -1)  # (C, a, b, n)
        n = v.shape[-1]
        if self.rule == "mip":
            return v.amax(dim=-1)
        mid = n // 2
        if self.rule == "index":
            mid = int(self.index)  # type: ignore[arg-type]
            if not -n <= mid < n:
                raise ScanError(info.path, f"slice_index {self.index} outside the {n} slices along that axis")
        if self.rule == "2.5d":
            if v.shape[0] != 1:
                raise ScanError(info.path, "2.5d needs a single-channel volume")
            idx = [min(max(i, 0), n - 1) for i in (mid - 1, mid, mid + 1)]
            return v[0, :, :, idx].permute(2, 0, 1)
        return v[..., mid]


class ToChannelsd(MapTransform):
    """Grey -> repeated to ``channels``; RGBA -> RGB."""

    def __init__(self, keys: Any, channels: int) -> None:
        super().__init__(keys)
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            img = d[k]
            if img.shape[0] == 4:
                img = img[:3]
            if img.shape[0] == 1 and self.channels != 1:
                img = img.repeat(self.channels, 1, 1)
            if img.shape[0] != self.channels:
                raise ScanError(d[INFO].path, f"{img.shape[0]} channels cannot become {self.channels}")
            d[k] = img
        return d


class SquarePadd(MapTransform):
    """Zero-pad a (C, H, W) plane to a centred square with MONAI's ``SpatialPad``."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            side = max(d[k].shape[1:])
            d[k] = SpatialPad(spatial_size=(side, side), method="symmetric", mode="constant")(d[k])
        return d


def build_augmentations(specs: list[dict[str, Any]], keys: tuple[str, ...] = ("image",)) -> list[Transform]:
    """MONAI random transforms by name from the config, e.g. ``{name: RandFlipd, prob: 0.5, spatial_axis: 1}``."""
    import monai.transforms as mt

    out = []
    for i, raw in enumerate(specs):
        kw = dict(raw)
        name = str(kw.pop("name", ""))
        cls = getattr(mt, name, None)
        if cls is None or not isinstance(cls, type) or not name.startswith("Rand"):
            raise ConfigError(f"train.augment[{i}]", f"'{name}' is not a MONAI random transform (e.g. RandFlipd, RandAffined)")
        if not name.endswith("d"):
            raise ConfigError(f"train.augment[{i}]", f"use the dictionary form '{name}d'")
        try:
            out.append(cls(keys=list(keys), **kw))
        except TypeError as e:
            raise ConfigError(f"train.augment[{i}]", f"{name}: {e}") from None
    return out


def scan_transforms(spec: InputSpec, pp: PreprocessConfig, keys: tuple[str, ...] = ("image",), keep_info: bool = False,
                    augment: list[Transform] | None = None) -> Compose:
    """Deterministic steps (cached by the datasets), then ``augment`` (random, per epoch), then normalisation.

    The same pipeline, without augmentations, is what the logged model applies at prediction.
    """
    steps: list[Any] = [
        LoadScand(keys),
        CheckFinited(keys, pp.nonfinite),
        SelectVolumed(keys, pp.volume_index),
        OrientVolumed(keys),
        ScanIntensityd(keys, pp),
        ToPlaned(keys, pp.slice_rule, pp.slice_index, pp.slice_axis),
        ToChannelsd(keys, spec.channels),
        SquarePadd(keys),
        Resized(keys, spatial_size=(spec.size, spec.size), mode=spec.interpolation, anti_aliasing=True),
        *(augment or []),
        NormalizeIntensityd(keys, subtrahend=list(spec.mean), divisor=list(spec.std), channel_wise=True),
        EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False),
    ]
    if not keep_info:
        steps.append(_DropInfo())
    return Compose(steps, map_items=False)


class _DropInfo(Transform):
    def __call__(self, data: dict[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d.pop(INFO, None)
        return d


def preprocess_scan(source: str | Path | np.ndarray, spec: InputSpec, pp: PreprocessConfig) -> tuple[torch.Tensor, ScanInfo]:
    """One scan to a backbone input ``(C, size, size)``; errors name the file."""
    out = scan_transforms(spec, pp, keep_info=True)({"image": source})
    return out["image"], out[INFO]
