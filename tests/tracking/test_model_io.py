"""The pieces around a logged model that need no store: input forms, redaction, requirements, serving without weights."""

import base64
import sys
from io import BytesIO
from importlib import metadata

import numpy as np
import pandas as pd
import pytest

from medtl.errors import ScanError
from medtl.tracking.provenance import WEIGHTS_ONLY_PACKAGES, pip_requirements
from medtl.tracking.pyfunc import input_example
from medtl.tracking.serving import Limits, ScanArray, ScanBytes, check_array, sniff, sources
from medtl.tracking.redact import redact_paths


def test_sources_accept_paths_frames_bytes_and_array_cells() -> None:
    a = np.zeros((8, 9), np.uint8)
    assert sources("x.dcm") == ["x.dcm"]
    assert sources(["x.dcm", "y.nii.gz"]) == ["x.dcm", "y.nii.gz"]
    assert sources(pd.DataFrame({"domain": ["a"], "path": ["x.dcm"]})) == ["x.dcm"]
    assert sources(pd.DataFrame({0: ["x.dcm"]})) == ["x.dcm"]
    assert sources({"path": [["x.dcm", "y.dcm"]]}) == ["x.dcm", "y.dcm"]  # {"inputs": {"path": [...]}} as MLflow hands it over
    assert sources(pd.DataFrame({"content": ["aGk="], "filename": ["a.png"]})) == [ScanBytes(b"hi", "a.png")]
    for form in (pd.DataFrame({"image": [a]}), {"image": [a]}, pd.DataFrame({"image": [a.tolist()]}), [a]):
        out = sources(form)
        assert len(out) == 1 and isinstance(out[0], ScanArray) and np.asarray(out[0].pixels).shape == (8, 9)
    assert sources(a)[0].pixels.shape == (8, 9)  # direct use, outside MLflow: one image
    said = sources(pd.DataFrame({"image": [a], "modality": ["mr"], "photometric": ["MONOCHROME2"]}))[0]
    assert (said.modality, said.units, said.photometric) == ("mr", None, "MONOCHROME2")


def test_sources_give_each_bad_row_its_reason_and_limits_refuse_whole_requests() -> None:
    out = sources(pd.DataFrame({"path": ["x.dcm", None, "z.dcm"], "content": [None, None, "aGk="]}))
    assert out[0] == "x.dcm" and isinstance(out[1], ScanError) and "none of" in str(out[1]) and "more than one" in str(out[2])
    assert all("over the limit of 2 per request" in str(e) for e in sources(["a", "b", "c"], Limits(max_rows=2)))
    big = base64.b64encode(b"x" * 2000).decode()
    assert all("MEDTL_SERVE_MAX_BYTES" in str(e) for e in sources({"content": [big, big]}, Limits(max_bytes=3000)))
    with pytest.raises(ScanError, match="MEDTL_SERVE_MAX_ROWS: must be a whole number"):
        Limits.from_env({"MEDTL_SERVE_MAX_ROWS": "lots"})


def test_bytes_are_typed_by_their_signature_not_their_name() -> None:
    import gzip

    nifti = bytearray(352)
    nifti[:4], nifti[344:348] = (348).to_bytes(4, "little"), b"n+1\0"
    assert sniff(b"\0" * 128 + b"DICM" + b"\0" * 8) == ".dcm"
    assert sniff(bytes(nifti)) == ".nii" and sniff(gzip.compress(bytes(nifti))) == ".nii.gz"
    assert sniff(gzip.compress(b"not nifti" * 100)) == ".gz"
    assert sniff(b"\x89PNG\r\n\x1a\n....") == ".png" and sniff(b"\xff\xd8\xff\xe0") == ".jpg"
    assert sniff(b"PK\x03\x04") == ".zip" and sniff(b"hello world") is None


@pytest.mark.parametrize("bad", [[3.0], [{"a": 1}], [np.zeros(5)], [np.zeros((4, 4))]])
def test_arrays_that_are_not_images_or_do_not_say_their_units_are_refused(bad) -> None:
    src = sources(bad)[0]
    with pytest.raises(ScanError, match="not an image|does not say what its values are"):
        check_array(src)


def test_input_example_is_a_made_up_dicom_not_a_path() -> None:
    import pydicom

    ex = input_example()
    assert list(ex.columns) == ["content", "filename"]
    ds = pydicom.dcmread(BytesIO(base64.b64decode(ex["content"][0])))
    assert ds.Modality == "CT" and ds.pixel_array.shape == (48, 48) and str(ds.PatientID) == "EXAMPLE"
    hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    assert hu.min() == pytest.approx(-1000, abs=30) and hu.max() > 0  # air and tissue, in HU


def test_redaction_replaces_paths_names_and_stems_but_not_words() -> None:
    paths = ["/data/site/DOE_JOHN_0001.dcm", "/data/site/SMITH^ANN/series", "/data/x/scan.dcm"]
    text = ("- DOE_JOHN_0001.dcm: unreadable\n- /data/site/DOE_JOHN_0001.dcm again\n- site/SMITH^ANN/series and DOE_JOHN_0001\n"
            "- scans per split: 3; scan.dcm duplicated")
    out = redact_paths(text, paths)
    for leaked in ("DOE_JOHN", "SMITH^ANN", "scan.dcm"):
        assert leaked not in out
    assert "scans per split" in out and out.count("file-") == 5
    assert redact_paths(text, paths) == out, "tokens are stable"


def test_requirements_are_pinned_to_installed_versions() -> None:
    reqs = pip_requirements()
    names = [r.split("==")[0] for r in reqs]
    assert {"torch", "monai", "mlflow", "pydicom", "nibabel", "timm"} <= set(names)
    assert not set(names) & set(WEIGHTS_ONLY_PACKAGES)
    for r in reqs:
        name, version = r.split("==")
        assert metadata.version(name) == version


def test_a_logged_efficientnet_serves_without_its_weights_package(monkeypatch) -> None:
    """Serving rebuilds the backbone from its name: every tensor comes from the logged state dict."""
    from medtl.config import PreprocessConfig
    from medtl.models.registry import input_spec
    from medtl.models.transfer import create_model
    from medtl.tracking.pyfunc import MedtlClassifier, model_meta

    model, _ = create_model("efficientnet_lite0", 2, pretrained=False, spec=input_spec("efficientnet_lite0", 64))
    meta = model_meta(model, ["a", "b"], PreprocessConfig(), "linear", "full")
    for pkg in WEIGHTS_ONLY_PACKAGES:
        monkeypatch.setitem(sys.modules, pkg.replace("-", "_"), None)  # importing it now fails
    clf = MedtlClassifier(meta, model.state_dict())
    probs = clf.predict_proba([ScanBytes(base64.b64decode(input_example()["content"][0]))])
    assert probs.shape == (1, 2) and abs(probs.sum() - 1) < 1e-5


@pytest.mark.parametrize("cmd", ["predict", "evaluate"])
def test_model_commands_have_help(cmd, capsys) -> None:
    from medtl.cli import main

    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and "MODEL_ID" in capsys.readouterr().out
