"""The logged model: weights plus the exact preprocessing they were trained with, as an MLflow pyfunc.

``mlflow.pyfunc.load_model(uri).predict(...)`` returns one row of class probabilities (one column per
class) for each scan it is given:

* a list of paths (DICOM file, DICOM series folder, NIfTI, PNG/JPEG), or one path;
* a DataFrame whose ``path`` column (or first column) holds paths;
* arrays: a DataFrame (or dict) with one column, e.g. ``pd.DataFrame({"image": [a, b]})``, whose
  cells are 2D (grey), ``H x W x 3`` (colour) or 3D (volume) arrays or nested lists, in the scan's
  own units (HU for CT). MLflow turns a bare array or list of arrays into table columns before the
  model sees it, so arrays travel as cells of one column; a bare array is refused with that hint.

The signature says exactly this: one unnamed input column whose cells are a path or an array
(MLflow's ``AnyType``; no narrower MLflow type admits both), and one ``double`` output column per
class. The backbone is rebuilt from its name without fetching weights: every tensor comes from the
logged state dict, so serving needs neither network nor the weights packages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from medtl.config import PreprocessConfig
from medtl.errors import MedtlError, ScanError
from medtl.models.registry import InputSpec

META_FILE = "medtl_model.json"
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "model_card.md"
ENTRY_POINT = Path(__file__).with_name("pyfunc_model.py")
ARRAY_HINT = "pass arrays as cells of one column, e.g. pd.DataFrame({'image': [array, ...]})"


def model_meta(model: Any, classes: list[str], preprocess: PreprocessConfig, head: str, strategy: str) -> dict[str, Any]:
    """What rebuilds ``model`` and its preprocessing; the backbone and input spec are read from the model."""
    return {
        "format": 1,
        "backbone": model.backbone.name,
        "classes": list(classes),
        "head": head,
        "layer": model.layer,
        "input_spec": model.spec.as_dict(),
        "preprocess": preprocess.model_dump(mode="json"),
        "strategy": strategy,
    }


def save_model_files(folder: Path, model: torch.nn.Module, meta: dict[str, Any]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    return {"weights": str(folder / WEIGHTS_FILE), "meta": str(folder / META_FILE)}


def _one(value: Any) -> str | np.ndarray:
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, (np.ndarray, list, tuple, torch.Tensor)):
        arr = np.asarray(value)
        if arr.dtype.kind in "USO" and arr.ndim == 0:
            return str(arr)
        if arr.dtype.kind not in "biuf" or arr.ndim < 2:
            raise ScanError("model input", f"an array of shape {arr.shape} and dtype {arr.dtype} is not an image")
        return arr
    raise ScanError("model input", f"a {type(value).__name__} is not a scan path or an image array; {ARRAY_HINT}")


def model_inputs(model_input: Any) -> list[str | np.ndarray]:
    """Normalise what a caller (or MLflow's schema enforcement) hands over into paths and arrays."""
    if isinstance(model_input, (str, Path)):
        return [str(model_input)]
    if isinstance(model_input, dict):
        model_input = pd.DataFrame({k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in model_input.items()})
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] == 0:
            return []
        column = next((c for c in ("path", "image") if c in model_input.columns), model_input.columns[0])
        cells = list(model_input[column])
        if cells and all(np.isscalar(v) and not isinstance(v, str) for v in cells):
            raise ScanError("model input", f"got a table of numbers (a bare array?); {ARRAY_HINT}")
        return [_one(v) for v in cells]
    if isinstance(model_input, pd.Series):
        return [_one(v) for v in model_input]
    if isinstance(model_input, np.ndarray) and model_input.dtype.kind in "USO":
        return [_one(v) for v in model_input.ravel()]
    if isinstance(model_input, (np.ndarray, torch.Tensor)):  # direct use (not through MLflow): one image
        return [_one(model_input)]
    return [_one(v) for v in model_input]


class MedtlClassifier:
    """Preprocessing + network; used by the pyfunc wrapper, ``medtl predict`` and ``medtl evaluate``."""

    def __init__(self, meta: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> None:
        from medtl.models.transfer import create_model

        self.meta = meta
        self.classes = list(meta["classes"])
        self.preprocess = PreprocessConfig.model_validate(meta["preprocess"])
        self.model, _ = create_model(meta["backbone"], len(self.classes), pretrained=False, head=meta["head"], layer=meta["layer"],
                                     spec=InputSpec.from_dict(meta["input_spec"]))  # the logged spec, not the registry's
        self.spec = self.model.spec
        self.model.load_state_dict(state_dict)
        self.model.eval()

    @classmethod
    def from_folder(cls, folder: str | Path) -> MedtlClassifier:
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        return cls(meta, torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))

    def _prepare(self, src: Any) -> torch.Tensor:
        from medtl.data.transforms import preprocess_scan

        try:
            return preprocess_scan(src, self.spec, self.preprocess)[0]
        except RuntimeError as e:  # MONAI's Compose wraps a transform's error; the scan's own error is the news
            cause: BaseException | None = e
            while cause is not None and not isinstance(cause, MedtlError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None

    @torch.no_grad()
    def _forward(self, xs: list[torch.Tensor]) -> np.ndarray:
        return torch.softmax(self.model(torch.stack(xs)), dim=1).numpy()

    def predict_proba(self, inputs: Sequence[Any], batch_size: int = 16) -> np.ndarray:
        """Probabilities ``(n, classes)``; the first unreadable scan raises a ``ScanError`` naming it."""
        out = [self._forward([self._prepare(src) for src in inputs[i : i + batch_size]]) for i in range(0, len(inputs), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict_each(self, inputs: Sequence[Any], batch_size: int = 16) -> tuple[np.ndarray, list[str | None]]:
        """Like ``predict_proba`` but a bad scan costs only its own row: NaN probabilities and its error."""
        probs = np.full((len(inputs), len(self.classes)), np.nan)
        errors: list[str | None] = [None] * len(inputs)
        ready: list[tuple[int, torch.Tensor]] = []

        def flush() -> None:
            if ready:
                probs[[i for i, _ in ready]] = self._forward([x for _, x in ready])
                ready.clear()

        for i, src in enumerate(inputs):
            try:
                ready.append((i, self._prepare(src)))
            except MedtlError as e:
                errors[i] = str(e)
            if len(ready) >= batch_size:
                flush()
        flush()
        return probs, errors


def signature(classes: Sequence[str]):  # noqa: ANN201 - mlflow.models.ModelSignature
    """Inputs: one column of paths or arrays; outputs: one probability column per class."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    return ModelSignature(inputs=Schema([ColSpec(AnyType())]),
                          outputs=Schema([ColSpec("double", str(c)) for c in classes]))


def input_example() -> pd.DataFrame:
    """A made-up CT slice (medtl's synthetic phantom, in HU), never a patient's scan or path.

    It is what MLflow stores beside the model and runs once at logging time, so it must be valid
    on any machine; a path would point at nothing there and could name a patient.
    """
    from medtl.data.synthetic import phantom

    vol = phantom(np.random.default_rng(0), marker=False, size=48, slices=1)
    return pd.DataFrame({"image": [np.round(vol[0]).astype(np.int16)]})


def log_classifier(run_id: str, model: torch.nn.Module, meta: dict[str, Any], card: str, pip_requirements: Sequence[str],
                   tags: dict[str, str]) -> str:
    """Log the model (weights, preprocessing, card) on ``run_id``; returns its ``models:/<id>`` URI."""
    import tempfile

    from mlflow.models import Model
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags

    import medtl

    # the LoggedModel is made here, in the run's own experiment, rather than by ``Model.log`` in
    # MLflow's global current experiment (which medtl would otherwise have to set for the process)
    client = MlflowClient()
    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name="model", source_run_id=run_id,
                                        tags=resolve_tags(tags), params=dict(run.data.params))
    with tempfile.TemporaryDirectory() as tmp:
        files = save_model_files(Path(tmp), model, meta)
        (Path(tmp) / CARD_FILE).write_text(card)
        info = Model.log(
            artifact_path=None, name="model", model_id=logged.model_id, flavor=mlflow.pyfunc,
            flavor_name="pyfunc.ModelFromCode", run_id=run_id,
            python_model=str(ENTRY_POINT), artifacts={**files, "model_card": str(Path(tmp) / CARD_FILE)},
            code_paths=[str(Path(medtl.__file__).parent)], pip_requirements=list(pip_requirements),
            signature=signature(meta["classes"]), input_example=input_example(),
            metadata={"medtl": {k: meta[k] for k in ("backbone", "classes", "strategy", "head", "layer")}}, tags=tags,
        )
    return info.model_uri


class MedtlPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper: ``predict`` returns a DataFrame with one probability column per class.

    MLflow's schema enforcement has turned every accepted input into a DataFrame by the time
    ``predict`` runs (the hint says so and keeps MLflow from inferring a second signature).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.clf = MedtlClassifier(meta, state)

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        probs = self.clf.predict_proba(model_inputs(model_input))
        return pd.DataFrame(probs, columns=[str(c) for c in self.clf.classes])
