"""``FOLDER#series/KEY``: one DICOM series of a folder that may hold several, as ``medtl index``
writes it (KEY is a keyed hash of the SeriesInstanceUID, so the UID never leaves the files).

A leaf module: the DICOM reader resolves such a path to its slices and ``medtl index`` writes it,
without either importing the other.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from medtl.privacy import hash_id

SERIES_REF = re.compile(r"^(?P<dir>.+)#series/(?P<key>s-[0-9a-f]{16})$")


def series_key(uid: str) -> str:
    """The keyed hash that names a series in a path (the UID itself never leaves)."""
    return hash_id(uid, prefix="s-")


def series_ref(source: str | Path) -> tuple[Path, str] | None:
    """``FOLDER#series/KEY`` -> (folder, key); ``None`` for any other path."""
    m = SERIES_REF.match(str(source))
    return (Path(m["dir"]), m["key"]) if m else None


def walk_files(folder: Path) -> Iterator[Path]:
    """Every regular file under ``folder`` (symlinked folders not followed, hidden names skipped)."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = Path(root) / name
            if not name.startswith(".") and p.is_file():  # is_file: no FIFOs, sockets or dangling links
                yield p


def read_header(path: Path, tags: list[str]) -> pydicom.Dataset | None:
    """The listed tags of a DICOM file, pixels never read; ``None`` for a file that is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except (InvalidDicomError, OSError, EOFError):
        return None
    except Exception:  # noqa: BLE001 - a broken header: the file is reported, the walk goes on
        return None


def series_files(folder: Path, key: str) -> list[Path]:
    """The slices of series ``key`` under ``folder``, one file per instance; ValueError if none."""
    if not folder.is_dir():
        raise ValueError("folder not found")
    found: dict[str, Path] = {}
    for p in walk_files(folder):
        ds = read_header(p, ["SeriesInstanceUID", "SOPInstanceUID", "NumberOfFrames"])
        if ds is None or not ds.get("SeriesInstanceUID") or series_key(str(ds.SeriesInstanceUID)) != key:
            continue
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:  # multi-frame objects are rows of their own
            continue
        found.setdefault(str(ds.get("SOPInstanceUID", p)), p)  # a copy of an instance counts once
    if not found:
        raise ValueError(f"no DICOM series {key} in this folder (moved, or indexed with another MEDTL_ID_SALT?)")
    return sorted(found.values())
