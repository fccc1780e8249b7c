"""The logged model: weights plus the exact preprocessing they were trained with, as an MLflow pyfunc.

``mlflow.pyfunc.load_model(uri).predict(...)`` takes scan paths (DICOM file, DICOM series folder,
NIfTI, image), a DataFrame with a ``path`` column, or 2D arrays, and returns one row of class
probabilities per input. The backbone is rebuilt from its name without fetching any weights:
every tensor comes from the logged state dict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medtl.config import PreprocessConfig
from medtl.models.registry import InputSpec

META_FILE = "medtl_model.json"
WEIGHTS_FILE = "weights.pt"


def model_meta(model: Any, backbone: str, classes: list[str], spec: InputSpec, preprocess: PreprocessConfig,
               head: str, strategy: str) -> dict[str, Any]:
    return {
        "format": 1,
        "backbone": backbone,
        "classes": list(classes),
        "head": head,
        "layer": model.layer,
        "input_spec": spec.as_dict(),
        "preprocess": preprocess.model_dump(mode="json"),
        "strategy": strategy,
    }


def save_model_files(folder: Path, model: torch.nn.Module, meta: dict[str, Any]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    return {"weights": str(folder / WEIGHTS_FILE), "meta": str(folder / META_FILE)}


def _inputs(model_input: Any) -> list[Any]:
    """Normalise what a caller hands over into a list of paths or 2D arrays."""
    if isinstance(model_input, (str, Path)):
        return [str(model_input)]
    if isinstance(model_input, pd.DataFrame):
        if "path" in model_input.columns:
            return [str(p) for p in model_input["path"]]
        return [str(p) for p in model_input.iloc[:, 0]]
    if isinstance(model_input, pd.Series):
        return [str(p) for p in model_input]
    if isinstance(model_input, np.ndarray):
        if model_input.dtype.kind in "USO":
            return [str(p) for p in model_input.ravel()]
        if model_input.ndim == 2 or (model_input.ndim == 3 and model_input.shape[-1] in (3, 4) and model_input.shape[0] > 4):
            return [model_input]
        return list(model_input)
    if isinstance(model_input, dict) and "path" in model_input:
        return _inputs(list(np.atleast_1d(model_input["path"])))
    return [str(p) if isinstance(p, (str, Path)) else np.asarray(p) for p in model_input]


class MedtlClassifier:
    """Preprocessing + network; used by the pyfunc wrapper and by ``medtl predict`` alike."""

    def __init__(self, meta: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> None:
        from medtl.models.transfer import create_model

        self.meta = meta
        self.classes = list(meta["classes"])
        self.spec = InputSpec.from_dict(meta["input_spec"])
        self.preprocess = PreprocessConfig.model_validate(meta["preprocess"])
        self.model, _ = create_model(meta["backbone"], len(self.classes), pretrained=False, head=meta["head"], layer=meta["layer"])
        self.model.load_state_dict(state_dict)
        self.model.eval()

    @classmethod
    def from_folder(cls, folder: str | Path) -> MedtlClassifier:
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        return cls(meta, torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))

    @torch.no_grad()
    def predict_proba(self, inputs: list[Any], batch_size: int = 16) -> np.ndarray:
        from medtl.data.transforms import preprocess_scan

        out = []
        for i in range(0, len(inputs), batch_size):
            xs = [preprocess_scan(src, self.spec, self.preprocess)[0] for src in inputs[i : i + batch_size]]
            out.append(torch.softmax(self.model(torch.stack(xs)), dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))


try:
    import mlflow.pyfunc

    class MedtlPyfunc(mlflow.pyfunc.PythonModel):
        """MLflow wrapper: ``predict`` returns a DataFrame with one probability column per class."""

        def load_context(self, context):  # noqa: ANN001, ANN201 - MLflow infers from hints; none wanted
            meta = json.loads(Path(context.artifacts["meta"]).read_text())
            state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
            self.clf = MedtlClassifier(meta, state)

        def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
            probs = self.clf.predict_proba(_inputs(model_input))
            return pd.DataFrame(probs, columns=[str(c) for c in self.clf.classes])

except ImportError:  # pragma: no cover - mlflow is a hard dependency; this keeps the module importable
    MedtlPyfunc = None  # type: ignore[assignment,misc]
