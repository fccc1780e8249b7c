"""Serving from scan bytes: a registered model under a real `mlflow models serve`, and the checks around it.

The served model is a randomly initialised resnet18 at 64 px logged through medtl's own
``log_classifier`` (so it carries the signature, example and checksums a comparison's model does),
registered and aliased ``champion`` in a sqlite store (``benchmarks/bench_serving.py`` serves the same
way, with the same helpers). A trained tiny model would not do: the test backbone is registered in
this process only, and the server is another process.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.bench_serving import CLASSES, ModelServer, log_random_model
from medtl.errors import ModelIntegrityError
from tests.conftest import shared_path

NAME = "serve-model"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serving")
    mp = pytest.MonkeyPatch()
    mp.chdir(folder)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    yield log_random_model(NAME, "resnet18", 64), folder
    mp.undo()


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, Path]:
    """Real files: an uncompressed CT, a JPEG 2000 CT, a NIfTI, a PNG (a MedMNIST image), and a truncated DICOM."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("scans")
    npz = shared_path("medmnist", "breastmnist.npz")
    with np.load(npz) as z:
        Image.fromarray(z["test_images"][0]).save(folder / "breast.png")
    ct = shared_path("dicom", "single", "693_UNCR.dcm")
    (folder / "broken.dcm").write_bytes(ct.read_bytes()[:4096])
    return {"ct": ct, "j2k": shared_path("dicom", "single", "693_J2KR.dcm"), "nifti": shared_path("nifti", "anatomical.nii"),
            "png": folder / "breast.png", "broken": folder / "broken.dcm"}


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _medtl_predict(capsys, uri: str, paths: list[Path]) -> dict[str, dict[str, float]]:
    from medtl.cli import main

    capsys.readouterr()
    rc = main(["predict", uri, *map(str, paths), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return {r["path"]: r["probabilities"] for r in json.loads(out.out)}


def test_rest_scores_scan_bytes_row_by_row_like_medtl_predict(registered, scans, capsys) -> None:
    uri, folder = registered
    server = ModelServer(uri, folder, {"MEDTL_SERVE_MAX_ROWS": "6"})
    try:
        order = ["ct", "j2k", "broken", "nifti", "png"]
        split = {"columns": ["content", "filename"], "data": [[_b64(scans[k]), scans[k].name] for k in order]}
        # medtl predict meanwhile (the server is still starting): the same files, by path
        expected = _medtl_predict(capsys, uri, [scans[k] for k in order if k != "broken"])
        server.wait()
        status, body = server.post({"dataframe_split": split})
        assert status == 200, body
        for leak in ("Traceback", "stack_trace", "medtl-scan-", str(folder), str(scans["ct"].parent), "broken.dcm"):
            assert leak not in body, leak
        rows = json.loads(body)["predictions"]
        assert len(rows) == len(order)
        for k, row in zip(order, rows):
            if k == "broken":
                assert row["error"] == "row 2: file is truncated (pixel data has 2398 of 524288 bytes)", row
                assert row["label"] is None and row["clear"] is None and row["marker"] is None
                continue
            assert row["error"] is None, (k, row)
            want = expected[str(scans[k])]
            np.testing.assert_allclose([row[c] for c in CLASSES], [want[c] for c in CLASSES], atol=1e-5, err_msg=k)
            assert row["label"] == max(CLASSES, key=lambda c: want[c])
        probs = np.array([[r["clear"] for r in rows if r["error"] is None]])
        assert np.ptp(probs) > 1e-3, "the files must score differently, or the comparison above proves little"

        # the same rows as records, and paths by `inputs`, answer the same
        status, body = server.post({"dataframe_records": [{"content": _b64(scans["nifti"])}]})
        assert status == 200 and json.loads(body)["predictions"][0]["clear"] == pytest.approx(expected[str(scans["nifti"])]["clear"], abs=1e-5)
        status, body = server.post({"inputs": {"path": [str(scans["ct"]), str(scans["png"])]}})
        assert status == 200, body
        assert [r["label"] is not None for r in json.loads(body)["predictions"]] == [True, True]

        # limits: too many rows is refused row by row, plainly, with the setting to change
        status, body = server.post({"dataframe_split": {"columns": ["path"], "data": [[str(scans["ct"])]] * 7}})
        rows = json.loads(body)["predictions"]
        assert status == 200 and len(rows) == 7
        assert all("7 rows, over the limit of 6 per request (MEDTL_SERVE_MAX_ROWS)" in r["error"] for r in rows)
    finally:
        server.stop()
    assert server.proc.poll() is not None


def test_content_rows_match_paths_in_process(registered, scans, tmp_path) -> None:
    """Every input form through the pyfunc: bytes, a zipped series, declared arrays, and what is refused."""
    import zipfile

    import pydicom

    uri, _ = registered
    model = mlflow.pyfunc.load_model(uri)
    series = shared_path("dicom", "series", "mr_brain_t1_sag_siemens")
    with zipfile.ZipFile(tmp_path / "series.zip", "w") as zf:
        for f in sorted(series.iterdir())[:3]:
            zf.write(f, f"series/{f.name}")
    small = tmp_path / "small"
    small.mkdir()
    for f in sorted(series.iterdir())[:3]:
        shutil.copy(f, small / f.name)
    by_path = model.predict(pd.DataFrame({"path": [str(scans["ct"]), str(small)]}))
    by_bytes = model.predict(pd.DataFrame({"content": [_b64(scans["ct"]), _b64(tmp_path / "series.zip")]}))
    assert by_bytes["error"].isna().all(), by_bytes["error"].tolist()
    np.testing.assert_allclose(by_bytes[CLASSES].to_numpy(float), by_path[CLASSES].to_numpy(float), atol=1e-6)

    ds = pydicom.dcmread(scans["ct"])
    hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    arrays = model.predict(pd.DataFrame({"image": [hu, ds.pixel_array, ds.pixel_array, hu],
                                         "modality": ["CT", None, "CT", "CT"], "units": ["HU", None, None, "HU"],
                                         "photometric": ["MONOCHROME2", None, "MONOCHROME2", "MONOCHROME1"]}))
    np.testing.assert_allclose(arrays[CLASSES].to_numpy(float)[0], by_path[CLASSES].to_numpy(float)[0], atol=1e-5)
    errors = arrays["error"].tolist()
    assert errors[0] is None
    assert errors[1].startswith("row 1: an array of dtype int16 and shape (512, 512) does not say what its values are "
                                "(missing: modality, photometric)"), errors[1]
    assert errors[2].startswith("row 2: a CT array must be in Hounsfield units"), errors[2]
    assert errors[3].startswith("row 3: MONOCHROME1 arrays are not accepted"), errors[3]
    clf = model.unwrap_python_model().clf  # in-process, a pydicom dataset carries its own header
    np.testing.assert_allclose(clf.predict_proba([ds])[0], by_path[CLASSES].to_numpy(float)[0], atol=1e-5)

    odd = model.predict(pd.DataFrame({"content": ["bm90IGEgc2Nhbg==", "%%", None], "path": [None, None, str(scans["ct"])],
                                      "filename": ["DOE_JOHN.dcm", None, None]}))
    assert odd["error"].tolist()[:2] == ["row 0: not a DICOM, NIfTI, PNG/JPEG/TIFF/BMP image or zipped DICOM series "
                                         "(the name ends in .dcm)", "row 1: `content` is not valid base64"]
    assert odd["error"][2] is None
    with pytest.raises(mlflow.exceptions.MlflowException, match="pass a table"):
        model.predict([str(scans["ct"])])  # MLflow drops a bare list's values: said, not an empty answer


def test_an_edited_weights_file_or_swapped_class_map_is_refused(registered, tmp_path) -> None:
    uri, _ = registered
    from mlflow.tracking import MlflowClient

    mv = MlflowClient().get_model_version_by_alias(NAME, "champion")
    run = MlflowClient().get_run(mv.run_id)
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    meta_file, weights = local / "artifacts" / "medtl_model.json", local / "artifacts" / "weights.pt"
    from medtl.hashing import file_sha256

    assert run.data.tags["medtl.sha256.weights"] == file_sha256(weights), "recorded on the run at training"
    assert run.data.tags["medtl.sha256.meta"] == file_sha256(meta_file)
    mlflow.pyfunc.load_model(str(local))  # untouched: loads

    meta = json.loads(meta_file.read_text())
    meta["classes"] = meta["classes"][::-1]
    original = meta_file.read_text()
    meta_file.write_text(json.dumps(meta, indent=2))
    with pytest.raises(ModelIntegrityError, match="medtl_model.json: the class map and preprocessing differ from what was logged"):
        mlflow.pyfunc.load_model(str(local))
    meta_file.write_text(original)

    state = torch.load(weights, weights_only=True)
    next(v for v in state.values() if v.is_floating_point()).add_(1e-3)
    torch.save(state, weights)
    with pytest.raises(ModelIntegrityError, match="weights.pt: the weights differ from what was logged at training"):
        mlflow.pyfunc.load_model(str(local))


def test_mlflow_models_predict_takes_scan_bytes(registered, scans, tmp_path) -> None:
    import subprocess
    import sys

    uri, _ = registered
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"dataframe_split": {"columns": ["content"], "data": [[_b64(scans["nifti"])], ["@@"]]}}))
    out = tmp_path / "out.json"
    p = subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", uri, "-i", str(rows), "-o", str(out),
                        "-t", "json", "--env-manager", "local"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(out.read_text())["predictions"]
    direct = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"path": [str(scans["nifti"])]}))
    assert got[0]["clear"] == pytest.approx(float(direct["clear"][0]), abs=1e-6) and got[0]["error"] is None
    assert got[1]["error"] == "row 1: `content` is not valid base64" and got[1]["clear"] is None
