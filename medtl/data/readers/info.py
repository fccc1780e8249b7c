"""What a scan is, as read (``ScanInfo``), and the geometry every format shares: axis codes of an
affine, the size check, and the move to channel-first."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from medtl.errors import ScanError

NON_SPATIAL = ("samples", "channels", "t")  # raw axes that are not positions in space


@dataclass
class ScanInfo:
    """What a scan is, as read; safe to print (no patient identifiers by construction).

    ``raw_shape`` is in the file's own terms, named by ``raw_axes`` (DICOM: ``frames``/``slices``,
    ``rows``, ``columns``, ``samples``; NIfTI: voxel axes ``i``, ``j``, ``k`` and ``t``; images:
    ``rows``, ``columns``, ``channels``). ``spacing`` is in mm per raw axis, ``None`` where the
    axis is not spatial or the file does not say. ``orientation`` gives, for each spatial raw axis
    in order, the patient direction its index runs toward (nibabel's RAS letters).
    """

    path: str
    kind: str  # dicom | dicom-series | dicom-multiframe | nifti | image | array
    modality: str | None = None
    photometric: str | None = None
    transfer_syntax: str | None = None
    raw_shape: tuple[int, ...] = ()
    raw_axes: tuple[str, ...] = ()
    spacing: tuple[float | None, ...] | None = None
    orientation: str | None = None
    volume: bool = False  # a 3D volume with known patient geometry (reoriented before slicing)
    frames: int = 1
    color: bool = False
    bits: int | None = None  # stored bits per sample, when the format says
    in_hu: bool = False
    tilt_deg: float | None = None  # a DICOM series: angle between the slice normal and the slice positions' path
    slice_gaps: tuple[float, float] | None = None  # a DICOM series: smallest and largest gap along the normal, mm
    header: dict[str, Any] = field(default_factory=dict)
    applied: tuple[str, ...] = ()  # what preprocessing did, step by step (filled by the transforms)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_step(self, step: str) -> ScanInfo:
        """A copy that records one more preprocessing step (the original stays as read)."""
        return replace(self, applied=(*self.applied, step))

    @property
    def spatial_shape(self) -> list[int]:
        return [n for n, a in zip(self.raw_shape, self.raw_axes) if a not in NON_SPATIAL]


def check_size(subject: Any, info: ScanInfo, plane_last: bool = True) -> None:
    """A shape a backbone can use: 2 or 3 spatial axes, none of them empty or a single line.

    ``plane_last``: the plane is the last two spatial axes (DICOM, images); otherwise (NIfTI, whose
    voxel axes may run any way) the two largest.
    """
    spatial = info.spatial_shape
    if len(spatial) not in (2, 3):
        raise ScanError(subject, f"unsupported {len(info.raw_shape)}D array {tuple(info.raw_shape)}: medtl reads 2D images, "
                                 "3D volumes and 4D series")
    if min(spatial[-2:] if plane_last else sorted(spatial)[-2:]) < 2 or 0 in spatial:
        raise ScanError(subject, f"image too small to be a scan (shape {tuple(info.raw_shape)})")


def image_layout(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """A 2D picture's own axes from MONAI's (width, height[, c]) array: (rows, columns[, channels])."""
    return (shape[1], shape[0], *shape[2:]), ("rows", "columns", "channels")[: len(shape)]


def is_colour(img: torch.Tensor | np.ndarray) -> bool:
    return img.ndim == 3 and img.shape[-1] in (3, 4)


def channel_first(img: torch.Tensor, meta: dict, last_is_channel: bool) -> MetaTensor:
    """Colour samples or a 4D series' time axis (the last axis) go to channel 0; else a new axis."""
    arr = torch.movedim(img, -1, 0) if last_is_channel else img.unsqueeze(0)
    return MetaTensor(arr.float(), meta=meta)


def axcodes(affine: Any) -> tuple[str, ...]:
    """RAS letters of each voxel axis: the world axis its direction is closest to.

    The same as ``nibabel.aff2axcodes`` for all but extreme obliques, without its SVD (a tenth of
    a millisecond per scan instead of most of one); where two axes would share a letter,
    nibabel decides.
    """
    a = np.asarray(affine, float)[:3, :3]
    idx = np.abs(a).argmax(axis=0)
    if len(set(idx.tolist())) < 3:
        return tuple(nib.aff2axcodes(np.asarray(affine, float)))
    sign = np.sign(a[idx, range(3)])
    return tuple(("RAS" if s > 0 else "LPI")[i] for i, s in zip(idx, sign))


def mm(v: Any) -> float:
    """A spacing as reported: mm to four decimals."""
    return round(float(v), 4)
