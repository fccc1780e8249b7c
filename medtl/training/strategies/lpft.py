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

    def prepare(self, arm: Arm, model: TransferModel) -> FitResult:
        return linear_probe(arm, model, self.config.probe_epochs)


def linear_probe(arm: Arm, model: TransferModel, epochs: int) -> FitResult:
    """The probe of LP-FT: ``model``'s head fitted on the last group's cached ImageNet features at the head
    rate (the ``frozen`` arm's training), so fine-tuning starts from a head that already fits; its curves are
    ``Trained.probe``. Adaptation kinds with ``probe_epochs`` start the same way. In a refit (cross-validation
    chose the fine-tuning epochs) the whole probe runs and its end is kept."""
    feats = {sp: arm.data.features_for(arm.built, arm.seed, sp) for sp in ("train", "val")}
    schedule = head_only((HEAD,), epochs, arm.train.head_lr, arm.train.schedule)
    opts = arm.opts if arm.opts.refit_epochs is None else replace(arm.opts, refit_epochs=epochs)
    return frozen.fit_head(model.head, feats, arm.built.backbone.group_names[-1], schedule, opts,
                           arm.data.checkpointer(arm.folder / "probe"), None, arm.train.batch_size)
