"""NIfTI (.nii, .nii.gz) through MONAI's ``NibabelReader``, without its strided copy."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import MetaTensor, NibabelReader

from medtl.data.readers.base import MonaiScanReader
from medtl.data.readers.info import ScanInfo, axcodes, channel_first, check_size, mm
from medtl.data.readers.wording import reason
from medtl.errors import ScanError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class MedtlNibabelReader(NibabelReader):
    """MONAI's NibabelReader without the strided copy of every volume into C order.

    NIfTI voxels are stored i-fastest (Fortran order); MONAI's ``LoadImage`` copies whatever a
    reader returns into C order, a strided copy that costs a third of reading a gzipped volume.
    The transpose of a Fortran-ordered array is C-ordered, so this reader returns that (no copy)
    and ``NiftiScanReader.get_data`` turns it back into (i, j, k[, t]) as a view. Only the public
    ``get_data`` is overridden; one file at a time (``read_scan`` never passes a list).
    """

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        data, meta = super().get_data(img)
        return data.T, meta


# deflate (gzip) expands at most ~1032:1 (zlib's technical details: a 258-byte match per 2 bits), so a
# .nii.gz of n bytes cannot hold more than this many times n of voxels, whatever its header says
DEFLATE_MAX_RATIO = 1032
MAX_SCAN_BYTES = 4 * 2**30  # voxel data one scan may claim (as stored); MEDTL_MAX_SCAN_BYTES changes it
LIMIT_ENV = "MEDTL_MAX_SCAN_BYTES"


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def max_scan_bytes() -> int:
    """The limit on a scan's claimed voxel bytes: ``MEDTL_MAX_SCAN_BYTES`` when set, else 4 GiB."""
    value = os.environ.get(LIMIT_ENV, "")
    return int(float(value)) if value.strip() else MAX_SCAN_BYTES


def check_claimed_size(path: Path) -> None:
    """What a NIfTI header claims, judged before a single voxel is decompressed or allocated.

    nibabel reads the header (a few hundred bytes) and would then allocate the whole claimed array:
    a 30 KB .nii.gz whose header claims 2 GiB took 5 GB of memory before failing. Refused here: a
    claim over the limit, and a .nii.gz too small to hold its claim even at deflate's best ratio.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            header = nib.load(str(path)).header
            shape = tuple(int(v) for v in header.get_data_shape())
            dtype = np.dtype(header.get_data_dtype())
        except Exception:  # noqa: BLE001 - an unreadable header is the reader's to word
            return
    claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    what = f"{'x'.join(map(str, shape))} voxels of {dtype.name}"
    limit = max_scan_bytes()
    if claimed > limit:
        raise ScanError(path, f"header claims {_size(claimed)} of voxel data ({what}), over the limit of {_size(limit)} "
                              f"per scan; not read (set {LIMIT_ENV} to raise the limit)")
    size = path.stat().st_size
    if path.name.lower().endswith(".gz") and claimed > size * DEFLATE_MAX_RATIO:
        raise ScanError(path, f"header claims {_size(claimed)} of voxel data ({what}) but the file is {_size(size)}: "
                              f"gzip expands at most {DEFLATE_MAX_RATIO}x, so the header is wrong or the file is "
                              "truncated; not decompressed")


class NiftiScanReader(MonaiScanReader):
    kind = "nifti"
    suffixes = NIFTI_SUFFIXES

    def monai_reader(self) -> MedtlNibabelReader:
        return MedtlNibabelReader()

    def read(self, path: Path) -> MetaTensor:
        check_claimed_size(path)  # before nibabel allocates what the header claims
        return super().read(path)

    def get_data(self, loaded: MetaTensor, path: Path) -> tuple[MetaTensor, ScanInfo]:
        meta, img = loaded.meta, loaded.as_tensor()
        img = img.permute(*reversed(range(img.ndim)))  # MedtlNibabelReader's transpose undone (a view)
        shape = tuple(int(s) for s in img.shape)
        info = ScanInfo(path=str(path), kind=self.kind, raw_shape=shape, raw_axes=("i", "j", "k", "t", "u")[: len(shape)])
        info.frames = shape[3] if len(shape) == 4 else 1
        check_size(path, info, plane_last=False)
        info.volume = len(info.spatial_shape) == 3
        pixdim = np.asarray(meta.get("pixdim", []), float).ravel()
        info.spacing = tuple(mm(pixdim[1 + i]) if a in "ijk" and len(pixdim) > 1 + i else None
                             for i, a in enumerate(info.raw_axes))
        affine = meta.get("affine")
        info.orientation = None if affine is None else "".join(axcodes(affine)[: min(3, len(shape))])
        return channel_first(img, meta, len(shape) == 4), info

    def why(self, path: Path, error: BaseException) -> str:
        """nibabel says only "cannot work out file type" for a short or broken file; find out which."""
        try:
            if path.name.lower().endswith(".gz"):
                with gzip.open(path) as f:
                    size = len(f.read())
            else:
                size = path.stat().st_size
        except Exception as e:  # noqa: BLE001
            return reason(e)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = nib.load(str(path))
                np.asanyarray(img.dataobj)
        except Exception as e:  # noqa: BLE001
            if size < 348:
                return f"file is truncated (shorter than a NIfTI header: {size} bytes)"
            return reason(e)
        return "cannot be read by MONAI's NibabelReader"
