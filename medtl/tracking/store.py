"""Which MLflow store to use, and a check that it answers before any training starts."""

from __future__ import annotations

import os
from pathlib import Path

from medtl.errors import TrackingError


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the working folder (INTERFACE.md)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def connect(uri: str | None = None) -> str:
    """Point MLflow at the store and prove it answers; a dead server is an error before training."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001
        raise TrackingError(uri, f"MLflow tracking store not reachable ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    return uri
