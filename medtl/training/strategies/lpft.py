"""``lp-ft`` (Kumar et al. 2022): a linear probe on cached features, then full fine-tuning from that head.

The probe is the ``frozen`` arm's head training (same cache, same loop, ``probe_epochs`` at the
head rate); fine-tuning then starts from the probe's head at ``lr * ft_lr_scale``, so the features
are not torn up by a random head's first gradients.
"""

from __future__ import annotations

from dataclasses import replace

from medtl.config import LpFtConfig, TrainConfig
from medtl.models.transfer import TransferModel
from medtl.training.loop import FitResult
from medtl.training.schedule import HEAD, Schedule, all_at, head_only
from medtl.training.strategies import frozen
from medtl.training.strategies.base import Arm, register
from medtl.training.strategies.finetune import FineTuning


@register
class LpFt(FineTuning):
    kind = "lp-ft"
    config: LpFtConfig

    def schedule(self, groups: tuple[str, ...], train: TrainConfig) -> Schedule:
        c = self.config
        return all_at(groups, self.epochs(train), self.lr(train) * c.ft_lr_scale, train.schedule, c.warmup_epochs, c.bn_stats)

    def probe_schedule(self, train: TrainConfig) -> Schedule:
        return head_only((HEAD,), self.config.probe_epochs, train.head_lr, train.schedule)

    def prepare(self, arm: Arm, model: TransferModel) -> FitResult:
        """The linear probe, on the last group's cached features; its curves are ``Trained.probe``."""
        feats = {sp: arm.data.features_for(arm.built, arm.seed, sp) for sp in ("train", "val")}
        # a refit (cross-validation chose the fine-tuning epochs) runs the whole probe and keeps its end
        opts = arm.opts if arm.opts.refit_epochs is None else replace(arm.opts, refit_epochs=self.config.probe_epochs)
        return frozen.fit_head(model.head, feats, arm.built.backbone.group_names[-1], self.probe_schedule(arm.train), opts,
                               arm.data.checkpointer(arm.folder / "probe"), None, arm.train.batch_size)
