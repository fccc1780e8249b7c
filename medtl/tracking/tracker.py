"""MLflow as the lab notebook: one parent run per comparison, one child per strategy and seed.

Names follow INTERFACE.md: parent tag ``medtl.role=comparison``, child tag
``medtl.strategy=<name>``, final ``test_auc``/``test_acc`` (and ``.<domain>``), per-epoch
``train_loss``/``val_auc``/``val_loss`` (plus ``lr.<group>`` and ``unfrozen_groups``). Nothing that
identifies a patient is written: patient ids are keyed hashes from the moment the manifest is read,
and file paths never leave the machine.

Local first. Training never waits on the tracking store: every finished arm is already on local
disk (``ArmResult.save``) when it is logged. If the store stops answering, the tracker says so
once, stops writing, lets the comparison finish locally and then raises a ``TrackingError`` naming
the run folder. ``--resume`` reattaches to the same runs (their ids are journalled in the run
folder) and logs only what the store does not hold yet: missing epochs, metrics, artifacts, the
model, the registration. Every write is keyed so that doing it again changes nothing.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medtl.config import StrategyConfig
from medtl.errors import TrackingError
from medtl.experiment.results import ArmResult, Comparison
from medtl.metrics.classification import auc_score
from medtl.tracking.artifacts import Artifacts, arm_artifacts, comparison_start, comparison_summary
from medtl.tracking.journal import ARM, LOGGED, MODEL_ID, ROLE, STRATEGY, RunJournal, arm_key, close_open_runs, existing_run, find_child
from medtl.tracking.model_card import model_card
from medtl.tracking.provenance import pip_requirements, provenance_tags
from medtl.tracking.pyfunc import MedtlClassifier, log_classifier, model_meta
from medtl.tracking.registry import COMPARISON_TAG, Decision, promote, registered_for
from medtl.tracking.store import connect, describe, experiment_id

log = logging.getLogger("medtl.tracking")

MAX_PARAMS, MAX_METRICS = 100, 1000  # MLflow's per-call batch limits


# What a store that went away (server down, sqlite locked, artifact disk full) raises: MLflow wraps
# most of it in MlflowException; artifact uploads raise requests' errors, which are OSErrors.
STORE_ERRORS = (MlflowException, OSError)


class MlflowTracker:
    """Implements ``medtl.experiment.run.Tracker`` on an MLflow store (sqlite by default, or a server)."""

    def __init__(self, uri: str | None = None, register: bool = True, system_metrics: bool = True) -> None:
        self.uri = connect(uri)  # a dead store is an error here, before any training
        self.client = MlflowClient(self.uri, registry_uri=self.uri)
        self.register = register
        self.system_metrics = system_metrics
        self.journal = RunJournal(self.uri)
        self.model_uris: dict[str, str] = {}
        self.decision: Decision | None = None
        self.failure: str | None = None
        self.tags: dict[str, str] = {}
        self._arm: str | None = None
        self._arm_done = False
        self._steps: set[int] = set()
        self._state: dict[str, Any] = {"offline": False, "open": set(), "monitor": None}
        weakref.finalize(self, close_open_runs, self.client, self._state)

    # -- failures: say it once, keep training, raise at the end -----------------------------------
    def _store(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a write against the store; the first failure switches the tracker to local-only."""
        if self.failure is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except STORE_ERRORS as e:  # the store or its artifact location failed; a bug in medtl still raises
            self.failure = f"{what} ({describe(e)})"
            self._state["offline"] = True
            self._stop_monitor()
            log.warning("medtl: warning: MLflow at %s failed while logging %s; training goes on and every result "
                        "stays on local disk in %s; rerun with --resume once the store answers to log them",
                        self.uri, self.failure, self.folder)
            return None

    def _lost(self) -> TrackingError:
        return TrackingError(self.uri, f"MLflow failed while logging {self.failure}. Nothing is lost: the trained models, "
                                       f"checkpoints and metrics are on local disk in {self.folder}; once the store "
                                       "answers again, rerun the same comparison with --resume to log them")

    @property
    def folder(self) -> Path | None:
        return self.journal.folder

    @property
    def parent_id(self) -> str | None:
        return self.journal.parent_id

    @property
    def child_ids(self) -> dict[str, str]:
        return self.journal.child_ids

    @property
    def experiment_id(self) -> str | None:
        return self.journal.experiment_id

    def _reopen(self, run: Run) -> None:
        if run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")
        self._state["open"].add(run.info.run_id)

    def _missing_params(self, run_id: str, params: dict[str, Any], have: dict[str, str]) -> None:
        todo = [Param(k[:250], str(v)[:6000]) for k, v in params.items() if k[:250] not in have]
        for i in range(0, len(todo), MAX_PARAMS):
            self.client.log_batch(run_id, params=todo[i : i + MAX_PARAMS])

    def _log_metrics(self, run_id: str, values: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        todo = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None and np.isfinite(v)]
        for i in range(0, len(todo), MAX_METRICS):
            self.client.log_batch(run_id, metrics=todo[i : i + MAX_METRICS])

    # -- system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) ------------------------
    def _start_monitor(self, run_id: str, resumed: bool) -> None:
        if not self.system_metrics:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)
            monitor = SystemMetricsMonitor(run_id, resume_logging=resumed, tracking_uri=self.uri)
        except ImportError as e:  # psutil is a declared dependency; a broken install still trains
            log.warning("medtl: warning: system metrics off (%s)", e)
            self.system_metrics = False
            return
        monitor.start()
        self._state["monitor"] = monitor

    def _stop_monitor(self) -> None:
        monitor, self._state["monitor"] = self._state["monitor"], None
        if monitor is not None:
            monitor.finish()

    # -- the comparison (parent run) ------------------------------------------------------------
    def start(self, comparison: Comparison) -> None:
        self.journal.folder = comparison.folder
        self.tags = provenance_tags(comparison)
        self._store("the comparison run", self._start_parent, comparison, self.journal.read())
        comparison.run_id = self.parent_id

    def _start_parent(self, comparison: Comparison, journalled: dict[str, Any]) -> None:
        from mlflow.tracking.context.registry import resolve_tags

        cfg, journal = comparison.config, self.journal
        parent = existing_run(self.client, journalled.get("parent_run_id"))
        if parent is None:
            journal.experiment_id = experiment_id(self.client, cfg.tracking.experiment)  # safe when two start together
            tags = resolve_tags({ROLE: "comparison", **self.tags, "medtl.seed": str(cfg.train.seed),
                                 "medtl.seeds": ",".join(map(str, cfg.train.all_seeds))})
            parent = self.client.create_run(journal.experiment_id, run_name=cfg.name, tags=tags)
            journal.child_ids, journal.resumed = {}, False
        else:
            journal.experiment_id = parent.info.experiment_id
            journal.child_ids, journal.resumed = dict(journalled.get("children", {})), True
            self.client.set_tag(parent.info.run_id, "medtl.resumed_with_commit", self.tags["medtl.git_commit"])
        journal.parent_id = parent.info.run_id
        journal.write()
        self._reopen(parent)
        spec = comparison.spec
        params = {**cfg.flat(), "input.size": spec.size, "input.mean": spec.mean, "input.std": spec.std,
                  "input.interpolation": spec.interpolation, "input.source": spec.source,
                  "data.classes": ",".join(comparison.data.classes)}
        self._missing_params(self.parent_id, params, parent.data.params)
        self._upload(self.parent_id, comparison_start(comparison))

    # -- one arm (child run) -----------------------------------------------------------------
    def start_arm(self, strategy: StrategyConfig, seed: int) -> None:
        self._arm, self._arm_done, self._steps = arm_key(strategy.name, seed), False, set()
        if self.parent_id is not None:
            self._store(f"the run of {self._arm}", self._start_child, strategy, seed)

    def _start_child(self, strategy: StrategyConfig, seed: int) -> None:
        from mlflow.tracking.context.registry import resolve_tags

        key = self._arm
        run = existing_run(self.client, self.child_ids.get(key)) or find_child(self.client, self.journal, key)
        resumed = run is not None
        if run is None:
            tags = resolve_tags({"mlflow.parentRunId": self.parent_id, STRATEGY: strategy.name, "medtl.kind": str(strategy.kind),
                                 ARM: key, "medtl.seed": str(seed), **self.tags})
            run = self.client.create_run(self.experiment_id, run_name=key, tags=tags)
            self.child_ids[key] = run.info.run_id
            self.journal.write()
        elif run.data.tags.get(LOGGED) == "complete":
            self._arm_done = True
            self.model_uris[key] = f"models:/{run.data.tags[MODEL_ID]}"
            return
        self._reopen(run)
        self._missing_params(run.info.run_id, {f"strategy.{k}": v for k, v in strategy.model_dump(mode="json").items()},
                             run.data.params)
        self._start_monitor(run.info.run_id, resumed)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        run_id = self.child_ids.get(self._arm or "")
        if run_id is None or self._arm_done or self.failure is not None:
            return
        self._store(f"epoch {epoch + 1} of {self._arm}", self._log_metrics, run_id,
                    {k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
        if self.failure is None:
            self._steps.add(int(epoch))

    def end_arm(self, arm: ArmResult, comparison: Comparison) -> None:
        key = arm_key(arm.strategy, arm.seed)
        run_id = self.child_ids.get(key)
        try:
            if self._arm_done or run_id is None or self.failure is not None:
                return
            self._store(f"the results of {key}", self._log_arm, arm, comparison, run_id, key)
        finally:
            self._stop_monitor()
            self._arm = None

    def _log_arm(self, arm: ArmResult, comparison: Comparison, run_id: str, key: str) -> None:
        c, data = self.client, comparison.data
        run = c.get_run(run_id)
        c.log_batch(run_id, tags=[RunTag("medtl.weights", arm.weights_id), RunTag("medtl.weights_sha256", arm.weights_sha256 or "random-init")])
        self._catch_up_epochs(run_id, arm.fit.history, "")
        if arm.probe is not None:
            self._catch_up_epochs(run_id, arm.probe.history, "probe.")
        if arm.cv is not None:  # cross-validated: ``fit`` above is the mean over folds; each fold's and the refit's curves
            for i, f in enumerate(arm.cv.folds):
                self._catch_up_epochs(run_id, f.history, f"fold{i}.")
            if arm.cv.refit is not None:  # nothing held out: its rows carry train_loss and rates, no validation
                self._catch_up_epochs(run_id, [{k: v for k, v in r.items() if v == v} for r in arm.cv.refit.history], "refit.")
        final = {("best_val_auc" if k == "val_auc" else k): v for k, v in arm.metrics.items()}
        final.update({"best_epoch": arm.fit.best_epoch, "train_seconds": arm.seconds})
        self._log_metrics(run_id, {k: v for k, v in final.items() if k not in run.data.metrics})
        files = arm_artifacts(arm, comparison, self.tags, run_id)
        self._upload(run_id, files)
        card = files.texts["model_card.md"]
        model_id = run.data.tags.get(MODEL_ID)
        if model_id is None:
            for partial in c.search_logged_models([self.experiment_id], filter_string=f"source_run_id = '{run_id}'"):
                c.delete_logged_model(partial.model_id)  # an upload cut short last time
            cfg = comparison.config
            meta = model_meta(arm.model, data.classes, cfg.preprocess, arm.build["head"], arm.strategy, arm.build)
            uri = log_classifier(run_id, arm.model, meta, card, pip_requirements(),
                                 tags={STRATEGY: arm.strategy, "medtl.seed": str(arm.seed), COMPARISON_TAG: self.parent_id or ""})
            model_id = uri.removeprefix("models:/")
            c.set_tag(run_id, MODEL_ID, model_id)
        self.model_uris[key] = f"models:/{model_id}"
        c.set_tag(run_id, LOGGED, "complete")
        self._stop_monitor()
        c.set_terminated(run_id, "FINISHED")
        self._state["open"].discard(run_id)

    def _upload(self, run_id: str, files: Artifacts) -> None:
        """Every file of ``files`` to the run (each write replaces the same path: doing it again changes nothing)."""
        for name, fig in files.figures.items():
            self.client.log_figure(run_id, fig, name)
        for name, text in files.texts.items():
            self.client.log_text(run_id, text, name)
        for name, tree in files.dicts.items():
            self.client.log_dict(run_id, tree, name)
        for name, table in files.tables.items():
            self.client.log_table(run_id, table, name)

    def _catch_up_epochs(self, run_id: str, history: list[dict[str, float]], prefix: str) -> None:
        """Log the epochs the store lacks (all of them after an outage or a resumed arm), each once."""
        todo = [r for r in history if prefix or int(r["epoch"]) not in self._steps]
        if not todo:
            return
        have = {m.step for name in (f"{prefix}train_loss", f"{prefix}val_loss") for m in self.client.get_metric_history(run_id, name)}
        for row in todo:
            if int(row["epoch"]) not in have:
                self._log_metrics(run_id, {f"{prefix}{k}": v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    # -- the end: summary and registry ---------------------------------------------------------
    def finish(self, comparison: Comparison) -> None:
        if self.parent_id is not None and self.failure is None:
            self._store("the comparison summary", self._log_summary, comparison)
            if self.register:
                self._store("the registry", self._register, comparison)
            self._store("the end of the comparison run", self._close_parent)
        if self.failure is not None:
            raise self._lost()

    def _log_summary(self, comparison: Comparison) -> None:
        c, run_id, best = self.client, self.parent_id, comparison.best
        assert run_id is not None and best is not None
        self._upload(run_id, comparison_summary(comparison))
        if comparison.shift_extractor:  # measured here: the frozen ImageNet extractor, once per comparison
            self._log_metrics(run_id, comparison.shift_extractor)
        weights = next((a.weights_sha256 for a in comparison.arms if a.weights_sha256), "random-init")
        chosen = comparison.selection_table()  # label-free validators: the arm each picks, its rank on the target
        c.log_batch(run_id, tags=[RunTag("medtl.best_strategy", best.strategy), RunTag("medtl.best_seed", str(best.seed)),
                                  RunTag("medtl.weights_sha256", weights),
                                  *(RunTag(f"medtl.select.{r.validator}", r.picks) for r in chosen.itertuples())])
        have = c.get_run(run_id).data.metrics
        self._log_metrics(run_id, {k: float(r.rank_on_target_auc) for r in chosen.itertuples()
                                   if (k := f"select.{r.validator}.rank") not in have})
        self._log_metrics(run_id, {k: v for k, v in {"best_val_auc": best.val_auc, "best_test_auc": best.metrics["test_auc"],
                                                     "best_test_acc": best.metrics["test_acc"]}.items() if k not in have})

    def _register(self, comparison: Comparison) -> None:
        cfg, best = comparison.config, comparison.best
        assert best is not None
        name = cfg.tracking.model_name
        key = arm_key(best.strategy, best.seed)
        mv = registered_for(self.client, name, self.parent_id or "")
        if mv is None:
            try:
                self.client.create_registered_model(name, description=f"medtl classifier ({', '.join(comparison.data.classes)}); "
                                                    "aliases: champion (best on the same validation data), challenger")
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            uri = self.model_uris[key]
            mv = self.client.create_model_version(name, uri, run_id=self.child_ids.get(key), model_id=uri.removeprefix("models:/"),
                                                  tags={STRATEGY: best.strategy, COMPARISON_TAG: self.parent_id or ""})
        val_items = comparison.data.splits["val"]
        labels = np.array([it["label"] for it in val_items])

        def score(uri: str) -> float:
            return auc_score(labels, load_classifier(uri).predict_proba([it["image"] for it in val_items]))

        self.decision = promote(self.client, name, str(mv.version), best.val_auc, comparison.data.fingerprint, score)
        card = model_card(best, comparison, self.tags, self.child_ids.get(key))
        if len(card) > 4900:  # the registry's description column holds 5000 characters
            card = card[:4800] + "\n\n(truncated: the full card is the model's artifact model_card.md)"
        self.client.update_model_version(name, str(mv.version), description=card)
        comparison.registry = self.decision.as_dict()
        self.client.log_dict(self.parent_id, comparison.registry, "registry_decision.json")
        self.client.log_batch(self.parent_id, tags=[RunTag("medtl.registry.name", name), RunTag("medtl.registry.version", self.decision.version),
                                                    RunTag("medtl.registry.alias", self.decision.alias)])

    def _close_parent(self) -> None:
        self.client.set_terminated(self.parent_id, "FINISHED")
        self._state["open"].discard(self.parent_id)


def load_classifier(uri: str) -> MedtlClassifier:
    """The medtl classifier behind any MLflow model URI (models:/NAME@ALIAS, runs:/ID/model, ...)."""
    return mlflow.pyfunc.load_model(uri).unwrap_python_model().clf
