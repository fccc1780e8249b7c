"""The Python API for notebooks and scripts; the CLI is a thin layer over these functions."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from medtl.config import ExperimentConfig, PreprocessConfig, load_config

if TYPE_CHECKING:  # pandas loads where a table is made: `medtl inspect` answers without it
    import pandas as pd

__all__ = ["compare", "curate", "demo", "evaluate", "import_medmnist", "index", "input_spec", "inspect_scan", "is_main_process",
           "load_model", "load_scan", "predict", "preview", "resolve_config", "results"]

F = TypeVar("F", bound=Callable[..., Any])


_QUIET_ENV = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # stdout is medtl's: tables, run id last
}
_QUIET_LOGGERS = {"monai.data.nvimgcodec_pydicom_plugin": logging.ERROR, "mlflow": logging.WARNING, "alembic": logging.WARNING}


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """MONAI and MLflow chatter during one medtl call; users see medtl's own messages instead.

    Scoped, never set on import: the caller's warning filters, environment variables and logger
    levels are back as they were when the call returns (a notebook's own FutureWarnings stay on).
    """
    env = {k: os.environ.get(k) for k in _QUIET_ENV}
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="monai")
        for k, v in _QUIET_ENV.items():
            os.environ.setdefault(k, v)
        for name, level in _QUIET_LOGGERS.items():
            logging.getLogger(name).setLevel(level)
        try:
            yield
        finally:
            for k, old in env.items():
                if old is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = old
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _quiet(fn: F) -> F:
    """``fn`` under ``_quiet_libraries``."""
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _quiet_libraries():
            return fn(*args, **kwargs)

    return call  # type: ignore[return-value]


def is_main_process() -> bool:
    """False on every rank but 0 under ``torchrun``: the process that tracks, writes and prints."""
    from medtl.training.distributed import is_main_process as _main

    return _main()


def input_spec(backbone: str = "efficientnet_lite0", size: int | None = None):  # noqa: ANN201
    """The backbone's input specification, read from its weights' metadata."""
    from medtl.models.registry import input_spec as _input_spec

    return _input_spec(backbone, size)


def _preprocess(preprocess: PreprocessConfig | dict | None) -> PreprocessConfig:
    return preprocess if isinstance(preprocess, PreprocessConfig) else PreprocessConfig.model_validate(preprocess or {})


@_quiet
def load_scan(path: str | Path, backbone: str = "efficientnet_lite0", preprocess: PreprocessConfig | dict | None = None) -> tuple[Any, Any]:
    """A scan as the backbone will see it: ``(tensor (C, H, W), ScanInfo)``."""
    from medtl.data.transforms import preprocess_scan

    pp = _preprocess(preprocess)
    return preprocess_scan(path, input_spec(backbone, pp.size), pp)


@_quiet
def inspect_scan(path: str | Path, backbone: str = "efficientnet_lite0", preprocess: PreprocessConfig | dict | None = None) -> dict[str, Any]:
    """What ``medtl inspect`` prints for one scan, read once (never a patient identifier).

    ``raw_shape`` is in the file's own axis order, named by ``raw_axes``; ``spacing`` is mm per
    raw axis (``None`` where not spatial or unknown); ``orientation`` gives the direction of each
    spatial raw axis; ``preprocessing`` lists every step to the backbone input.
    """
    import torch

    from medtl.data.transforms import prepare_scan

    pp = _preprocess(preprocess)
    spec = input_spec(backbone, pp.size)
    prep = prepare_scan(path, spec, pp)
    info, raw, x = prep.info, prep.raw, prep.image
    finite = raw[torch.isfinite(raw)]
    return {
        "path": str(path), "kind": info.kind, "modality": info.modality, "photometric": info.photometric,
        "transfer_syntax": info.transfer_syntax, "raw_shape": list(info.raw_shape), "raw_axes": list(info.raw_axes),
        "spacing": None if info.spacing is None else list(info.spacing), "orientation": info.orientation,
        "frames": info.frames, "tilt_deg": info.tilt_deg, "slice_gaps": info.slice_gaps, "in_hu": info.in_hu, "value_units": "HU" if info.in_hu else "stored values",
        "value_range": [float(finite.min()), float(finite.max())] if finite.numel() else None,
        "backbone": backbone, "input_shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch."),
        "input_mean": float(x.mean()), "input_std": float(x.std()),
        "spec": spec.as_dict(), "preprocessing": prep.steps, "header": info.header,
    }


@_quiet
def preview(path: str | Path, out: str | Path, backbone: str = "efficientnet_lite0",
            preprocess: PreprocessConfig | dict | None = None) -> Path:
    """A PNG of the raw plane beside what the backbone receives, captioned with every rule applied."""
    from medtl.data.preview import render_preview
    from medtl.data.transforms import prepare_scan

    pp = _preprocess(preprocess)
    prep = prepare_scan(path, input_spec(backbone, pp.size), pp, raw_plane=True)
    return render_preview(prep, out, title=f"{Path(str(path)).name} -> {backbone}")


@_quiet
def curate(manifest: str | Path, out: str | Path, seed: int = 0, **kwargs: Any):  # noqa: ANN201
    """Validate, quarantine, deduplicate-check and split a manifest (see ``medtl.data.curate.curate``)."""
    from medtl.data.curate import curate as _curate

    return _curate(manifest, out, seed=seed, **kwargs)


@_quiet
def index(folders: list[str | Path], out: str | Path, **kwargs: Any):  # noqa: ANN201
    """A DICOM export (nested folders, mixed series, DICOMDIR) as a manifest; see ``medtl.data.index``."""
    from medtl.data.index import index_export

    return index_export(folders, out, **kwargs)


@_quiet
def import_medmnist(npz: str | Path, out: str | Path, limit: int | None = None) -> Path:
    """A manifest for a MedMNIST ``.npz`` (official splits; one pseudo-patient per image)."""
    from medtl.data.medmnist import import_medmnist as _import

    return _import(npz, out, limit=limit)


@_quiet
def compare(config: str | Path | dict | ExperimentConfig, overrides: list[str] | None = None, resume: bool = False,
            tracking_uri: str | None = None, track: bool = True):  # noqa: ANN201
    """Run a comparison (every strategy, same splits and seeds), tracked in MLflow unless ``track=False``.

    Under ``torchrun`` call it on every rank: fine-tuning runs data-parallel and rank 0 alone tracks
    (``is_main_process()``); the other ranks return the same results with ``run_id`` None.
    """
    from medtl.experiment.run import NullTracker, compare as _compare

    cfg = resolve_config(config, overrides)
    if track and is_main_process():
        _say_tracking_defaults(config, cfg)
    tracker: Any = NullTracker()
    if track and is_main_process():
        from medtl.tracking.tracker import MlflowTracker

        tracker = MlflowTracker(tracking_uri, register=cfg.tracking.register_best, system_metrics=cfg.tracking.system_metrics)
    return _compare(cfg, tracker, resume=resume)


def resolve_config(config: str | Path | dict | ExperimentConfig, overrides: list[str] | None = None) -> ExperimentConfig:
    """The config a comparison would run: validated, overrides applied, paths resolved, epochs scaled
    (what ``medtl compare --dry-run`` prints). Overrides that no arm uses are warned about."""
    if isinstance(config, ExperimentConfig):
        return config
    return load_config(config, overrides)


def _say_tracking_defaults(config: Any, cfg: ExperimentConfig) -> None:
    """A config dict without ``tracking:`` logs into the shared default experiment and may move the default
    model's ``champion`` alias: say which names were used, so runs are found and not mixed up unseen."""
    import warnings

    from medtl.errors import MedtlWarning

    if isinstance(config, dict) and "tracking" not in config:
        t = cfg.tracking
        warnings.warn(f"no tracking section: runs go to MLflow experiment '{t.experiment}'"
                      + (f" and the best model is registered as '{t.model_name}'" if t.register_best else "")
                      + " (defaults; set tracking: {experiment: ..., model_name: ...} to choose)", MedtlWarning, stacklevel=3)


@_quiet
def load_model(uri: str, tracking_uri: str | None = None):  # noqa: ANN201
    """A registered or logged model (any MLflow model URI) with its own preprocessing: a ``MedtlClassifier``."""
    from mlflow.exceptions import MlflowException

    from medtl.errors import TrackingError
    from medtl.tracking.store import connect_for_model
    from medtl.tracking.tracker import load_classifier

    connect_for_model(uri, tracking_uri)
    try:
        return load_classifier(uri)
    except MlflowException as e:
        raise TrackingError(uri, f"cannot load this model ({' '.join(e.message.split())[:200]})") from None


@_quiet
def predict(uri: str, paths: list[str | Path], tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per scan: path, probability per class, predicted label, and ``error`` (missing, or why the
    scan could not be read: its probabilities are then NaN and the other scans are unaffected)."""
    import pandas as pd

    from medtl.metrics.classification import predicted_labels

    clf = load_model(uri, tracking_uri)
    probs, errors = clf.predict_each([str(p) for p in paths])
    df = pd.DataFrame(probs, columns=[f"p_{c}" for c in clf.classes])
    df.insert(0, "path", [str(p) for p in paths])
    labels = predicted_labels(np.nan_to_num(probs)) if len(probs) else []
    df["label"] = [None if e is not None else clf.classes[i] for i, e in zip(labels, errors)]
    df["error"] = errors
    return df


@_quiet
def evaluate(uri: str, manifest: str | Path, split: str | None = None, bootstrap: int = 1000, seed: int = 0,
             tracking_uri: str | None = None):  # noqa: ANN201
    """A model on a manifest: metrics overall and per domain with 95% bootstrap intervals (``Evaluation``).

    ``split``: which rows; default the test split when the manifest has a split column (else every row),
    ``"all"`` for every row. Scoring training rows warns: they flatter the model."""
    from medtl.evaluate import evaluate as _evaluate

    return _evaluate(load_model(uri, tracking_uri), manifest, split=split, n_boot=bootstrap, seed=seed, model_uri=uri)


@_quiet
def results(run_id: str | None = None, experiment: str | None = None, per_arm: bool = False,
            tracking_uri: str | None = None) -> pd.DataFrame:
    """A comparison's results read back from MLflow (the latest that finished unless ``run_id`` names its
    parent run; newer failed or running ones are skipped with a warning that names them).

    ``per_arm=False``: one row per strategy, as ``medtl compare`` printed it (means over seeds, 95% CIs).
    ``per_arm=True``: one row per child run (strategy x seed) with its run id, status and model URI.
    ``df.attrs`` holds the parent ``run_id``, ``experiment_id``, ``best_strategy`` and the ``registry`` tags.
    """
    from mlflow.tracking import MlflowClient

    from medtl.tracking.results import arms_table, comparison_table, find_comparison
    from medtl.tracking.store import connect

    client = MlflowClient(connect(tracking_uri))
    parent = find_comparison(client, run_id, experiment)
    df = arms_table(client, parent) if per_arm else comparison_table(client, parent)
    tags = parent.data.tags
    df.attrs.update({"run_id": parent.info.run_id, "experiment_id": parent.info.experiment_id, "status": parent.info.status,
                     "best_strategy": tags.get("medtl.best_strategy"),
                     "registry": {k.removeprefix("medtl.registry."): v for k, v in tags.items() if k.startswith("medtl.registry.")}})
    return df


@_quiet
def demo(out: str | Path = "medtl-demo", tracking_uri: str | None = None):  # noqa: ANN201
    """Write the demo data, curate it and run the frozen-vs-fine-tuned comparison."""
    from medtl.demo import write_demo

    cfg_path = write_demo(out)
    return compare(cfg_path, tracking_uri=tracking_uri)
