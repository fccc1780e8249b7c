"""``ensemble`` arms: the mean of the class probabilities of trained arms chosen on validation; they train nothing.

Members: the ``top_k`` strategies (among ``members``) ranked as the best arm is picked
(``rank_strategies``: mean validation AUC over seeds, ties to the lower validation loss), every seed
of each, with equal weight. Only validation probabilities choose them; the test split is only scored.

Why top-k rather than Caruana et al.'s (2004) greedy forward selection with replacement: that
hill-climb picks one member at a time by the ensemble's validation score, and with validation sets
of tens of scans (BreastMNIST: 78) it fits their noise (Caruana et al. bag the selection for that
reason). Ranking whole arms is one decision per arm, the very one that picks the best arm, so an
ensemble beats the best arm only if averaging helps, not because it was tuned to the same 78 scans
more often.

The ensemble's model (``medtl.models.averaging.Averaged``) holds every member with its own head,
layer and test-time flips; it is saved, tracked, served and registered like any arm's.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from medtl.config import EnsembleConfig, ExperimentConfig
from medtl.errors import ConfigError
from medtl.experiment.results import ArmResult, rank_strategies
from medtl.metrics.classification import auc_score
from medtl.metrics.summary import summarize
from medtl.models.averaging import Averaged
from medtl.training.loop import FitResult, probs_loss


def choose_members(e: EnsembleConfig, arms: list[ArmResult]) -> list[ArmResult]:
    """The arms that join ``e``: every seed of its ``top_k`` strategies by validation (never test)."""
    pool = [a for a in arms if e.members is None or a.strategy in e.members]
    missing = sorted({f"{a.strategy}-seed{a.seed}" for a in pool if a.val_probs is None})
    if missing:
        raise ConfigError(f"strategies.{e.name}", f"{', '.join(missing)} kept no validation probabilities (trained by an "
                                                  "older medtl): run the comparison again without --resume")
    chosen = set(rank_strategies(pool)[: e.top_k])
    return [a for a in pool if a.strategy in chosen]


def _same(arrays: list[np.ndarray], what: str) -> np.ndarray:
    if any(not np.array_equal(arrays[0], x) for x in arrays[1:]):
        raise RuntimeError(f"the ensemble's members were scored on different {what}")  # one comparison's splits: a bug
    return arrays[0]


def build_ensemble(e: EnsembleConfig, arms: list[ArmResult], cfg: ExperimentConfig,
                   class_weights: torch.Tensor | None = None) -> ArmResult:
    """The ensemble arm of ``e`` over the trained ``arms``: its probabilities, metrics (test intervals as every
    arm's) and model. ``class_weights``: the validation loss's, as the arms' (ties in ``pick_best``)."""
    start = time.perf_counter()
    members = choose_members(e, arms)
    seed = cfg.train.all_seeds[0]
    val_labels = _same([a.val_labels for a in members], "validation labels")  # type: ignore[misc]
    test_labels = _same([a.test_labels for a in members], "test labels")
    val = np.mean([a.val_probs for a in members], axis=0)
    test = np.mean([a.test_probs for a in members], axis=0)
    items = members[0].test_items
    metrics = summarize(test_labels, test, items["domain"].tolist(), items["patient"].tolist(), "test", cfg.train.bootstrap, seed)
    val_auc, val_loss = auc_score(val_labels, val), probs_loss(val, val_labels, class_weights)
    metrics["val_auc"] = val_auc
    metrics.update({f"ensemble.weight.{a.strategy}-seed{a.seed}": 1.0 / len(members) for a in members})
    fit = FitResult([{"epoch": 0.0, "val_loss": val_loss, "val_auc": val_auc}], 0, val_auc, False, None, val, val_labels)
    model = Averaged([a.model for a in members], [a.build.get("tta", []) for a in members]).eval()
    build = {"backbone": members[0].build["backbone"], "num_classes": members[0].build["num_classes"], "head": "ensemble",
             "layer": None, "spec": members[0].build["spec"],
             "members": [{**{k: v for k, v in a.build.items() if k != "num_classes"}, "tta": list(a.build.get("tta", [])),
                          "strategy": a.strategy, "seed": a.seed} for a in members]}
    ids = lambda attr: ",".join(dict.fromkeys(getattr(a, attr) or "random-init" for a in members))  # noqa: E731
    return ArmResult(e.name, e.kind, seed, model, fit, val_auc, metrics, test, test_labels, items, ids("weights_id"),
                     ids("weights_sha256"), time.perf_counter() - start, None, None, build, None,
                     val_probs=val, val_labels=val_labels)
