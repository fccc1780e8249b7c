"""Training-time random augmentations, by name from the config: kept apart from the deterministic
preprocessing in ``transforms.py`` because they run after the cache and never reach it."""

from __future__ import annotations

from typing import Any

from monai.transforms import Transform

from medtl.errors import ConfigError


def build_augmentations(specs: list[dict[str, Any]], keys: tuple[str, ...] = ("image",)) -> list[Transform]:
    """MONAI random transforms by name from the config, e.g. ``{name: RandFlipd, prob: 0.5, spatial_axis: 1}``."""
    import monai.transforms as mt

    out = []
    for i, raw in enumerate(specs):
        kw = dict(raw)
        name = str(kw.pop("name", ""))
        cls = getattr(mt, name, None)
        if cls is None or not isinstance(cls, type) or not name.startswith("Rand"):
            raise ConfigError(f"train.augment[{i}]", f"'{name}' is not a MONAI random transform (e.g. RandFlipd, RandAffined)")
        if not name.endswith("d"):
            raise ConfigError(f"train.augment[{i}]", f"use the dictionary form '{name}d'")
        try:
            out.append(cls(keys=list(keys), **kw))
        except TypeError as e:
            raise ConfigError(f"train.augment[{i}]", f"{name}: {e}") from None
    return out
