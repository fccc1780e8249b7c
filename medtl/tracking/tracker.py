"""MLflow as the lab notebook: one parent run per comparison, one child per strategy and seed.

Names follow INTERFACE.md: parent tag ``medtl.role=comparison``, child tag
``medtl.strategy=<name>``, final ``test_auc``/``test_acc`` (and ``.<domain>``), per-epoch
``train_loss``/``val_auc``/``val_loss``. Nothing that identifies a patient is written: patient ids
are keyed hashes from the moment the manifest is read.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

import medtl
from medtl.config import StrategyConfig
from medtl.metrics.classification import auc_score
from medtl.tracking import plots
from medtl.tracking.pyfunc import MedtlClassifier, model_meta, save_model_files
from medtl.tracking.registry import Decision, promote
from medtl.tracking.store import connect

ROLE, STRATEGY = "medtl.role", "medtl.strategy"


def pip_requirements() -> list[str]:
    """medtl's own runtime dependencies at the versions installed now (read from its metadata)."""
    reqs = []
    for line in metadata.requires("medtl") or []:
        if "extra ==" in line:
            continue
        name = line.split(";")[0].split("[")[0]
        for sep in ("<", ">", "=", "!", "~", " "):
            name = name.split(sep)[0]
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            reqs.append(name)
    return reqs


def git_commit() -> str:
    try:
        root = Path(medtl.__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string")]))


class MlflowTracker:
    """Implements ``medtl.compare.Tracker`` on an MLflow store (sqlite by default)."""

    def __init__(self, uri: str | None = None, register: bool = True) -> None:
        self.uri = connect(uri)
        self.client = MlflowClient(self.uri)
        self.register = register
        self.parent_id: str | None = None
        self.child_ids: dict[tuple[str, int], str] = {}
        self.model_uris: dict[tuple[str, int], str] = {}
        self.decision: Decision | None = None

    # -- the comparison (parent run) ---------------------------------------------------------
    def start(self, comparison: Any) -> None:
        cfg = comparison.config
        mlflow.set_experiment(cfg.tracking.experiment)
        run = mlflow.start_run(run_name=cfg.name, tags={
            ROLE: "comparison", "medtl.version": medtl.__version__, "medtl.git_commit": git_commit(),
            "medtl.data_hash": comparison.data.fingerprint, "medtl.backbone": cfg.backbone.name,
            "medtl.seed": str(cfg.train.seed)})
        self.parent_id = run.info.run_id
        comparison.run_id = self.parent_id
        mlflow.log_params(_chunk(cfg.flat()))
        mlflow.log_params({"input.size": comparison.spec.size, "input.mean": comparison.spec.mean,
                           "input.std": comparison.spec.std, "input.interpolation": comparison.spec.interpolation,
                           "input.source": comparison.spec.source[:500], "data.classes": ",".join(comparison.data.classes)[:500]})
        mlflow.log_dict(cfg.model_dump(mode="json"), "config.json")
        counts = {s: len(v) for s, v in comparison.data.splits.items()}
        mlflow.log_dict({"splits": counts, "domains": comparison.data.domains(), "notes": comparison.data.notes}, "data.json")
        report = Path(str(cfg.data.manifest)).parent / "report.md" if cfg.data.manifest else None
        if report is not None and report.is_file():
            mlflow.log_artifact(str(report), "curation")

    # -- one arm (child run) -----------------------------------------------------------------
    def start_arm(self, strategy: StrategyConfig, seed: int) -> None:
        run = mlflow.start_run(run_name=f"{strategy.name}-seed{seed}", nested=True, tags={
            STRATEGY: strategy.name, "medtl.kind": str(strategy.kind), "medtl.seed": str(seed),
            "medtl.version": medtl.__version__, "medtl.git_commit": git_commit()})
        self.child_ids[(strategy.name, seed)] = run.info.run_id
        mlflow.log_params(_chunk({f"strategy.{k}": v for k, v in strategy.model_dump(mode="json").items()}))

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if k != "epoch" and np.isfinite(v)}, step=epoch)

    def end_arm(self, arm: Any, comparison: Any) -> None:
        cfg, data = comparison.config, comparison.data
        mlflow.set_tags({"medtl.data_hash": data.fingerprint, "medtl.weights": arm.weights_id,
                         "medtl.weights_sha256": arm.weights_sha256 or "random-init"})
        mlflow.log_metrics({k: float(v) for k, v in arm.metrics.items() if np.isfinite(v)})
        mlflow.log_metrics({"best_epoch": arm.fit.best_epoch, "train_seconds": arm.seconds})
        title = f"{arm.strategy} (seed {arm.seed})"
        if arm.fit.history:
            mlflow.log_figure(plots.learning_curves(arm.fit.history, title), "plots/learning_curves.png")
        mlflow.log_figure(plots.confusion(arm.test_labels, arm.test_probs, data.classes, title), "plots/confusion_matrix.png")
        mlflow.log_figure(plots.roc(arm.test_labels, arm.test_probs, data.classes, title), "plots/roc.png")
        mlflow.log_figure(plots.calibration(arm.test_labels, arm.test_probs, title), "plots/calibration.png")
        plt.close("all")
        preds = arm.test_items[["domain", "patient"]].copy()
        preds["label"] = arm.test_labels
        for i, c in enumerate(data.classes):
            preds[f"p_{c}"] = arm.test_probs[:, i]
        mlflow.log_table(preds, "predictions.json")
        mlflow.log_dict({"history": arm.fit.history}, "history.json")
        meta = model_meta(arm.model, cfg.backbone.name, data.classes, comparison.spec, cfg.preprocess,
                          cfg.strategies[[s.name for s in cfg.strategies].index(arm.strategy)].head if arm.kind == "frozen" else "linear",
                          arm.strategy)
        with tempfile.TemporaryDirectory() as tmp:
            files = save_model_files(Path(tmp), arm.model, meta)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(Path(__file__).with_name("pyfunc_model.py")), artifacts=files,
                code_paths=[str(Path(medtl.__file__).parent)], pip_requirements=pip_requirements(),
                signature=SIGNATURE, metadata={"medtl": {"strategy": arm.strategy, "backbone": cfg.backbone.name}},
            )
        self.model_uris[(arm.strategy, arm.seed)] = info.model_uri
        mlflow.end_run()

    # -- the end: summary and registry ---------------------------------------------------------
    def finish(self, comparison: Any) -> None:
        table = comparison.table()
        mlflow.log_figure(plots.comparison_chart(table), "plots/comparison.png")
        plt.close("all")
        mlflow.log_text(markdown_table(table), "comparison.md")
        best = comparison.best
        mlflow.set_tags({"medtl.best_strategy": best.strategy, "medtl.best_seed": str(best.seed)})
        if self.register:
            self.decision = self._register(comparison)
            comparison.registry = self.decision.as_dict()
            mlflow.log_dict(comparison.registry, "registry_decision.json")
            mlflow.set_tags({"medtl.registry.version": self.decision.version, "medtl.registry.alias": self.decision.alias})
        mlflow.end_run()

    def _register(self, comparison: Any) -> Decision:
        cfg, best = comparison.config, comparison.best
        name = cfg.tracking.model_name
        mv = mlflow.register_model(self.model_uris[(best.strategy, best.seed)], name,
                                   tags={STRATEGY: best.strategy, "medtl.comparison_run": self.parent_id or ""})
        val_items = comparison.data.splits["val"]
        labels = np.array([it["label"] for it in val_items])

        def score(uri: str) -> float:
            return auc_score(labels, load_classifier(uri).predict_proba([it["image"] for it in val_items]))

        fp = comparison.data.fingerprint
        return promote(self.client, name, mv.version, best.val_auc, fp, score)


def _chunk(params: dict[str, Any]) -> dict[str, str]:
    """MLflow params are at most 6000 characters."""
    return {k[:250]: str(v)[:6000] for k, v in params.items()}


def markdown_table(table: pd.DataFrame) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, tuple):
            return f"[{v[0]:.3f}, {v[1]:.3f}]"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def load_classifier(uri: str) -> MedtlClassifier:
    """The medtl classifier behind any MLflow model URI (models:/NAME@ALIAS, runs:/ID/model, ...)."""
    model = mlflow.pyfunc.load_model(uri)
    return model.unwrap_python_model().clf


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
