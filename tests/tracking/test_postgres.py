"""The team stack of docker/compose.yaml without Docker: a real PostgreSQL server on 127.0.0.1 as
MLflow's backend store, ``mlflow server`` on it (the compose file's command, with a local artifact
folder in place of MinIO), a comparison tracked through it, the champion registered and loaded back.

PostgreSQL comes from Debian's packages (``.ci/run`` installs ``postgresql``); without its binaries
the test skips and says so.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtl import api
from tests.tracking.conftest import MlflowServer, compare_on_server, free_port

PASSWORD = "medtl-test-only"


def _pg_bin(name: str) -> str | None:
    """Debian keeps the server binaries out of PATH (``/usr/lib/postgresql/<version>/bin``)."""
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


class PostgresServer:
    """A throwaway cluster: ``initdb`` into a temporary folder, password authentication over TCP on
    127.0.0.1 (as the compose stack's server connects), stopped and deleted afterwards. Run as the
    ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root)."""

    def __init__(self, folder: Path) -> None:
        self.initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql (.ci/run does)")
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
            runuser = shutil.which("runuser")
            if runuser is None:
                pytest.skip("running as root without runuser to drop to the 'postgres' user")
            self.as_user = [runuser, "-u", "postgres", "--"]
            folder = Path(tempfile.mkdtemp(prefix="medtl-pg-"))  # pytest's own tmp folders are root's alone (0700)
            os.chown(folder, pw.pw_uid, pw.pw_gid)
        self.folder, self.data, self.port = folder, folder / "data", free_port()
        self.uri = f"postgresql://mlflow:{PASSWORD}@127.0.0.1:{self.port}/mlflow"

    def _run(self, *cmd: str) -> None:
        p = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=120)
        if p.returncode:
            log = self.folder / "postgres.log"
            raise RuntimeError(f"{cmd[0]} failed: {p.stdout[-1500:]} {p.stderr[-1500:]} {log.read_text()[-1500:] if log.exists() else ''}")

    def start(self) -> None:
        pwfile = self.folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_user:
            shutil.chown(pwfile, "postgres")
        self._run(self.initdb, "-D", str(self.data), "-U", "mlflow", "--auth=scram-sha-256", f"--pwfile={pwfile}",
                  "--encoding=UTF8", "--locale=C")
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.folder / "postgres.log"), "-w", "-t", "60",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.folder}", "start")
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="mlflow", password=PASSWORD, dbname="postgres",
                             autocommit=True) as con:
            con.execute("CREATE DATABASE mlflow")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
        if self.as_user:
            shutil.rmtree(self.folder, ignore_errors=True)

    def query(self, sql: str) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.uri) as con:
            return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    pytest.importorskip("psycopg", reason="psycopg (psycopg[binary], a medtl dependency) is not installed")
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_on_postgres(postgres, tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-pg"), backend_store_uri=postgres.uri)
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_comparison_through_mlflow_on_postgresql(postgres, mlflow_on_postgres, identified_data, tmp_path, monkeypatch) -> None:
    manifest, _ = identified_data
    comp, client, parent = compare_on_server(mlflow_on_postgres.uri, manifest, "pg", tmp_path, monkeypatch)
    # the runs, metrics and registry are rows in PostgreSQL, not a file beside the server
    assert postgres.query(f"SELECT status FROM runs WHERE run_uuid = '{comp.run_id}'") == [("FINISHED",)]
    strategies = postgres.query("SELECT value FROM tags WHERE key = 'medtl.strategy' ORDER BY value")
    assert [s for (s,) in strategies] == ["frozen", "full"]
    assert postgres.query("SELECT count(*) FROM metrics WHERE key = 'test_auc'")[0][0] == 2
    assert postgres.query("SELECT alias FROM registered_model_aliases WHERE name = 'pg-model'") == [("champion",)]
    assert not (mlflow_on_postgres.folder / "server.db").exists() and not (tmp_path / "mlflow.db").exists()

    results = api.results(comp.run_id)
    assert list(results.strategy) == ["frozen", "full"]
    np.testing.assert_allclose(results.test_auc, [a.metrics["test_auc"] for a in comp.arms])

    test = pd.read_csv(manifest)
    dcm = next(p for p in test[test.split == "test"].path if p.endswith(".dcm"))
    clf = api.load_model("models:/pg-model@champion")
    probs = clf.predict_proba([dcm])
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    best = next(a for a in comp.arms if a.strategy == comp.best.strategy)
    row = best.test_items.index[best.test_items.path == dcm][0]
    np.testing.assert_allclose(probs[0], best.test_probs[row], atol=1e-5)  # the registered model is the trained one
