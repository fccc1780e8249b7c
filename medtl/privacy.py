"""Patient privacy: identifiers are hashed before use and never copied out of a header.

Header fields leave a scan only through ``SAFE_DICOM_KEYWORDS`` (an allow-list), so a new tag in
some vendor's file cannot leak by default. ``CONFIDENTIAL_KEYWORDS`` lists the identifiers of the
DICOM basic application-level confidentiality profile (PS3.15 Table E.1-1) that medtl meets in
practice; tests use it to prove nothing of it appears in outputs.
"""

from __future__ import annotations

import hashlib
import hmac
import os

# PS3.15 E.1-1, attributes a clinical study commonly carries (not the whole table: UIDs of
# private/reference sequences are not read by medtl at all).
CONFIDENTIAL_KEYWORDS: frozenset[str] = frozenset(
    {
        "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
        "PatientAge", "PatientSize", "PatientWeight", "PatientAddress", "PatientTelephoneNumbers",
        "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientNames", "OtherPatientIDsSequence",
        "PatientComments", "EthnicGroup", "MilitaryRank", "MedicalRecordLocator",
        "IssuerOfPatientID", "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
        "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "ContentDate",
        "ContentTime", "AcquisitionDateTime", "InstanceCreationDate", "InstanceCreationTime",
        "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
        "ReferringPhysicianName", "ReferringPhysicianAddress", "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy", "OperatorsName", "PhysiciansOfRecord",
        "RequestingPhysician", "StationName", "DeviceSerialNumber", "StudyDescription",
        "SeriesDescription", "RequestedProcedureDescription", "AdmittingDiagnosesDescription",
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
        "MediaStorageSOPInstanceUID", "ProtocolName", "PerformedProcedureStepID",
        "ScheduledProcedureStepID", "RequestAttributesSequence", "ImageComments",
    }
)

# What medtl may read out of a header and show: acquisition physics, never people, places or dates.
SAFE_DICOM_KEYWORDS: tuple[str, ...] = (
    "Modality", "PhotometricInterpretation", "SamplesPerPixel", "BitsAllocated", "BitsStored",
    "PixelRepresentation", "Rows", "Columns", "NumberOfFrames", "RescaleSlope",
    "RescaleIntercept", "RescaleType", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "ImageOrientationPatient", "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength",
    "KVP", "ConvolutionKernel", "BodyPartExamined", "GantryDetectorTilt",
)

_DEFAULT_SALT = b"medtl-patient-v1"


def hash_id(value: object, length: int = 16, prefix: str = "p-") -> str:
    """Keyed hash (HMAC-SHA256) of an identifier: stable for splitting, never the identifier itself.

    The key comes from ``MEDTL_ID_SALT`` when set, else a fixed default so that splits are
    reproducible across machines. With the default key anyone holding a candidate identifier can
    recompute its code; a site that shares outputs sets ``MEDTL_ID_SALT`` to its own secret so
    codes cannot be matched back outside the site. ``prefix`` tells kinds apart (``p-`` patients,
    ``site-`` institutions).
    """
    key = os.environ.get("MEDTL_ID_SALT", "").encode() or _DEFAULT_SALT
    digest = hmac.new(key, str(value).strip().encode(), hashlib.sha256).hexdigest()
    return prefix + digest[:length]


def is_hashed(value: str) -> bool:
    return value.startswith("p-") and len(value) > 2 and all(c in "0123456789abcdef" for c in value[2:])
