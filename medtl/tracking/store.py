"""Which MLflow store to use, and a check that it answers before any training starts."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medtl.errors import TrackingError


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the working folder (INTERFACE.md)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def describe(e: BaseException) -> str:
    """A store failure in a few words: what a person needs, not urllib3's retry history."""
    text = " ".join(str(e).split())
    low = text.lower()
    if "refused" in low or "max retries exceeded" in low or "failed to establish" in low:
        return "server not answering"
    if "timed out" in low or "timeout" in low:
        return "server timed out"
    return f"{type(e).__name__}: {text[:160]}"


def connect(uri: str | None = None) -> str:
    """Point MLflow at the store and prove it answers; a dead server is an error before training.

    Against a server, a failing request is retried twice (MLflow's default is 7 with exponential
    back-off, minutes of silence); medtl keeps training locally when a server goes away mid-run,
    so it needs to learn that quickly rather than wait. ``MLFLOW_HTTP_REQUEST_*`` still override.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if is_server(uri):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        with _first_use_lock(uri):  # a new sqlite store is created (tables, migrations) by one process at a time
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001
        what = "MLflow tracking server not reachable" if is_server(uri) else "MLflow tracking store not usable"
        raise TrackingError(uri, f"{what} ({describe(e)}); nothing was trained. Start it, or point MLFLOW_TRACKING_URI "
                                 "at a store that answers, and run again") from None
    return uri


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")).absolute() if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _first_use_lock(uri: str) -> Iterator[None]:
    """Two ``medtl compare`` started together on a new sqlite store would both run MLflow's schema
    migrations and one would fail ("table already exists"). A lock file per database (in the temp
    folder, so the user's folder stays clean) lets the first create it and the second find it made."""
    from filelock import FileLock

    db = sqlite_file(uri)
    if db is None:
        yield
        return
    name = hashlib.sha256(str(db).encode()).hexdigest()[:16]
    with FileLock(str(Path(tempfile.gettempdir()) / f"medtl-store-{name}.lock"), timeout=600):
        yield


def connect_for_model(model_uri: str, uri: str | None = None) -> str | None:
    """The store a model URI needs: none for a model folder on disk; for ``models:/`` and ``runs:/``,
    an existing store (never a new empty ``mlflow.db`` left where ``medtl predict`` was run)."""
    if "://" not in model_uri.removeprefix("file://") and not model_uri.startswith(("models:/", "runs:/")):
        return None  # a local model folder: MLflow reads it without a store
    uri = uri or tracking_uri()
    db = sqlite_file(uri)
    if db is not None and not db.is_file():
        raise TrackingError(model_uri, f"no MLflow store here ({db} does not exist): run where the comparison ran, "
                                       "or set MLFLOW_TRACKING_URI to its store")
    return connect(uri)


def experiment_id(client: Any, name: str, tries: int = 5) -> str:
    """The id of experiment ``name``, created if missing; a second process creating it at the same
    moment is not an error (its experiment is the one wanted)."""
    from mlflow.exceptions import MlflowException

    for i in range(tries):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(name)
        except MlflowException as e:
            if i == tries - 1 or e.error_code != "RESOURCE_ALREADY_EXISTS" and "UNIQUE constraint" not in str(e):
                raise
            time.sleep(0.2 * (i + 1))
    raise AssertionError("unreachable")
