"""Which MLflow store to use, and a check that it answers before any training starts."""

from __future__ import annotations

import os
from pathlib import Path

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
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001
        what = "MLflow tracking server not reachable" if is_server(uri) else "MLflow tracking store not usable"
        raise TrackingError(uri, f"{what} ({describe(e)}); nothing was trained. Start it, or point MLFLOW_TRACKING_URI "
                                 "at a store that answers, and run again") from None
    return uri
