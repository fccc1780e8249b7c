"""Experiment configuration: one validated tree, read from YAML, with ``--set`` overrides.

Unknown keys are errors (INTERFACE.md), so a typo never silently falls back to a default. The
sections live in ``sections.py``, the per-kind strategy models in ``strategies.py``; this module
holds the whole tree, its loading and its overrides, and re-exports every model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from medtl.config.sections import (WINDOWS, BackboneConfig, CorruptionConfig, DataConfig,  # noqa: F401 - re-exported
                                   MixupConfig, PreprocessConfig, SelectionConfig, ShiftConfig, TrackingConfig, TrainConfig,
                                   WindowConfig, _Strict)
from medtl.config.strategies import (CONCAT, KIND_HELP, STRATEGY_KINDS, STRATEGY_MODELS, TRAINED_KINDS, CoralConfig,  # noqa: F401 - re-exported
                                     DannConfig, EnsembleConfig, FewShotConfig, FrozenConfig, FullConfig, LpFtConfig, MccConfig,
                                     ProgressiveConfig, ScratchConfig, StrategyConfig, SurgicalConfig, _check_kinds, _kind_of,
                                     strategy_config)
from medtl.errors import ConfigError, MedtlWarning


class ExperimentConfig(_Strict):
    name: str = Field("comparison", description="the comparison's name: the parent run's name and its checkpoint folder")
    data: DataConfig = Field(description="where the scans come from and which domains are source and target")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="how a scan becomes a 2D backbone input")
    backbone: BackboneConfig = Field(default_factory=BackboneConfig, description="the pretrained network")
    strategies: list[StrategyConfig] = Field(
        default_factory=lambda: [FrozenConfig(name="frozen"), FullConfig(name="full")],
        description="the arms compared, each {name, kind, ...its settings}; default: frozen and full",
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="settings shared by every arm")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow experiment and registered model")
    shift: ShiftConfig = Field(default_factory=ShiftConfig, description="domain-shift analysis of every arm")
    selection: SelectionConfig = Field(default_factory=SelectionConfig, description="how arms are chosen: holdout or "
                                       "k-fold cross-validation on train+val; label-free validators for a target site")

    _known_kinds = field_validator("strategies", mode="before")(_check_kinds)

    @field_validator("strategies")
    @classmethod
    def _unique_names(cls, v: list[StrategyConfig]) -> list[StrategyConfig]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"strategy names must be unique, got {names}")
        if not v:
            raise ValueError("at least one strategy is needed")
        trained = [s.name for s in v if not isinstance(s, EnsembleConfig)]
        if len(trained) < len(v) and not trained:
            raise ValueError("an ensemble needs trained strategies to average")
        for e in (s for s in v if isinstance(s, EnsembleConfig)):
            unknown = [m for m in e.members or [] if m not in trained]
            if unknown:
                raise ValueError(f"strategy '{e.name}': members {unknown} are not trained strategies ({', '.join(trained)})")
        return v

    @model_validator(mode="after")
    def _no_ensemble_of_cv_ensembles(self) -> ExperimentConfig:
        if self.selection.method == "cv" and self.selection.then == "ensemble" and self.ensembles:
            raise ValueError(f"strategy '{self.ensembles[0].name}': an ensemble arm of arms that are themselves fold "
                             "ensembles (selection.then: ensemble) is not supported; use selection.then: refit")
        return self

    @property
    def trained(self) -> list[StrategyConfig]:
        """The arms that train (every strategy but ensembles), in order."""
        return [s for s in self.strategies if not isinstance(s, EnsembleConfig)]

    @property
    def ensembles(self) -> list[EnsembleConfig]:
        """The arms that average trained arms' probabilities (``medtl.experiment.ensemble``), after them."""
        return [s for s in self.strategies if isinstance(s, EnsembleConfig)]

    def flat(self) -> dict[str, str]:
        """Dotted key -> value, as logged to MLflow params."""
        return flatten(self.model_dump(mode="json"))


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(tree, list) and tree and all(isinstance(x, dict) and "name" in x for x in tree):
        for x in tree:
            out.update(flatten({k: v for k, v in x.items() if k != "name"}, f"{prefix}{x['name']}."))
    else:
        out[prefix[:-1]] = str(tree)
    return out


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):  # strategies.<name>.field
            match = [s for s in node if isinstance(s, dict) and s.get("name") == part]
            if not match:
                raise ConfigError(f"--set {key}", f"no list entry named '{part}'")
            node = match[0]
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"--set {key}", f"'{'.'.join(parts[: i + 1])}' is not a section")
    node[parts[-1]] = value


_ANY_STRATEGY_FIELD = {f for m in STRATEGY_MODELS for f in m.model_fields}


def _named(tree: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in tree["strategies"] if isinstance(s, dict) and s.get("name") == name)


def _strategy_loc(tree: dict[str, Any], loc: list[Any]) -> list[Any]:
    """``strategies.<index>.<kind tag>.key`` -> ``strategies.<name>.key``, as ``--set`` spells it."""
    if len(loc) >= 2 and loc[0] == "strategies" and isinstance(loc[1], int):
        entry = tree["strategies"][loc[1]]
        name = entry.get("name", loc[1]) if isinstance(entry, dict) else loc[1]
        rest = loc[2:]
        if rest and rest[0] == _kind_of(entry):
            rest = rest[1:]
        return ["strategies", name, *rest]
    return loc


def load_config(
    source: str | Path | dict[str, Any], overrides: list[str] | None = None
) -> ExperimentConfig:
    """Read and validate a config; relative data paths resolve against the config's folder."""
    base = Path.cwd()
    if isinstance(source, dict):
        tree = yaml.safe_load(yaml.safe_dump(source))  # deep copy with YAML types
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(path, "config file not found")
        try:
            tree = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(path, f"not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(tree, dict):
            raise ConfigError(path, "a config must be a YAML mapping of sections")
        base = path.resolve().parent
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}", "expected key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    try:
        cfg = ExperimentConfig.model_validate(tree)
    except ValidationError as e:
        err = e.errors()[0]
        loc = _strategy_loc(tree, list(err["loc"]))
        where = ".".join(str(p) for p in loc) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            if loc[0] == "strategies" and len(loc) == 3 and loc[2] in _ANY_STRATEGY_FIELD:  # a setting of another kind
                msg = f"{loc[2]} does not apply to kind '{_kind_of(_named(tree, loc[1]))}'"
        subject = f"{source}: {where}" if not isinstance(source, dict) else where
        raise ConfigError(subject, msg) from None
    for attr in ("manifest", "npz", "cache_dir"):
        p = getattr(cfg.data, attr)
        if p is not None and not p.is_absolute():
            setattr(cfg.data, attr, (base / p).resolve())
    for message in shadowed_overrides(cfg, overrides or []):
        warnings.warn(message, MedtlWarning, stacklevel=2)
    return scale_epochs(cfg)


def _epoch_fields(model: BaseModel) -> dict[str, int]:
    """A model's whole-epoch counts (int fields named ``*epochs``; ``warmup_epochs`` is a fraction, kept)."""
    return {name: v for name in type(model).model_fields
            if name.endswith("epochs") and isinstance(v := getattr(model, name), int) and not isinstance(v, bool)}


def scale_epochs(cfg: ExperimentConfig) -> ExperimentConfig:
    """Apply ``train.epochs_scale`` to ``train.epochs`` and every strategy's epoch counts (at least 1 each).

    Done once, at load: the resolved config then shows the epochs that run and keeps ``epochs_scale: 1``,
    so a logged config reloads to the same run. Values are written past pydantic's set-field tracking,
    so a default scaled here still reads as a default.
    """
    factor = cfg.train.epochs_scale
    if factor == 1:
        return cfg
    for model in (cfg.train, *cfg.strategies):
        for name, v in _epoch_fields(model).items():
            model.__dict__[name] = max(1, round(v * factor))
    cfg.train.__dict__["epochs_scale"] = 1.0
    return cfg


def shadowed_overrides(cfg: ExperimentConfig, overrides: list[str]) -> list[str]:
    """``--set train.<key>=...`` that strategies setting their own ``<key>`` ignore: one message each.

    A shared default reaches only the arms that leave the key unset; when none does, the override
    changes nothing, which a first try at ``train.epochs=2`` should hear about.
    """
    out = []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        section, _, field = key.partition(".")
        if section != "train" or "." in field:
            continue
        own = {s.name: getattr(s, field) for s in cfg.trained if field in s.model_fields_set}
        if not own:
            continue
        theirs = ", ".join(f"{n} {v}" for n, v in own.items())
        hint = " or train.epochs_scale (medtl compare --quick) to shorten every arm" if field == "epochs" else ""
        if len(own) == len(cfg.trained):
            out.append(f"--set {key} changes nothing: every strategy sets its own {field} ({theirs}); "
                       f"set strategies.<name>.{field}{hint}")
        else:
            out.append(f"--set {key} does not reach {', '.join(own)}, which set their own {field} ({theirs})")
    return out


def plan_arms(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """The arms a comparison runs, in order (seed by seed, strategy by strategy), with the settings each
    strategy sets itself; ``epochs`` falls back to ``train.epochs`` like the schedules do."""
    def row(s: Any, seed: int, epochs: int) -> dict[str, Any]:
        settings = {k: getattr(s, k) for k in sorted(s.model_fields_set) if k not in ("name", "kind", "epochs")}
        return {"arm": f"{s.name}-seed{seed}", "strategy": s.name, "kind": s.kind, "seed": seed, "epochs": epochs,
                "settings": settings}

    arms = [row(s, seed, s.epochs or cfg.train.epochs) for seed in cfg.train.all_seeds for s in cfg.trained]
    return arms + [row(e, cfg.train.all_seeds[0], 0) for e in cfg.ensembles]  # after every seed; they train nothing
