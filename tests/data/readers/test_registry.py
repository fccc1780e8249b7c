"""Readers are chosen by registration and suffix (DICOM takes the rest); a new format is one registered class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medtl.data.readers import (
    DicomScanReader,
    ImageScanReader,
    NiftiScanReader,
    NpyScanReader,
    NpzScanReader,
    ScanInfo,
    ScanReader,
    base,
    read_scan,
    reader_for,
    register_reader,
)
from medtl.data.readers.info import check_size
from medtl.errors import ScanError


def test_each_source_goes_to_its_format(tmp_path) -> None:
    (tmp_path / "series.nii").mkdir()  # a folder is a DICOM series whatever its name
    want = {"a.nii.gz": NiftiScanReader, "b.NII": NiftiScanReader, "c.png": ImageScanReader, "d.TIFF": ImageScanReader,
            "e.npy": NpyScanReader, "f.npz": NpzScanReader, "f.npz#test/3": NpzScanReader, "IM0001": DicomScanReader,
            "g.dcm": DicomScanReader, "series.nii": DicomScanReader}
    for name, cls in want.items():
        assert type(reader_for(tmp_path / name if "#" not in name else f"{tmp_path}/{name}")) is cls, name


class CsvGridReader(ScanReader):
    """A made-up format: a 2D grid of numbers in a .csv file."""

    kind = "csv-grid"

    def verify_suffix(self, source) -> bool:
        return str(source).endswith(".csv")

    def read(self, path: Path) -> np.ndarray:
        return np.loadtxt(path, delimiter=",", ndmin=2)

    def get_data(self, loaded: np.ndarray, path: Path) -> tuple[MetaTensor, ScanInfo]:
        info = ScanInfo(path=str(path), kind=self.kind, raw_shape=loaded.shape, raw_axes=("rows", "columns"))
        check_size(path, info)
        return MetaTensor(torch.as_tensor(loaded.T[None], dtype=torch.float32)), info


def test_a_registered_reader_is_asked_first_and_its_failures_name_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(base, "_READERS", list(base._READERS))  # registration undone after the test
    grid = np.arange(12.0).reshape(3, 4)
    np.savetxt(tmp_path / "g.csv", grid, delimiter=",")
    (tmp_path / "bad.csv").write_text("1,2\nx,y\n")
    with pytest.raises(ScanError, match="not a DICOM, NIfTI or image file"):
        read_scan(tmp_path / "g.csv")  # before registration, DICOM takes it and refuses it
    register_reader(CsvGridReader())
    raw, info = read_scan(tmp_path / "g.csv")
    assert info.kind == "csv-grid" and info.raw_shape == (3, 4) and np.array_equal(raw.numpy()[0].T, grid)
    with pytest.raises(ScanError, match=r"bad.csv: cannot be read \(ValueError"):
        read_scan(tmp_path / "bad.csv")
