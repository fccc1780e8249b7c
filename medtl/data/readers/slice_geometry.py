"""A stack of DICOM slices onto an orthogonal, evenly spaced grid: gantry tilt and uneven gaps.

A CT acquired with the gantry tilted has slices whose positions step off the slice normal (the
cross product of ImageOrientationPatient's row and column directions): the stack is sheared, so
a reformatted plane leans and no orthogonal affine describes it. A series with uneven gaps
(missing slices, mixed spacing) cannot be described by one slice spacing either. Both are
resampled, as dcm2niix does, so that the affine medtl reports and the spacing agree:

* tilt: each slice is shifted in its own plane by its offset off the normal (bilinear, the
  outside filled with the slice's minimum, e.g. air), which puts every slice on the normal
  through the first slice's origin;
* uneven gaps: slices are interpolated linearly along the normal onto an even grid at the
  median gap (hand-written: ``np.searchsorted`` brackets each target position).

Everything found and done is returned as plain notes for ``ScanInfo.applied``; the tilt angle in
degrees and the smallest and largest gap are returned for ``ScanInfo``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

TILT_TOLERANCE_DEG = 0.05  # below this the shear moves no voxel centre by a visible amount
GAP_TOLERANCE = 0.01  # relative spread of the gaps (and at least 0.01 mm) still counted as even


@dataclass
class StackGeometry:
    tilt_deg: float
    gaps: tuple[float, float]  # smallest and largest gap along the normal, mm
    spacing: float  # the slice spacing of the returned volume, mm
    last_position: np.ndarray  # ImagePositionPatient of the returned volume's last slice
    notes: list[str] = field(default_factory=list)


def regularise(volume: np.ndarray, positions: np.ndarray, iop: np.ndarray,
               pixel_spacing: tuple[float, float], gantry_tilt: float | None = None) -> tuple[np.ndarray, StackGeometry]:
    """``volume`` (slices, rows, cols) sorted along the normal; ``positions`` (slices, 3) in mm.

    Returns the volume on an orthogonal, even grid (the input itself when it already is) and
    what was found. ``gantry_tilt`` (GantryDetectorTilt) is only reported beside the measured
    angle: the positions are what the correction uses.
    """
    row_dir, col_dir = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    offsets = positions - positions[0]
    along = offsets @ normal
    gaps = np.diff(along)
    span = float(np.linalg.norm(offsets[-1]))
    tilt = math.degrees(math.acos(min(1.0, abs(along[-1]) / span))) if span > 0 else 0.0
    geom = StackGeometry(round(tilt, 3), (round(float(gaps.min()), 4), round(float(gaps.max()), 4)),
                         float(np.median(gaps)), positions[-1].astype(float))
    out = volume
    if tilt > TILT_TOLERANCE_DEG:
        said = f" (GantryDetectorTilt {gantry_tilt:g}°)" if gantry_tilt not in (None, 0) else ""
        u, v = offsets @ row_dir, offsets @ col_dir  # in-plane drift along columns (x) and rows (y), mm
        out = _shift_slices(out, v / pixel_spacing[0], u / pixel_spacing[1])
        geom.notes.append(f"geometry: gantry tilt {tilt:.2f}°{said} corrected: each slice shifted in its plane "
                          "onto the slice normal (bilinear, as dcm2niix does)")
    spread = gaps.max() - gaps.min()
    if len(gaps) and spread > max(GAP_TOLERANCE * geom.spacing, 0.01):
        out, n_before = _even_grid(out, along, geom.spacing), out.shape[0]
        geom.notes.append(f"geometry: uneven slice gaps {gaps.min():.3g}..{gaps.max():.3g} mm: {n_before} slices "
                          f"resampled to {out.shape[0]} at an even {geom.spacing:.3g} mm (linear along the normal)")
    if out is not volume or tilt > TILT_TOLERANCE_DEG:
        geom.last_position = positions[0] + normal * geom.spacing * (out.shape[0] - 1)
    return out, geom


def _shift_slices(volume: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Slice k moved by (rows[k], cols[k]) pixels: out[k, r, c] = in[k, r - rows[k], c - cols[k]]."""
    from scipy.ndimage import shift

    out = np.empty(volume.shape, np.float32)
    for k in range(volume.shape[0]):
        sl = volume[k].astype(np.float32)
        out[k] = shift(sl, (rows[k], cols[k]), order=1, mode="constant", cval=float(sl.min()))
    return out


def _even_grid(volume: np.ndarray, along: np.ndarray, step: float) -> np.ndarray:
    """Linear interpolation along the slice axis from positions ``along`` onto 0, step, 2 step..."""
    n = int(round(along[-1] / step)) + 1
    targets = np.minimum(np.arange(n) * step, along[-1])
    hi = np.clip(np.searchsorted(along, targets, side="right"), 1, len(along) - 1)
    lo = hi - 1
    w = ((targets - along[lo]) / (along[hi] - along[lo])).astype(np.float32)[:, None, None]
    vol = volume.astype(np.float32, copy=False)
    return (vol[lo] * (1 - w) + vol[hi] * w).astype(np.float32)
