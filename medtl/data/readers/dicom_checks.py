"""What a DICOM header must hold before its pixels can be trusted, and where an enhanced
multi-frame file keeps its geometry and rescale (functional groups).

The checks name the element and the problem in plain words, and never quote a value: a header
value can be an identifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.tag import Tag

from medtl.data.readers.wording import PlainError

_UNDEFINED = 0xFFFFFFFF
# header elements whose type must be right before pixels can be decoded: keyword -> (tag, allowed VRs)
_PIXEL_VRS = {kw: (tag_for_keyword(kw), tuple(dictionary_VR(kw).split(" or ")))
              for kw in ("Rows", "Columns", "BitsAllocated", "BitsStored", "SamplesPerPixel", "PixelRepresentation",
                         "NumberOfFrames", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
                         "RescaleSlope", "RescaleIntercept", "SliceThickness")}


def float_values(ds: pydicom.Dataset, keyword: str) -> list[float] | None:
    """A numeric header element as floats, or a plain error when it holds something else."""
    if keyword not in ds:
        return None
    value = ds[keyword].value
    if value is None or value == "":
        return None
    seq = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    try:
        out = [float(v) for v in seq]
    except (TypeError, ValueError):
        raise PlainError(f"header element {keyword} {ds[keyword].tag} is not a number") from None
    if not np.all(np.isfinite(out)):
        raise PlainError(f"header element {keyword} {ds[keyword].tag} is not finite")
    return out


def check_types(ds: pydicom.Dataset, values: bool = True) -> None:
    """Types that decoding and geometry rely on; a wrong VR or a non-number is named plainly.

    The VR check reads raw elements (no value conversion), so it is cheap enough for every slice;
    ``values`` also converts the geometry numbers (once per series: later slices only lend pixels).
    """
    for kw, (tag, expected) in _PIXEL_VRS.items():
        elem = ds.get_item(tag)
        if elem is not None and elem.VR and elem.VR not in expected and elem.VR != "UN":
            raise PlainError(f"header element {kw} {Tag(tag)} has the wrong value representation "
                             f"(VR {elem.VR}, the standard says {' or '.join(expected)})")
    if not values:
        return
    for kw in ("Rows", "Columns", "BitsAllocated", "BitsStored", "SamplesPerPixel", "PixelRepresentation",
               "NumberOfFrames"):
        _whole_number(ds, kw)
    for kw in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness",
               "RescaleSlope", "RescaleIntercept"):
        float_values(ds, kw)
    spacing = float_values(ds, "PixelSpacing")
    if spacing is not None and (len(spacing) != 2 or min(spacing) < 0):
        raise PlainError("header element PixelSpacing (0028,0030) must be two numbers of at least 0")


def _whole_number(ds: pydicom.Dataset, keyword: str) -> None:
    """An integer element pydicom cannot convert (e.g. NumberOfFrames written "1A") named, its value not repeated."""
    if keyword not in ds:
        return
    try:
        value = ds[keyword].value
        if value not in (None, ""):
            int(value)
    except (TypeError, ValueError):
        raise PlainError(f"header element {keyword} {Tag(tag_for_keyword(keyword))} is not a whole number") from None


def check_truncated(ds: pydicom.Dataset) -> None:
    """pydicom stops quietly where a file ends; an element shorter than its stated length says so."""
    tags = list(ds.keys())  # in file order: the last one read is where the file ended
    if not tags:
        raise PlainError("file is truncated (nothing after the file meta header)")
    raw = ds.get_item(tags[-1])
    length = getattr(raw, "length", _UNDEFINED)
    if length != _UNDEFINED and isinstance(raw.value, bytes) and len(raw.value) < length:
        what = "pixel data" if raw.tag == 0x7FE00010 else f"element {raw.tag}"
        raise PlainError(f"file is truncated ({what} has {len(raw.value)} of {length} bytes)")


def check_native_size(ds: pydicom.Dataset) -> None:
    """Uncompressed pixel data whose length is not the header's image size, refused before decoding.

    pydicom decodes whatever fits: Rows 10 on a 64x64 image's bytes came out as 64x6x10 and was
    accepted. Compressed data says its own size, so only native syntaxes are measured here.
    """
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsuid is not None and (not tsuid.is_transfer_syntax or tsuid.is_compressed):
        return
    try:
        for kw in ("Rows", "Columns", "NumberOfFrames", "BitsAllocated", "SamplesPerPixel"):
            int(ds.get(kw, 1) or 1)
    except (TypeError, ValueError):  # a size of the wrong type: check_types words it when decoding fails
        return
    if ds.get("Rows") and ds.get("Columns"):  # a missing size: check_pixel_data words it
        _check_native_length(ds)


def deflate_reason(path: Path, error: BaseException) -> str | None:
    """Why inflating failed when the file meta claims a deflated data set over plain data (said plainly,
    not as "truncated"); None when the file does not claim deflate."""
    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        meta = read_file_meta_info(path)
    except Exception:  # noqa: BLE001
        return None
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    why = " ".join(str(error).split()).split(": ")[-1]
    return (f"the file meta says the data set is deflated (Deflated Explicit VR Little Endian) but it is not "
            f"deflate data (zlib: {why}): the transfer syntax in the file meta is wrong")


def check_pixel_data(ds: pydicom.Dataset) -> None:
    """No pixel data, or a compressed syntax nothing installed can decode."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None) or ds.get("SOPClassUID")
        if "Rows" in ds or "Image Storage" in str(getattr(sop, "name", "")):
            raise PlainError("no pixel data (an image object without PixelData; the file may be truncated)")
        raise PlainError(f"no pixel data (not an image object{': ' + sop.name if sop is not None else ''})")
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise PlainError(f"image size missing or zero in the header (Rows {rows or 0}, Columns {cols or 0})")
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsuid is None:
        return
    if not tsuid.is_transfer_syntax:
        raise PlainError(f"unknown transfer syntax {tsuid}; pixel data cannot be decoded")
    if not tsuid.is_compressed:
        _check_native_length(ds)
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(tsuid)
    except NotImplementedError:
        raise PlainError(f"compressed pixel data ({tsuid.name}) that no DICOM decoder can read") from None
    if not decoder.is_available:
        raise PlainError(f"compressed pixel data ({tsuid.name}) and no decoder installed "
                         "(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)")


def _check_native_length(ds: pydicom.Dataset) -> None:
    if "PixelData" not in ds:
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    expected = (rows * cols * frames * samples * bits + 7) // 8  # BitsAllocated 1: packed bits, whole bytes
    got = len(ds.PixelData)
    if got < expected:
        raise PlainError(f"pixel data is shorter than the header's image size ({got} of {expected} bytes): "
                     "Rows, Columns, NumberOfFrames or BitsAllocated is wrong")
    if got > expected + expected % 2:  # one byte may pad an odd length to even (PS3.5 8.1.1), nothing more
        raise PlainError(f"pixel data is longer than the header's image size ({got} bytes, but {rows} rows x {cols} "
                         f"columns x {frames} frame(s) x {samples} sample(s) x {bits} bits = {expected} bytes): "
                         "Rows, Columns, NumberOfFrames, SamplesPerPixel or BitsAllocated is wrong")


def functional(ds: pydicom.Dataset, seq: str, frame: int = 0) -> pydicom.Dataset | None:
    """An enhanced file's functional-group macro, per-frame first, then shared."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and len(items) > i and seq in items[i] and items[i][seq].value:
            return items[i][seq][0]
    return None


def pixel_rescale(ds: pydicom.Dataset, frame: int = 0) -> tuple[float, float] | None:
    """Slope and intercept from the top level or an enhanced file's functional groups."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0)
    item = functional(ds, "PixelValueTransformationSequence", frame)
    if item is not None:
        return float(item.get("RescaleSlope", 1.0) or 1.0), float(item.get("RescaleIntercept", 0.0) or 0.0)
    return None


def pixel_spacing(ds: pydicom.Dataset) -> list[float] | None:
    """(row spacing, column spacing) in mm: top level, functional groups, or the detector's."""
    sp = float_values(ds, "PixelSpacing")
    if sp is None:
        item = functional(ds, "PixelMeasuresSequence")
        sp = float_values(item, "PixelSpacing") if item is not None else None
    if sp is None or min(sp) <= 0:  # 0 is how some writers say "unknown"
        sp = float_values(ds, "ImagerPixelSpacing")  # projection radiographs: at the detector
    return sp if sp is not None and len(sp) == 2 and min(sp) > 0 else None


@dataclass(frozen=True)
class FrameGeometry:
    """Where each frame of an enhanced multi-frame file lies; frames sorted along the normal."""

    order: list[int]
    orientation: list[float]
    first: list[float]
    last: list[float]
    slice_spacing: float


def frame_geometry(ds: pydicom.Dataset) -> FrameGeometry | None:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < 2 or "PerFrameFunctionalGroupsSequence" not in ds or int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        return None
    orient = functional(ds, "PlaneOrientationSequence")
    iop = float_values(orient, "ImageOrientationPatient") if orient is not None else None
    if iop is None or len(iop) != 6:
        return None
    positions = []
    for i in range(frames):
        item = functional(ds, "PlanePositionSequence", i)
        pos = float_values(item, "ImagePositionPatient") if item is not None else None
        if pos is None or len(pos) != 3:
            return None
        positions.append(np.asarray(pos))
    normal = np.cross(iop[:3], iop[3:])
    along = np.array([float(np.dot(normal, p)) for p in positions])
    order = [int(i) for i in np.argsort(along, kind="stable")]
    steps = np.diff(along[order])
    if len(steps) == 0 or np.any(np.abs(steps) < 1e-4):  # repeated positions: time or echoes, not a volume
        return None
    return FrameGeometry(order, iop, list(positions[order[0]]), list(positions[order[-1]]),
                          float(np.median(np.abs(steps))))


def plain_value(value: Any) -> Any:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [plain_value(v) for v in value]
    if isinstance(value, (int, float)):
        return value.__class__(value)
    if isinstance(value, str):
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def json_value(values: list[float], vr: str = "DS") -> dict[str, Any]:
    return {"vr": vr, "Value": [float(v) for v in values]}


def slice_normal(ds: pydicom.Dataset) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    n = np.cross(row, col)
    return n if np.linalg.norm(n) > 0 else None

