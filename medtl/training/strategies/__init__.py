"""One home per strategy kind, each owning its phases and extra losses; a registry by kind.

To add a kind: its config model in ``medtl.config`` (added to ``STRATEGY_MODELS``), and a module
here with a ``@register``ed ``Strategy`` subclass, imported below. Nothing else knows kinds.
"""

from medtl.training.strategies import coral, dann, fewshot, finetune, frozen, lpft, mcc  # noqa: F401  (each registers its kinds)
from medtl.training.strategies.base import (Arm, ArmData, Strategy, Trained, build_schedule, register, registered_kinds,
                                            strategy_for)

__all__ = ["Arm", "ArmData", "Strategy", "Trained", "build_schedule", "register", "registered_kinds", "strategy_for"]
