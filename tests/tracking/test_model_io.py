"""The pieces around a logged model that need no store: input forms, redaction, requirements, serving without weights."""

import sys
from importlib import metadata

import numpy as np
import pandas as pd
import pytest

from medtl.errors import ScanError
from medtl.tracking.provenance import WEIGHTS_ONLY_PACKAGES, pip_requirements
from medtl.tracking.pyfunc import input_example, model_inputs
from medtl.tracking.redact import redact_paths


def test_model_inputs_accepts_paths_frames_and_array_cells() -> None:
    a = np.zeros((8, 9), np.float32)
    assert model_inputs("x.dcm") == ["x.dcm"]
    assert model_inputs(["x.dcm", "y.nii.gz"]) == ["x.dcm", "y.nii.gz"]
    assert model_inputs(pd.DataFrame({"domain": ["a"], "path": ["x.dcm"]})) == ["x.dcm"]
    assert model_inputs(pd.DataFrame({0: ["x.dcm"]})) == ["x.dcm"]  # what MLflow makes of a list of paths
    assert model_inputs(np.array(["x.dcm"])) == ["x.dcm"]
    for form in (pd.DataFrame({"image": [a]}), {"image": [a]}, pd.DataFrame({"image": [a.tolist()]}), [a]):
        out = model_inputs(form)
        assert len(out) == 1 and isinstance(out[0], np.ndarray) and out[0].shape == (8, 9)
    assert model_inputs(a)[0].shape == (8, 9)  # direct use, outside MLflow: one image


@pytest.mark.parametrize("bad", [pd.DataFrame(np.zeros((4, 4))), [3.0], [{"a": 1}], [np.zeros(5)]])
def test_model_inputs_refuses_what_is_not_a_scan(bad) -> None:
    with pytest.raises(ScanError, match="model input"):
        model_inputs(bad)


def test_input_example_is_a_made_up_slice_not_a_path() -> None:
    ex = input_example()
    assert list(ex.columns) == ["image"] and ex["image"][0].shape == (48, 48)
    assert ex["image"][0].min() == -1000 and ex["image"][0].max() > 0  # air and tissue, in HU


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
    probs = clf.predict_proba([input_example()["image"][0]])
    assert probs.shape == (1, 2) and abs(probs.sum() - 1) < 1e-5


@pytest.mark.parametrize("cmd", ["predict", "evaluate"])
def test_model_commands_have_help(cmd, capsys) -> None:
    from medtl.cli import main

    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and "MODEL_ID" in capsys.readouterr().out
