"""From a scan on disk (or an array) to exactly what the backbone expects, as a MONAI ``Compose``.

load → finite check → one volume of a 4D series → orientation → intensity to [0, 1] → 2D plane
→ channels → pad to square → resize → normalise (mean/std of the backbone's weights).

Stated rules:
* Volumes with patient geometry (NIfTI; DICOM series; enhanced multi-frame DICOM whose frames
  carry plane positions) are reoriented to LPS, then sliced along ``slice_axis``; slice indices
  count from the right, anterior or inferior end (for axial: as a position-sorted series).
  ``auto`` finds the acquisition's through-plane axis: the axis with at most half the voxels of
  the others (a stack of few slices); else the axis with the largest spacing when it is over 10%
  coarser than the finest; else the axial axis. Stacks without geometry (multi-frame files
  without plane positions, series without ImagePositionPatient) are sliced along their frames,
  in stored order.
* Planes are shown in radiological display: rows run anterior→posterior (axial) or
  superior→inferior (coronal, sagittal); the patient's right is on the image's left. 2D files
  keep their stored rows and columns.
* ``middle``/``index`` take one slice, ``2.5d`` the slice and its two neighbours as the three
  channels (edges repeat the border slice), ``mip`` the maximum along the axis.
* 4D NIfTI: volume ``volume_index`` (default the first). One grey channel is repeated to the
  backbone's channel count; RGBA drops alpha.
* A plane of a volume whose two in-plane spacings differ (a sagittal plane of a 5 mm CT) is
  resampled to square pixels at the finer spacing (bilinear) before anything else.
* The plane is zero-padded to a square (nothing is cropped away: a marker at the edge stays),
  then resized with the weights' interpolation, antialiased when shrinking.

Each data-dependent step records what it did in ``ScanInfo.applied`` (which slice, which window),
so ``medtl inspect`` and ``medtl preview`` can say exactly what the backbone received.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
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
    Resize,
    Resized,
    SpatialPad,
    Transform,
)

from medtl.config import PreprocessConfig
from medtl.data.intensity import INTENSITY, ApplyIntensityd, CheckFinite, IntensityMap, PlanIntensityd, nonfinite_count
from medtl.data.readers import ScanInfo, array_scan, axcodes, read_scan, reason
from medtl.errors import MedtlError, ScanError
from medtl.models.registry import InputSpec

INFO = "scan_info"
PLANE_SPACING = "medtl.plane_spacing"  # (row, column) mm of a plane cut from a volume, for SquarePixelsd
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}  # in LPS
AXIS_NAMES = {v: k for k, v in AXES.items()}

__all__ = ["INFO", "AXES", "LoadScand", "CheckFinited", "SelectVolumed", "OrientVolumed", "ToPlaned", "SquarePixelsd", "ToChannels",
           "ToChannelsd", "SquarePad", "SquarePadd", "PreparedScan", "array_scan", "prepare_scan",
           "preprocess_scan", "scan_transforms", "single_threaded"]


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
            bad = nonfinite_count(d[k])
            if bad:
                d[k] = self.t(d[k], d[INFO].path)
                d[INFO] = d[INFO].with_step(f"non-finite: {bad} voxel(s) filled with the lowest finite value")
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
                d[INFO] = info.with_step(f"volume: {self.index} of {img.shape[0]} (4D series; preprocess.volume_index)")
        return d


def _axcodes(img: torch.Tensor) -> str:
    return "".join(axcodes(img.affine)) if isinstance(img, MetaTensor) else "?"


class OrientVolumed(MapTransform):
    """Reorient volumes with patient geometry to LPS (DICOM's patient axes) with MONAI's ``Orientation``."""

    def __init__(self, keys: Any, axcodes: str = "LPS") -> None:
        super().__init__(keys)
        self.axcodes = axcodes
        self.t = Orientation(axcodes=axcodes, labels=(("L", "R"), ("P", "A"), ("I", "S")))  # RAS letters, said

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        info: ScanInfo = d[INFO]
        for k in self.key_iterator(d):
            if d[k].ndim == 4 and info.volume:
                before = _axcodes(d[k])
                d[k] = self.t(d[k])
                if before != self.axcodes:
                    d[INFO] = d[INFO].with_step(f"orientation: reoriented to {self.axcodes} "
                                                f"(the file's axes run {info.orientation})")
        return d


def _slice_axis(img: torch.Tensor, info: ScanInfo, choice: str) -> int:
    if not info.volume or choice == "auto" and not isinstance(img, MetaTensor):
        return 2  # a stack without geometry: its frames
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
                if info.volume and isinstance(img, MetaTensor):  # plane rows run along b, columns along a
                    a, b = (i for i in range(3) if i != axis)
                    sp = np.asarray(img.pixdim, float)[:3]
                    d[PLANE_SPACING] = (float(sp[b]), float(sp[a]))
                plan: IntensityMap | None = d.get(INTENSITY)
                img, step = self._slice(img, axis, info, inverted=bool(plan and plan.invert))
                d[INFO] = d[INFO].with_step(step)
            plane = torch.as_tensor(img).transpose(1, 2)  # (C, a, b) -> (C, rows=b, cols=a)
            if axis is not None and axis != AXES["axial"] and info.volume:
                plane = plane.flip(1)  # rows were S-increasing: superior goes to the top
            d[k] = plane.contiguous()
        return d

    def _slice(self, vol: torch.Tensor, axis: int, info: ScanInfo, inverted: bool = False) -> tuple[torch.Tensor, str]:
        v = torch.as_tensor(vol).movedim(axis + 1, -1)  # (C, a, b, n)
        n = v.shape[-1]
        what = f"{AXIS_NAMES[axis]} slice" if info.volume else "frame (stored order)"
        if self.rule == "mip":
            if inverted:  # MONOCHROME1: dense is low; after inversion the maximum is this minimum
                return v.amin(dim=-1), f"slice: maximum-intensity projection over {n} {what}s (of the inverted values)"
            return v.amax(dim=-1), f"slice: maximum-intensity projection over {n} {what}s"
        mid = n // 2
        how = "the middle"
        if self.rule == "index":
            mid = int(self.index)  # type: ignore[arg-type]
            if not -n <= mid < n:
                raise ScanError(info.path, f"slice_index {self.index} outside the {n} slices along that axis")
            mid, how = mid % n, "preprocess.slice_index"
        if self.rule == "2.5d":
            if v.shape[0] != 1:
                raise ScanError(info.path, "2.5d needs a single-channel volume")
            idx = [min(max(i, 0), n - 1) for i in (mid - 1, mid, mid + 1)]
            return v[0, :, :, idx].permute(2, 0, 1), f"slice: 2.5D, {what}s {idx} of {n} as the three channels"
        return v[..., mid], f"slice: {what} {mid} of {n} (0-based; {how})"


class ToChannels(Transform):
    """RGBA -> RGB, grey -> repeated to ``channels``, on the channel axis (-3) of one image (C, H, W)
    or a batch (N, C, H, W).

    ``drop_alpha`` and ``repeat_grey`` are its two halves, for the batch path (``BatchedArrays``),
    which keeps grey planes single-channel until a batch is made and repeats them as a view.
    """

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def drop_alpha(self, img: torch.Tensor, subject: str | None = None) -> torch.Tensor:
        """Alpha dropped; then one channel or ``channels`` of them, or a ``ScanError``."""
        if img.shape[-3] == 4:
            img = img[..., :3, :, :]
        if img.shape[-3] not in (1, self.channels):
            raise ScanError(subject, f"{img.shape[-3]} channels cannot become {self.channels}")
        return img

    def repeat_grey(self, img: torch.Tensor, view: bool = False) -> torch.Tensor:
        if img.shape[-3] != 1 or self.channels == 1:
            return img
        if view:
            return img.expand(*img.shape[:-3], self.channels, *img.shape[-2:])
        return img.repeat(*([1] * (img.ndim - 3)), self.channels, 1, 1)

    def __call__(self, img: torch.Tensor, subject: str | None = None) -> torch.Tensor:
        return self.repeat_grey(self.drop_alpha(img, subject))


class SquarePixelsd(MapTransform):
    """A plane cut across an anisotropic volume, resampled to square pixels (MONAI ``Resize``, bilinear).

    The coarser axis is upsampled to the finer spacing (nothing is thrown away), so a sagittal
    plane of a 5 mm CT or an axial plane of a 4.8 mm sagittal MR keeps its physical proportions
    instead of arriving as a strip padded to a square. 2D files keep their stored pixels.
    """

    tolerance = 0.01  # spacings within 1% count as square
    max_side = 4096

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        spacing = d.pop(PLANE_SPACING, None)
        if spacing is None or min(spacing) <= 0 or max(spacing) <= (1 + self.tolerance) * min(spacing):
            return d
        row_sp, col_sp = spacing
        fine = min(spacing)
        for k in self.key_iterator(d):
            h, w = d[k].shape[1:]
            size = (min(self.max_side, round(h * row_sp / fine)), min(self.max_side, round(w * col_sp / fine)))
            d[k] = Resize(spatial_size=size, mode="bilinear")(d[k])
            d[INFO] = d[INFO].with_step(f"square pixels: {h}x{w} plane at {row_sp:.3g}x{col_sp:.3g} mm resampled to "
                                        f"{size[0]}x{size[1]} ({fine:.3g} mm square, bilinear)")
        return d


class ToChannelsd(MapTransform):
    """``ToChannels`` on each key, recording what it did."""

    def __init__(self, keys: Any, channels: int) -> None:
        super().__init__(keys)
        self.t = ToChannels(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            c = d[k].shape[0]
            d[k] = self.t(d[k], d[INFO].path)
            if c == 4:
                d[INFO] = d[INFO].with_step("channels: alpha dropped")
            if c == 1 and self.t.channels != 1:
                d[INFO] = d[INFO].with_step(f"channels: grey repeated to {self.t.channels}")
        return d


class SquarePad(Transform):
    """Zero-pad the last two axes to a centred square with MONAI's ``SpatialPad`` (nothing cropped);
    one plane (C, H, W) or a batch (N, C, H, W)."""

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        if h == w:
            return img
        side = max(h, w)
        pad = SpatialPad(spatial_size=(side, side), method="symmetric", mode="constant")
        if img.ndim == 3:
            return pad(img)
        return pad(img.reshape(-1, h, w)).reshape(*img.shape[:-2], side, side)


class SquarePadd(MapTransform):
    """``SquarePad`` on each key, recording the padding."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for k in self.key_iterator(d):
            h, w = d[k].shape[1:]
            if h != w:
                d[k] = SquarePad()(d[k])
                side = max(h, w)
                d[INFO] = d[INFO].with_step(f"pad: {h}x{w} zero-padded to {side}x{side} (nothing cropped)")
        return d


def _plane_steps(pp: PreprocessConfig, keys: tuple[str, ...], intensity: bool = True) -> list[Any]:
    """After loading: finite check, 4D volume, orientation, intensity map (planned on the volume,
    applied to the plane), slice rule -> a display plane in [0, 1]."""
    steps: list[Any] = [CheckFinited(keys, pp.nonfinite), SelectVolumed(keys, pp.volume_index), OrientVolumed(keys)]
    plane = ToPlaned(keys, pp.slice_rule, pp.slice_index, pp.slice_axis)
    if not intensity:
        return [*steps, plane, SquarePixelsd(keys)]
    return [*steps, PlanIntensityd(keys, pp), plane, ApplyIntensityd(keys), SquarePixelsd(keys)]


def scan_transforms(spec: InputSpec, pp: PreprocessConfig, keys: tuple[str, ...] = ("image",), keep_info: bool = False,
                    augment: list[Transform] | None = None) -> Compose:
    """Deterministic steps (cached by the datasets), then ``augment`` (random, per epoch), then normalisation.

    The same pipeline, without augmentations, is what the logged model applies at prediction.
    The first step (``LoadScand``) is the only one that touches the disk.
    """
    steps: list[Any] = [
        LoadScand(keys),
        *_plane_steps(pp, keys),
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


def spec_steps(spec: InputSpec) -> list[str]:
    """The steps every scan gets from the backbone's input specification."""
    return [f"resize: to {spec.size}x{spec.size} ({spec.interpolation}, antialiased when shrinking)",
            f"normalise: mean {[round(m, 4) for m in spec.mean]}, std {[round(s, 4) for s in spec.std]} "
            f"(from {spec.source})"]


@dataclass
class PreparedScan:
    """One scan read once: as read, as the backbone receives it, and what happened in between."""

    raw: MetaTensor  # channel-first, in the scan's own units (HU for CT)
    info: ScanInfo  # ``info.applied`` lists the data-dependent steps
    image: torch.Tensor  # (C, size, size), normalised
    spec: InputSpec
    raw_plane: torch.Tensor | None = None  # the same plane before intensity mapping, display layout

    @property
    def steps(self) -> list[str]:
        return [*self.info.applied, *spec_steps(self.spec)]


def prepare_scan(source: str | Path | np.ndarray, spec: InputSpec, pp: PreprocessConfig,
                 raw_plane: bool = False, pipeline: Compose | None = None) -> PreparedScan:
    """Read a scan once and run the backbone's pipeline on it (and, for previews, the raw plane).

    ``pipeline``: ``scan_transforms(spec, pp, keep_info=True)`` built once by a caller that
    prepares many scans.
    """
    keys = ("image",)
    pipeline = pipeline or scan_transforms(spec, pp, keys, keep_info=True)
    with _named_errors(source):
        loaded = pipeline.transforms[0]({"image": source})
        out = Compose(pipeline.transforms[1:], map_items=False)(dict(loaded))
        plane = None
        if raw_plane:
            plane = Compose(_plane_steps(pp, keys, intensity=False), map_items=False)(dict(loaded))["image"]
    return PreparedScan(loaded["image"], out[INFO], out["image"], spec, plane)


def preprocess_scan(source: str | Path | np.ndarray, spec: InputSpec, pp: PreprocessConfig) -> tuple[torch.Tensor, ScanInfo]:
    """One scan to a backbone input ``(C, size, size)``; errors name the file."""
    with _named_errors(source):
        out = scan_transforms(spec, pp, keep_info=True)({"image": source})
    return out["image"], out[INFO]


@contextmanager
def single_threaded() -> Iterator[None]:
    """Preprocess with one torch thread, as DataLoader workers do.

    A scan's tensors are small: intra-op threads buy nothing, and on a busy machine their barriers
    wait on descheduled threads (measured: 24 ms instead of 24 us for one 224x224 normalisation).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _named_errors(source: Any) -> Iterator[None]:
    """Whatever breaks while preprocessing one scan leaves as one ``ScanError`` naming it.

    MONAI's ``Compose`` wraps a transform's exception in ``RuntimeError("applying transform ...")``;
    the error a user should see is the one inside.
    """
    try:
        yield
    except MedtlError:
        raise
    except Exception as e:  # noqa: BLE001
        inner: BaseException = e
        while inner.__cause__ is not None and not isinstance(inner, MedtlError):
            inner = inner.__cause__
        if isinstance(inner, MedtlError):
            raise inner from None
        subject = str(source) if isinstance(source, (str, Path)) else "array"
        raise ScanError(subject, f"preprocessing failed: {reason(inner)}") from None
