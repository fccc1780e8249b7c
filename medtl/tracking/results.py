"""A comparison read back from MLflow: what notebooks tabulate and plot, from the store alone."""

from __future__ import annotations

import os
import shlex
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medtl.errors import MedtlWarning, TrackingError
from medtl.tracking.tracker import ARM, MODEL_ID, ROLE, STRATEGY

ARM_COLUMNS = ("strategy", "kind", "seed", "run_id", "status", "best_val_auc", "test_auc", "test_auc_ci_low",
               "test_auc_ci_high", "test_acc", "test_acc_ci_low", "test_acc_ci_high", "best_epoch", "train_seconds")


def find_comparison(client: MlflowClient, run_id: str | None = None, experiment: str | None = None) -> Run:
    """The parent run ``run_id``, else the latest comparison that finished (in ``experiment`` when given).

    Newer comparisons that failed or are still running are skipped with a warning that names them: their
    missing arms would make an empty or partial table look like the answer. Named by ``run_id``, an
    unfinished one is read as it is, with a warning.
    """
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as e:
            raise TrackingError(run_id, f"no such run ({' '.join(e.message.split())[:160]})") from None
        if run.data.tags.get(ROLE) != "comparison":
            raise TrackingError(run_id, "not a medtl comparison run (no tag medtl.role=comparison)")
        if run.info.status != "FINISHED":
            warnings.warn(f"comparison {run_id} is {run.info.status}: only the arms it finished are in the table",
                          MedtlWarning, stacklevel=3)
        return run
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise TrackingError(experiment, "no such MLflow experiment")
        ids = [exp.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, f"tags.`{ROLE}` = 'comparison'", order_by=["attributes.start_time DESC"], max_results=50)
    if not runs:
        raise TrackingError(experiment or client.tracking_uri, "no medtl comparison found")
    done = next((i for i, r in enumerate(runs) if r.info.status == "FINISHED"), None)
    newer = runs if done is None else runs[:done]
    unfinished = ", ".join(f"{r.info.run_id} ({r.info.status})" for r in newer)
    if done is None:
        raise TrackingError(experiment or client.tracking_uri, f"no finished medtl comparison; the latest did not finish: "
                                                               f"{unfinished} (pass its run id to read what it logged)")
    if newer:
        warnings.warn(f"skipped {len(newer)} newer comparison(s) that did not finish: {unfinished}; showing "
                      f"{runs[done].info.run_id}, the latest that finished", MedtlWarning, stacklevel=3)
    return runs[done]


def arm_runs(client: MlflowClient, parent: Run) -> list[Run]:
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                              order_by=["attributes.start_time ASC"])
    return [r for r in runs if STRATEGY in r.data.tags]


def arms_table(client: MlflowClient, parent: Run) -> pd.DataFrame:
    """One row per child run (strategy x seed): final metrics, per-domain metrics, model URI."""
    rows = []
    for r in arm_runs(client, parent):
        m, t = r.data.metrics, r.data.tags
        row = {"strategy": t[STRATEGY], "kind": t.get("medtl.kind"), "seed": int(t.get("medtl.seed", 0)), "arm": t.get(ARM),
               "run_id": r.info.run_id, "status": r.info.status}
        row.update({k: m.get(k) for k in ARM_COLUMNS if k not in row})
        row.update({k: v for k, v in sorted(m.items()) if k.startswith(("test_auc.", "test_acc."))})
        row["model_uri"] = f"models:/{t[MODEL_ID]}" if MODEL_ID in t else None
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(client: MlflowClient, parent: Run) -> pd.DataFrame:
    """One row per strategy, exactly as ``medtl compare`` printed it (means over seeds, 95% CIs)."""
    from medtl.experiment.tables import results_table

    arms = []
    for r in arm_runs(client, parent):
        m = r.data.metrics
        if "test_auc" not in m:  # an arm not logged yet (interrupted comparison)
            continue
        arms.append(SimpleNamespace(strategy=r.data.tags[STRATEGY], val_auc=m.get("best_val_auc", float("nan")),
                                    metrics=m, seconds=m.get("train_seconds", 0.0)))
    return results_table(arms) if arms else pd.DataFrame()


def _relative(path: Path) -> str:
    """``path`` relative to the working folder when inside it (shorter to copy), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def venv_command(name: str) -> str:
    """How to run this environment's ``name`` script (``.venv/bin/medtl``), as a person would type it."""
    script = Path(sys.executable).parent / name
    if script.is_file():
        rel = _relative(script)
        return shlex.quote(rel if os.sep in rel else f".{os.sep}{rel}")  # a bare name would be looked up on PATH
    return f"{shlex.quote(sys.executable)} -m {name}" if name == "medtl" else name


def ui_command(uri: str) -> str:
    """The ``mlflow ui`` line that opens this store (a server is opened in the browser instead)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return f"{venv_command('mlflow')} ui --backend-store-uri {shlex.quote('sqlite:///' + _relative(db))}"
    return f"{venv_command('mlflow')} ui --backend-store-uri {shlex.quote(uri)}"


def outcome_lines(comparison: Any, uri: str) -> list[str]:
    """What a finished comparison chose, why, and where to look: the closing lines of ``medtl compare``.

    Read from the comparison's own results (its table, best arm, registry decision), so the words
    match the numbers printed above them.
    """
    table = comparison.table().sort_values("val_auc", ascending=False, kind="stable")
    best = comparison.best.strategy
    val = dict(zip(table["strategy"], table["val_auc"]))
    others = [f"{s} {v:.3f}" for s, v in val.items() if s != best]
    tie = [s for s, v in val.items() if s != best and abs(v - val[best]) < 1e-9]
    why = (f"tied on validation AUC with {', '.join(tie)}, chosen on its lower validation loss" if tie
           else "the highest mean validation AUC")
    sel = comparison.config.selection
    how = f"mean validation AUC over {sel.folds} folds of train+val" if sel.method == "cv" else "validation AUC"
    lines = [f"best: {best} ({how} {val[best]:.3f}" + (f"; others: {', '.join(others)}" if others else "")
             + f"): {why}; the test set never chooses"]
    reg = comparison.registry
    if reg:
        alias = reg["alias"]
        line = f"registered {reg['name']} v{reg['version']} as '{alias}' ({reg['reason']})"
        if alias != "champion" and reg.get("previous_champion"):
            line += f"; models:/{reg['name']}@champion stays v{reg['previous_champion']}"
        lines.append(line)
        lines.append(f"use it: {venv_command('medtl')} predict models:/{reg['name']}@{alias} SCAN...")
    if comparison.run_id:
        lines.append(f"MLflow: experiment '{comparison.config.tracking.experiment}', comparison run {comparison.run_id} "
                     f"(one child run per strategy and seed) in {uri}")
        lines.append(f"look: {ui_command(uri)}   (then http://127.0.0.1:5000)"
                     if not uri.startswith(("http://", "https://")) else f"look: {uri}")
    return lines
