"""Reading scans: one module per format behind one interface, chosen by registration.

A scan is a path: a DICOM file, a folder holding one DICOM series (or one series of a mixed
folder, ``FOLDER#series/KEY`` as ``medtl index`` writes it), a NIfTI file (.nii, .nii.gz),
a PNG/JPEG/TIFF/BMP image, a ``.npy`` array, or one image of a MedMNIST ``.npz`` written
``FILE.npz#SPLIT/INDEX`` (e.g. ``breastmnist.npz#test/0``).

* ``base``: the ``ScanReader`` interface (MONAI's ``ImageReader`` shape: ``verify_suffix``,
  ``read``, ``get_data``), ``register_reader`` and ``read_scan``;
* ``dicom`` (+ ``dicom_checks``), ``nifti``, ``images``, ``arrays``: one module per format;
* ``info``: ``ScanInfo`` and the geometry every format shares; ``wording``: failures in plain words.

Every failure leaves as a ``ScanError`` that names the scan and says why in one line; the line
never repeats header values, so no identifier can ride along in an error.

A new format: subclass ``ScanReader`` (or ``MonaiScanReader`` with a MONAI reader and
``suffixes``) in a module of its own and ``register_reader(YourReader())``; readers registered
later are asked first, and DICOM (registered first) takes whatever no other reader claims.
"""

from medtl.data.readers.arrays import NPZ_REF, NpyScanReader, NpzScanReader, array_scan, npz_ref, read_npz_image
from medtl.data.readers.base import (
    MonaiScanReader,
    ScanReader,
    read_scan,
    reader_for,
    register_reader,
    registered_readers,
)
from medtl.data.readers.dicom import DicomScanReader, DicomSeriesRefReader, MedtlDicomReader
from medtl.data.readers.images import IMAGE_SUFFIXES, ImageScanReader
from medtl.data.readers.info import ScanInfo, axcodes
from medtl.data.readers.nifti import NIFTI_SUFFIXES, MedtlNibabelReader, NiftiScanReader
from medtl.data.readers.wording import PlainError, reason

# asked newest first: DICOM last, as the reader of files without a telling suffix
for _reader in (DicomScanReader(), NiftiScanReader(), ImageScanReader(), NpyScanReader(), NpzScanReader(),
                DicomSeriesRefReader()):
    register_reader(_reader)
del _reader

__all__ = [
    "IMAGE_SUFFIXES", "NIFTI_SUFFIXES", "NPZ_REF", "DicomScanReader", "DicomSeriesRefReader", "ImageScanReader", "MedtlDicomReader",
    "MedtlNibabelReader", "MonaiScanReader", "NiftiScanReader", "NpyScanReader", "NpzScanReader", "PlainError",
    "ScanInfo", "ScanReader", "array_scan", "axcodes", "npz_ref", "read_npz_image", "read_scan", "reader_for",
    "reason", "register_reader", "registered_readers",
]
