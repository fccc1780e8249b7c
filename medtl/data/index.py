"""A hospital export (PACS/CD: nested folders, files without extension, mixed series, DICOMDIR)
as a manifest: one row per series, single image or multi-frame object.

Files are grouped by series identity (SeriesInstanceUID), never by folder: one series may lie in
several folders and one folder may hold several series. A series of single-frame slices is
written ``FOLDER#series/KEY``: the deepest folder holding all its files plus a keyed hash of its
UID, which every medtl reader accepts (``medtl.data.readers.series_ref`` finds the slices again). Headers are
read without pixels and only for the tags below, so thousands of files take seconds.

Nothing identifying leaves: patient, study and series identifiers only as keyed hashes (the
label sheet's key is hashed the moment it is read); acquisition fields come from an allow-list;
a series description is kept only when it cannot be free text naming someone (``safe_description``).
Objects that are not images (SR, PR, SEG, RT...) and files that are not DICOM go to a side
report, with a count for each; nothing is dropped silently.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom

from medtl.data.readers.dicom_objects import not_an_image
from medtl.data.readers.series_ref import read_header, series_key, walk_files
from medtl.errors import ConfigError, DataError
from medtl.privacy import hash_id, is_hashed
from medtl.progress import track

if TYPE_CHECKING:  # pandas is imported where an index is built: readers import this module
    import pandas as pd

_DICOMDIR = "1.2.840.10008.1.3.10"
# the only tags an index reads (and the person fields a description is checked against)
_PERSON_FIELDS = ("PatientName", "PatientID", "OtherPatientIDs", "ReferringPhysicianName", "OperatorsName",
                  "PerformingPhysicianName", "PatientBirthDate", "AccessionNumber")
_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "BodyPartExamined",
         "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness", "SeriesDescription", "NumberOfFrames",
         "Rows", "Columns", "Manufacturer", "ManufacturerModelName", "InstitutionName", "MagneticFieldStrength",
         "ConvolutionKernel", "GantryDetectorTilt", "SharedFunctionalGroupsSequence", *_PERSON_FIELDS]
LABEL_KEYS = {  # --on -> (header keyword, hash prefix, label-sheet column names accepted)
    "patient": ("PatientID", "p-", ("patient_id", "patientid", "patient", "mrn")),
    "study": ("StudyInstanceUID", "st-", ("study_uid", "studyinstanceuid", "study", "study_id")),
    "accession": ("AccessionNumber", "acc-", ("accession", "accession_number", "accessionnumber")),
}
COLUMNS = ["path", "label", "patient_id", "study_id", "domain", "kind", "modality", "body_part", "orientation",
           "slices", "rows", "columns", "slice_thickness", "gantry_tilt", "series_description"]


# -- what one file is --------------------------------------------------------------------------


@dataclass
class _File:
    path: Path
    ds: pydicom.Dataset
    frames: int

    @property
    def stack(self) -> tuple[Any, ...]:
        """Files of one volume share orientation and size."""
        iop = self.ds.get("ImageOrientationPatient")
        return (tuple(round(float(v), 3) for v in iop) if iop else None, self.ds.get("Rows"), self.ds.get("Columns"))


def orientation_name(iop: Any) -> str | None:
    """axial / coronal / sagittal from the slice normal, oblique when no axis dominates (> 0.8)."""
    try:
        v = [float(x) for x in iop]
    except (TypeError, ValueError):
        return None
    if len(v) != 6:
        return None
    n = np.cross(v[:3], v[3:])
    if not np.linalg.norm(n):
        return None
    n = np.abs(n) / np.linalg.norm(n)
    return ("sagittal", "coronal", "axial")[int(n.argmax())] if n.max() > 0.8 else "oblique"


def _iop(ds: pydicom.Dataset) -> Any:
    if ds.get("ImageOrientationPatient"):
        return ds.ImageOrientationPatient
    try:  # enhanced multi-frame: shared functional groups
        return ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    except (AttributeError, IndexError, KeyError):
        return None


def safe_description(ds: pydicom.Dataset) -> str:
    """The series description where it is a protocol name, never free text that could name a person.

    Kept only when short, in protocol characters, without a run of 5+ digits (dates, ids) and
    sharing no word with the file's own person-name and id fields; otherwise empty.
    """
    text = str(ds.get("SeriesDescription", "") or "").strip()
    if not text or len(text) > 64 or not re.fullmatch(r"[A-Za-z0-9 _.,+\-/()*:#=<>]+", text) or re.search(r"\d{5,}", text):
        return ""
    words = {w for w in re.split(r"[^a-z0-9]+", text.lower()) if len(w) > 1}
    for kw in _PERSON_FIELDS:
        value = ds.get(kw)
        if value and words & {w for w in re.split(r"[^a-z0-9]+", str(value).lower()) if len(w) > 1}:
            return ""
    return text


def _number(value: Any) -> float | None:
    try:
        return round(float(value), 4)
    except (TypeError, ValueError):
        return None


# -- the index ---------------------------------------------------------------------------------


@dataclass
class IndexResult:
    manifest: pd.DataFrame
    report: str
    non_images: list[dict[str, str]] = field(default_factory=list)
    not_dicom: list[str] = field(default_factory=list)
    unpicked: list[dict[str, str]] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    files: int = 0
    dicomdirs: int = 0
    warnings: list[str] = field(default_factory=list)


def read_label_sheet(sheet: str | Path, on: str) -> dict[str, str]:
    """Hashed key -> label; the key column is hashed as the sheet is read and the rest dropped."""
    from medtl.data.manifest import read_csv_text  # pandas: loaded only when a sheet is given

    if on not in LABEL_KEYS:
        raise ConfigError("--on", f"unknown key '{on}' (use {', '.join(LABEL_KEYS)})")
    p = Path(sheet)
    df = read_csv_text(p, "label sheet")
    _, prefix, names = LABEL_KEYS[on]
    norm = {re.sub(r"[^a-z0-9_]", "", c.lower()): c for c in df.columns}
    key_col = next((norm[n] for n in names if n in norm), None)
    if key_col is None or "label" not in norm:
        raise DataError(p, f"a label sheet for --on {on} needs a 'label' column and one of: {', '.join(names)}")
    keys = [v.strip() if (prefix == "p-" and is_hashed(v.strip())) else hash_id(v, prefix=prefix) for v in df[key_col]]
    labels = df[norm["label"]].str.strip().tolist()
    out: dict[str, str] = {}
    for row, (k, label) in enumerate(zip(keys, labels), start=2):
        if not label:
            continue
        if out.get(k, label) != label:
            raise DataError(p, f"row {row}: this {on} already has another label ({out[k]} vs {label})")
        out[k] = label
    if not out:
        raise DataError(p, "label sheet has no labelled rows")
    return out


def parse_pick(rule: str | None) -> tuple[str, re.Pattern | None] | None:
    if rule is None:
        return None
    if rule in ("largest-axial", "largest"):
        return rule, None
    if rule.startswith("description:"):
        try:
            return "description", re.compile(rule.split(":", 1)[1], re.IGNORECASE)
        except re.error as e:
            raise ConfigError("--pick", f"bad description pattern ({e})") from None
    raise ConfigError("--pick", f"unknown rule '{rule}' (use largest-axial, largest or description:PATTERN)")


def index_export(
    folders: list[str | Path],
    out: str | Path,
    labels: str | Path | None = None,
    on: str = "patient",
    domain_from: list[str] | None = None,
    pick: str | None = None,
) -> IndexResult:
    """Index DICOM export folders into ``out`` (manifest CSV) and ``out``'s ``.report.md``."""
    import pandas as pd

    from medtl.data.curate import DOMAIN_FIELDS, header_domain

    unknown = sorted(set(domain_from or []) - set(DOMAIN_FIELDS))
    if unknown:
        raise ConfigError("--domain-from", f"unknown field(s) {unknown} (known: {', '.join(DOMAIN_FIELDS)})")
    rule = parse_pick(pick)
    sheet = read_label_sheet(labels, on) if labels is not None else None
    roots = [Path(f) for f in folders]
    for r in roots:
        if not r.is_dir():
            raise DataError(r, "not a folder")
    out = Path(out)
    result = IndexResult(pd.DataFrame(columns=COLUMNS), "")

    files = [p for r in roots for p in walk_files(r)]
    if not files:
        raise DataError(", ".join(map(str, roots)), "no files to index")
    result.files = len(files)
    series: dict[str, list[_File]] = defaultdict(list)
    loose: list[_File] = []
    for p in track(files, "indexing", total=len(files)):
        ds = read_header(p, _TAGS)
        if ds is None:
            result.not_dicom.append(str(p))
            continue
        sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
        if sop == _DICOMDIR:
            result.dicomdirs += 1
            continue
        modality = str(ds.get("Modality", "") or "")
        problem = not_an_image(ds)  # the reader's own words: SEG, SR, PR, RT, KO, waveforms...
        if problem is not None or not ds.get("Rows") or not ds.get("Columns"):
            what = problem.removeprefix("is ") if problem else f"no image ({getattr(pydicom.uid.UID(sop), 'name', '') or '?'})"
            result.non_images.append({"path": str(p), "modality": modality or "?", "what": what})
            continue
        f = _File(p, ds, int(_number(ds.get("NumberOfFrames", 1)) or 1))
        uid = ds.get("SeriesInstanceUID")
        (series[str(uid)] if uid else loose).append(f)

    rows: list[dict[str, Any]] = []
    duplicates = 0
    for uid, members in series.items():
        by_sop: dict[str, _File] = {}
        for f in members:
            by_sop.setdefault(str(f.ds.get("SOPInstanceUID", f.path)), f)
        duplicates += len(members) - len(by_sop)
        members = list(by_sop.values())
        multi = [f for f in members if f.frames > 1]
        single = [f for f in members if f.frames <= 1]
        rows += [_row(f, "multiframe", f.path, f.frames) for f in multi]
        volume = len(single) > 1 and len({f.stack for f in single}) == 1 and all(
            f.ds.get("ImageOrientationPatient") and f.ds.get("ImagePositionPatient") for f in single)
        if volume:
            folder = Path(os.path.commonpath([str(f.path.parent.resolve()) for f in single]))
            rows.append(_row(single[0], "series", f"{folder}#series/{series_key(uid)}", len(single)))
        else:
            if len(single) > 1:
                result.warnings.append(f"a series of {len(single)} images that do not form one volume "
                                       "(no geometry, several orientations or sizes): one row per image")
            rows += [_row(f, "image", f.path, 1) for f in single]
    rows += [_row(f, "multiframe" if f.frames > 1 else "image", f.path, f.frames) for f in loose]
    if duplicates:
        result.warnings.append(f"{duplicates} file(s) repeat an instance already indexed (counted once)")

    for r in rows:
        r["domain"] = header_domain(r.pop("_header"), domain_from) if domain_from else "all"
    df = pd.DataFrame(rows)
    if df.empty:
        raise DataError(", ".join(map(str, roots)), f"no images among {len(files)} files "
                                                   f"({len(result.non_images)} non-image objects, {len(result.not_dicom)} not DICOM)")
    df = df.sort_values(["patient_id", "study_id", "path"], kind="stable").reset_index(drop=True)
    if sheet is not None:
        keys = df.pop(f"_key_{on}")
        df["label"] = [sheet.get(k, "") for k in keys]
        missing = df["label"] == ""
        result.unlabelled = [_rel(p, out) for p in df.loc[missing, "path"]]
        unused = len(set(sheet) - set(keys))
        if unused:
            result.warnings.append(f"{unused} key(s) of the label sheet match no indexed image")
        df = df[~missing]
    else:
        df["label"] = ""
    if rule is not None:
        df, result.unpicked, no_match = _pick(df, *rule)
        if no_match:
            result.warnings.append(f"{no_match} study/studies have no series the --pick rule accepts")
    df["path"] = [_rel(p, out) for p in df["path"]]
    df = df[COLUMNS].reset_index(drop=True)
    result.manifest = df
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    result.report = _render(result, roots, out, rule, sheet is not None)
    report_path(out).write_text(result.report)
    return result


def report_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".report.md")


def _rel(path: str | Path, out: Path) -> str:
    """Relative to the manifest's folder (as manifests resolve their paths)."""
    return os.path.relpath(str(path), str(out.parent.resolve() if out.parent != Path("") else Path.cwd()))


def _row(f: _File, kind: str, path: str | Path, slices: int) -> dict[str, Any]:
    ds = f.ds
    header = {kw: ds.get(kw) for kw in ("Manufacturer", "ManufacturerModelName", "SliceThickness", "MagneticFieldStrength",
                                        "ConvolutionKernel", "Modality", "BodyPartExamined")}
    if ds.get("InstitutionName"):
        header["InstitutionCode"] = hash_id(ds.InstitutionName, prefix="site-", length=8)
    pid, study = ds.get("PatientID"), ds.get("StudyInstanceUID")
    return {
        "path": str(Path(path).resolve()) if "#" not in str(path) else str(path),
        "patient_id": hash_id(pid) if pid else hash_id(f"study:{study}"),  # no patient id: its study stands in
        "study_id": hash_id(study, prefix="st-") if study else "",
        "kind": kind,
        "modality": str(ds.get("Modality", "") or ""),
        "body_part": str(ds.get("BodyPartExamined", "") or ""),
        "orientation": orientation_name(_iop(ds)) or "",
        "slices": slices,
        "rows": int(ds.get("Rows") or 0),
        "columns": int(ds.get("Columns") or 0),
        "slice_thickness": _number(ds.get("SliceThickness")),
        "gantry_tilt": _number(ds.get("GantryDetectorTilt")),
        "series_description": safe_description(ds),
        "_description": str(ds.get("SeriesDescription", "") or ""),  # for --pick only, never written
        "_header": {k: v for k, v in header.items() if v not in (None, "")},
        **{f"_key_{on}": (hash_id(ds.get(kw), prefix=prefix) if ds.get(kw) else "")
           for on, (kw, prefix, _) in LABEL_KEYS.items()},
    }


def _pick(df: pd.DataFrame, rule: str, pattern: re.Pattern | None) -> tuple[pd.DataFrame, list[dict[str, str]], int]:
    """One row per study: the largest (axial) series, or the largest whose description matches."""
    import pandas as pd

    if rule == "largest-axial":
        ok = df["orientation"] == "axial"
    elif rule == "description":
        ok = df["_description"].map(lambda d: bool(pattern.search(d)))
    else:
        ok = pd.Series(True, index=df.index)
    ranked = df.assign(_ok=ok, _thick=df["slice_thickness"].fillna(np.inf)).sort_values(
        ["study_id", "_ok", "slices", "_thick", "path"], ascending=[True, False, False, True, True], kind="stable")
    keep, unpicked, no_match = [], [], 0
    for _, g in ranked.groupby("study_id", sort=False):
        if not g["_ok"].iloc[0]:
            no_match += 1
            unpicked += [{"path": p, "why": "no series of its study fits the rule"} for p in g["path"]]
            continue
        keep.append(g.index[0])
        unpicked += [{"path": p, "why": "another series of its study was picked"} for p in g["path"].iloc[1:]]
    return df.loc[sorted(keep)], unpicked, no_match


def _render(r: IndexResult, roots: list[Path], out: Path, rule: Any, labelled: bool) -> str:
    m = r.manifest
    rel = lambda p: _rel(p, out)  # noqa: E731
    lines = [
        "# Index report", "",
        f"- folders: {', '.join(str(p) for p in roots)}",
        f"- files: {r.files}; DICOMDIR: {r.dicomdirs}; not DICOM: {len(r.not_dicom)}; non-image objects: {len(r.non_images)}",
        f"- rows: {len(m)} ({', '.join(f'{n} {k}' for k, n in m['kind'].value_counts().items())}); "
        f"patients: {m['patient_id'].nunique()}; studies: {m['study_id'].nunique()} (keyed hashes, never the identifiers)",
    ]
    if rule is not None:
        lines.append(f"- pick: {rule[0]}{' ' + rule[1].pattern if rule[1] is not None else ''}; {len(r.unpicked)} series not picked")
    if labelled:
        lines.append(f"- without a label in the sheet (not in the manifest): {len(r.unlabelled)}")
    lines += [f"- warning: {w}" for w in r.warnings]
    lines += ["", "## Non-image objects (not in the manifest)", ""]
    lines += [f"- {rel(o['path'])}: {o['what']} ({o['modality']})" for o in r.non_images] or ["none"]
    lines += ["", "## Files that are not DICOM", ""]
    lines += [f"- {rel(p)}" for p in r.not_dicom[:200]] or ["none"]
    if len(r.not_dicom) > 200:
        lines.append(f"- ... and {len(r.not_dicom) - 200} more")
    if labelled:
        lines += ["", "## Rows without a label", ""] + ([f"- {p}" for p in r.unlabelled] or ["none"])
    if rule is not None:
        lines += ["", "## Series not picked", ""] + ([f"- {rel(u['path'])}: {u['why']}" for u in r.unpicked] or ["none"])
    return "\n".join(lines) + "\n"
