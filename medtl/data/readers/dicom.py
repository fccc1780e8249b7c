"""DICOM: single files, multi-frame objects and series folders, through MONAI's ``PydicomReader``.

MONAI's ``PydicomReader`` sorts a series by InstanceNumber, takes spacing from the z component of
ImagePositionPatient only, mixes series found in one folder, puts the frame axis of a multi-frame
file in the middle, reads the rescale only from the top-level dataset, and turns the whole
dataset (pixel data included) into JSON to keep five geometry tags. ``MedtlDicomReader`` (a
subclass, so everything else stays MONAI's) reads each file of a series folder once, checks it
holds one series, sorts slices by their position along the slice normal, moves frames last,
takes an enhanced multi-frame file's geometry and rescale from its functional groups (so CT is
always in Hounsfield units and an enhanced volume is oriented like a series), and checks the
header before decoding so that a broken file gets a plain reason, not a library traceback.

It overrides three private methods of ``PydicomReader`` (``_combine_dicom_series``,
``_get_array_data``, ``_get_meta_dict``); pyproject.toml bounds ``monai`` to the tested minor
version for that reason.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import MetaTensor, PydicomReader
from pydicom.errors import InvalidDicomError

from medtl.data.paths import check_scan_path
from medtl.data.readers.base import MonaiScanReader, Source
from medtl.data.readers.dicom_checks import (
    check_native_size,
    check_pixel_data,
    check_truncated,
    check_types,
    deflate_reason,
    float_values,
    frame_geometry,
    functional,
    json_value,
    pixel_rescale,
    pixel_spacing,
    plain_value,
    slice_normal,
)
from medtl.data.readers.dicom_objects import (
    check_image_object,
    decode_failure,
    not_an_image,
    palette_rgb,
    palette_step,
    sop_class,
)
from medtl.data.readers.info import ScanInfo, axcodes, channel_first, check_size, mm
from medtl.data.readers.series_ref import series_files, series_ref
from medtl.data.readers.slice_geometry import regularise
from medtl.data.readers.wording import PlainError, reason
from medtl.errors import ScanError
from medtl.privacy import SAFE_DICOM_KEYWORDS, hash_id


_DICOMDIR = "1.2.840.10008.1.3.10"
_SLICES_FIRST = "medtl.slices_first"  # meta flag: the array is (rows, slices, cols), see _combine_dicom_series
_PALETTE = "medtl.palette"  # meta: how PALETTE COLOR indices became RGB (a step ScanInfo.applied starts with)


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
        normal = slice_normal(slices[0][0])
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
            raise PlainError(f"{n} slices share a position: the folder holds more than one volume "
                         "(echoes, phases or time points); give one volume per folder")
        arrays = []
        for i, (ds, fn) in enumerate(slices):
            try:
                arrays.append(self._get_array_data(ds, fn, check_values=i == 0))
            except PlainError as e:
                raise PlainError(f"slice {Path(fn).name}: {e}") from None
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise PlainError(f"slices of different sizes {sorted(shapes)} in one series folder")
        first = slices[0][0]
        spacing = pixel_spacing(first) or [1.0, 1.0]
        spacing.append(float(np.median(np.abs(steps))) if len(steps) and geometric else 1.0)
        meta = self._get_meta_dict(first)
        meta["medtl.geometry"] = geometric
        volume = np.stack(arrays, axis=0)
        if geometric:
            meta["medtl.slice_spacing"] = spacing[2]
            meta["lastImagePositionPatient"] = np.asarray(slices[-1][0].ImagePositionPatient, float)
            meta["00200032"] = json_value(first.ImagePositionPatient)
            if volume.ndim == 3 and len(slices) > 2:  # tilt and uneven gaps: onto an orthogonal, even grid
                volume = self._regularise(volume, slices, meta, spacing)
        meta["spacing"] = np.asarray(spacing)
        meta["spatial_shape"] = volume.shape[1:] + (volume.shape[0],)
        # Stacked slices-first (one contiguous copy per slice). MONAI swaps the first two axes and
        # then copies to C order; handing it (rows, slices, cols) makes that swap give back the
        # contiguous (slices, rows, cols) stack, so no strided copy of the volume is made.
        # ``read_scan`` turns it into MONAI's (cols, rows, slices) as a view.
        meta[_SLICES_FIRST] = True
        return volume.swapaxes(0, 1), meta

    @staticmethod
    def _regularise(volume: np.ndarray, slices: list, meta: dict, spacing: list[float]) -> np.ndarray:
        first = slices[0][0]
        positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds, _ in slices])
        tilt = float_values(first, "GantryDetectorTilt")
        volume, geom = regularise(volume, positions, np.asarray(float_values(first, "ImageOrientationPatient")),
                                  (spacing[0], spacing[1]), tilt[0] if tilt else None)
        spacing[2] = geom.spacing
        meta["medtl.slice_spacing"] = geom.spacing
        meta["lastImagePositionPatient"] = geom.last_position
        meta["medtl.tilt_deg"], meta["medtl.slice_gaps"], meta["medtl.geometry_notes"] = geom.tilt_deg, geom.gaps, geom.notes
        return volume

    def _get_array_data(self, img: pydicom.Dataset, filename: Any, check_values: bool = True) -> np.ndarray:
        """Pixels as stored (frames last), rescaled; a decoding failure is diagnosed into one plain reason.

        Only what decoding cannot notice runs up front (a file cut short, geometry numbers once
        per series); the rest is looked into when pydicom fails, so good files pay nothing for it.
        """
        check_truncated(img)
        check_native_size(img)
        if check_values:
            check_types(img, values=True)
        check_image_object(img)
        try:
            data = img.pixel_array
        except Exception as e:
            check_types(img, values=False)
            check_pixel_data(img)
            raise PlainError(decode_failure(img, e)) from None
        if img.get("PhotometricInterpretation") == "PALETTE COLOR":
            data = palette_rgb(img, data)
        frames = int(img.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            geometry = frame_geometry(img)
            if geometry is not None:
                data = data[geometry.order]
            rescale = [pixel_rescale(img, i) for i in (geometry.order if geometry else range(frames))]
            if rescale[0] is not None:
                slope = np.asarray([r[0] for r in rescale], np.float32).reshape(-1, *([1] * (data.ndim - 1)))
                inter = np.asarray([r[1] for r in rescale], np.float32).reshape(slope.shape)
                data = data.astype(np.float32) * slope + inter
            return np.moveaxis(data, 0, 2)  # (frames, rows, cols[, rgb]) -> (rows, cols, frames[, rgb])
        rescale = pixel_rescale(img)
        if rescale is not None:
            slope, intercept = rescale
            data = data.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        return data

    def _get_meta_dict(self, img: pydicom.Dataset) -> dict:
        """Only what the affine needs plus allow-listed physics; never the whole dataset as JSON."""
        meta: dict[str, Any] = {}
        for kw, key in (("ImageOrientationPatient", "00200037"), ("ImagePositionPatient", "00200032")):
            values = float_values(img, kw)
            if values is not None:
                meta[key] = json_value(values)
        spacing = pixel_spacing(img)
        if spacing is not None:
            meta["00280030"] = json_value(spacing)
        geometry = frame_geometry(img)
        if geometry is not None:  # an enhanced volume: geometry as a series would carry it
            meta["00200037"] = json_value(geometry.orientation)
            meta["00200032"] = json_value(geometry.first)
            meta["lastImagePositionPatient"] = np.asarray(geometry.last)
        meta["medtl.geometry"] = geometry is not None or ("00200037" in meta and "00200032" in meta)
        for kw in SAFE_DICOM_KEYWORDS:
            if kw in img and img[kw].value not in (None, ""):
                meta[f"dicom.{kw}"] = plain_value(img[kw].value)
        if "dicom.SliceThickness" not in meta:
            item = functional(img, "PixelMeasuresSequence")
            if item is not None and item.get("SliceThickness") not in (None, ""):
                meta["dicom.SliceThickness"] = float(item.SliceThickness)
        if img.get("InstitutionName"):  # a confidential attribute: only its keyed code leaves
            meta["dicom.InstitutionCode"] = hash_id(img.InstitutionName, prefix="site-", length=8)
        if geometry is not None:
            meta["medtl.slice_spacing"] = geometry.slice_spacing
        tsuid = getattr(getattr(img, "file_meta", None), "TransferSyntaxUID", None)
        if tsuid is not None:
            meta["dicom.TransferSyntax"] = f"{tsuid.name} ({tsuid})" if tsuid.is_transfer_syntax else str(tsuid)
        meta["dicom.rescaled"] = pixel_rescale(img) is not None
        if img.get("PhotometricInterpretation") == "PALETTE COLOR":
            meta[_PALETTE] = palette_step(img)
        return meta




def _check_special_entries(folder: Path) -> None:
    """A slice-like entry (``.dcm`` or no suffix) that is not a regular file (a symlink loop or to nothing,
    a FIFO, a device) is an error naming it, never a slice silently missing from the volume; none is opened."""
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in (".dcm", "") and not p.name.startswith(".") and not p.is_file() and not p.is_dir():
            try:
                check_scan_path(p)
            except ScanError as e:
                raise PlainError(f"slice {p.name}: {e.problem}") from None


def _read_series_folder(folder: Path, kwargs: dict[str, Any]) -> tuple[list[pydicom.Dataset], list[str]]:
    """Every DICOM image in a folder, read once; one series or a plain error.

    Files that are not DICOM at all (notes, thumbnails, no ``.dcm`` suffix) and a DICOMDIR are
    skipped; a ``.dcm`` file that cannot be read is an error naming it.
    """
    ref = series_ref(folder)  # FOLDER#series/KEY (``medtl index``): that series' slices under the folder
    try:
        if ref:
            files = series_files(*ref)  # regular files only: a FIFO or a loop elsewhere in an export is not this series
        else:
            _check_special_entries(folder)
            files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    except ValueError as e:
        raise PlainError(str(e)) from None
    if not files:
        raise PlainError("folder is empty (no DICOM files)")
    slices, names = [], []
    for p in files:
        if p.stat().st_size == 0:
            if p.suffix.lower() == ".dcm":
                raise PlainError(f"slice {p.name}: file is empty (0 bytes)")
            continue
        try:
            ds = pydicom.dcmread(p, **kwargs)
        except InvalidDicomError:
            if p.suffix.lower() == ".dcm":
                raise PlainError(f"slice {p.name}: not a DICOM file") from None
            continue
        except Exception as e:  # noqa: BLE001
            raise PlainError(f"slice {p.name}: {reason(e)}") from None
        if str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")) == _DICOMDIR:
            continue
        slices.append(ds)
        names.append(str(p))
    if not slices:
        raise PlainError(f"folder holds no DICOM files ({len(files)} other file(s))")
    uids = {ds.get("SeriesInstanceUID") for ds in slices}
    if len(uids) > 1:
        raise PlainError(f"folder mixes {len(uids)} DICOM series; give one series per folder")
    return slices, names



class DicomScanReader(MonaiScanReader):
    """A DICOM file (with or without the 128-byte preamble, any name) or a folder holding one series.

    Asked last: DICOM files often have no suffix, so this reader takes whatever no other reader
    claims and checks the file's magic bytes when it reads it.
    """

    kind = "dicom"

    def verify_suffix(self, source: Source) -> bool:
        return True

    def monai_reader(self) -> MedtlDicomReader:
        return MedtlDicomReader()

    def read(self, path: Path) -> MetaTensor:
        _quiet_gpu_codec_notice()
        if path.is_file() and not pydicom.misc.is_dicom(path):
            try:  # DICOM without the 128-byte preamble is still DICOM
                pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001
                raise ScanError(path, _without_file_meta(path)) from None
        return super().read(path)

    def why(self, path: Path, error: BaseException) -> str:
        if isinstance(error, zlib.error):  # inflating failed: a deflate claim over plain data, or corrupt data
            return deflate_reason(path, error) or reason(error)
        return reason(error)

    def get_data(self, loaded: MetaTensor, path: Path) -> tuple[MetaTensor, ScanInfo]:
        meta, img = loaded.meta, loaded.as_tensor()
        if meta.pop(_SLICES_FIRST, False):  # (slices, rows, cols[, s]) -> MONAI's (cols, rows, slices[, s]), a view
            img = img.permute(2, 1, 0, *range(3, img.ndim))
        hdr = {k.removeprefix("dicom."): v for k, v in meta.items() if str(k).startswith("dicom.")}
        info = ScanInfo(path=str(path), kind="dicom-series" if path.is_dir() or series_ref(path) else "dicom")
        info.modality = hdr.get("Modality")
        info.photometric = hdr.get("PhotometricInterpretation")
        info.transfer_syntax = hdr.pop("TransferSyntax", None)
        info.frames = int(hdr.get("NumberOfFrames", 1) or 1)
        info.in_hu = bool(hdr.pop("rescaled", False)) and info.modality == "CT"
        info.color = int(hdr.get("SamplesPerPixel", 1) or 1) > 1
        info.bits = int(hdr["BitsStored"]) if "BitsStored" in hdr else None
        info.header = hdr
        palette = meta.pop(_PALETTE, None)
        if palette is not None:  # indices became RGB on 0..255
            info.color, info.bits, info.applied = True, 8, (palette,)
        if info.kind == "dicom" and info.frames > 1:
            info.kind = "dicom-multiframe"
        info.raw_shape, info.raw_axes = _raw_layout(info, tuple(int(s) for s in img.shape))
        check_size(path, info)
        info.volume = len(info.spatial_shape) == 3 and bool(meta.get("medtl.geometry")) and info.kind != "dicom"
        info.tilt_deg, info.slice_gaps = meta.pop("medtl.tilt_deg", None), meta.pop("medtl.slice_gaps", None)
        info.applied = (*info.applied, *meta.pop("medtl.geometry_notes", ()))
        info.spacing = _spacing(info, meta)
        info.orientation = _orientation(info, meta)
        return channel_first(img, meta, info.color), info


@lru_cache(maxsize=1)
def _quiet_gpu_codec_notice() -> None:
    """MONAI announces on every pydicom decode that NVIDIA's GPU codec is absent; that is not news to a
    user. Set when DICOM is first read, not on import (importing medtl changes no process-wide state)."""
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


def _raw_layout(info: ScanInfo, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The file's own axis order from MONAI's (columns, rows[, frames/slices][, samples])."""
    cols, rows, rest = shape[0], shape[1], list(shape[2:])
    samples = [rest.pop()] if info.color else []
    depth = rest[:1]
    depth_name = "slices" if info.kind == "dicom-series" else "frames"
    axes = ((depth_name,) if depth else ()) + ("rows", "columns") + (("samples",) if samples else ())
    return tuple(depth + [rows, cols] + samples), axes


def _spacing(info: ScanInfo, meta: dict) -> tuple[float | None, ...] | None:
    """mm per raw axis: PixelSpacing, and the slice positions' spacing for a volume."""
    if "00280030" not in meta:
        return None
    row_sp, col_sp = meta["00280030"]["Value"][:2]
    depth = mm(meta["medtl.slice_spacing"]) if info.volume and "medtl.slice_spacing" in meta else None
    out = {"rows": mm(row_sp), "columns": mm(col_sp), "slices": depth, "frames": depth}
    return tuple(out.get(a) for a in info.raw_axes)


def _orientation(info: ScanInfo, meta: dict) -> str | None:
    """Axis codes of the spatial raw axes, in raw order; only where the file gives geometry."""
    affine = meta.get("affine")
    if affine is None or not meta.get("medtl.geometry"):
        return None
    codes = axcodes(affine)  # MONAI x = columns, y = rows, z = slices/frames
    by_axis = {"columns": codes[0], "rows": codes[1]}
    if info.volume:
        by_axis |= {"slices": codes[2], "frames": codes[2]}
    return "".join(by_axis[a] for a in info.raw_axes if a in by_axis)


def _without_file_meta(path: Path) -> str:
    """A file pydicom reads only when forced: a bare DICOM dataset (no preamble, no file meta) is said
    to be one, by its SOP class; anything else is not a file medtl reads."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=["SOPClassUID"])
        uid = sop_class(ds)
    except Exception:  # noqa: BLE001
        uid = None
    if uid is None or uid.name == str(uid):  # no SOP class pydicom knows: not evidence of DICOM
        return "not a DICOM, NIfTI or image file"
    problem = not_an_image(ds)
    if problem is not None:
        return problem
    return (f"a bare DICOM dataset ({uid.name}) without the file meta header that says how its pixels are "
            "encoded; export it again as a DICOM file (Part 10)")


class DicomSeriesRefReader(DicomScanReader):
    """One series of a folder that holds several, ``FOLDER#series/KEY`` as ``medtl index`` writes it."""

    kind = "dicom-series"

    def verify_suffix(self, source: Source) -> bool:
        return series_ref(source) is not None

    def load(self, source: Source) -> tuple[MetaTensor, ScanInfo]:
        folder, _ = series_ref(source)  # type: ignore[misc]
        if not folder.is_dir():
            raise ScanError(source, "folder not found")
        p = Path(source)
        try:
            loaded = self.read(p)
        except ScanError:
            raise
        except Exception as e:  # noqa: BLE001 - any reader failure is this series' problem
            raise ScanError(p, self.why(p, e)) from None
        return self.get_data(loaded, p)
