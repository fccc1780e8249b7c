"""What a comparison's results look like as files: a pure function from a result to its artifacts.

``arm_artifacts`` (a child run: figures, predictions, curves, model card), ``comparison_start``
(the parent run at its start: config, data summary, redacted curation report) and
``comparison_summary`` (the parent run at the end: comparison chart and tables, shift table, CKA
profiles). Nothing here talks to MLflow or knows strategy kinds; the tracker only uploads what
these return, so what a run shows can be tested, and reused, without a store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from matplotlib.figure import Figure

from medtl.experiment.results import ArmResult, Comparison
from medtl.experiment.shift import source_target
from medtl.experiment.tables import cka_profile
from medtl.metrics.classification import predicted_labels
from medtl.tracking import plots
from medtl.tracking.model_card import model_card
from medtl.tracking.redact import redact_paths


@dataclass
class Artifacts:
    """Artifact path -> content, by the form MLflow logs it in."""

    figures: dict[str, Figure] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    dicts: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def paths(self) -> set[str]:
        return {*self.figures, *self.texts, *self.dicts, *self.tables}


def arm_artifacts(arm: ArmResult, comparison: Comparison, tags: dict[str, str], run_id: str | None) -> Artifacts:
    """A child run's files; the shift pictures when the arm's shift was analysed."""
    data = comparison.data
    title = f"{arm.strategy} (seed {arm.seed})"
    out = Artifacts()
    out.figures = {"plots/confusion_matrix.png": plots.confusion(arm.test_labels, arm.test_probs, data.classes, title),
                   "plots/roc.png": plots.roc(arm.test_labels, arm.test_probs, data.classes, title),
                   "plots/calibration.png": plots.calibration(arm.test_labels, arm.test_probs, title)}
    if arm.fit.history and "train_loss" in arm.fit.history[0]:  # an ensemble trains nothing: no curves
        out.figures["plots/learning_curves.png"] = plots.learning_curves(arm.fit.history, title)
    if arm.shift is not None:  # the shift analysis of this run (its numbers are already in arm.metrics)
        source, targets = source_target(comparison.config, data)
        out.figures["plots/shift/embedding.png"] = plots.embedding(arm.shift.embedding, source, title)
        out.figures["plots/shift/cka.png"] = plots.cka_profile({arm.strategy: arm.shift.cka})
        out.figures["plots/shift/domains_auc.png"] = plots.domain_bars(arm.metrics, [*source, *targets], "auc", title)
        if arm.shift.gradcam:
            out.figures["plots/shift/gradcam.png"] = plots.gradcam_grid(arm.shift.gradcam, f"Grad-CAM, {title}")
    out.tables["predictions.json"] = predictions_table(arm, data.classes)
    out.dicts["history.json"] = {"history": arm.fit.history, "probe_history": None if arm.probe is None else arm.probe.history}
    out.texts["model_card.md"] = model_card(arm, comparison, tags, run_id)
    return out


def comparison_start(comparison: Comparison) -> Artifacts:
    """The parent run's files at the start: the resolved config, what the data holds, the curation report."""
    cfg, data = comparison.config, comparison.data
    out = Artifacts()
    out.texts["config.yaml"] = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    out.dicts["data.json"] = {
        "classes": data.classes, "domains": data.domains(), "notes": data.notes,
        "splits": {s: {"scans": len(v), "per_label": {c: sum(it["label"] == i for it in v) for i, c in enumerate(data.classes)},
                       "per_domain": {d: sum(it["domain"] == d for it in v) for d in data.domains()}}
                   for s, v in data.splits.items()}}
    report = curation_report(comparison)
    if report is not None:
        out.texts["curation/report.md"] = report
    return out


def comparison_summary(comparison: Comparison) -> Artifacts:
    """The parent run's files at the end: the comparison chart and table; the shift table and CKA profiles."""
    table = comparison.table()
    out = Artifacts(figures={"plots/comparison.png": plots.comparison_chart(table)},
                    texts={"comparison.md": markdown_table(table)})
    chosen = comparison.selection_table()
    if len(chosen):  # which arm each label-free validator would pick, and how it ranks on the target
        out.texts["selection.md"] = markdown_table(chosen)
    if comparison.shift_extractor:
        out.texts["shift.md"] = markdown_table(comparison.shift_table())
        profiles = {a.strategy: cka_profile(a) for a in comparison.arms if a.seed == comparison.arms[0].seed}
        out.figures["plots/shift/cka.png"] = plots.cka_profile(profiles)
    return out


def curation_report(comparison: Comparison) -> str | None:
    """The curation report beside the manifest, with every file path and name redacted."""
    manifest = comparison.config.data.manifest
    if manifest is None or not (Path(manifest).parent / "report.md").is_file():
        return None
    folder = Path(manifest).parent
    paths = [it["path"] for items in comparison.data.splits.values() for it in items]
    for extra in ("quarantine.csv", "manifest.csv"):
        if (folder / extra).is_file():
            paths += pd.read_csv(folder / extra, dtype=str, keep_default_na=False).get("path", pd.Series(dtype=str)).tolist()
    return redact_paths((folder / "report.md").read_text(), paths)


def predictions_table(arm: ArmResult, classes: list[str]) -> pd.DataFrame:
    """One row per test scan: domain, hashed patient, true and predicted class, probabilities. No path."""
    preds = arm.test_items[["domain", "patient"]].copy().reset_index(drop=True)
    preds["label"] = [classes[int(i)] for i in arm.test_labels]
    preds["predicted"] = [classes[int(i)] for i in predicted_labels(arm.test_probs)]
    for i, c in enumerate(classes):
        preds[f"p_{c}"] = arm.test_probs[:, i]
    return preds


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
