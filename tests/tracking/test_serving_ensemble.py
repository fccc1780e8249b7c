"""An ensemble's model over REST: every member (its own head, layer and flips) in one logged pyfunc.

As in test_serving.py, the members are randomly initialised real backbones (the tiny test backbone
exists in this process only, and the server is another process), logged through ``log_classifier``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.bench_serving import CLASSES, ModelServer
from medtl.config import PreprocessConfig
from medtl.data.synthetic import phantom, write_ct_dicom
from medtl.data.transforms import preprocess_scan
from medtl.models.averaging import build_members
from medtl.models.registry import input_spec

PP = PreprocessConfig(assume_modality="CT", window="lung")


def _members() -> list[dict]:
    spec = input_spec("resnet18", 48).as_dict()
    return [{"backbone": "resnet18", "head": "linear", "layer": None, "spec": spec, "tta": ["hflip"], "strategy": "full", "seed": 0},
            {"backbone": "resnet18", "head": "mlp", "layer": "layer3", "spec": spec, "tta": [], "strategy": "frozen", "seed": 0}]


def test_a_logged_ensemble_answers_over_rest_with_every_members_mean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from medtl.tracking.provenance import pip_requirements
    from medtl.tracking.pyfunc import log_classifier, model_meta
    from medtl.tracking.store import connect

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    torch.manual_seed(0)
    members = _members()
    model = build_members(members, len(CLASSES)).eval()
    with torch.no_grad():  # heads scaled up: different scans and members then give clearly different probabilities
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.mul_(20)
    meta = model_meta(model, CLASSES, PP, "ensemble", "ens", {"members": members})
    client = MlflowClient(connect())  # this test's store, whatever store an earlier test in the process connected
    run = client.create_run(client.create_experiment("ens"))
    uri = log_classifier(run.info.run_id, model, meta, "# card\n", pip_requirements(), tags={})
    client.set_terminated(run.info.run_id)

    scans = []
    for i in range(3):
        hu = phantom(np.random.default_rng(i), marker=bool(i % 2), size=48, slices=1)[0]
        scans.append(write_ct_dicom(tmp_path / f"s{i}.dcm", hu, 1.0, patient_id=f"P{i}", patient_name=f"Test^P{i}"))
    x = torch.stack([preprocess_scan(p, model.spec, PP)[0] for p in scans])
    with torch.no_grad():
        want = torch.softmax(model(x), 1).numpy()  # the evaluation's probabilities: the members' mean over their flips
        only_first = torch.softmax(model.members[0](x), 1).numpy()
    assert np.abs(want - only_first).max() > 1e-3, "the second member must matter, or the check below proves little"

    server = ModelServer(uri, tmp_path)
    try:
        in_process = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"path": [str(p) for p in scans]}))
        np.testing.assert_allclose(in_process[CLASSES].to_numpy(), want, rtol=0, atol=1e-5)
        server.wait()
        rows = [[base64.b64encode(p.read_bytes()).decode(), p.name] for p in scans]
        status, body = server.post({"dataframe_split": {"columns": ["content", "filename"], "data": rows}})
        assert status == 200, body
        got = np.array([[r[c] for c in CLASSES] for r in json.loads(body)["predictions"]])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    finally:
        server.stop()
