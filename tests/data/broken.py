"""A corpus of broken scans, each written by the test from a real, valid file and broken one way.

Every entry pairs a path with the exact problem medtl must report for it (INTERFACE.md:
``medtl: error: <path>: <problem>``). ``no_decoder`` entries need their codec hidden first
(``hidden_decoder``), which pydicom allows per process.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from medtl.data.synthetic import write_ct_dicom, write_ct_series


@dataclass(frozen=True)
class Broken:
    name: str
    path: Path
    problem: str  # the exact one-line problem


def _ct(path: Path, rows: int = 48, cols: int = 48, **kw: object) -> Path:
    hu = np.random.default_rng(len(str(path))).normal(0, 300, (rows, cols))
    return write_ct_dicom(path, hu, 0.5, "BROKEN-PID", "Broken^Patient", **kw)


def _edit(src: Path, dst: Path, **changes: object) -> Path:
    ds = pydicom.dcmread(src)
    for k, v in changes.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    ds.save_as(dst, enforce_file_format=False)
    return dst


def build_corpus(root: Path) -> list[Broken]:
    """Write the corpus under ``root``; returns one entry per broken input."""
    root.mkdir(parents=True, exist_ok=True)
    good = _ct(root / "_good.dcm")
    raw = good.read_bytes()
    items: list[Broken] = []

    def add(name: str, path: Path, problem: str) -> None:
        items.append(Broken(name, path, problem))

    p = root / "zero_bytes.dcm"
    p.write_bytes(b"")
    add("zero-byte file", p, "file is empty (0 bytes)")

    p = root / "truncated_pixels.dcm"
    p.write_bytes(raw[:-2000])
    n = 48 * 48 * 2
    add("truncated DICOM (inside the pixel data)", p, f"file is truncated (pixel data has {n - 2000} of {n} bytes)")

    p = root / "truncated_header.dcm"
    p.write_bytes(raw[:300])
    add("truncated DICOM (inside the header)", p, "file is truncated (nothing after the file meta header)")

    add("DICOM without PixelData", _edit(good, root / "no_pixel_data.dcm", PixelData=None),
        "no pixel data (an image object without PixelData; the file may be truncated)")

    ds = pydicom.dcmread(good)
    for kw in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
               "SamplesPerPixel", "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "RescaleType"):
        delattr(ds, kw)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.save_as(root / "report_object.dcm", enforce_file_format=False)
    add("DICOM that is not an image (structured report)", root / "report_object.dcm",
        "is a structured report (Basic Text SR Storage), not an image")

    ds = pydicom.dcmread(good)
    ds[0x00280010] = DataElement(0x00280010, "LO", "forty-eight")
    ds.save_as(root / "wrong_vr.dcm", enforce_file_format=False)
    add("wrong VR (Rows written as LO)", root / "wrong_vr.dcm",
        "header element Rows (0028,0010) has the wrong value representation (VR LO, the standard says US)")

    bad_spacing = raw.replace(b"0.5\\0.5", b"abc\\0.5")
    assert bad_spacing != raw
    (root / "bad_spacing.dcm").write_bytes(bad_spacing)
    add("non-numeric PixelSpacing", root / "bad_spacing.dcm", "header element PixelSpacing (0028,0030) is not a number")

    add("Rows larger than the pixel data", _edit(good, root / "rows_too_big.dcm", Rows=96),
        f"pixel data is shorter than the header's image size ({n} of {2 * n} bytes): "
        "Rows, Columns, NumberOfFrames or BitsAllocated is wrong")

    add("zero Rows", _edit(good, root / "zero_rows.dcm", Rows=0), "image size missing or zero in the header (Rows 0, Columns 48)")

    ds = pydicom.dcmread(good)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no pydicom decoder exists
    ds.PixelData = encapsulate([b"\0" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(root / "mpeg2.dcm")
    add("compressed with a syntax nothing decodes (MPEG2)", root / "mpeg2.dcm",
        "compressed pixel data (MPEG2 Main Profile / Main Level) that no DICOM decoder can read")

    ds = pydicom.dcmread(good)
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"
    ds.save_as(root / "unknown_syntax.dcm", enforce_file_format=False)
    add("unknown transfer syntax UID", root / "unknown_syntax.dcm", "unknown transfer syntax 1.2.3.4.5.6; pixel data cannot be decoded")

    p = root / "not_dicom.dcm"
    p.write_bytes(b"this is a text file, not a scan\n" * 20)
    add("text file named .dcm", p, "not a DICOM, NIfTI or image file")

    add("missing file", root / "does_not_exist.dcm", "file not found")

    # NIfTI
    vol = np.random.default_rng(0).normal(100, 20, (24, 24, 12)).astype(np.float32)
    nan = vol.copy()
    nan[3, 4, 5] = np.nan
    nan[6, 7, 8] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), root / "nans.nii.gz")
    add("NIfTI with NaNs", root / "nans.nii.gz",
        "2 non-finite voxel(s) (NaN or inf); set preprocess.nonfinite: fill to replace them")
    inf = vol.copy()
    inf[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(inf, np.eye(4)), root / "inf.nii")
    add("NIfTI with inf", root / "inf.nii", "1 non-finite voxel(s) (NaN or inf); set preprocess.nonfinite: fill to replace them")
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6, 2, 2), np.float32), np.eye(4)), root / "five_d.nii.gz")
    add("5D array", root / "five_d.nii.gz",
        "unsupported 5D array (6, 6, 6, 2, 2): medtl reads 2D images, 3D volumes and 4D series")
    big = np.random.default_rng(1).normal(size=(40, 40, 40)).astype(np.float32)
    nib.save(nib.Nifti1Image(big, np.eye(4)), root / "_big.nii.gz")
    b = (root / "_big.nii.gz").read_bytes()
    (root / "truncated.nii.gz").write_bytes(b[: len(b) // 2])
    add("truncated .nii.gz", root / "truncated.nii.gz", "file is truncated")
    nib.save(nib.Nifti1Image(big, np.eye(4)), root / "_big.nii")
    b = (root / "_big.nii").read_bytes()
    (root / "truncated.nii").write_bytes(b[: len(b) // 2])
    add("truncated plain .nii", root / "truncated.nii", "file is truncated (voxel data ends early)")
    (root / "not_gzip.nii.gz").write_bytes(b[:4000])
    add(".nii.gz that is not gzip", root / "not_gzip.nii.gz", "not a gzip file (the name ends in .gz)")
    (root / "garbage.nii").write_bytes(b"\x01\x02garbage" * 60)
    add("NIfTI with a garbage header", root / "garbage.nii", "not a valid NIfTI file (unreadable header)")

    # DICOM series folders
    (root / "empty_series").mkdir()
    add("empty series folder", root / "empty_series", "folder is empty (no DICOM files)")
    notes = root / "no_dicom_series"
    notes.mkdir()
    (notes / "README.txt").write_text("scans go here\n")
    add("series folder without DICOM", notes, "folder holds no DICOM files (1 other file(s))")
    mixed = root / "mixed_series"
    rng = np.random.default_rng(2)
    write_ct_series(mixed / "a", rng.normal(0, 100, (3, 32, 32)), 0.7, 2.0, "MIX-A", "Mix^A")
    write_ct_series(mixed / "b", rng.normal(0, 100, (3, 32, 32)), 0.7, 2.0, "MIX-A", "Mix^A")
    for sub in ("a", "b"):
        for f in (mixed / sub).iterdir():
            f.rename(mixed / f"{sub}_{f.name}")
        (mixed / sub).rmdir()
    add("folder mixing two series", mixed, "folder mixes 2 DICOM series; give one series per folder")
    sizes = root / "sizes_series"
    uid = generate_uid()
    for z, side in enumerate((32, 32, 40)):
        write_ct_dicom(sizes / f"IM{z}.dcm", np.zeros((side, side)), 0.7, "SZ", "Size^S", series_uid=uid, z_mm=2.0 * z)
    add("series with slices of different sizes", sizes, "slices of different sizes [(32, 32), (40, 40)] in one series folder")
    same = root / "same_position_series"
    uid = generate_uid()
    for i in range(3):
        write_ct_dicom(same / f"IM{i}.dcm", np.zeros((32, 32)), 0.7, "SP", "Same^P", series_uid=uid, z_mm=0.0, instance=i + 1)
    add("series whose slices share a position", same,
        "3 slices share a position: the folder holds more than one volume (echoes, phases or time points); "
        "give one volume per folder")
    cut = root / "series_with_truncated_slice"
    write_ct_series(cut, rng.normal(0, 100, (4, 32, 32)), 0.7, 2.0, "CUT", "Cut^C")
    slice_bytes = (cut / "IM0002.dcm").read_bytes()
    (cut / "IM0002.dcm").write_bytes(slice_bytes[:-100])
    m = 32 * 32 * 2
    add("series with one truncated slice", cut, f"slice IM0002.dcm: file is truncated (pixel data has {m - 100} of {m} bytes)")

    # images
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64), dtype=np.uint8)).save(root / "_ok.png")
    b = (root / "_ok.png").read_bytes()
    (root / "truncated.png").write_bytes(b[: len(b) // 2])
    add("truncated PNG", root / "truncated.png", "file is truncated")
    (root / "garbage.jpg").write_bytes(b"not a jpeg" * 30)
    add("JPEG that is not an image", root / "garbage.jpg", "not a readable image file")
    Image.fromarray(np.zeros((1, 64), np.uint8)).save(root / "one_line.png")
    add("a one-pixel-high image", root / "one_line.png", "image too small to be a scan (shape (1, 64))")

    items += _os_corpus(root)
    items += lying_headers(root, good)
    for f in root.glob("_*"):
        f.unlink()
    return items


def lying_nifti(path: Path, shape: tuple[int, ...], voxels: int = 8000) -> Path:
    """A .nii.gz whose header claims ``shape`` (float32) but which holds ``voxels`` values: tens of KB."""
    header = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)).header
    header.set_data_shape(shape)
    data = np.random.default_rng(0).normal(size=voxels).astype(np.float32).tobytes()
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + data, mtime=0))
    return path


def lying_headers(root: Path, good: Path) -> list[Broken]:
    """Headers that lie about the data behind them, and compressed data that is not what it says."""
    out: list[Broken] = []
    add = lambda name, path, problem: out.append(Broken(name, path, problem))  # noqa: E731
    n = 48 * 48 * 2
    add("Rows smaller than the pixel data (read as a wrong image before)", _edit(good, root / "rows_too_small.dcm", Rows=10),
        f"pixel data is longer than the header's image size ({n} bytes, but 10 rows x 48 columns x 1 frame(s) x "
        "1 sample(s) x 16 bits = 960 bytes): Rows, Columns, NumberOfFrames, SamplesPerPixel or BitsAllocated is wrong")

    ds = pydicom.dcmread(good)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    with open(root / "deflate_over_plain.dcm", "wb") as f:  # the meta says deflated; the data set is written plain
        f.write(b"\0" * 128 + b"DICM")
        fp = DicomFileLike(f)
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
        write_dataset(fp, ds)
    add("deflate transfer syntax over plain data", root / "deflate_over_plain.dcm",
        "the file meta says the data set is deflated (Deflated Explicit VR Little Endian) but it is not deflate data "
        "(zlib: invalid stored block lengths): the transfer syntax in the file meta is wrong")

    ds = pydicom.dcmread(good)
    ds.compress(RLELossless)
    ds.PixelData = encapsulate([bytes(range(256)) * 2])
    ds.save_as(root / "rle_garbage.dcm")
    add("RLE with a corrupt header", root / "rle_garbage.dcm",
        "compressed pixel data (RLE Lossless) that no installed decoder can decode; it may be corrupt (pydicom: The RLE "
        "header specifies an invalid number of segments (50462976))")

    ds = pydicom.dcmread(get_testdata_file("JPEGLSNearLossless_16.dcm"))
    ds.PixelData = encapsulate([np.random.default_rng(1).bytes(600)])
    ds.save_as(root / "jpegls_garbage.dcm")
    add("JPEG-LS whose stream is garbage", root / "jpegls_garbage.dcm",
        "compressed pixel data (JPEG-LS Lossy (Near-Lossless) Image Compression) that no installed decoder can decode; "
        "it may be corrupt (pylibjpeg: A misplaced marker segment was found)")

    add(".nii.gz of 30 KB claiming 2 GiB", lying_nifti(root / "claims_2gib.nii.gz", (1024, 1024, 512)),
        "header claims 2.0 GiB of voxel data (1024x1024x512 voxels of float32) but the file is 29.0 KiB: gzip expands "
        "at most 1032x, so the header is wrong or the file is truncated; not decompressed")
    add(".nii.gz claiming 64 GiB", lying_nifti(root / "claims_64gib.nii.gz", (4096, 4096, 1024)),
        "header claims 64.0 GiB of voxel data (4096x4096x1024 voxels of float32), over the limit of 4.0 GiB per scan; "
        "not read (set MEDTL_MAX_SCAN_BYTES to raise the limit)")
    return out


def _os_corpus(root: Path) -> list[Broken]:
    """What the operating system throws: loops, pipes, devices, dangling links, unreadable files.

    A FIFO or ``/dev/zero`` named ``.dcm`` would block or never end if opened: medtl must refuse
    them from ``os.stat`` alone. A symlink to a broken file is reported under the link's own path.
    """
    out: list[Broken] = []
    os.symlink("loop_b.dcm", root / "loop_a.dcm")  # relative, as a copied export leaves them
    os.symlink("loop_a.dcm", root / "loop_b.dcm")
    out.append(Broken("relative symlink loop", root / "loop_a.dcm", "symlink loop (the link leads back to itself)"))
    os.symlink("self_loop.nii.gz", root / "self_loop.nii.gz")
    out.append(Broken("symlink to itself (NIfTI name)", root / "self_loop.nii.gz", "symlink loop (the link leads back to itself)"))
    os.mkfifo(root / "fifo.dcm")
    out.append(Broken("FIFO named .dcm", root / "fifo.dcm",
                      "not a regular file but a named pipe (FIFO); medtl reads files and folders only"))
    os.symlink("/dev/zero", root / "device.dcm")
    out.append(Broken("character device named .dcm (/dev/zero)", root / "device.dcm",
                      "not a regular file but a character device; medtl reads files and folders only"))
    os.symlink("vanished.dcm", root / "dangling.dcm")
    out.append(Broken("symlink whose target is gone", root / "dangling.dcm", "broken symlink (its target does not exist)"))
    os.symlink("truncated_pixels.dcm", root / "link_to_truncated.dcm")
    n = 48 * 48 * 2
    out.append(Broken("symlink to a truncated DICOM", root / "link_to_truncated.dcm",
                      f"file is truncated (pixel data has {n - 2000} of {n} bytes)"))
    rng = np.random.default_rng(5)
    for name, make in (("gap", lambda p: os.symlink("IM9999.dcm", p)), ("pipe", os.mkfifo)):
        folder = root / f"series_with_{name}_slice"
        write_ct_series(folder, rng.normal(0, 100, (4, 32, 32)), 0.7, 2.0, "GAP", "Gap^G")
        (folder / "IM0002.dcm").unlink()
        make(folder / "IM0002.dcm")
    out.append(Broken("series whose slice is a link to nothing", root / "series_with_gap_slice",
                      "slice IM0002.dcm: broken symlink (its target does not exist)"))
    out.append(Broken("series whose slice is a FIFO", root / "series_with_pipe_slice",
                      "slice IM0002.dcm: not a regular file but a named pipe (FIFO); medtl reads files and folders only"))
    if os.geteuid() != 0:  # root reads any file whatever its mode; test_os_errors covers it by injection
        p = root / "unreadable.dcm"
        p.write_bytes(b"DICM")
        p.chmod(0)
        out.append(Broken("file this user may not read", p, "permission denied (this user may not read it)"))
    return out


def build_no_decoder(root: Path) -> Broken:
    """A JPEG 2000 DICOM (encoded by pydicom's openjpeg plugin), for a process whose JPEG 2000 decoders are hidden."""
    root.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(_ct(root / "j2k_without_decoder.dcm"))
    ds.compress(JPEG2000Lossless)
    ds.save_as(root / "j2k_without_decoder.dcm")
    return Broken("compressed without a decoder", root / "j2k_without_decoder.dcm",
                  "compressed pixel data (JPEG 2000 Image Compression (Lossless Only)) and no decoder installed "
                  "(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)")


@contextlib.contextmanager
def hidden_decoder(uid: str = JPEG2000Lossless) -> Iterator[None]:
    """Remove every installed plugin of one decoder for the duration (as if none were installed)."""
    from pydicom.pixels import get_decoder

    decoder = get_decoder(uid)
    saved = dict(decoder._available)  # noqa: SLF001 - pydicom keeps no public snapshot of its plugins
    for label in list(decoder.available_plugins):
        decoder.remove_plugin(label)
    try:
        yield
    finally:
        decoder._available.update(saved)  # noqa: SLF001


HIDE_J2K = (
    "from pydicom.pixels import get_decoder; from pydicom.uid import JPEG2000Lossless; "
    "d = get_decoder(JPEG2000Lossless); [d.remove_plugin(p) for p in list(d.available_plugins)]; "
)
