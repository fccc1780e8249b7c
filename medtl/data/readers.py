"""Reading scans through MONAI's ``LoadImage``, with a DICOM reader that fixes what MONAI lacks.

MONAI's ``PydicomReader`` sorts a series by InstanceNumber, takes spacing from the z component of
ImagePositionPatient only, mixes series found in one folder, puts the frame axis of a multi-frame
file in the middle, and reads the rescale only from the top-level dataset. ``MedtlDicomReader``
(a subclass, so everything else stays MONAI's) sorts slices by their position along the slice
normal, checks one series per folder, moves frames last, and applies the rescale of enhanced
multi-frame files (functional groups) so CT is always in Hounsfield units.

Every failure leaves as a ``ScanError`` that names the file and says why in one line.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.data import MetaTensor, NibabelReader, NumpyReader, PILReader, PydicomReader
from monai.transforms import LoadImage

from medtl.errors import ScanError
from medtl.privacy import SAFE_DICOM_KEYWORDS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class ScanInfo:
    """What a scan is, as read; safe to print (no patient identifiers by construction)."""

    path: str
    kind: str  # dicom | dicom-series | dicom-multiframe | nifti | image | array
    modality: str | None = None
    photometric: str | None = None
    transfer_syntax: str | None = None
    raw_shape: tuple[int, ...] = ()
    spacing: tuple[float, ...] | None = None
    orientation: str | None = None
    frames: int = 1
    color: bool = False
    bits: int | None = None  # stored bits per sample, when the format says
    in_hu: bool = False
    header: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pixel_rescale(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """Slope and intercept from the top level or an enhanced file's functional groups."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0)
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(seq)
        if groups:
            pvt = groups[0].get("PixelValueTransformationSequence")
            if pvt:
                item = pvt[0]
                return float(item.get("RescaleSlope", 1.0)), float(item.get("RescaleIntercept", 0.0))
    return None


class MedtlDicomReader(PydicomReader):
    """MONAI's PydicomReader with position-sorted series and frames-last multi-frame arrays."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("prune_metadata", True)  # geometry only: no patient tags in MONAI meta
        super().__init__(**kwargs)

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Any:
        for name in (data if isinstance(data, (list, tuple)) else [data]):
            p = Path(name)
            if p.is_dir():
                _check_series_folder(p)
        return super().read(data, **kwargs)

    def _combine_dicom_series(self, data: Any, filenames: Sequence[Any]) -> tuple[np.ndarray, dict]:
        slices = list(zip(data, filenames))
        normal = _slice_normal(slices[0][0])
        if normal is not None and all("ImagePositionPatient" in s for s, _ in slices):
            key = lambda s: float(np.dot(normal, np.asarray(s[0].ImagePositionPatient, float)))  # noqa: E731
        else:  # no geometry: fall back to acquisition order
            key = lambda s: float(s[0].get("InstanceNumber", 0) or 0)  # noqa: E731
        slices.sort(key=key)
        arrays = [self._get_array_data(ds, fn) for ds, fn in slices]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"slices of different sizes {sorted(shapes)}")
        positions = np.array([key(s) for s in slices])
        steps = np.diff(positions)
        first = slices[0][0]
        spacing = [float(v) for v in first.get("PixelSpacing", [1.0, 1.0])]
        spacing.append(float(np.median(np.abs(steps))) if len(steps) else 1.0)
        meta = self._get_meta_dict(first)
        meta["spacing"] = np.asarray(spacing)
        if "ImagePositionPatient" in slices[-1][0]:
            meta["lastImagePositionPatient"] = np.asarray(slices[-1][0].ImagePositionPatient, float)
            meta["00200032"] = {"vr": "DS", "Value": [float(v) for v in first.ImagePositionPatient]}
        meta["spatial_shape"] = arrays[0].shape + (len(arrays),)
        return np.stack(arrays, axis=-1), meta

    def _get_array_data(self, img: pydicom.Dataset, filename: Any) -> np.ndarray:
        if "PixelData" not in img and "FloatPixelData" not in img and "DoubleFloatPixelData" not in img:
            raise ValueError("no pixel data (PixelData element missing)")
        data = img.pixel_array
        frames = int(img.get("NumberOfFrames", 1) or 1)
        if frames > 1:  # (frames, rows, cols[, rgb]) -> (rows, cols, frames[, rgb])
            data = np.moveaxis(data, 0, 2)
        rescale = _pixel_rescale(img)
        if rescale is not None:
            slope, intercept = rescale
            data = data.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        return data

    def _get_meta_dict(self, img: pydicom.Dataset) -> dict:
        meta = super()._get_meta_dict(img)
        for kw in SAFE_DICOM_KEYWORDS:
            if kw in img and img[kw].value is not None:
                meta[f"dicom.{kw}"] = _plain(img[kw].value)
        tsuid = getattr(getattr(img, "file_meta", None), "TransferSyntaxUID", None)
        if tsuid is not None:
            meta["dicom.TransferSyntax"] = f"{tsuid.name} ({tsuid})"
        meta["dicom.rescaled"] = _pixel_rescale(img) is not None
        return meta


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float, str)):
        return value.__class__(value) if not isinstance(value, str) else str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _slice_normal(ds: pydicom.Dataset) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    n = np.cross(row, col)
    return n if np.linalg.norm(n) > 0 else None


def _check_series_folder(folder: Path) -> None:
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    dicoms = [p for p in files if pydicom.misc.is_dicom(p)]
    if not dicoms:
        raise ScanError(folder, "folder holds no DICOM files" if not files else "folder holds no readable DICOM files")
    uids = set()
    for p in dicoms:
        try:
            uids.add(pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).get("SeriesInstanceUID"))
        except Exception as e:  # noqa: BLE001
            raise ScanError(p, f"unreadable DICOM in series folder ({_reason(e)})") from None
    if len(uids) > 1:
        raise ScanError(folder, f"folder mixes {len(uids)} DICOM series; give one series per folder")


def scan_kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "dicom-series"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    if name.endswith(".npy"):
        return "array"
    return "dicom"  # .dcm or no extension: DICOM is checked by its preamble when read


def _reader_for(kind: str) -> Any:
    if kind.startswith("dicom"):
        return MedtlDicomReader()
    if kind == "nifti":
        return NibabelReader()
    if kind == "image":
        return PILReader()
    return NumpyReader()


def _reason(e: BaseException) -> str:
    """A plain one-line reason for a library exception."""
    text = " ".join(str(e).split()) or type(e).__name__
    low = text.lower()
    if "unable to decode" in low or "no pixel data handler" in low or "missing required" in low and "plugin" in low:
        return f"compressed pixel data and no decoder can read it ({text[:160]})"
    if isinstance(e, (EOFError, zlib.error)) or "truncat" in low or "buffer" in low and "size" in low:
        return f"file is truncated or corrupt ({text[:160]})"
    return text[:200]


def read_scan(path: str | Path) -> tuple[MetaTensor, ScanInfo]:
    """Load one scan channel-first through MONAI; arrays are float32 in the scan's own units."""
    p = Path(path)
    if not p.exists():
        raise ScanError(p, "file not found")
    if p.is_file() and p.stat().st_size == 0:
        raise ScanError(p, "file is empty (0 bytes)")
    kind = scan_kind(p)
    if kind == "dicom" and not pydicom.misc.is_dicom(p):
        try:  # DICOM without the 128-byte preamble is still DICOM
            pydicom.dcmread(p, stop_before_pixels=True, force=False)
        except Exception:  # noqa: BLE001
            raise ScanError(p, "not a DICOM, NIfTI or image file") from None
    loader = LoadImage(reader=_reader_for(kind), image_only=True, ensure_channel_first=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = loader(str(p))
    except ScanError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is this file's problem
        raise ScanError(p, _reason(e)) from None
    return _with_channel(img, p, kind)


def _with_channel(img: MetaTensor, p: Path, kind: str) -> tuple[MetaTensor, ScanInfo]:
    meta = img.meta
    raw_shape = tuple(int(s) for s in img.shape)
    info = ScanInfo(path=str(p), kind=kind, raw_shape=raw_shape)
    if kind.startswith("dicom"):
        hdr = {k.removeprefix("dicom."): v for k, v in meta.items() if str(k).startswith("dicom.")}
        info.modality = hdr.get("Modality")
        info.photometric = hdr.get("PhotometricInterpretation")
        info.transfer_syntax = hdr.pop("TransferSyntax", None)
        info.frames = int(hdr.get("NumberOfFrames", 1) or 1)
        info.in_hu = bool(hdr.pop("rescaled", False)) and info.modality == "CT"
        info.color = int(hdr.get("SamplesPerPixel", 1) or 1) > 1
        info.bits = int(hdr["BitsStored"]) if "BitsStored" in hdr else None
        info.header = hdr
        if kind == "dicom" and info.frames > 1:
            info.kind = "dicom-multiframe"
    elif kind in ("image", "array"):
        info.color = img.ndim == 3 and img.shape[-1] in (3, 4)
        info.bits = 8 if img.dtype == torch.uint8 else None
    elif kind == "nifti":
        info.frames = raw_shape[3] if len(raw_shape) == 4 else 1
    spacing = meta.get("spacing", meta.get("pixdim"))
    if spacing is not None:
        sp = np.asarray(spacing, float).ravel()
        if kind == "nifti":
            sp = sp[1 : 1 + min(3, len(raw_shape))]
        info.spacing = tuple(round(float(v), 4) for v in sp[: min(3, len(raw_shape))])
    affine = meta.get("affine")
    if affine is not None and len(raw_shape) - int(info.color) >= 3 and info.kind != "dicom-multiframe":
        info.orientation = "".join(nib.aff2axcodes(np.asarray(affine, float)))
    arr = img
    # channel first: colour and 4D (time) go to channel 0, everything else gets a new axis
    if info.color or (kind == "nifti" and len(raw_shape) == 4):
        arr = torch.movedim(img, -1, 0)
    else:
        arr = img.unsqueeze(0)
    if not isinstance(arr, MetaTensor):
        arr = MetaTensor(arr, meta=meta)
    spatial = arr.ndim - 1
    if spatial not in (2, 3):
        raise ScanError(p, f"unsupported array of {len(raw_shape)} dimensions {raw_shape}")
    return arr.float(), info
