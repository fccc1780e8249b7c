"""Experiment configuration: one validated tree, read from YAML, with ``--set`` overrides.

Unknown keys are errors (INTERFACE.md), so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, field_validator,
                      model_validator)

from medtl.errors import ConfigError

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class CorruptionConfig(_Strict):
    """MedMNIST-C target domains made from the (clean) test split: one per corruption and severity."""

    dataset: str  # whose MedMNIST-C parameters (breastmnist, organamnist, ...)
    names: list[str] | Literal["all"] = "all"
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    # pixels the corruption is applied at (MedMNIST-C's parameters were set at 224); null: the images' own
    size: int | None = Field(default=224, gt=0)
    # unlabelled target training scans: corrupted copies of this many *training* images per target
    # domain (seeded draw), for arms that adapt to the target and label-free validators; 0: none
    train_per_domain: int = Field(default=0, ge=0)


class DataConfig(_Strict):
    """Where the scans come from and which domains are source and target."""

    manifest: Path | None = None
    npz: Path | None = None
    source_domains: list[str] | None = None
    target_domains: list[str] | None = None
    # cap on rows per split, taken with a seeded stratified draw (for CPU-sized runs); stated in runs
    subset: dict[Literal["train", "val", "test"], int] | None = None
    cache: Literal["memory", "disk", "none"] = "memory"
    cache_dir: Path | None = None
    # loader worker processes; "auto": one per core beyond the training one, at most 4 (none when
    # every item's final tensor is already cached in memory)
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    # MedMNIST-C corruptions of the test split as target domains (npz only)
    corruptions: CorruptionConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.manifest is None) == (self.npz is None):
            raise ValueError("give exactly one of data.manifest or data.npz")
        if self.corruptions is not None and self.npz is None:
            raise ValueError("data.corruptions needs data.npz (MedMNIST-C corrupts MedMNIST images)")
        return self


class ShiftConfig(_Strict):
    """Domain-shift analysis after each arm: on when the test split has target domains."""

    enabled: bool = True
    max_items: int = Field(default=200, ge=10)  # images per domain for feature distances, CKA, embeddings
    permutations: int = Field(default=200, ge=0)  # MMD permutation test
    adabn: bool = False  # also evaluate each arm after AdaBN on every target domain
    tent: bool = False  # ... and after TENT (entropy minimisation of the BN affine parameters) on each
    tent_epochs: int = Field(default=1, ge=1)  # TENT's passes over a target domain's scans
    tent_lr: float = Field(default=1e-3, gt=0)  # TENT's Adam rate (the paper's 1e-3)
    gradcam: int = Field(default=3, ge=0)  # Grad-CAM overlays: scans per side (source, target); 0: none


class SelectionConfig(_Strict):
    """Label-free model selection (``medtl.experiment.selection``): on when there are unlabelled target scans."""

    enabled: bool = True
    max_items: int = Field(default=500, ge=3)  # unlabelled target scans each arm is scored on (one seeded draw)


class WindowConfig(_Strict):
    level: float
    width: float = Field(gt=0)


class PreprocessConfig(_Strict):
    """How a scan becomes a 2D backbone input; the backbone's weights fix size, mean and std."""

    intensity: Literal["auto", "window", "percentile", "fixed"] = "auto"
    # for files that do not say (NIfTI, plain images): e.g. CT for NIfTI volumes stored in HU
    assume_modality: str | None = None
    window: str | WindowConfig = "soft_tissue"
    percentiles: tuple[float, float] = (0.5, 99.5)
    nonfinite: Literal["error", "fill"] = "error"
    slice_rule: Literal["middle", "index", "2.5d", "mip"] = "middle"
    slice_index: int | None = None
    slice_axis: Literal["auto", "axial", "coronal", "sagittal"] = "auto"
    volume_index: int = Field(default=0, ge=0)
    # None: the size from the backbone's weights metadata. Set only to trade accuracy for CPU time.
    size: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _index_rule(self) -> PreprocessConfig:
        if self.slice_rule == "index" and self.slice_index is None:
            raise ValueError("preprocess.slice_rule 'index' needs preprocess.slice_index")
        return self


class BackboneConfig(_Strict):
    name: str = "efficientnet_lite0"
    weights: Literal["imagenet", "none"] = "imagenet"


class _Strategy(_Strict):
    """What every arm has: a name (``kind`` defaults to it), its epochs and base rate."""

    name: str
    epochs: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)


class FrozenConfig(_Strategy):
    """A head on features cached from the frozen backbone (``medtl.training.strategies.frozen``)."""

    kind: Literal["frozen"] = "frozen"
    head: Literal["linear", "mlp"] = "linear"
    layer: str | None = None  # which layer group's pooled output feeds the head (default: the last)
    layers: list[str] | Literal["all"] | None = None  # layer sweep: a head per group, best by val AUC

    @model_validator(mode="after")
    def _one_layer_rule(self) -> FrozenConfig:
        if self.layer is not None and self.layers is not None:
            raise ValueError(f"strategy '{self.name}': give 'layer' or 'layers' (a sweep), not both")
        return self


class _FineTune(_Strategy):
    """Kinds that train backbone groups (``medtl.training.strategies.finetune``)."""

    warmup_epochs: float = Field(default=0.5, ge=0)  # linear warm-up of each group from its unfreeze
    # which batch-norm layers update their running statistics on the new data: those of trainable
    # groups (the usual), none ("frozen": ImageNet statistics kept, affine weights still learn), or all
    bn_stats: Literal["trainable", "frozen", "all"] = "trainable"


class FullConfig(_FineTune):
    kind: Literal["full"] = "full"


class ScratchConfig(_FineTune):
    kind: Literal["scratch"] = "scratch"

    @model_validator(mode="after")
    def _no_imagenet_stats(self) -> ScratchConfig:
        if self.bn_stats == "frozen":
            raise ValueError(f"strategy '{self.name}': a scratch network has no ImageNet statistics to keep (bn_stats)")
        return self


class ProgressiveConfig(_FineTune):
    kind: Literal["progressive"] = "progressive"
    unfreeze_every: int = Field(default=1, ge=1)  # epochs between unfreezes, top group first
    lr_factor: float = Field(default=2.6, gt=0)  # ULMFiT's divisor per group down from the head


class SurgicalConfig(_FineTune):
    kind: Literal["surgical"] = "surgical"
    groups: list[str] = Field(default_factory=list)  # groups trained beside the head

    @model_validator(mode="after")
    def _needs_groups(self) -> SurgicalConfig:
        if not self.groups:
            raise ValueError(f"strategy '{self.name}' is surgical and needs 'groups'")
        return self


class LpFtConfig(_FineTune):
    kind: Literal["lp-ft"] = "lp-ft"
    probe_epochs: int = Field(default=10, ge=1)  # linear-probe epochs on cached features
    ft_lr_scale: float = Field(default=0.1, gt=0)  # fine-tuning rate = lr * this


class _Adapting(_FineTune):
    """Full fine-tuning plus a weighted adaptation loss on the target's unlabelled scans
    (``medtl.training.strategies.adapt``)."""

    weight: float = Field(default=1.0, ge=0)  # the adaptation loss's weight (dann: TLlib's trade-off)
    # how the weight rises over training: ganin (2/(1+exp(-gamma p))-1, Ganin et al. 2016) or constant
    weight_schedule: Literal["ganin", "constant"] = "constant"
    gamma: float = Field(default=10.0, gt=0)  # steepness of Ganin's schedule


class DannConfig(_Adapting):
    """Domain-adversarial training: a discriminator on gradient-reversed features (Ganin et al. 2016)."""

    kind: Literal["dann"] = "dann"
    weight_schedule: Literal["ganin", "constant"] = "ganin"  # on the gradient reversal's coefficient
    align_layer: str | None = None  # whose pooled features the discriminator sees (default: the head's input)
    discriminator_hidden: int = Field(default=256, ge=1)  # hidden width of the domain discriminator


class CoralConfig(_Adapting):
    """Deep CORAL: source and target feature covariances aligned (Sun & Saenko 2016)."""

    kind: Literal["coral"] = "coral"
    align_layer: str | None = None  # whose pooled features are aligned (default: the head's input)


class MccConfig(_Adapting):
    """Minimum class confusion on the target's predictions (Jin et al. 2020)."""

    kind: Literal["mcc"] = "mcc"
    temperature: float = Field(default=2.5, gt=0)  # softmax temperature of the target predictions


class FewShotConfig(_FineTune):
    """Full fine-tuning on the source plus ``shots`` labelled target scans per class
    (``medtl.training.strategies.fewshot``): the upper baseline for a site that can label a few."""

    kind: Literal["few-shot"] = "few-shot"
    shots: int = Field(ge=1)
    shot_repeat: int = Field(default=1, ge=1)  # times each shot appears per epoch


# One model per kind; a new kind adds its model here and its home under medtl/training/strategies/.
STRATEGY_MODELS: tuple[type[_Strategy], ...] = (FrozenConfig, ProgressiveConfig, FullConfig, LpFtConfig, SurgicalConfig,
                                                ScratchConfig, DannConfig, CoralConfig, MccConfig, FewShotConfig)
STRATEGY_KINDS: tuple[str, ...] = tuple(m.model_fields["kind"].default for m in STRATEGY_MODELS)


def _kind_of(v: Any) -> str | None:
    """The union's tag: ``kind``, else ``name`` (``{name: full}`` means kind full)."""
    if isinstance(v, dict):
        return v.get("kind") or v.get("name")
    return getattr(v, "kind", None)


StrategyConfig = Annotated[Union[tuple(Annotated[m, Tag(m.model_fields["kind"].default)] for m in STRATEGY_MODELS)],  # type: ignore[valid-type]
                           Discriminator(_kind_of)]
"""One arm of the comparison: the config model of its kind (a setting of another kind is an error)."""


def strategy_config(tree: dict[str, Any] | None = None, **fields: Any) -> Any:
    """A validated strategy config from a mapping or keywords: ``strategy_config(name="lp-ft", probe_epochs=3)``."""
    return TypeAdapter(StrategyConfig).validate_python({**(tree or {}), **fields})


def _check_kinds(strategies: Any) -> Any:
    """Before the union: a name that is no kind needs an explicit ``kind`` (a plain message, not pydantic's)."""
    for s in strategies if isinstance(strategies, list) else []:
        if isinstance(s, dict) and _kind_of(s) not in STRATEGY_KINDS:
            given = s.get("kind")
            if given is None:
                raise ValueError(f"strategy '{s.get('name')}' needs a kind (one of {', '.join(STRATEGY_KINDS)})")
            raise ValueError(f"strategy '{s.get('name')}': unknown kind '{given}' (one of {', '.join(STRATEGY_KINDS)})")
    return strategies


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=32, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    head_lr: float = Field(default=1e-2, gt=0)  # heads on cached features learn faster
    weight_decay: float = Field(default=1e-4, ge=0)
    momentum: float = 0.9
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    seed: int = 0
    seeds: list[int] | None = None
    class_weighting: Literal["none", "balanced"] = "balanced"
    patience: int | None = Field(default=None, ge=1)  # early stopping on val AUC; None: off
    augment: list[dict[str, Any]] = Field(default_factory=list)  # MONAI random transforms by name
    device: str = "auto"
    amp: bool = True  # only on CUDA
    channels_last: bool = True  # NHWC memory layout for the backbone (CUDA and CPU)
    bootstrap: int = Field(default=1000, ge=0)

    @property
    def all_seeds(self) -> list[int]:
        return list(self.seeds) if self.seeds else [self.seed]


class TrackingConfig(_Strict):
    experiment: str = "medtl"
    model_name: str = "medtl-model"
    register_best: bool = True  # register the best strategy's model under model_name
    # CPU, memory, disk, network (and GPU with nvidia-ml-py) on every child run, sampled every 10 s
    # (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL changes the interval)
    system_metrics: bool = True


class ExperimentConfig(_Strict):
    name: str = "comparison"
    data: DataConfig
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    strategies: list[StrategyConfig] = Field(
        default_factory=lambda: [FrozenConfig(name="frozen"), FullConfig(name="full")]
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    shift: ShiftConfig = Field(default_factory=ShiftConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)

    _known_kinds = field_validator("strategies", mode="before")(_check_kinds)

    @field_validator("strategies")
    @classmethod
    def _unique_names(cls, v: list[StrategyConfig]) -> list[StrategyConfig]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"strategy names must be unique, got {names}")
        if not v:
            raise ValueError("at least one strategy is needed")
        return v

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
    return cfg
