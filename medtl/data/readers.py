"""Reading scans through MONAI's ``LoadImage``, with a DICOM reader that fixes what MONAI lacks.

MONAI's ``PydicomReader`` sorts a series by InstanceNumber, takes spacing from the z component of
ImagePositionPatient only, mixes series found in one folder, puts the frame axis of a multi-frame
file in the middle, reads the rescale only from the top-level dataset, and turns the whole
dataset (pixel data included) into JSON to keep five geometry tags. ``MedtlDicomReader`` (a
subclass, so everything else stays MONAI's) reads each file of a series folder once, checks it
holds one series, sorts slices by their position along the slice normal, moves frames last,
takes an enhanced multi-frame file's geometry and rescale from its functional groups (so CT is
always in Hounsfield units and an enhanced volume is oriented like a series), and checks the
header before decoding so that a broken file gets a plain reason, not a library traceback.

A scan is a path: a DICOM file, a folder holding one DICOM series (or ``FOLDER#series/KEY``, one
series of a mixed folder as ``medtl index`` writes it), a NIfTI file (.nii, .nii.gz),
a PNG/JPEG/TIFF/BMP image, a ``.npy`` array, or one image of a MedMNIST ``.npz`` written
``FILE.npz#SPLIT/INDEX`` (e.g. ``breastmnist.npz#test/0``).

Every failure leaves as a ``ScanError`` that names the scan and says why in one line; the line
never repeats header values, so no identifier can ride along in an error.
"""

from __future__ import annotations

import gzip
import logging
import re
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.data import MetaTensor, NibabelReader, NumpyReader, PILReader, PydicomReader
from monai.transforms import LoadImage
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from medtl.data.index import series_files, series_ref
from medtl.errors import ScanError
from medtl.privacy import SAFE_DICOM_KEYWORDS, hash_id

# MONAI announces on every pydicom decode that NVIDIA's GPU codec is absent; that is not news to a user
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NPZ_REF = re.compile(r"^(?P<file>.+\.npz)#(?P<split>[A-Za-z0-9_]+)/(?P<index>\d+)$")
_DICOMDIR = "1.2.840.10008.1.3.10"
_SLICES_FIRST = "medtl.slices_first"  # meta flags: the array MONAI returns is in another axis order
_AXES_REVERSED = "medtl.axes_reversed"
_PIL_8BIT = ("1", "L", "LA", "P", "RGB", "RGBA")
_UNDEFINED = 0xFFFFFFFF
# header elements whose type must be right before pixels can be decoded: keyword -> (tag, allowed VRs)
_PIXEL_VRS = {kw: (tag_for_keyword(kw), tuple(dictionary_VR(kw).split(" or ")))
              for kw in ("Rows", "Columns", "BitsAllocated", "BitsStored", "SamplesPerPixel", "PixelRepresentation",
                         "NumberOfFrames", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
                         "RescaleSlope", "RescaleIntercept", "SliceThickness")}


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
    header: dict[str, Any] = field(default_factory=dict)
    applied: tuple[str, ...] = ()  # what preprocessing did, step by step (filled by the transforms)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_step(self, step: str) -> ScanInfo:
        """A copy that records one more preprocessing step (the original stays as read)."""
        return replace(self, applied=(*self.applied, step))


class _Plain(ValueError):
    """A reader failure whose message is already the plain, identifier-free reason."""


# -- DICOM --------------------------------------------------------------------------------------


def _float_values(ds: pydicom.Dataset, keyword: str) -> list[float] | None:
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
        raise _Plain(f"header element {keyword} {ds[keyword].tag} is not a number") from None
    if not np.all(np.isfinite(out)):
        raise _Plain(f"header element {keyword} {ds[keyword].tag} is not finite")
    return out


def _check_types(ds: pydicom.Dataset, values: bool = True) -> None:
    """Types that decoding and geometry rely on; a wrong VR or a non-number is named plainly.

    The VR check reads raw elements (no value conversion), so it is cheap enough for every slice;
    ``values`` also converts the geometry numbers (once per series: later slices only lend pixels).
    """
    for kw, (tag, expected) in _PIXEL_VRS.items():
        elem = ds.get_item(tag)
        if elem is not None and elem.VR and elem.VR not in expected and elem.VR != "UN":
            raise _Plain(f"header element {kw} {Tag(tag)} has the wrong value representation "
                         f"(VR {elem.VR}, the standard says {' or '.join(expected)})")
    if not values:
        return
    for kw in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness",
               "RescaleSlope", "RescaleIntercept"):
        _float_values(ds, kw)
    spacing = _float_values(ds, "PixelSpacing")
    if spacing is not None and (len(spacing) != 2 or min(spacing) < 0):
        raise _Plain("header element PixelSpacing (0028,0030) must be two numbers of at least 0")


def _check_truncated(ds: pydicom.Dataset) -> None:
    """pydicom stops quietly where a file ends; an element shorter than its stated length says so."""
    tags = list(ds.keys())  # in file order: the last one read is where the file ended
    if not tags:
        raise _Plain("file is truncated (nothing after the file meta header)")
    raw = ds.get_item(tags[-1])
    length = getattr(raw, "length", _UNDEFINED)
    if length != _UNDEFINED and isinstance(raw.value, bytes) and len(raw.value) < length:
        what = "pixel data" if raw.tag == 0x7FE00010 else f"element {raw.tag}"
        raise _Plain(f"file is truncated ({what} has {len(raw.value)} of {length} bytes)")


def _check_pixel_data(ds: pydicom.Dataset) -> None:
    """No pixel data, or a compressed syntax nothing installed can decode."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None) or ds.get("SOPClassUID")
        if "Rows" in ds or "Image Storage" in str(getattr(sop, "name", "")):
            raise _Plain("no pixel data (an image object without PixelData; the file may be truncated)")
        raise _Plain(f"no pixel data (not an image object{': ' + sop.name if sop is not None else ''})")
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise _Plain(f"image size missing or zero in the header (Rows {rows or 0}, Columns {cols or 0})")
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsuid is None:
        return
    if not tsuid.is_transfer_syntax:
        raise _Plain(f"unknown transfer syntax {tsuid}; pixel data cannot be decoded")
    if not tsuid.is_compressed:
        _check_native_length(ds)
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(tsuid)
    except NotImplementedError:
        raise _Plain(f"compressed pixel data ({tsuid.name}) that no DICOM decoder can read") from None
    if not decoder.is_available:
        raise _Plain(f"compressed pixel data ({tsuid.name}) and no decoder installed "
                     "(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)")


def _check_native_length(ds: pydicom.Dataset) -> None:
    if "PixelData" not in ds:
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    expected = int(ds.Rows) * int(ds.Columns) * frames * samples * bits // 8
    got = len(ds.PixelData)
    if got < expected:
        raise _Plain(f"pixel data is shorter than the header's image size ({got} of {expected} bytes): "
                     "Rows, Columns, NumberOfFrames or BitsAllocated is wrong")


def _functional(ds: pydicom.Dataset, seq: str, frame: int = 0) -> pydicom.Dataset | None:
    """An enhanced file's functional-group macro, per-frame first, then shared."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and len(items) > i and seq in items[i] and items[i][seq].value:
            return items[i][seq][0]
    return None


def _pixel_rescale(ds: pydicom.Dataset, frame: int = 0) -> tuple[float, float] | None:
    """Slope and intercept from the top level or an enhanced file's functional groups."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0)
    item = _functional(ds, "PixelValueTransformationSequence", frame)
    if item is not None:
        return float(item.get("RescaleSlope", 1.0) or 1.0), float(item.get("RescaleIntercept", 0.0) or 0.0)
    return None


def _pixel_spacing(ds: pydicom.Dataset) -> list[float] | None:
    """(row spacing, column spacing) in mm: top level, functional groups, or the detector's."""
    sp = _float_values(ds, "PixelSpacing")
    if sp is None:
        item = _functional(ds, "PixelMeasuresSequence")
        sp = _float_values(item, "PixelSpacing") if item is not None else None
    if sp is None or min(sp) <= 0:  # 0 is how some writers say "unknown"
        sp = _float_values(ds, "ImagerPixelSpacing")  # projection radiographs: at the detector
    return sp if sp is not None and len(sp) == 2 and min(sp) > 0 else None


@dataclass(frozen=True)
class _FrameGeometry:
    """Where each frame of an enhanced multi-frame file lies; frames sorted along the normal."""

    order: list[int]
    orientation: list[float]
    first: list[float]
    last: list[float]
    slice_spacing: float


def _frame_geometry(ds: pydicom.Dataset) -> _FrameGeometry | None:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < 2 or "PerFrameFunctionalGroupsSequence" not in ds or int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        return None
    orient = _functional(ds, "PlaneOrientationSequence")
    iop = _float_values(orient, "ImageOrientationPatient") if orient is not None else None
    if iop is None or len(iop) != 6:
        return None
    positions = []
    for i in range(frames):
        item = _functional(ds, "PlanePositionSequence", i)
        pos = _float_values(item, "ImagePositionPatient") if item is not None else None
        if pos is None or len(pos) != 3:
            return None
        positions.append(np.asarray(pos))
    normal = np.cross(iop[:3], iop[3:])
    along = np.array([float(np.dot(normal, p)) for p in positions])
    order = [int(i) for i in np.argsort(along, kind="stable")]
    steps = np.diff(along[order])
    if len(steps) == 0 or np.any(np.abs(steps) < 1e-4):  # repeated positions: time or echoes, not a volume
        return None
    return _FrameGeometry(order, iop, list(positions[order[0]]), list(positions[order[-1]]),
                          float(np.median(np.abs(steps))))


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float)):
        return value.__class__(value)
    if isinstance(value, str):
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _json_value(values: list[float], vr: str = "DS") -> dict[str, Any]:
    return {"vr": vr, "Value": [float(v) for v in values]}


def _slice_normal(ds: pydicom.Dataset) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    n = np.cross(row, col)
    return n if np.linalg.norm(n) > 0 else None


class MedtlDicomReader(PydicomReader):
    """MONAI's PydicomReader: one read per file, checked series, position-sorted slices, frames last."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("prune_metadata", True)  # geometry only: no patient tags in MONAI meta
        super().__init__(**kwargs)

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Any:
        names = list(data) if isinstance(data, (list, tuple)) else [data]
        self.filenames, self.has_series = list(names), False
        out: list[Any] = []
        for i, name in enumerate(names):
            if Path(name).is_dir() or series_ref(name) is not None:
                slices, files = _read_series_folder(Path(name), {**self.kwargs, **kwargs})
                self.has_series = self.has_series or len(slices) > 1
                out.append(slices if len(slices) > 1 else slices[0])
                self.filenames[i] = files if len(slices) > 1 else files[0]
            else:
                out.append(pydicom.dcmread(name, **{**self.kwargs, **kwargs}))
        return out[0] if len(names) == 1 else out

    def _combine_dicom_series(self, data: Any, filenames: Sequence[Any]) -> tuple[np.ndarray, dict]:
        slices = list(zip(data, filenames))
        normal = _slice_normal(slices[0][0])
        geometric = normal is not None and all("ImagePositionPatient" in s for s, _ in slices)
        if geometric:
            key = lambda s: float(np.dot(normal, np.asarray(s[0].ImagePositionPatient, float)))  # noqa: E731
        else:  # no geometry: fall back to acquisition order
            key = lambda s: float(s[0].get("InstanceNumber", 0) or 0)  # noqa: E731
        slices.sort(key=key)
        positions = np.array([key(s) for s in slices])
        steps = np.diff(positions)
        if geometric and np.any(np.abs(steps) < 1e-4):
            n = int(np.sum(np.abs(steps) < 1e-4)) + 1
            raise _Plain(f"{n} slices share a position: the folder holds more than one volume "
                         "(echoes, phases or time points); give one volume per folder")
        arrays = []
        for i, (ds, fn) in enumerate(slices):
            try:
                arrays.append(self._get_array_data(ds, fn, check_values=i == 0))
            except _Plain as e:
                raise _Plain(f"slice {Path(fn).name}: {e}") from None
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise _Plain(f"slices of different sizes {sorted(shapes)} in one series folder")
        first = slices[0][0]
        spacing = _pixel_spacing(first) or [1.0, 1.0]
        spacing.append(float(np.median(np.abs(steps))) if len(steps) and geometric else 1.0)
        meta = self._get_meta_dict(first)
        meta["spacing"] = np.asarray(spacing)
        meta["medtl.geometry"] = geometric
        if geometric:
            meta["medtl.slice_spacing"] = spacing[2]
            meta["lastImagePositionPatient"] = np.asarray(slices[-1][0].ImagePositionPatient, float)
            meta["00200032"] = _json_value(first.ImagePositionPatient)
        meta["spatial_shape"] = arrays[0].shape + (len(arrays),)
        # Stacked slices-first (one contiguous copy per slice). MONAI swaps the first two axes and
        # then copies to C order; handing it (rows, slices, cols) makes that swap give back the
        # contiguous (slices, rows, cols) stack, so no strided copy of the volume is made.
        # ``read_scan`` turns it into MONAI's (cols, rows, slices) as a view.
        meta[_SLICES_FIRST] = True
        return np.stack(arrays, axis=0).swapaxes(0, 1), meta

    def _get_array_data(self, img: pydicom.Dataset, filename: Any, check_values: bool = True) -> np.ndarray:
        """Pixels as stored (frames last), rescaled; a decoding failure is diagnosed into one plain reason.

        Only what decoding cannot notice runs up front (a file cut short, geometry numbers once
        per series); the rest is looked into when pydicom fails, so good files pay nothing for it.
        """
        _check_truncated(img)
        if check_values:
            _check_types(img, values=True)
        try:
            data = img.pixel_array
        except Exception:
            _check_types(img, values=False)
            _check_pixel_data(img)
            raise
        frames = int(img.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            geometry = _frame_geometry(img)
            if geometry is not None:
                data = data[geometry.order]
            rescale = [_pixel_rescale(img, i) for i in (geometry.order if geometry else range(frames))]
            if rescale[0] is not None:
                slope = np.asarray([r[0] for r in rescale], np.float32).reshape(-1, *([1] * (data.ndim - 1)))
                inter = np.asarray([r[1] for r in rescale], np.float32).reshape(slope.shape)
                data = data.astype(np.float32) * slope + inter
            return np.moveaxis(data, 0, 2)  # (frames, rows, cols[, rgb]) -> (rows, cols, frames[, rgb])
        rescale = _pixel_rescale(img)
        if rescale is not None:
            slope, intercept = rescale
            data = data.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        return data

    def _get_meta_dict(self, img: pydicom.Dataset) -> dict:
        """Only what the affine needs plus allow-listed physics; never the whole dataset as JSON."""
        meta: dict[str, Any] = {}
        for kw, key in (("ImageOrientationPatient", "00200037"), ("ImagePositionPatient", "00200032")):
            values = _float_values(img, kw)
            if values is not None:
                meta[key] = _json_value(values)
        spacing = _pixel_spacing(img)
        if spacing is not None:
            meta["00280030"] = _json_value(spacing)
        geometry = _frame_geometry(img)
        if geometry is not None:  # an enhanced volume: geometry as a series would carry it
            meta["00200037"] = _json_value(geometry.orientation)
            meta["00200032"] = _json_value(geometry.first)
            meta["lastImagePositionPatient"] = np.asarray(geometry.last)
        meta["medtl.geometry"] = geometry is not None or ("00200037" in meta and "00200032" in meta)
        for kw in SAFE_DICOM_KEYWORDS:
            if kw in img and img[kw].value not in (None, ""):
                meta[f"dicom.{kw}"] = _plain(img[kw].value)
        if "dicom.SliceThickness" not in meta:
            item = _functional(img, "PixelMeasuresSequence")
            if item is not None and item.get("SliceThickness") not in (None, ""):
                meta["dicom.SliceThickness"] = float(item.SliceThickness)
        if img.get("InstitutionName"):  # a confidential attribute: only its keyed code leaves
            meta["dicom.InstitutionCode"] = hash_id(img.InstitutionName, prefix="site-", length=8)
        if geometry is not None:
            meta["medtl.slice_spacing"] = geometry.slice_spacing
        tsuid = getattr(getattr(img, "file_meta", None), "TransferSyntaxUID", None)
        if tsuid is not None:
            meta["dicom.TransferSyntax"] = f"{tsuid.name} ({tsuid})" if tsuid.is_transfer_syntax else str(tsuid)
        meta["dicom.rescaled"] = _pixel_rescale(img) is not None
        return meta


class MedtlNibabelReader(NibabelReader):
    """MONAI's NibabelReader without the strided copy of every volume into C order.

    NIfTI voxels are stored i-fastest (Fortran order); MONAI's ``LoadImage`` copies whatever a
    reader returns into C order, a strided copy that costs a third of reading a gzipped volume.
    The transpose of a Fortran-ordered array is C-ordered, so this reader returns that (no copy)
    and ``read_scan`` turns it back into (i, j, k[, t]) as a view.
    """

    def _get_array_data(self, img: Any, filename: Any) -> np.ndarray:
        return super()._get_array_data(img, filename).T

    def _get_meta_dict(self, img: Any) -> dict:
        meta = super()._get_meta_dict(img)
        meta[_AXES_REVERSED] = True
        return meta


def _read_series_folder(folder: Path, kwargs: dict[str, Any]) -> tuple[list[pydicom.Dataset], list[str]]:
    """Every DICOM image in a folder, read once; one series or a plain error.

    Files that are not DICOM at all (notes, thumbnails, no ``.dcm`` suffix) and a DICOMDIR are
    skipped; a ``.dcm`` file that cannot be read is an error naming it.
    """
    ref = series_ref(folder)  # FOLDER#series/KEY (``medtl index``): that series' slices under the folder
    try:
        files = series_files(*ref) if ref else [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    except ValueError as e:
        raise _Plain(str(e)) from None
    if not files:
        raise _Plain("folder is empty (no DICOM files)")
    slices, names = [], []
    for p in files:
        if p.stat().st_size == 0:
            if p.suffix.lower() == ".dcm":
                raise _Plain(f"slice {p.name}: file is empty (0 bytes)")
            continue
        try:
            ds = pydicom.dcmread(p, **kwargs)
        except InvalidDicomError:
            if p.suffix.lower() == ".dcm":
                raise _Plain(f"slice {p.name}: not a DICOM file") from None
            continue
        except Exception as e:  # noqa: BLE001
            raise _Plain(f"slice {p.name}: {reason(e)}") from None
        if str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")) == _DICOMDIR:
            continue
        slices.append(ds)
        names.append(str(p))
    if not slices:
        raise _Plain(f"folder holds no DICOM files ({len(files)} other file(s))")
    uids = {ds.get("SeriesInstanceUID") for ds in slices}
    if len(uids) > 1:
        raise _Plain(f"folder mixes {len(uids)} DICOM series; give one series per folder")
    return slices, names


# -- MedMNIST .npz and in-memory arrays ------------------------------------------------------------


@lru_cache(maxsize=8)
def _npz_array(path: str, key: str, mtime_ns: int) -> np.ndarray:
    """One array of an ``.npz`` (decompressed once per process, not once per image)."""
    with np.load(path) as z:
        if key not in z.files:
            raise _Plain(f"no array '{key}' in the npz (it holds {', '.join(z.files)})")
        return z[key]


def npz_ref(source: str | Path) -> tuple[Path, str, int] | None:
    """``FILE.npz#SPLIT/INDEX`` -> (file, split, index); ``None`` for any other path."""
    m = NPZ_REF.match(str(source))
    return (Path(m["file"]), m["split"], int(m["index"])) if m else None


def read_npz_image(source: str | Path) -> tuple[MetaTensor, ScanInfo]:
    ref = npz_ref(source)
    if ref is None:
        raise ScanError(source, "a MedMNIST .npz holds many images: name one as FILE.npz#SPLIT/INDEX "
                                "(e.g. #test/0), or run `medtl import-medmnist`")
    path, split, index = ref
    if not path.is_file():
        raise ScanError(source, "file not found")
    try:
        images = _npz_array(str(path), f"{split}_images", path.stat().st_mtime_ns)
    except _Plain as e:
        raise ScanError(source, str(e)) from None
    except Exception as e:  # noqa: BLE001
        raise ScanError(source, f"unreadable npz ({reason(e)})") from None
    if index >= len(images):
        raise ScanError(source, f"index {index} outside the {len(images)} {split} images")
    return array_scan(images[index], str(source))


def array_scan(arr: np.ndarray, name: str = "array") -> tuple[MetaTensor, ScanInfo]:
    """An in-memory image (rows, cols) or (rows, cols, rgb), e.g. a MedMNIST sample."""
    a = np.asarray(arr)
    color = a.ndim == 3 and a.shape[-1] in (3, 4)
    if a.ndim - int(color) != 2:
        raise ScanError(name, f"expected a 2D image, got an array of shape {a.shape}")
    axes = ("rows", "columns", "channels")[: a.ndim]
    info = ScanInfo(path=name, kind="array", raw_shape=tuple(a.shape), raw_axes=axes, color=color,
                    bits=8 if a.dtype == np.uint8 else None)
    t = torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
    t = t.permute(2, 1, 0) if color else t.T.unsqueeze(0)  # -> (C, x=cols, y=rows) like MONAI
    _check_size(name, info)
    return MetaTensor(t), info


# -- any scan -------------------------------------------------------------------------------------


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
    if name.endswith(".npz"):
        return "npz"
    return "dicom"  # .dcm or no extension: DICOM is checked by its preamble when read


def _reader_for(kind: str) -> Any:
    if kind.startswith("dicom"):
        return MedtlDicomReader()
    if kind == "nifti":
        return MedtlNibabelReader()
    if kind == "image":
        return PILReader()
    return NumpyReader()


@lru_cache(maxsize=1)
def _loader() -> LoadImage:
    """One MONAI ``LoadImage`` (it builds every default reader on creation); the reader is per call."""
    return LoadImage(image_only=True, dtype=np.float32, ensure_channel_first=False)


def _scrub(text: str) -> str:
    """Library messages may quote header values: drop anything quoted."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", " ".join(text.split()))
    return text[:160]


def reason(e: BaseException) -> str:
    """A plain one-line reason for a library exception, without the values it may quote."""
    if isinstance(e, _Plain):
        return str(e)
    text = re.sub(r"\S*[/\\]\S*", "<file>", " ".join(str(e).split()))  # the path is the error's subject already
    low = text.lower()
    if isinstance(e, (EOFError, zlib.error, gzip.BadGzipFile)) or "truncated" in low or "ended before" in low \
            or "end of file" in low or "unexpected end" in low:
        if "not a gzipped file" in low:
            return "not a gzip file (the name ends in .gz)"
        return "file is truncated"
    if "mmap length is greater than file size" in low or "expected" in low and "bytes" in low and "got" in low:
        return "file is truncated (voxel data ends early)"
    if "cannot work out file type" in low or "sizeof_hdr" in low:
        return "not a valid NIfTI file (unreadable header)"
    if "cannot identify image file" in low:
        return "not a readable image file"
    if isinstance(e, InvalidDicomError):
        return "not a DICOM file"
    return f"cannot be read ({type(e).__name__}: {_scrub(text)})"


def _check_size(subject: Any, info: ScanInfo) -> None:
    """A shape a backbone can use: 2 or 3 spatial axes, none of them empty or a single line."""
    spatial = [n for n, a in zip(info.raw_shape, info.raw_axes) if a not in ("samples", "channels", "t")]
    if len(spatial) not in (2, 3):
        raise ScanError(subject, f"unsupported {len(info.raw_shape)}D array {tuple(info.raw_shape)}: medtl reads 2D images, "
                                 "3D volumes and 4D series")
    if min(spatial[-2:] if info.kind != "nifti" else sorted(spatial)[-2:]) < 2 or 0 in spatial:
        raise ScanError(subject, f"image too small to be a scan (shape {tuple(info.raw_shape)})")


def read_scan(path: str | Path) -> tuple[MetaTensor, ScanInfo]:
    """Load one scan channel-first through MONAI; arrays are float32 in the scan's own units."""
    if npz_ref(path) is not None:
        return read_npz_image(path)
    p = Path(path)
    if not p.exists() and series_ref(path) is None:
        raise ScanError(p, "file not found")
    if p.is_file() and p.stat().st_size == 0:
        raise ScanError(p, "file is empty (0 bytes)")
    kind = "dicom-series" if series_ref(path) is not None else scan_kind(p)
    if kind == "npz":
        return read_npz_image(p)
    if kind == "dicom" and not pydicom.misc.is_dicom(p):
        try:  # DICOM without the 128-byte preamble is still DICOM
            pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: BLE001
            raise ScanError(p, "not a DICOM, NIfTI or image file") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = _loader()(str(p), reader=_reader_for(kind))
    except ScanError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is this file's problem
        raise ScanError(p, _nifti_reason(p) if kind == "nifti" else reason(e)) from None
    # axis bookkeeping on the plain tensor (views, no copies); one MetaTensor at the end
    meta, img = loaded.meta, loaded.as_tensor()
    if kind == "array":  # NumpyReader keeps (rows, cols); MONAI's other readers give (x=cols, y=rows)
        img = img.swapaxes(0, 1)
    if meta.pop(_AXES_REVERSED, False):
        img = img.permute(*reversed(range(img.ndim)))
    if meta.pop(_SLICES_FIRST, False):  # (slices, rows, cols[, s]) -> (cols, rows, slices[, s])
        img = img.permute(2, 1, 0, *range(3, img.ndim))
    return _with_channel(img, meta, p, kind)


def _nifti_reason(p: Path) -> str:
    """nibabel says only "cannot work out file type" for a short or broken file; find out which."""
    try:
        if p.name.lower().endswith(".gz"):
            with gzip.open(p) as f:
                size = len(f.read())
        else:
            size = p.stat().st_size
    except Exception as e:  # noqa: BLE001
        return reason(e)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = nib.load(str(p))
            np.asanyarray(img.dataobj)
    except Exception as e:  # noqa: BLE001
        if size < 348:
            return f"file is truncated (shorter than a NIfTI header: {size} bytes)"
        return reason(e)
    return "cannot be read by MONAI's NibabelReader"


def _raw_layout(kind: str, shape: tuple[int, ...], color: bool, frames: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The file's own axis order from MONAI's (x, y[, z][, c]) array."""
    if kind == "nifti":
        return shape, ("i", "j", "k", "t", "u")[: len(shape)]
    if kind in ("image", "array"):  # PIL/MONAI give (width, height[, c])
        return (shape[1], shape[0], *shape[2:]), ("rows", "columns", "channels")[: len(shape)]
    # DICOM: MONAI gives (columns, rows[, frames/slices][, samples])
    cols, rows, rest = shape[0], shape[1], list(shape[2:])
    samples = [rest.pop()] if color else []
    depth_name = "slices" if kind == "dicom-series" else "frames"
    depth = rest[:1]
    axes = ((depth_name,) if depth else ()) + ("rows", "columns") + (("samples",) if samples else ())
    return tuple(depth + [rows, cols] + samples), axes


def _with_channel(img: torch.Tensor, meta: dict, p: Path, kind: str) -> tuple[MetaTensor, ScanInfo]:
    info = ScanInfo(path=str(p), kind=kind)
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
            info.kind = kind = "dicom-multiframe"
    elif kind in ("image", "array"):
        info.color = img.ndim == 3 and img.shape[-1] in (3, 4)
        info.bits = 8 if meta.get("mode") in _PIL_8BIT else None
    info.raw_shape, info.raw_axes = _raw_layout(kind, tuple(int(s) for s in img.shape), info.color, info.frames)
    if kind == "nifti":
        info.frames = info.raw_shape[3] if len(info.raw_shape) == 4 else 1
    _check_size(p, info)
    info.volume = _is_volume(info, meta)
    info.spacing = _spacing(info, meta)
    info.orientation = _orientation(info, meta)
    # channel first: colour and 4D (time) go to channel 0, everything else gets a new axis
    if info.color or (kind == "nifti" and len(info.raw_shape) == 4):
        arr = torch.movedim(img, -1, 0)
    else:
        arr = img.unsqueeze(0)
    return MetaTensor(arr.float(), meta=meta), info


def _is_volume(info: ScanInfo, meta: dict) -> bool:
    spatial = [a for a in info.raw_axes if a not in ("samples", "channels", "t")]
    if len(spatial) != 3:
        return False
    if info.kind == "nifti":
        return True
    return bool(meta.get("medtl.geometry")) and info.kind in ("dicom-series", "dicom-multiframe")


def _spacing(info: ScanInfo, meta: dict) -> tuple[float | None, ...] | None:
    """mm per raw axis, from the header (NIfTI pixdim, DICOM PixelSpacing and slice positions)."""
    r = lambda v: round(float(v), 4)  # noqa: E731
    if info.kind == "nifti":
        pixdim = np.asarray(meta.get("pixdim", []), float).ravel()
        return tuple(r(pixdim[1 + i]) if a in "ijk" and len(pixdim) > 1 + i else None for i, a in enumerate(info.raw_axes))
    if not info.kind.startswith("dicom") or "00280030" not in meta:
        return None
    row_sp, col_sp = meta["00280030"]["Value"][:2]
    depth = None
    if info.volume and "medtl.slice_spacing" in meta:
        depth = r(meta["medtl.slice_spacing"])
    out = {"rows": r(row_sp), "columns": r(col_sp), "slices": depth, "frames": depth}
    return tuple(out.get(a) for a in info.raw_axes)


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


def _orientation(info: ScanInfo, meta: dict) -> str | None:
    """Axis codes of the spatial raw axes, in raw order; only where the file gives geometry."""
    affine = meta.get("affine")
    if affine is None or not (info.kind == "nifti" or meta.get("medtl.geometry")):
        return None
    codes = axcodes(affine)  # MONAI axis order: (x, y, z)
    if info.kind == "nifti":
        return "".join(codes[: min(3, len(info.raw_shape))])
    # DICOM: MONAI x = columns, y = rows, z = slices/frames; raw order is (depth,) rows, columns
    by_axis = {"columns": codes[0], "rows": codes[1], "slices": codes[2], "frames": codes[2]}
    if not info.volume:
        by_axis.pop("slices"), by_axis.pop("frames")
    return "".join(by_axis[a] for a in info.raw_axes if a in by_axis)
