"""Label-free model selection: which arm each validator would pick for the target site.

After each arm, every validator of ``medtl.metrics.validators`` scores its model from the labelled
*source* validation split and the target's *unlabelled* training scans (the ``target`` split; at
most ``selection.max_items`` of them, one seeded draw shared by every arm). Nothing here reads a
target label: the ``target`` split carries none. Scores are logged on the arm's run as
``select.<validator>``; per comparison, each validator's pick (mean score over seeds) is logged on
the parent run (tag ``medtl.select.<validator>``) and, because a benchmark does have target test
labels, how that pick ranks among the arms on the true pooled target AUC (``select.<validator>.rank``,
1: the best arm there). Candidates are the trained arms; test-time variants (``+adabn``, ``+tent``)
are shown in the shift table but not chosen among.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Subset

from medtl.metrics.validators import HIGHER_IS_BETTER, VALIDATORS, pick, validator_scores
from medtl.progress import track
from medtl.training.loop import autocast


@torch.no_grad()
def features_and_probs(model: Any, loader: Any, device: torch.device, amp: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head's input features, class probabilities and labels over a loader, in loader order."""
    model.to(device).eval()
    feats, probs, labels = [], [], []
    for batch in track(loader, "label-free validation", total=len(loader)):
        with autocast(device, amp):
            f = model.features(batch["image"].to(device))
            logits = model.head(f)
        feats.append(f.float().cpu())
        probs.append(torch.softmax(logits.float(), 1).cpu())
        labels.append(torch.as_tensor(batch["label"]))
    return torch.cat(feats).numpy(), torch.cat(probs).numpy(), torch.cat(labels).numpy()


class SelectionProbe:
    """The source-validation and unlabelled-target scans every arm is scored on (drawn once)."""

    def __init__(self, shared: Any, seed: int) -> None:
        self.shared = shared
        cfg = shared.cfg.selection
        target = shared.data.splits.get("target", [])
        self.active = bool(cfg.enabled and len(target) >= 3)
        rng = np.random.default_rng(seed)
        n = min(len(target), cfg.max_items)
        self.index = sorted(rng.choice(len(target), n, replace=False).tolist()) if self.active else []

    def _loader(self, split: str, index: list[int] | None = None) -> Any:
        from medtl.data.datasets import loader

        ds = self.shared.dataset(split)
        return loader(ds if index is None else Subset(ds, index), self.shared.cfg.train.batch_size, shuffle=False, num_workers=0)

    def score(self, arm: Any) -> dict[str, float]:
        """``select.<validator>`` for one trained arm (empty without unlabelled target scans)."""
        if not self.active:
            return {}
        device, amp = self.shared.device, self.shared.cfg.train.amp
        f_s, p_s, y_s = features_and_probs(arm.model, self._loader("val"), device, amp)
        f_t, p_t, _ = features_and_probs(arm.model, self._loader("target", self.index), device, amp)
        arm.model.cpu().eval()
        scores = validator_scores(arm.val_auc, p_t, f_s, p_s, y_s, f_t, seed=arm.seed)
        return {f"select.{k}": v for k, v in scores.items()}


def selection_table(arms: list[Any]) -> pd.DataFrame:
    """Per validator: the arm it picks (mean score over seeds), and where target test labels exist,
    that arm's pooled target AUC/ACC and its rank among the arms on the true target AUC."""
    names = list(dict.fromkeys(a.strategy for a in arms))
    mean = lambda n, k: float(np.mean([a.metrics.get(k, np.nan) for a in arms if a.strategy == n]))  # noqa: E731
    scores = {n: {v: mean(n, f"select.{v}") for v in VALIDATORS} for n in names}
    target = {n: mean(n, "target.test_auc") for n in names}
    order = sorted((n for n in names if np.isfinite(target[n])), key=lambda n: -target[n])
    rows = []
    for v in VALIDATORS:
        chosen = pick(scores, v)
        if chosen is None:
            continue
        rows.append({"validator": v, "picks": chosen, "score": scores[chosen][v],
                     "higher_is_better": HIGHER_IS_BETTER[v],
                     "target_auc": target[chosen], "target_acc": mean(chosen, "target.test_acc"),
                     "rank_on_target_auc": order.index(chosen) + 1 if chosen in order else float("nan"),
                     "of": len(order) or float("nan"),
                     "best_on_target": order[0] if order else None})
    return pd.DataFrame(rows)
