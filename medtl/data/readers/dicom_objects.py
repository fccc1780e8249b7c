"""What kind of DICOM object a file is, and the colour it carries.

* Objects that are not images (segmentations, structured reports, presentation states,
  radiotherapy plans and doses, waveforms, a DICOMDIR) are refused by what they are, named from
  their SOP class, before any decoding is tried.
* PALETTE COLOR images go through their red, green and blue lookup tables to RGB (pydicom's
  ``apply_color_lut``), on 0..255 like any 8-bit colour image.
* A compressed frame that every installed decoder refuses is reported with each decoder's
  reason, in words, not as the library's multi-line message.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut

from medtl.data.readers.wording import PlainError, reason

# SOP class name fragment -> what such an object is, and what to give instead (checked in order)
_NOT_IMAGES = (
    ("Segmentation", "a segmentation object", "give the image series it segments"),
    ("SR Storage", "a structured report", ""),
    ("Key Object Selection", "a key object selection (a list of references)", "give the images it lists"),
    ("Presentation State", "a presentation state (display settings)", "give the images it applies to"),
    ("RT Dose", "a radiotherapy dose grid", ""),
    ("RT ", "a radiotherapy object", ""),
    ("Waveform", "a waveform", ""),
    ("Encapsulated", "an encapsulated document", ""),
    ("Spectroscopy", "a spectroscopy object", ""),
    ("Raw Data", "a raw data object", ""),
    ("Registration", "a registration object", ""),
    ("Media Storage Directory", "a DICOMDIR, the index of an export", "give the series folders or files it lists"),
)
_IMAGES = ("RT Image Storage",)  # radiotherapy portal images are images


def sop_class(ds: pydicom.Dataset) -> pydicom.uid.UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "MediaStorageSOPClassUID", None) or ds.get("SOPClassUID")
    return pydicom.uid.UID(str(uid)) if uid else None


def not_an_image(ds: pydicom.Dataset) -> str | None:
    """"is a segmentation object (Segmentation Storage), not an image", or None for an image (or an unknown class)."""
    uid = sop_class(ds)
    name = uid.name if uid is not None else ""
    if not name or name == str(uid) or name in _IMAGES:
        return None
    for fragment, what, instead in _NOT_IMAGES:
        if fragment in name:
            return f"is {what} ({name}), not an image" + (f"; {instead}" if instead else "")
    return None


def check_image_object(ds: pydicom.Dataset) -> None:
    problem = not_an_image(ds)
    if problem is not None:
        raise PlainError(problem)


def palette_rgb(ds: pydicom.Dataset, indices: np.ndarray) -> np.ndarray:
    """PALETTE COLOR indices -> RGB float32 on 0..255 (a 16-bit table's full scale, 65535, becomes 255)."""
    try:
        rgb = apply_color_lut(indices, ds)
    except Exception as e:  # noqa: BLE001
        raise PlainError(f"PALETTE COLOR image whose colour lookup tables cannot be applied ({reason(e)})") from None
    out = rgb.astype(np.float32)
    if rgb.dtype == np.uint16:
        out /= 257.0  # 65535 / 255
    return out


def palette_step(ds: pydicom.Dataset) -> str:
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    scaled = " (16-bit entries scaled to 0..255)" if bits > 8 else ""
    return f"colour: PALETTE COLOR indices through the file's colour lookup tables to RGB{scaled}"


def decode_failure(ds: pydicom.Dataset, error: BaseException) -> str:
    """pydicom's "Unable to decode ... plugins:" message, decoder by decoder, in one plain line."""
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    lines = [ln.strip() for ln in str(error).splitlines()[1:] if ":" in ln]
    if tsuid is None or not lines:
        return reason(error)
    parts = []
    for ln in lines:
        plugin, msg = (s.strip() for s in ln.split(":", 1))
        msg = re.sub(r"^.*returned from \w+\(\):\s*|^Error decoding the \S+ data:\s*", "", msg)
        msg = re.sub(r"'[^']*'|\"[^\"]*\"", "…", msg)  # quoted values: never repeated
        parts.append(f"{plugin}: {textwrap.shorten(msg.split(' - ')[0], 90, placeholder=' …')}")
    return f"compressed pixel data ({tsuid.name}) that no installed decoder can decode; it may be corrupt ({'; '.join(parts)})"
