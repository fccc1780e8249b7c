"""The run journal: which MLflow runs hold a comparison, kept beside its checkpoints, and resume bookkeeping.

The parent and child run ids are written to ``mlflow.json`` in the comparison's local run folder the
moment each run exists, so that ``--resume`` reattaches to the same runs instead of starting new
ones; a child created just before a kill (not journalled yet) is found by its ``medtl.arm`` tag.
Runs left open by an exception are marked FAILED when the tracker is collected, and reopened on
resume. Tag names here are INTERFACE.md's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

ROLE, STRATEGY, ARM = "medtl.role", "medtl.strategy", "medtl.arm"
LOGGED = "medtl.logged"  # "complete" once everything of a child run is in the store
MODEL_ID = "medtl.model_id"  # the LoggedModel of a child run, set once its upload finished
JOURNAL = "mlflow.json"  # run ids of a comparison, in its local run folder


def arm_key(strategy: str, seed: int) -> str:
    return f"{strategy}-seed{seed}"


class RunJournal:
    """The run ids of one comparison in one store, on local disk (nothing when there is no run folder)."""

    def __init__(self, uri: str, folder: Path | None = None) -> None:
        self.uri, self.folder = uri, folder
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.child_ids: dict[str, str] = {}
        self.resumed = False  # the parent run existed before this process

    def read(self) -> dict[str, Any]:
        """What an earlier run of this comparison journalled in this store (another store's journal is ignored)."""
        path = None if self.folder is None else self.folder / JOURNAL
        if path is None or not path.is_file():
            return {}
        journal = json.loads(path.read_text())
        return journal if journal.get("tracking_uri") == self.uri else {}

    def write(self) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (JOURNAL + ".tmp")
        tmp.write_text(json.dumps({"tracking_uri": self.uri, "experiment_id": self.experiment_id,
                                   "parent_run_id": self.parent_id, "children": self.child_ids}, indent=2))
        tmp.replace(self.folder / JOURNAL)  # never a half-written journal


def existing_run(client: MlflowClient, run_id: str | None) -> Run | None:
    """The run if the store still has it (not deleted), else None."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return None if run.info.lifecycle_stage == "deleted" else run


def find_child(client: MlflowClient, journal: RunJournal, key: str) -> Run | None:
    """The arm's run under the journalled parent, should the journal have missed it (killed right after creating it)."""
    if not journal.resumed:  # a parent created just now has no children yet
        return None
    runs = client.search_runs([journal.experiment_id], f"tags.mlflow.parentRunId = '{journal.parent_id}' and tags.`{ARM}` = '{key}'")
    return runs[0] if runs else None


def close_open_runs(client: MlflowClient, state: dict[str, Any]) -> None:
    """Finalizer: runs left open by an exception are marked FAILED (``--resume`` reopens them)."""
    if state.get("monitor") is not None:
        state["monitor"].finish()
    if state["offline"]:
        return
    for run_id in list(state["open"]):
        try:
            client.set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001 - best effort while the interpreter unwinds
            return
