"""A comparison read back from MLflow: what notebooks tabulate and plot, from the store alone."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medtl.errors import TrackingError
from medtl.tracking.tracker import ARM, MODEL_ID, ROLE, STRATEGY

ARM_COLUMNS = ("strategy", "kind", "seed", "run_id", "status", "best_val_auc", "test_auc", "test_auc_ci_low",
               "test_auc_ci_high", "test_acc", "test_acc_ci_low", "test_acc_ci_high", "best_epoch", "train_seconds")


def find_comparison(client: MlflowClient, run_id: str | None = None, experiment: str | None = None) -> Run:
    """The parent run ``run_id``, else the latest comparison (in ``experiment`` when given)."""
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as e:
            raise TrackingError(run_id, f"no such run ({' '.join(e.message.split())[:160]})") from None
        if run.data.tags.get(ROLE) != "comparison":
            raise TrackingError(run_id, "not a medtl comparison run (no tag medtl.role=comparison)")
        return run
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise TrackingError(experiment, "no such MLflow experiment")
        ids = [exp.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, f"tags.`{ROLE}` = 'comparison'", order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise TrackingError(experiment or client.tracking_uri, "no medtl comparison found")
    return runs[0]


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
