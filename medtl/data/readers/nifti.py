"""NIfTI (.nii, .nii.gz) through MONAI's ``NibabelReader``, without its strided copy."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import MetaTensor, NibabelReader

from medtl.data.readers.base import MonaiScanReader
from medtl.data.readers.info import ScanInfo, axcodes, channel_first, check_size, mm
from medtl.data.readers.wording import reason

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


class NiftiScanReader(MonaiScanReader):
    kind = "nifti"
    suffixes = NIFTI_SUFFIXES

    def monai_reader(self) -> MedtlNibabelReader:
        return MedtlNibabelReader()

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
