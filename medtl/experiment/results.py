"""The results of a comparison: one ``ArmResult`` per strategy and seed, and the ``Comparison`` holding them.

Plain objects that the orchestration (``medtl.experiment.run``) fills, the tracker
(``medtl.tracking``) logs and ``medtl.api`` returns. A finished arm is saved on local disk and loads
with ``weights_only=True``, which is what makes ``--resume`` skip it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medtl.config import ExperimentConfig
from medtl.data.datasets import DataBundle
from medtl.errors import DataError
from medtl.experiment.crossval import CrossValidation
from medtl.experiment.selection import selection_table
from medtl.experiment.tables import results_table, shift_table, sweep_table
from medtl.models.averaging import build_members
from medtl.models.registry import InputSpec
from medtl.models.transfer import TransferModel, create_model
from medtl.training.loop import FitResult, selection_score


@dataclass
class ArmResult:
    strategy: str
    kind: str
    seed: int
    model: TransferModel  # an ensemble's: medtl.models.averaging.Averaged of its members
    fit: FitResult
    val_auc: float
    metrics: dict[str, float]
    test_probs: np.ndarray
    test_labels: np.ndarray
    test_items: pd.DataFrame  # path, domain, patient (hashed) per test row
    weights_id: str
    weights_sha256: str | None
    seconds: float
    probe: FitResult | None = None
    folder: Path | None = None
    build: dict[str, Any] = field(default_factory=dict)  # create_model arguments that rebuild ``model``
    # frozen arms with a layer sweep: layer -> {val_auc, val_loss, best_epoch, dim}; the chosen one is build["layer"]
    sweep: dict[str, dict[str, float]] | None = None
    shift: Any = None  # medtl.experiment.shift.ShiftReport of this run (pictures); its numbers are in ``metrics``
    # selection.method cv: each fold's curves, the chosen epoch, the refit's curves (``fit`` is then the mean over folds)
    cv: CrossValidation | None = None
    # validation probabilities and labels of the kept weights (an ensemble chooses and is scored on them)
    val_probs: np.ndarray | None = None
    val_labels: np.ndarray | None = None

    RESULT = "result.pt"

    def save(self, folder: Path) -> Path:
        """Everything the tracker needs, on local disk; loads with ``weights_only=True``."""
        fits = {k: None if f is None else {"history": f.history, "best_epoch": f.best_epoch, "best_val_auc": f.best_val_auc,
                                           "stopped_early": f.stopped_early, "resumed_from": f.resumed_from}
                for k, f in (("fit", self.fit), ("probe", self.probe))}
        state = {"strategy": self.strategy, "kind": self.kind, "seed": self.seed, "val_auc": self.val_auc,
                 "metrics": self.metrics, "test_probs": torch.as_tensor(self.test_probs),
                 "test_labels": torch.as_tensor(self.test_labels), "test_items": self.test_items.to_dict("list"),
                 "weights_id": self.weights_id, "weights_sha256": self.weights_sha256, "seconds": self.seconds,
                 "build": self.build, "sweep": self.sweep, "model": self.model.state_dict(),
                 "cv": None if self.cv is None else self.cv.as_dict(), **fits,
                 **({} if self.val_probs is None else {"val_probs": torch.as_tensor(self.val_probs),
                                                       "val_labels": torch.as_tensor(self.val_labels)})}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (self.RESULT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(folder / self.RESULT)
        return folder / self.RESULT

    @classmethod
    def load(cls, folder: Path) -> ArmResult:
        st = torch.load(folder / cls.RESULT, map_location="cpu", weights_only=True)
        b = st["build"]
        if "members" in b:  # an ensemble
            model: torch.nn.Module = build_members(b["members"], b["num_classes"])
        else:
            model, _ = create_model(b["backbone"], b["num_classes"], pretrained=False, head=b["head"], layer=b["layer"],
                                    spec=InputSpec.from_dict(b["spec"]) if "spec" in b else None)
        model.load_state_dict(st["model"])
        model.eval()
        fit_of = lambda d: None if d is None else FitResult(d["history"], d["best_epoch"], d["best_val_auc"], d["stopped_early"],  # noqa: E731
                                                            d.get("resumed_from"))
        return cls(st["strategy"], st["kind"], st["seed"], model, fit_of(st["fit"]), st["val_auc"], st["metrics"],
                   st["test_probs"].numpy(), st["test_labels"].numpy(), pd.DataFrame(st["test_items"]), st["weights_id"],
                   st["weights_sha256"], st["seconds"], fit_of(st["probe"]), folder, st["build"], st.get("sweep"),
                   val_probs=st["val_probs"].numpy() if "val_probs" in st else None,
                   val_labels=st["val_labels"].numpy() if "val_labels" in st else None,
                   cv=None if st.get("cv") is None else CrossValidation.from_dict(st["cv"]))


@dataclass
class Comparison:
    config: ExperimentConfig
    data: DataBundle
    spec: InputSpec
    arms: list[ArmResult] = field(default_factory=list)
    best: ArmResult | None = None
    run_id: str | None = None
    registry: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None  # the run folder: finished arms on local disk (trackers journal here too)
    # the frozen ImageNet extractor's feature distances (shift.<m>[.<domain>]); empty without target domains
    shift_extractor: dict[str, float] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        return results_table(self.arms)

    def shift_table(self) -> pd.DataFrame:
        return shift_table(self.arms)

    def sweep_table(self) -> pd.DataFrame:
        return sweep_table(self.arms)

    def selection_table(self) -> pd.DataFrame:
        return selection_table(self.arms)

    SUMMARY = "comparison.json"

    def save(self) -> Path:
        """The comparison's summary in its run folder, beside its arms' ``result.pt``: ``load`` needs nothing else
        (the data is read again from the config's sources; its fingerprint must match)."""
        assert self.folder is not None, "a comparison is saved in its run folder"
        tree = {"config": self.config.model_dump(mode="json"), "spec": self.spec.as_dict(), "data": self.data.fingerprint,
                "arms": [a.folder.name for a in self.arms if a.folder is not None], "run_id": self.run_id,
                "best": None if self.best is None else [self.best.strategy, self.best.seed], "registry": self.registry,
                "shift_extractor": self.shift_extractor}
        tmp = self.folder / (self.SUMMARY + ".tmp")
        tmp.write_text(json.dumps(tree, indent=1))
        tmp.replace(self.folder / self.SUMMARY)
        return self.folder / self.SUMMARY

    @classmethod
    def load(cls, folder: Path) -> Comparison:
        """A finished comparison from its run folder, without training anything."""
        from medtl.data.datasets import load_data

        tree = json.loads((folder / cls.SUMMARY).read_text())
        cfg = ExperimentConfig.model_validate(tree["config"])
        data = load_data(cfg.data, cfg.train.seed)
        if data.fingerprint != tree["data"]:
            raise DataError(folder / cls.SUMMARY, "the data of this comparison changed since it ran (fingerprint differs)")
        arms = [ArmResult.load(folder / name) for name in tree["arms"]]
        best = next((a for a in arms if tree["best"] and [a.strategy, a.seed] == tree["best"]), None)
        return cls(cfg, data, InputSpec.from_dict(tree["spec"]), arms, best, tree["run_id"], tree["registry"], folder,
                   tree["shift_extractor"])


def arm_score(group: list[ArmResult]) -> tuple[float, float]:
    """What "better" means between arms: mean validation AUC over seeds, ties (common on easy data) to the
    lower mean validation loss (``selection_score``, as epochs are kept)."""
    return selection_score({"val_auc": float(np.mean([a.val_auc for a in group])),
                            "val_loss": float(np.mean([a.fit.best_val_loss for a in group]))})


def rank_strategies(arms: list[ArmResult]) -> list[str]:
    """Strategy names, best first by ``arm_score`` on validation (a tie keeps the config's order)."""
    names = list(dict.fromkeys(a.strategy for a in arms))
    return sorted(names, key=lambda n: arm_score([a for a in arms if a.strategy == n]), reverse=True)


def pick_best(arms: list[ArmResult]) -> ArmResult:
    """The best strategy's best seed, both by ``arm_score`` (validation only)."""
    best_name = rank_strategies(arms)[0]
    return max((a for a in arms if a.strategy == best_name), key=lambda a: arm_score([a]))
