"""The interface every format's reader has (MONAI's ``ImageReader`` shape), and the reading of
one scan by whichever registered reader claims it.

A reader answers three questions, as MONAI's ``ImageReader`` does:
``verify_suffix(source)`` (is this mine? by suffix or magic bytes), ``read(path)`` (the format's
object, loaded) and ``get_data(loaded, path)`` (a channel-first ``MetaTensor`` in the scan's own
units and its ``ScanInfo``). ``why(path, error)`` turns a failure while reading into a plain line.
Readers are chosen by registration (``register_reader``): the newest registered reader that
verifies a source reads it, as in MONAI's ``LoadImage.register``.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader, MetaTensor
from monai.transforms import LoadImage

from medtl.data.paths import check_scan_path
from medtl.data.readers.info import ScanInfo
from medtl.data.readers.wording import reason
from medtl.errors import ScanError

Source = str | Path


class ScanReader(ABC):
    """One format: which sources it reads, how it loads them, and what a loaded scan is."""

    kind: str  # ScanInfo.kind of what it reads (a reader may refine it, e.g. dicom-multiframe)

    @abstractmethod
    def verify_suffix(self, source: Source) -> bool:
        """Whether this reader reads ``source`` (a path, or a reference such as ``FILE.npz#test/0``)."""

    @abstractmethod
    def read(self, path: Path) -> Any:
        """Load the file; may raise anything (``why`` words it) or a ``ScanError``."""

    @abstractmethod
    def get_data(self, loaded: Any, path: Path) -> tuple[MetaTensor, ScanInfo]:
        """The loaded object as a channel-first float32 ``MetaTensor`` and its ``ScanInfo``."""

    def file_of(self, source: Source) -> Path:
        """The file or folder on disk that ``source`` names (a reference such as ``FILE.npz#test/0`` names its file)."""
        return Path(source)

    def why(self, path: Path, error: BaseException) -> str:
        """The plain reason ``read`` failed."""
        return reason(error)

    def load(self, source: Source) -> tuple[MetaTensor, ScanInfo]:
        """Checks every file gets (there, not empty), then ``read`` and ``get_data``; failures name the file."""
        p = Path(source)
        if not p.exists():
            raise ScanError(p, "file not found")
        if p.is_file() and p.stat().st_size == 0:
            raise ScanError(p, "file is empty (0 bytes)")
        try:
            loaded = self.read(p)
        except ScanError:
            raise
        except Exception as e:  # noqa: BLE001 - any reader failure is this file's problem
            raise ScanError(p, self.why(p, e)) from None
        return self.get_data(loaded, p)


@lru_cache(maxsize=1)
def _loader() -> LoadImage:
    """One MONAI ``LoadImage`` (it builds every default reader on creation); the reader is per call."""
    return LoadImage(image_only=True, dtype=np.float32, ensure_channel_first=False)


class MonaiScanReader(ScanReader):
    """A format MONAI reads: ``read`` runs ``LoadImage`` with this format's MONAI reader."""

    suffixes: tuple[str, ...] = ()

    def verify_suffix(self, source: Source) -> bool:
        return str(source).lower().endswith(self.suffixes) and not Path(source).is_dir()  # a folder is a series

    @abstractmethod
    def monai_reader(self) -> ImageReader:
        """A fresh MONAI reader (they keep per-read state, so one per read)."""

    def read(self, path: Path) -> MetaTensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _loader()(str(path), reader=self.monai_reader())


_READERS: list[ScanReader] = []


def register_reader(reader: ScanReader) -> ScanReader:
    """Add a reader; it is asked before every reader registered earlier (the last one wins)."""
    _READERS.append(reader)
    return reader


def registered_readers() -> list[ScanReader]:
    """In the order they are asked: the newest first."""
    return list(reversed(_READERS))


def reader_for(source: Source) -> ScanReader:
    for reader in reversed(_READERS):
        if reader.verify_suffix(source):
            return reader
    raise ScanError(source, "not a DICOM, NIfTI or image file")


def read_scan(source: Source) -> tuple[MetaTensor, ScanInfo]:
    """Load one scan channel-first through MONAI; arrays are float32 in the scan's own units."""
    reader = reader_for(source)
    check_scan_path(reader.file_of(source), subject=source)  # loops, FIFOs, devices, denied: refused, never opened
    return reader.load(source)
