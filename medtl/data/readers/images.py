"""Plain pictures (PNG, JPEG, TIFF, BMP) through MONAI's ``PILReader``."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.data import ImageReader, MetaTensor, PILReader

from medtl.data.readers.base import MonaiScanReader
from medtl.data.readers.info import ScanInfo, channel_first, check_size, image_layout, is_colour

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_PIL_8BIT = ("1", "L", "LA", "P", "RGB", "RGBA")


class ImageScanReader(MonaiScanReader):
    """A 2D picture: rows and columns as stored, grey or colour, no patient geometry."""

    kind = "image"
    suffixes = IMAGE_SUFFIXES

    def monai_reader(self) -> ImageReader:
        return PILReader()

    def _width_first(self, img: torch.Tensor) -> torch.Tensor:
        """The array in MONAI's (width, height[, c]) order (PIL gives it so)."""
        return img

    def get_data(self, loaded: MetaTensor, path: Path) -> tuple[MetaTensor, ScanInfo]:
        meta, img = loaded.meta, self._width_first(loaded.as_tensor())
        color = is_colour(img)
        raw_shape, raw_axes = image_layout(tuple(int(s) for s in img.shape))
        info = ScanInfo(path=str(path), kind=self.kind, raw_shape=raw_shape, raw_axes=raw_axes, color=color,
                        bits=8 if meta.get("mode") in _PIL_8BIT else None)
        check_size(path, info)
        return channel_first(img, meta, color), info
