"""What the served model accepts, row by row: a path, a scan's bytes, or an array that says what it holds.

A request is a table (``dataframe_split`` / ``dataframe_records`` over REST, a DataFrame in-process)
with one of the columns ``path``, ``content`` (base64 of a file's bytes) or ``image`` (an array per
cell), optionally ``filename``, and for arrays ``modality``, ``units``, ``photometric``. Each row
becomes one scan source, or the plain reason it cannot be one; nothing here raises for a bad row.

Scan bytes are written to a private temporary folder under a suffix found from the bytes themselves
(DICOM preamble, NIfTI header, PNG/JPEG/TIFF/BMP signatures, a zip of a DICOM series) and read by the
same public entry point as files (``preprocess_scan``), so the served model sees exactly what
``medtl predict`` sees. The folder is removed as soon as the scan is a tensor.

Arrays: pixel values carry no units. An 8-bit array (``uint8``) is read as a display image, exactly
as a PNG of it would be. Any other array must declare ``modality`` (the DICOM code: CT, MR, CR, ...)
and ``photometric`` (MONOCHROME2, or RGB for colour); a CT array must be in Hounsfield units
(``units="HU"``). An array that does not say is refused: a CT slice in stored values scored as HU
(or the reverse) is a confident wrong answer.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtl.errors import ScanError

SOURCE_COLUMNS = ("path", "content", "image")
DECLARATIONS = ("modality", "units", "photometric")
ARRAY_HINT = ("pass arrays as cells of an `image` column with what they hold, e.g. "
              "pd.DataFrame({'image': [hu], 'modality': ['CT'], 'units': ['HU'], 'photometric': ['MONOCHROME2']})")
_SUFFIX_HINT = re.compile(r"\S+\.(?:dcm|dicom|nii|gz|png|jpe?g|tiff?|bmp|zip|npy|npz)\b", re.I)


@dataclass(frozen=True)
class Limits:
    """What one request may carry; each can be set by an environment variable of the serving process."""

    max_rows: int = 64  # MEDTL_SERVE_MAX_ROWS
    max_bytes: int = 256 << 20  # MEDTL_SERVE_MAX_BYTES: decoded scan bytes per request, zips unpacked
    max_files: int = 4096  # MEDTL_SERVE_MAX_FILES: files in one zipped series

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Limits:
        env = dict(os.environ if env is None else env)
        values = {}
        for field, var in (("max_rows", "MEDTL_SERVE_MAX_ROWS"), ("max_bytes", "MEDTL_SERVE_MAX_BYTES"),
                           ("max_files", "MEDTL_SERVE_MAX_FILES")):
            if var in env:
                try:
                    values[field] = int(env[var])
                except ValueError:
                    raise ScanError(var, f"must be a whole number, got {env[var]!r}") from None
                if values[field] < 1:
                    raise ScanError(var, "must be at least 1")
        return cls(**values)


@dataclass(frozen=True)
class ScanBytes:
    """A scan file's bytes (one file, or a zip of a DICOM series folder); ``filename`` only lends its suffix."""

    data: bytes
    filename: str | None = None


@dataclass(frozen=True)
class ScanArray:
    """An in-memory image with what its values mean.

    ``modality``: DICOM code (CT, MR, CR, DX, MG, US, PT, NM, OT...); ``units``: ``HU`` for CT (required),
    free text otherwise; ``photometric``: ``MONOCHROME2`` (bright = dense) or ``RGB``. ``MONOCHROME1``
    arrays are refused: invert them (max - value) first, or send the DICOM file.
    """

    pixels: Any
    modality: str | None = None
    units: str | None = None
    photometric: str | None = None


Source = str | ScanBytes | ScanArray


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(np.ndim(v) == 0 and pd.isna(v))
    except (TypeError, ValueError):
        return False


def _text(v: Any) -> str | None:
    return None if _missing(v) else str(v).strip() or None


def _explode(frame: pd.DataFrame) -> pd.DataFrame:
    """``{"inputs": {"path": [a, b]}}`` reaches the model as one row holding lists: one row per item."""
    if len(frame) != 1:
        return frame
    def many(c: str, v: Any) -> bool:  # an image cell is itself a list: only a list *of arrays* is many rows
        if c == "image":
            return isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, np.ndarray) for x in v)
        return c in ("path", "content", "filename", *DECLARATIONS) and isinstance(v, (list, tuple, np.ndarray))

    lists = {c: frame[c].iloc[0] for c in frame.columns if many(c, frame[c].iloc[0])}
    if not lists or len({len(v) for v in lists.values()}) != 1:
        return frame
    n = len(next(iter(lists.values())))
    return pd.DataFrame({c: list(lists[c]) if c in lists else [frame[c].iloc[0]] * n for c in frame.columns})


def as_frame(model_input: Any) -> pd.DataFrame:
    """Any accepted form as a table with named columns (a bare path, a list of paths, a dict, a frame)."""
    if isinstance(model_input, pd.DataFrame):
        frame = model_input
    elif isinstance(model_input, dict):
        frame = pd.DataFrame({k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in model_input.items()})
    elif isinstance(model_input, pd.Series):
        frame = pd.DataFrame({"path" if model_input.dtype.kind in "OUS" else "image": list(model_input)})
    elif isinstance(model_input, (str, Path)):
        frame = pd.DataFrame({"path": [str(model_input)]})
    else:
        items = [model_input] if isinstance(model_input, np.ndarray) and model_input.dtype.kind not in "OUS" else list(model_input)
        cells = np.empty(len(items), dtype=object)  # one cell per item, even when an item is an array
        cells[:] = [None] * len(items)
        for i, item in enumerate(items):
            cells[i] = item
        frame = pd.DataFrame({"source": cells})
    if not any(c in frame.columns for c in SOURCE_COLUMNS) and frame.shape[1] >= 1 and "source" not in frame.columns:
        frame = frame.rename(columns={frame.columns[0]: "source"})  # a frame MLflow made of a list: column 0
    return _explode(frame)


def _cell_source(v: Any) -> Source:
    """A cell of an unnamed column: a path, an array, a ``ScanArray``/``ScanBytes``, or a pydicom dataset."""
    if isinstance(v, (ScanArray, ScanBytes)):
        return v
    if isinstance(v, (str, Path)):
        return str(v)
    if type(v).__name__ == "FileDataset" or type(v).__name__ == "Dataset":  # pydicom: it carries its own header
        buf = BytesIO()
        v.save_as(buf, enforce_file_format=False)
        return ScanBytes(buf.getvalue())
    if isinstance(v, bytes):
        return ScanBytes(v)
    return ScanArray(v)


def sources(model_input: Any, limits: Limits = Limits()) -> list[Source | ScanError]:
    """One scan source (or the reason there is none) per input row; never raises for a bad row."""
    frame = as_frame(model_input)
    n = len(frame)
    if n > limits.max_rows:
        err = ScanError(None, f"the request has {n} rows, over the limit of {limits.max_rows} per request "
                              "(MEDTL_SERVE_MAX_ROWS): send it in smaller batches")
        return [err] * n
    present = [c for c in (*SOURCE_COLUMNS, "source") if c in frame.columns]
    if not present:
        return [ScanError(None, "no `path`, `content` or `image` column in the request")] * n
    out: list[Source | ScanError] = []
    total = 0
    for i in range(n):
        row = frame.iloc[i]
        given = [c for c in present if not _missing(row[c])]
        if len(given) != 1:
            what = "none of" if not given else "more than one of"
            out.append(ScanError(None, f"{what} `path`, `content`, `image` is set in this row; give exactly one"))
            continue
        col, value = given[0], row[given[0]]
        try:
            if col == "path":
                src: Source = str(value)
            elif col == "content":
                src = decode_content(value, _text(row.get("filename")))
                total += len(src.data)
            elif col == "image":
                src = ScanArray(value, *(_text(row.get(k)) for k in DECLARATIONS))
            else:
                src = _cell_source(value)
                if isinstance(src, ScanArray) and any(k in frame.columns for k in DECLARATIONS):
                    src = ScanArray(src.pixels, *(_text(row.get(k)) for k in DECLARATIONS))
        except ScanError as e:
            out.append(e)
            continue
        out.append(src)
    if total > limits.max_bytes:
        err = ScanError(None, f"the request carries {total / 2**20:.1f} MiB of scan bytes, over the limit of "
                              f"{limits.max_bytes / 2**20:.1f} MiB per request (MEDTL_SERVE_MAX_BYTES): send fewer scans per request")
        return [err] * n
    return out


def decode_content(value: Any, filename: str | None = None) -> ScanBytes:
    """A ``content`` cell: base64 text (line breaks allowed) or, in-process, raw bytes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ScanBytes(bytes(value), filename)
    if not isinstance(value, str):
        raise ScanError(None, f"`content` must be base64 text, got a {type(value).__name__}")
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ScanError(None, "`content` is not valid base64") from None
    if not data:
        raise ScanError(None, "`content` is empty (0 bytes)")
    return ScanBytes(data, filename)


# -- what the bytes are ----------------------------------------------------------------------------


def _nifti_header(head: bytes) -> bool:
    """NIfTI-1 (348-byte header, magic ``n+1``) or NIfTI-2 (540, ``n+2``), either byte order."""
    if len(head) >= 348 and head[344:348] == b"n+1\0":
        return int.from_bytes(head[:4], "little") == 348 or int.from_bytes(head[:4], "big") == 348
    if len(head) >= 540 and head[4:8] == b"n+2\0":
        return int.from_bytes(head[:4], "little") == 540 or int.from_bytes(head[:4], "big") == 540
    return False


def sniff(data: bytes) -> str | None:
    """The file suffix medtl's readers need for these bytes, from their signature; ``None`` if unknown."""
    if data[128:132] == b"DICM":
        return ".dcm"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:4] in (b"II*\0", b"MM\0*"):
        return ".tif"
    if data[:2] == b"BM" and len(data) > 26:
        return ".bmp"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return ".zip"
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=BytesIO(data)) as f:
                head = f.read(544)
        except (OSError, EOFError):
            return ".gz"
        return ".nii.gz" if _nifti_header(head) else ".gz"
    if _nifti_header(data[:544]):
        return ".nii"
    if data[:2] in (b"\x02\x00", b"\x08\x00"):  # DICOM without its 128-byte preamble: the reader decides
        return ".dcm"
    return None


def _suffix_of(name: str | None) -> str:
    if not name:
        return ""
    low = name.lower()
    return ".nii.gz" if low.endswith(".nii.gz") else Path(low).suffix


def _unzip_series(data: bytes, folder: Path, limits: Limits) -> Path:
    """A zipped series folder, flattened into ``folder``; member names are not used (no zip-slip)."""
    try:
        zf = zipfile.ZipFile(BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise ScanError(None, "not a readable zip file") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir() and not Path(m.filename).name.startswith(".")
                   and "__MACOSX" not in m.filename]
        if not members:
            raise ScanError(None, "the zip holds no files")
        if len(members) > limits.max_files:
            raise ScanError(None, f"the zip holds {len(members)} files, over the limit of {limits.max_files} (MEDTL_SERVE_MAX_FILES)")
        if sum(m.file_size for m in members) > limits.max_bytes:
            raise ScanError(None, f"the zip unpacks to more than {limits.max_bytes / 2**20:.1f} MiB (MEDTL_SERVE_MAX_BYTES)")
        folder.mkdir()
        budget = limits.max_bytes
        for i, m in enumerate(members):
            try:
                with zf.open(m) as src:
                    blob = src.read(budget + 1)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
                raise ScanError(None, f"zip member {i + 1} cannot be unpacked ({type(e).__name__})") from None
            budget -= len(blob)
            if budget < 0:
                raise ScanError(None, f"the zip unpacks to more than {limits.max_bytes / 2**20:.1f} MiB (MEDTL_SERVE_MAX_BYTES)")
            suffix = _suffix_of(m.filename)[:8] if len(members) > 1 else (sniff(blob) or _suffix_of(m.filename))
            (folder / f"{i:05d}{suffix}").write_bytes(blob)
    files = list(folder.iterdir())
    return files[0] if len(files) == 1 else folder


@contextmanager
def materialised(scan: ScanBytes, limits: Limits = Limits()) -> Iterator[Path]:
    """The bytes as a file (or series folder) in a private temporary folder, removed on exit."""
    suffix = sniff(scan.data)
    if suffix == ".gz":
        raise ScanError(None, "gzip data that is not a NIfTI file")
    if suffix is None:
        hint = f" (the name ends in {_suffix_of(scan.filename)})" if _suffix_of(scan.filename) else ""
        raise ScanError(None, f"not a DICOM, NIfTI, PNG/JPEG/TIFF/BMP image or zipped DICOM series{hint}")
    tmp = Path(tempfile.mkdtemp(prefix="medtl-scan-"))  # mode 0700: this user only
    try:
        if suffix == ".zip":
            yield _unzip_series(scan.data, tmp / "series", limits)
        else:
            path = tmp / f"scan{suffix}"
            path.write_bytes(scan.data)
            yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def public_reason(e: BaseException, private: list[str]) -> str:
    """A row's error as a response may carry it: the problem only, without the server's or the scan's file names."""
    text = getattr(e, "problem", None) or str(e)
    for p in sorted((p for p in private if p), key=len, reverse=True):
        text = text.replace(p, "<file>")
    return _SUFFIX_HINT.sub("<file>", text)


# -- arrays ----------------------------------------------------------------------------------------


def check_array(scan: ScanArray) -> tuple[np.ndarray, str | None]:
    """The pixels and the modality to read them as, or a ``ScanError`` saying what the array must declare."""
    arr = np.asarray(scan.pixels)
    if arr.dtype == object:
        try:
            arr = np.asarray(arr.tolist(), dtype=float)
        except (TypeError, ValueError):
            raise ScanError("array", f"an array of shape {arr.shape} holding {arr.dtype} is not an image") from None
    if arr.dtype.kind not in "biuf" or arr.ndim < 2:
        raise ScanError("array", f"an array of shape {arr.shape} and dtype {arr.dtype} is not an image; {ARRAY_HINT}")
    modality = (scan.modality or "").upper() or None
    photometric = (scan.photometric or "").upper() or None
    units = (scan.units or "").strip() or None
    color = arr.ndim == 3 and arr.shape[-1] in (3, 4)
    if photometric == "MONOCHROME1":
        raise ScanError("array", "MONOCHROME1 arrays are not accepted (bright = air): invert it (max - value) and "
                                 "declare MONOCHROME2, or send the DICOM file itself")
    if photometric not in (None, "MONOCHROME2", "RGB"):
        raise ScanError("array", f"photometric {scan.photometric!r} is not accepted for arrays: convert to MONOCHROME2 or RGB")
    if arr.dtype != np.uint8:
        missing = [k for k, v in (("modality", modality), ("photometric", photometric)) if v is None]
        if missing:
            raise ScanError("array", f"an array of dtype {arr.dtype} and shape {arr.shape} does not say what its values are "
                                     f"(missing: {', '.join(missing)}); only uint8 arrays are read without a "
                                     f"declaration, as display images. {ARRAY_HINT[0].upper() + ARRAY_HINT[1:]}, or send the file itself "
                                     "(`path`, or its bytes in `content`)")
    if modality == "CT" and (units or "").upper() != "HU":
        raise ScanError("array", "a CT array must be in Hounsfield units (units='HU'); pixel values as stored "
                                 "need RescaleSlope/RescaleIntercept first (pydicom.pixels.apply_modality_lut), "
                                 "or send the DICOM file itself")
    if color and photometric == "MONOCHROME2":
        raise ScanError("array", f"an array of shape {arr.shape} is colour, not MONOCHROME2")
    return arr, modality
