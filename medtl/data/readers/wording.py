"""The words of a reading failure: one plain line, never a header value a library message quotes.

Readers raise ``PlainError`` where they already know the reason; anything else a library raises
goes through ``reason``, which recognises the usual causes (truncation, wrong format) and
otherwise keeps the library's words with quoted values removed.
"""

from __future__ import annotations

import gzip
import re
import textwrap
import zlib

from pydicom.errors import InvalidDicomError

from medtl.data.paths import os_reason


class PlainError(ValueError):
    """A reader failure whose message is already the plain, identifier-free reason."""


def _scrub(text: str, limit: int = 160) -> str:
    """Library messages may quote header values: drop anything quoted; a long one is cut between words."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", " ".join(text.split()))
    return textwrap.shorten(text, limit, placeholder=" …")  # cut between words, never inside one


def reason(e: BaseException) -> str:
    """A plain one-line reason for a library exception, without the values it may quote."""
    if isinstance(e, PlainError):
        return str(e)
    if isinstance(e, OSError) and e.errno is not None:  # the OS's own failure (vanished, denied, I/O), not the format's
        return os_reason(e)
    text = re.sub(r"\S*[/\\]\S*", "<file>", " ".join(str(e).split()))  # the path is the error's subject already
    low = text.lower()
    if isinstance(e, zlib.error) and "incomplete" not in low and "truncated" not in low:
        return f"compressed data is corrupt (not valid deflate data: {_scrub(text.split(': ')[-1], 60)})"
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
