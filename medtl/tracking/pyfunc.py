"""The logged model: weights plus the exact preprocessing they were trained with, as an MLflow pyfunc.

``mlflow.pyfunc.load_model(uri).predict(frame)`` (and ``mlflow models serve``) takes a table with one of
the columns ``path`` (a file or series folder the server can read), ``content`` (base64 of a file's
bytes: DICOM, NIfTI, PNG/JPEG, or a zip of a DICOM series) or ``image`` (an array per cell, with
``modality``/``units``/``photometric`` saying what it holds), optionally ``filename``; see
``medtl.tracking.serving``. It returns one row per input row: one probability column per class, the
predicted ``label`` and ``error`` (empty for a good row, a plain reason for a bad one). One bad row
never fails the request; no answer carries a stack trace, a server path or a header value.

The signature names those columns (all optional; ``image`` is MLflow's ``AnyType``, the only type that
admits an array or nested lists). The backbone is rebuilt from its name without fetching weights:
every tensor comes from the logged state dict, so serving needs neither network nor the weights
packages. The sha256 of the weights and of ``medtl_model.json`` (class map, preprocessing, input
spec) are recorded at logging, on the run and in the model, and checked on every load.
"""

from __future__ import annotations

import json
import logging
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
from medtl.tracking import serving
from medtl.tracking.serving import Limits, ScanArray, ScanBytes

log = logging.getLogger(__name__)

META_FILE = "medtl_model.json"
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "model_card.md"
ENTRY_POINT = Path(__file__).with_name("pyfunc_model.py")
OUTPUT_COLUMNS = ("label", "error")


def model_meta(model: Any, classes: list[str], preprocess: PreprocessConfig, head: str, strategy: str,
               build: dict[str, Any] | None = None) -> dict[str, Any]:
    """What rebuilds ``model`` and its preprocessing; the backbone and input spec are read from the model.

    ``build`` (an ``ArmResult``'s): its test-time flips (``tta``) and, for an ensemble, its ``members`` (each
    ``backbone, head, layer, spec, tta, strategy, seed``); the weights file then holds every member's.
    """
    build = build or {}
    first = model.members[0] if "members" in build else model
    meta = {
        "format": 1,
        "backbone": first.backbone.name,
        "classes": list(classes),
        "head": head,
        "layer": None if "members" in build else model.layer,
        "input_spec": first.spec.as_dict(),
        "preprocess": preprocess.model_dump(mode="json"),
        "strategy": strategy,
    }
    return {**meta, **{k: build[k] for k in ("tta", "members") if build.get(k)}}


def save_model_files(folder: Path, model: torch.nn.Module, meta: dict[str, Any]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    return {"weights": str(folder / WEIGHTS_FILE), "meta": str(folder / META_FILE)}


class MedtlClassifier:
    """Preprocessing + network; used by the pyfunc wrapper, ``medtl predict`` and ``medtl evaluate``.

    A scan is a path, a ``ScanBytes`` (a file's bytes), a ``ScanArray`` (pixels that say what they
    hold), a uint8 array (a display image, read as its PNG would be) or a pydicom dataset.
    """

    def __init__(self, meta: dict[str, Any], state_dict: dict[str, torch.Tensor], limits: Limits | None = None) -> None:
        from medtl.models.averaging import build_members

        self.meta = meta
        self.classes = list(meta["classes"])
        self.preprocess = PreprocessConfig.model_validate(meta["preprocess"])
        self.limits = limits or Limits()
        # one member (a plain arm: its own weights file, as ever) or an ensemble's every member, each with its flips
        self.network = build_members(meta.get("members") or [{**meta, "spec": meta["input_spec"]}], len(self.classes))
        self.network.load_state_dict(state_dict if "members" in meta else {f"members.0.{k}": v for k, v in state_dict.items()})
        self.network.eval()
        self.spec = InputSpec.from_dict(meta["input_spec"])  # the logged spec, not the registry's
        self.model = self.network if "members" in meta else self.network.members[0]  # a single arm's network itself

    def _prepare(self, src: Any) -> torch.Tensor:
        """One scan to a backbone input, on one torch thread (as DataLoader workers preprocess: a scan's
        tensors are small, and on a busy machine intra-op threads mostly wait on each other)."""
        from medtl.data.transforms import single_threaded

        with single_threaded():
            return self._prepare_one(src)

    def _prepare_one(self, src: Any) -> torch.Tensor:
        from medtl.data.transforms import preprocess_scan

        if not isinstance(src, (str, Path, ScanBytes, ScanArray)):
            src = serving.sources([src], self.limits)[0]
            if isinstance(src, ScanError):
                raise src
        if isinstance(src, ScanBytes):
            with serving.materialised(src, self.limits) as path:
                try:
                    return preprocess_scan(path, self.spec, self.preprocess)[0]
                except ScanError as e:
                    raise ScanError(src.filename or "content", serving.public_reason(e, [str(path.parent)])) from None
        if isinstance(src, ScanArray):
            pixels, modality = serving.check_array(src)
            pp = self.preprocess if modality is None else self.preprocess.model_copy(update={"assume_modality": modality})
            return preprocess_scan(pixels, self.spec, pp)[0]
        return preprocess_scan(src, self.spec, self.preprocess)[0]

    @torch.no_grad()
    def _forward(self, xs: list[torch.Tensor]) -> np.ndarray:
        x = torch.stack(xs)  # a plain arm's own logits (bit-identical to before), else the members' mean probability
        return torch.softmax(self.model(x) if self.network.tta == [()] else self.network(x), dim=1).numpy()

    def predict_proba(self, inputs: Sequence[Any], batch_size: int = 16) -> np.ndarray:
        """Probabilities ``(n, classes)``; the first unreadable scan raises a ``ScanError`` naming it."""
        out = [self._forward([self._prepare(src) for src in inputs[i : i + batch_size]]) for i in range(0, len(inputs), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict_each(self, inputs: Sequence[Any], batch_size: int = 16,
                     public: bool = False) -> tuple[np.ndarray, list[str | None]]:
        """Like ``predict_proba`` but a bad scan costs only its own row: NaN probabilities and its error.

        ``public``: errors fit a response (``row N: reason``, no file names); any failure, even a bug,
        stays in its row (the server log gets its type).
        """
        probs = np.full((len(inputs), len(self.classes)), np.nan)
        errors: list[str | None] = [None] * len(inputs)
        ready: list[tuple[int, torch.Tensor]] = []

        def flush() -> None:
            if ready:
                probs[[i for i, _ in ready]] = self._forward([x for _, x in ready])
                ready.clear()

        for i, src in enumerate(inputs):
            try:
                if isinstance(src, MedtlError):
                    raise src
                ready.append((i, self._prepare(src)))
            except MedtlError as e:
                errors[i] = f"row {i}: {serving.public_reason(e, [str(src)] if isinstance(src, (str, Path)) else [])}" \
                    if public else str(e)
            except Exception as e:  # noqa: BLE001 - in a response, one row's failure must not fail the others
                if not public:
                    raise
                log.error("medtl serving: row %d failed with %s", i, type(e).__name__)
                errors[i] = f"row {i}: could not be scored (internal error {type(e).__name__}; see the server log)"
            if len(ready) >= batch_size:
                flush()
        flush()
        return probs, errors

    def predict_frame(self, model_input: Any) -> pd.DataFrame:
        """One output row per input row: probability per class, ``label`` and ``error`` (``None`` when good)."""
        srcs = serving.sources(model_input, self.limits)
        probs, errors = self.predict_each(srcs, public=True)
        out = pd.DataFrame(probs, columns=[str(c) for c in self.classes])
        from medtl.metrics.classification import predicted_labels

        labels = predicted_labels(np.nan_to_num(probs)) if len(probs) else np.zeros(0, int)  # as `medtl predict`
        out["label"] = pd.Series([None if e is not None else str(self.classes[k]) for k, e in zip(labels, errors)], dtype=object)
        out["error"] = pd.Series(errors, dtype=object)
        return out


def signature(classes: Sequence[str]):  # noqa: ANN201 - mlflow.models.ModelSignature
    """Inputs: ``path`` / ``content`` / ``image`` (+ ``filename`` and an array's declarations), all optional;
    outputs: one probability column per class, ``label`` and ``error``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    inputs = [ColSpec("string", "path", required=False), ColSpec("string", "content", required=False),
              ColSpec(AnyType(), "image", required=False), ColSpec("string", "filename", required=False),
              *(ColSpec("string", k, required=False) for k in serving.DECLARATIONS)]
    return ModelSignature(inputs=Schema(inputs),
                          outputs=Schema([*(ColSpec("double", str(c)) for c in classes),
                                          ColSpec("string", "label"), ColSpec("string", "error", required=False)]))


def input_example() -> pd.DataFrame:
    """A made-up CT slice (medtl's synthetic phantom, in HU) as the bytes of a DICOM file, base64.

    It is what MLflow stores beside the model and runs once at logging time, so it must be valid
    on any machine and name no one: a path would point at nothing there and could name a patient.
    """
    import base64
    import tempfile

    from medtl.data.synthetic import phantom, write_ct_dicom

    hu = phantom(np.random.default_rng(0), marker=False, size=48, slices=1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_ct_dicom(Path(tmp) / "example.dcm", hu, 1.0, patient_id="EXAMPLE", patient_name="Phantom^Example",
                              extra={"PatientBirthDate": "", "AccessionNumber": "", "StudyDate": "20000101"})
        data = path.read_bytes()
    return pd.DataFrame({"content": [base64.b64encode(data).decode()], "filename": ["example.dcm"]})


def file_checksums(files: dict[str, str]) -> dict[str, str]:
    """sha256 of the files a prediction depends on: weights, and the class map + preprocessing file."""
    from medtl.hashing import file_sha256

    return {name: file_sha256(files[name]) for name in ("weights", "meta")}


def log_classifier(run_id: str, model: torch.nn.Module, meta: dict[str, Any], card: str, pip_requirements: Sequence[str],
                   tags: dict[str, str]) -> str:
    """Log the model (weights, preprocessing, card) on ``run_id``; returns its ``models:/<id>`` URI.

    The files' checksums go on the run (tags ``medtl.sha256.<file>``) and into the model (its MLmodel
    ``metadata``, checked by every load).
    """
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
        sums = file_checksums(files)
        (Path(tmp) / CARD_FILE).write_text(card)
        info = Model.log(
            artifact_path=None, name="model", model_id=logged.model_id, flavor=mlflow.pyfunc,
            flavor_name="pyfunc.ModelFromCode", run_id=run_id,
            python_model=str(ENTRY_POINT), artifacts={**files, "model_card": str(Path(tmp) / CARD_FILE)},
            code_paths=[str(Path(medtl.__file__).parent)], pip_requirements=list(pip_requirements),
            signature=signature(meta["classes"]), input_example=input_example(),
            metadata={"medtl": {**{k: meta[k] for k in ("backbone", "classes", "strategy", "head", "layer")}, "sha256": sums}},
            tags=tags,
        )
    for name, digest in sums.items():
        client.set_tag(run_id, f"medtl.sha256.{name}", digest)
    return info.model_uri


def recorded_checksums(artifacts: dict[str, str]) -> dict[str, str] | None:
    """The checksums in the MLmodel file beside the artifacts (``<model>/artifacts/<file>``)."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    folder = Path(artifacts["meta"]).parents[1]
    try:
        metadata = Model.load(str(folder)).metadata or {}
    except (OSError, MlflowException):
        return None
    return (metadata.get("medtl") or {}).get("sha256")


class MedtlPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper: ``predict`` returns one row per input row (probabilities, ``label``, ``error``)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from medtl.tracking.registry import verify_checksums

        verify_checksums(context.artifacts, recorded_checksums(context.artifacts))
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.clf = MedtlClassifier(meta, state, Limits.from_env())

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT
        from mlflow.exceptions import MlflowException

        if isinstance(model_input, pd.DataFrame) and model_input.shape[1] == 0:
            raise MlflowException.invalid_parameter_value(
                "no `path`, `content` or `image` column: MLflow drops a bare list or array before the model sees it; "
                "pass a table, e.g. pd.DataFrame({'path': [...]}) or {'content': [base64, ...]}")
        out = self.clf.predict_frame(model_input)
        if _MLFLOW_IS_IN_SERVING_ENVIRONMENT.get():  # JSON has no NaN: a bad row's probabilities are null
            probs = [str(c) for c in self.clf.classes]
            out[probs] = out[probs].astype(object).where(out[probs].notna(), None)
        return out
