"""``few-shot``: full fine-tuning on the source plus ``shots`` labelled target scans per class.

The practical upper baseline for a site that can label a handful: the shots are drawn (seeded) from
the target's training scans, each class alike, and join the source training split (each
``shot_repeat`` times per epoch). Validation stays on the source; the target's test scans stay unseen.
This is the one kind that reads target labels (``medtl.data.datasets.few_shot_items``).
"""

from __future__ import annotations

from medtl.config import FewShotConfig
from medtl.data.datasets import few_shot_items
from medtl.training.strategies.base import Arm, register
from medtl.training.strategies.finetune import Full


@register
class FewShot(Full):
    kind = "few-shot"
    config: FewShotConfig  # type: ignore[assignment]
    uses_target = True

    def train_split(self, arm: Arm) -> str:
        c = self.config
        return arm.data.extra_split(f"train+{c.shots}shots-x{c.shot_repeat}-seed{arm.seed}",
                                    lambda data: data.splits["train"] + few_shot_items(data, c.shots, arm.seed) * c.shot_repeat)
