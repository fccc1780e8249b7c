"""Fixtures for the tracking tests: a dataset full of (made-up) patient identifiers, a real MLflow server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from benchmarks._common import free_port, wait_for_http  # noqa: F401 - free_port: other tests take it from here
from medtl.privacy import CONFIDENTIAL_KEYWORDS


@pytest.fixture(scope="session")
def identified_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """A curated marker dataset whose DICOMs carry made-up patient names, ids and accession numbers,
    whose file names embed the patient id, and with one corrupt file that curation quarantines (so
    the curation report names it). Returns the curated manifest and every identifier written."""
    from medtl.data.curate import curate
    from medtl.data.synthetic import make_marker_dataset

    root = tmp_path_factory.mktemp("identified")
    raw = make_marker_dataset(root / "data", patients_per_domain=10, scans_per_patient=2, seed=3)
    rows = pd.read_csv(raw)
    bad = root / "data" / "scanner_a" / "DEMO-A-099_0.dcm"
    bad.write_bytes(b"DICM" + b"\0" * 300)
    rows.loc[len(rows)] = {"path": str(bad.relative_to(root / "data")), "label": "clear", "patient_id": "DEMO-A-099", "domain": "scanner_a"}
    rows.to_csv(raw, index=False)
    identifiers = set(rows["patient_id"])
    for p in rows["path"]:
        if p.endswith(".dcm") and "099" not in p:
            ds = pydicom.dcmread(root / "data" / p, stop_before_pixels=True)
            identifiers |= {str(ds.get(k)) for k in ("PatientName", "PatientID", "AccessionNumber") if ds.get(k)}
    assert {"PatientName", "PatientID", "AccessionNumber"} <= CONFIDENTIAL_KEYWORDS
    curated = curate(raw, root / "curated", seed=2)  # seed 2: both domains and both labels in val and test
    assert len(curated.quarantine) == 1, "the corrupt file must be quarantined (and named in report.md)"
    m = curated.manifest
    assert m[m.split == "test"].groupby("domain")["label"].nunique().to_dict() == {"scanner_a": 2, "scanner_b": 2}
    return root / "curated" / "manifest.csv", identifiers


def server_config(manifest: Path, name: str) -> dict:
    """``tiny_config`` with its own experiment and model name, quick bootstrap, no system metrics."""
    from tests.conftest import tiny_config

    cfg = tiny_config(manifest)
    cfg["name"] = name
    cfg["train"]["bootstrap"] = 10
    cfg["tracking"] = {"experiment": name, "model_name": f"{name}-model", "system_metrics": False}
    return cfg


def compare_on_server(uri: str, manifest: Path, name: str, tmp_path: Path, monkeypatch):  # noqa: ANN201
    """A small comparison tracked at ``uri`` (from ``tmp_path``); returns it, a client on ``uri`` and its finished parent run."""
    from mlflow.tracking import MlflowClient

    from medtl import api

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    comp = api.compare(server_config(manifest, name))
    client = MlflowClient(uri, registry_uri=uri)
    parent = client.get_run(comp.run_id)
    assert parent.data.tags["medtl.role"] == "comparison" and parent.info.status == "FINISHED"
    return comp, client, parent


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite backend (or ``backend_store_uri``) and a local artifact folder."""

    def __init__(self, folder: Path, port: int | None = None, backend_store_uri: str | None = None) -> None:
        self.folder, self.port = folder, port or free_port()
        self.backend_store_uri = backend_store_uri or f"sqlite:///{folder / 'server.db'}"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = folder / "artifacts"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", self.backend_store_uri,
               "--artifacts-destination", str(self.artifacts)]
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_http(f"{self.uri}/health", self.proc, self.folder / "server.log", "mlflow server", timeout)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the server's whole process group (it runs uvicorn below it) and wait for the port to close."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        for _ in range(60):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    break
            time.sleep(0.25)
        self.proc = None


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()
