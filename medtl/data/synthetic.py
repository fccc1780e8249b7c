"""Synthetic CT phantoms written as real DICOM and NIfTI files: the demo's data and the tests' fixtures.

A phantom is an axial chest-like slab in Hounsfield units: air, a soft-tissue body, two lungs, a
spine and a few small vessels. A *marker* scan also carries a small bright nodule in a lung.
Two scanners differ the way real ones do: resolution, noise, blur and intensity calibration.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy.ndimage import gaussian_filter, zoom


@dataclass(frozen=True)
class Scanner:
    name: str
    size: int  # pixels across the field of view
    fov_mm: float
    noise_hu: float
    blur_px: float
    gain: float  # stored = gain * HU + offset (a miscalibrated scanner)
    offset: float
    manufacturer: str
    model: str
    fmt: str  # "dicom" | "dicom-series" | "nifti"


SCANNERS = {
    "scanner_a": Scanner("scanner_a", 128, 360.0, 12.0, 0.0, 1.0, 0.0, "Demo Medical", "Sharp CT 128", "dicom"),
    "scanner_b": Scanner("scanner_b", 80, 360.0, 35.0, 1.2, 0.85, 40.0, "Other Systems", "Soft CT 80", "nifti"),
}


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def phantom(rng: np.random.Generator, marker: bool, size: int = 256, slices: int = 3) -> np.ndarray:
    """A (slices, size, size) volume in HU; the nodule, when present, spans the middle slices."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float) / size
    vol = np.full((slices, size, size), -1000.0)
    body = _ellipse(yy, xx, 0.5, 0.5, 0.34 + rng.uniform(-0.03, 0.03), 0.44 + rng.uniform(-0.03, 0.03))
    lungs = [(0.47, 0.32 + rng.uniform(-0.02, 0.02)), (0.47, 0.68 + rng.uniform(-0.02, 0.02))]
    texture = gaussian_filter(rng.normal(0, 1, (size, size)), size / 64) * 60
    for z in range(slices):
        sl = vol[z]
        sl[body] = 40.0 + texture[body]
        for cy, cx in lungs:
            lung = _ellipse(yy, xx, cy, cx, 0.22, 0.13)
            sl[lung] = -820.0 + texture[lung] * 0.5
        sl[_ellipse(yy, xx, 0.78, 0.5, 0.05, 0.05)] = 700.0  # spine
        sl[_ellipse(yy, xx, 0.55, 0.5, 0.06, 0.04)] = 50.0  # heart/aorta
    for _ in range(rng.integers(3, 7)):  # vessels: small, dim, in both classes
        cy, cx = lungs[rng.integers(0, 2)]
        vy, vx = cy + rng.uniform(-0.15, 0.15), cx + rng.uniform(-0.08, 0.08)
        vol[:, _ellipse(yy, xx, vy, vx, 0.008, 0.008)] = -150.0
    if marker:
        cy, cx = lungs[rng.integers(0, 2)]
        ny, nx = cy + rng.uniform(-0.12, 0.12), cx + rng.uniform(-0.06, 0.06)
        r = rng.uniform(0.025, 0.04)
        mid = slices // 2
        for z in range(max(0, mid - 1), min(slices, mid + 2)):
            shrink = 1.0 if z == mid else 0.7
            vol[z, _ellipse(yy, xx, ny, nx, r * shrink, r * shrink)] = 120.0 + rng.uniform(0, 80)
    return vol


def acquire(vol_hu: np.ndarray, scanner: Scanner, rng: np.random.Generator) -> np.ndarray:
    """What a scanner records: resampled to its matrix, blurred, noisy, with its calibration."""
    f = scanner.size / vol_hu.shape[-1]
    out = zoom(vol_hu, (1, f, f), order=1)
    if scanner.blur_px > 0:
        out = gaussian_filter(out, (0, scanner.blur_px, scanner.blur_px))
    out = out + rng.normal(0, scanner.noise_hu, out.shape)
    return scanner.gain * out + scanner.offset


def write_ct_dicom(path: Path, hu: np.ndarray, spacing_mm: float, patient_id: str, patient_name: str,
                   scanner: Scanner | None = None, series_uid: str | None = None, study_uid: str | None = None,
                   instance: int = 1, z_mm: float = 0.0, slope: float = 1.0, intercept: float = -1024.0,
                   photometric: str = "MONOCHROME2", extra: dict[str, object] | None = None) -> Path:
    """One axial CT slice, stored as int16 with RescaleSlope/Intercept (so reading gives HU back)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate, ds.AccessionNumber = "19700101", f"ACC{abs(hash(patient_id)) % 10**8:08d}"
    ds.StudyDate = _dt.date.today().strftime("%Y%m%d")
    if scanner is not None:
        ds.Manufacturer, ds.ManufacturerModelName = scanner.manufacturer, scanner.model
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [-spacing_mm * hu.shape[1] / 2, -spacing_mm * hu.shape[0] / 2, z_mm]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.SliceThickness = spacing_mm
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    stored = np.clip(np.round((hu - intercept) / slope), -32768, 32767).astype(np.int16)
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ct_series(folder: Path, vol_hu: np.ndarray, spacing_mm: float, slice_mm: float, patient_id: str,
                    patient_name: str, scanner: Scanner | None = None, shuffle_names: bool = True,
                    rng: np.random.Generator | None = None) -> Path:
    """A folder holding one series; file names deliberately out of slice order."""
    series, study = generate_uid(), generate_uid()
    order = list(range(vol_hu.shape[0]))
    if shuffle_names:
        (rng or np.random.default_rng(0)).shuffle(order)
    for name_idx, z in enumerate(order):
        write_ct_dicom(folder / f"IM{name_idx:04d}.dcm", vol_hu[z], spacing_mm, patient_id, patient_name, scanner,
                       series, study, instance=z + 1, z_mm=z * slice_mm)
    return folder


def write_nifti(path: Path, vol: np.ndarray, spacing_mm: float, slice_mm: float) -> Path:
    """A (slices, rows, cols) volume as RAS NIfTI (x: left→right... as nibabel's affine says)."""
    data = np.transpose(vol, (2, 1, 0))[::-1, ::-1, :].astype(np.float32)  # -> (x, y, z) in RAS
    affine = np.diag([spacing_mm, spacing_mm, slice_mm, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def make_marker_dataset(out: str | Path, patients_per_domain: int = 40, scans_per_patient: int = 2,
                        seed: int = 0, positive_rate: float = 0.5) -> Path:
    """Write the demo marker dataset and its manifest (raw made-up patient ids; curation hashes them)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    for scanner in SCANNERS.values():
        for p in range(patients_per_domain):
            pid = f"DEMO-{scanner.name[-1].upper()}-{p:03d}"
            for s in range(scans_per_patient):
                marker = bool(rng.random() < positive_rate)
                vol = acquire(phantom(rng, marker), scanner, rng)
                spacing = scanner.fov_mm / scanner.size
                stem = f"{pid}_{s}"
                if scanner.fmt == "nifti":
                    path = write_nifti(out / scanner.name / f"{stem}.nii.gz", vol, spacing, 5.0)
                else:
                    mid = vol[vol.shape[0] // 2]
                    hu = (mid - scanner.offset) / scanner.gain  # a DICOM scanner stores its own calibration
                    path = write_ct_dicom(out / scanner.name / f"{stem}.dcm", hu, spacing, pid, f"Demo^Patient{p:03d}", scanner)
                rows.append({"path": str(path.relative_to(out)), "label": "marker" if marker else "clear",
                             "patient_id": pid, "domain": scanner.name})
    manifest = out / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
