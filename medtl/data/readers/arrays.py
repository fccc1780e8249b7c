"""Arrays: ``.npy`` files, one image of a MedMNIST ``.npz`` (``FILE.npz#SPLIT/INDEX``), and
in-memory arrays."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from monai.data import ImageReader, MetaTensor, NumpyReader

from medtl.data.readers.base import ScanReader, Source
from medtl.data.readers.images import ImageScanReader
from medtl.data.readers.info import ScanInfo, check_size, is_colour
from medtl.data.readers.wording import PlainError, reason
from medtl.errors import ScanError

NPZ_REF = re.compile(r"^(?P<file>.+\.npz)#(?P<split>[A-Za-z0-9_]+)/(?P<index>\d+)$")


class NpyScanReader(ImageScanReader):
    """A ``.npy`` 2D array (rows, cols[, rgb]), through MONAI's ``NumpyReader``."""

    kind = "array"
    suffixes = (".npy",)

    def monai_reader(self) -> ImageReader:
        return NumpyReader()

    def _width_first(self, img: torch.Tensor) -> torch.Tensor:
        return img.swapaxes(0, 1)  # NumpyReader keeps (rows, cols); MONAI's other readers give (x=cols, y=rows)


@lru_cache(maxsize=8)
def _npz_array(path: str, key: str, mtime_ns: int) -> np.ndarray:
    """One array of an ``.npz`` (decompressed once per process, not once per image)."""
    with np.load(path) as z:
        if key not in z.files:
            raise PlainError(f"no array '{key}' in the npz (it holds {', '.join(z.files)})")
        return z[key]


def npz_ref(source: Source) -> tuple[Path, str, int] | None:
    """``FILE.npz#SPLIT/INDEX`` -> (file, split, index); ``None`` for any other path."""
    m = NPZ_REF.match(str(source))
    return (Path(m["file"]), m["split"], int(m["index"])) if m else None


def read_npz_image(source: Source) -> tuple[MetaTensor, ScanInfo]:
    ref = npz_ref(source)
    if ref is None:
        raise ScanError(source, "a MedMNIST .npz holds many images: name one as FILE.npz#SPLIT/INDEX "
                                "(e.g. #test/0), or run `medtl import-medmnist`")
    path, split, index = ref
    if not path.is_file():
        raise ScanError(source, "file not found")
    try:
        images = _npz_array(str(path), f"{split}_images", path.stat().st_mtime_ns)
    except PlainError as e:
        raise ScanError(source, str(e)) from None
    except Exception as e:  # noqa: BLE001
        raise ScanError(source, f"unreadable npz ({reason(e)})") from None
    if index >= len(images):
        raise ScanError(source, f"index {index} outside the {len(images)} {split} images")
    return array_scan(images[index], str(source))


class NpzScanReader(ScanReader):
    """One image of a MedMNIST ``.npz``; the bare ``.npz`` gets an error saying how to name one."""

    kind = "array"

    def verify_suffix(self, source: Source) -> bool:
        return npz_ref(source) is not None or str(source).lower().endswith(".npz") and not Path(source).is_dir()

    def file_of(self, source: Source) -> Path:
        ref = npz_ref(source)
        return ref[0] if ref is not None else Path(source)

    def load(self, source: Source) -> tuple[MetaTensor, ScanInfo]:
        return read_npz_image(source) if npz_ref(source) is not None else super().load(source)

    def read(self, path: Path) -> tuple[MetaTensor, ScanInfo]:
        return read_npz_image(path)

    def get_data(self, loaded: tuple[MetaTensor, ScanInfo], path: Path) -> tuple[MetaTensor, ScanInfo]:
        return loaded


def array_scan(arr: np.ndarray, name: str = "array") -> tuple[MetaTensor, ScanInfo]:
    """An in-memory image (rows, cols) or (rows, cols, rgb), e.g. a MedMNIST sample."""
    a = np.asarray(arr)
    color = is_colour(a)
    if a.ndim - int(color) != 2:
        raise ScanError(name, f"expected a 2D image, got an array of shape {a.shape}")
    axes = ("rows", "columns", "channels")[: a.ndim]
    info = ScanInfo(path=name, kind="array", raw_shape=tuple(a.shape), raw_axes=axes, color=color,
                    bits=8 if a.dtype == np.uint8 else None)
    t = torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
    t = t.permute(2, 1, 0) if color else t.T.unsqueeze(0)  # -> (C, x=cols, y=rows) like MONAI
    check_size(name, info)
    return MetaTensor(t), info
