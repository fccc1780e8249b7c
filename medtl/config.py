"""Experiment configuration: one validated tree, read from YAML, with ``--set`` overrides.

Unknown keys are errors (INTERFACE.md), so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import warnings

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, field_validator,
                      model_validator)

from medtl.errors import ConfigError, MedtlWarning

KIND_HELP = "what the arm trains (its strategy kind); default: the name, when the name is a kind"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class CorruptionConfig(_Strict):
    """MedMNIST-C target domains made from the (clean) test split: one per corruption and severity."""

    dataset: str = Field(description="whose MedMNIST-C parameters to use (breastmnist, organamnist, ...)")
    names: list[str] | Literal["all"] = Field("all", description="which corruptions (MedMNIST-C names, e.g. pixelate); all: every one")
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5], description="severities 1-5; one target domain per corruption and severity")
    size: int | None = Field(default=224, gt=0, description="pixels the corruption is applied at (MedMNIST-C's parameters "
                                                            "were set at 224); null: the images' own size")
    train_per_domain: int = Field(default=0, ge=0, description="unlabelled target training scans: corrupted copies of this "
                                  "many TRAINING images per target domain (seeded draw; never a test image), for arms that "
                                  "adapt to the target (dann, coral, mcc, few-shot) and label-free validators; 0: none")


class DataConfig(_Strict):
    """Where the scans come from and which domains are source and target."""

    manifest: Path | None = Field(None, description="a curated manifest CSV (path, label, patient_id, domain, split); "
                                                    "a relative path is relative to the config file's folder. Give this or npz")
    npz: Path | None = Field(None, description="a MedMNIST .npz (official splits); relative to the config file's folder. "
                                               "Give this or manifest")
    source_domains: list[str] | None = Field(None, description="domains training and model selection see; null: every "
                                                               "domain not in target_domains")
    target_domains: list[str] | None = Field(None, description="domains held out as new sites, scored on the test split; "
                                                               "null: every domain of the test split not in source_domains")
    subset: dict[Literal["train", "val", "test"], int] | None = Field(
        None, description="cap on rows per split, a seeded stratified draw (CPU-sized runs), e.g. {train: 500}; stated in runs")
    cache: Literal["memory", "disk", "none"] = Field("memory", description="where prepared scans are kept between epochs: "
                                                                           "memory (MONAI CacheDataset), disk (PersistentDataset), none")
    cache_dir: Path | None = Field(None, description="folder of the disk cache and the feature cache; relative to the config "
                                                     "file's folder; null: .medtl/cache in the working folder")
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="loader worker processes; auto: one per core beyond the training one, at most 4 (none when "
                            "every item is already cached in memory)")
    corruptions: CorruptionConfig | None = Field(None, description="MedMNIST-C corruptions of the test split as target "
                                                                   "domains (npz only); see data.corruptions.*")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.manifest is None) == (self.npz is None):
            raise ValueError("give exactly one of data.manifest or data.npz")
        if self.corruptions is not None and self.npz is None:
            raise ValueError("data.corruptions needs data.npz (MedMNIST-C corrupts MedMNIST images)")
        return self


class ShiftConfig(_Strict):
    """Domain-shift analysis after each arm: on when the test split has target domains."""

    enabled: bool = Field(True, description="measure shift after each arm when the test split has target domains")
    max_items: int = Field(default=200, ge=10, description="images per domain for feature distances, CKA, embeddings")
    permutations: int = Field(default=200, ge=0, description="permutations of the MMD test (its p-value)")
    adabn: bool = Field(False, description="also evaluate each arm after AdaBN on every target domain")
    tent: bool = Field(False, description="also evaluate each arm after TENT (entropy minimisation of the batch-norm affine "
                       "parameters) on every target domain")
    tent_epochs: int = Field(default=1, ge=1, description="TENT's passes over a target domain's scans")
    tent_lr: float = Field(default=1e-3, gt=0, description="TENT's Adam learning rate (the paper's 1e-3)")
    gradcam: int = Field(default=3, ge=0, description="Grad-CAM overlays: scans per side (source, target); 0: none")


# CT window presets, (level, width) in HU: the usual radiology presets (Radiopaedia "Windowing (CT)").
# Here, beside the setting that names them, so a typo is refused when the config is read.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (60.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (32.0, 8.0),
}

class SelectionConfig(_Strict):
    """Label-free model selection (``medtl.experiment.selection``): on when there are unlabelled target scans."""

    enabled: bool = Field(True, description="score every arm with the label-free validators (source_val, snd, entropy, dev)")
    max_items: int = Field(default=500, ge=3, description="unlabelled target scans each arm is scored on (one seeded draw)")


class WindowConfig(_Strict):
    level: float = Field(description="window centre, HU")
    width: float = Field(gt=0, description="window width, HU")


class PreprocessConfig(_Strict):
    """How a scan becomes a 2D backbone input; the backbone's weights fix size, mean and std."""

    intensity: Literal["auto", "window", "percentile", "fixed"] = Field(
        "auto", description="how values become [0, 1]: auto (CT: window; MR and others: percentiles; 8-bit images as "
                            "they are), window, percentile, fixed (8-bit as is)")
    assume_modality: str | None = Field(None, description="modality for files that do not say (NIfTI, plain images), "
                                                          "e.g. CT for NIfTI volumes stored in HU")
    window: str | WindowConfig = Field("soft_tissue", description="CT window: a name (lung, mediastinum, soft_tissue, "
                                                                  "abdomen, liver, bone, brain, ...) or {level, width} in HU")
    percentiles: tuple[float, float] = Field((0.5, 99.5), description="low and high percentiles mapped to 0 and 1 "
                                                                      "(intensity percentile)")
    nonfinite: Literal["error", "fill"] = Field("error", description="NaN/inf voxels: error (refuse the scan) or fill")
    slice_rule: Literal["middle", "index", "2.5d", "mip"] = Field(
        "middle", description="how a volume becomes 2D: middle slice, slice_index, 2.5d (three neighbours as channels), "
                              "mip (maximum intensity projection)")
    slice_index: int | None = Field(None, description="the slice taken by slice_rule index")
    slice_axis: Literal["auto", "axial", "coronal", "sagittal"] = Field(
        "auto", description="the axis slices are cut along; auto: the acquisition's through-plane axis")
    volume_index: int = Field(default=0, ge=0, description="which volume of a 4D NIfTI")
    size: int | None = Field(default=None, gt=0, description="input pixels per side; null: the size from the backbone's "
                                                             "weights metadata. Set only to trade accuracy for CPU time")

    @field_validator("window")
    @classmethod
    def _known_window(cls, v: str | WindowConfig) -> str | WindowConfig:
        if isinstance(v, str) and v not in WINDOWS:
            raise ValueError(f"unknown window '{v}' (allowed: {', '.join(WINDOWS)}, or {{level: HU, width: HU}})")
        return v

    @field_validator("percentiles")
    @classmethod
    def _ordered_percentiles(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1] <= 100:
            raise ValueError(f"percentiles must be two numbers with 0 <= low < high <= 100, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _index_rule(self) -> PreprocessConfig:
        if self.slice_rule == "index" and self.slice_index is None:
            raise ValueError("preprocess.slice_rule 'index' needs preprocess.slice_index")
        return self


class BackboneConfig(_Strict):
    name: str = Field("efficientnet_lite0", description="a registered backbone (medtl compare --help lists them)")
    weights: Literal["imagenet", "none"] = Field("imagenet", description="imagenet (offline weights; never silently "
                                                                         "random) or none (random initialisation)")


class _Strategy(_Strict):
    """What every arm has: a name (``kind`` defaults to it), its epochs and base rate."""

    name: str = Field(description="the arm's name (runs, tables, --set strategies.<name>.<key>)")
    epochs: int | None = Field(default=None, ge=1, description="this arm's epochs; null: train.epochs")
    lr: float | None = Field(default=None, gt=0, description="this arm's learning rate; null: train.lr (frozen: train.head_lr)")


class FrozenConfig(_Strategy):
    """A head on features cached from the frozen backbone (``medtl.training.strategies.frozen``)."""

    kind: Literal["frozen"] = Field("frozen", description=KIND_HELP)
    head: Literal["linear", "mlp"] = Field("linear", description="the head on the frozen features: linear or mlp")
    layer: str | None = Field(None, description="which layer group's pooled output feeds the head; null: the last")
    layers: list[str] | Literal["all"] | None = Field(None, description="a layer sweep: a head per group (or all), the "
                                                                        "best on validation AUC is kept")

    @model_validator(mode="after")
    def _one_layer_rule(self) -> FrozenConfig:
        if self.layer is not None and self.layers is not None:
            raise ValueError(f"strategy '{self.name}': give 'layer' or 'layers' (a sweep), not both")
        return self


class _FineTune(_Strategy):
    """Kinds that train backbone groups (``medtl.training.strategies.finetune``)."""

    warmup_epochs: float = Field(default=0.5, ge=0, description="linear warm-up of each group from the epoch it is unfrozen")
    # which batch-norm layers update their running statistics on the new data: those of trainable
    # groups (the usual), none ("frozen": ImageNet statistics kept, affine weights still learn), or all
    bn_stats: Literal["trainable", "frozen", "all"] = Field(
        "trainable", description="whose batch-norm running statistics follow the new data: trainable groups', none "
                                 "(frozen: ImageNet's kept, affine weights still learn) or all")


class FullConfig(_FineTune):
    kind: Literal["full"] = Field("full", description=KIND_HELP)


class ScratchConfig(_FineTune):
    kind: Literal["scratch"] = Field("scratch", description=KIND_HELP)

    @model_validator(mode="after")
    def _no_imagenet_stats(self) -> ScratchConfig:
        if self.bn_stats == "frozen":
            raise ValueError(f"strategy '{self.name}': a scratch network has no ImageNet statistics to keep (bn_stats)")
        return self


class ProgressiveConfig(_FineTune):
    kind: Literal["progressive"] = Field("progressive", description=KIND_HELP)
    unfreeze_every: int = Field(default=1, ge=1, description="epochs between unfreezes, top group first")
    lr_factor: float = Field(default=2.6, gt=0, description="ULMFiT's divisor of the learning rate per group down from the head")


class SurgicalConfig(_FineTune):
    kind: Literal["surgical"] = Field("surgical", description=KIND_HELP)
    groups: list[str] = Field(default_factory=list, description="the layer groups trained beside the head")

    @model_validator(mode="after")
    def _needs_groups(self) -> SurgicalConfig:
        if not self.groups:
            raise ValueError(f"strategy '{self.name}' is surgical and needs 'groups'")
        return self


class LpFtConfig(_FineTune):
    kind: Literal["lp-ft"] = Field("lp-ft", description=KIND_HELP)
    probe_epochs: int = Field(default=10, ge=1, description="linear-probe epochs on cached features before fine-tuning")
    ft_lr_scale: float = Field(default=0.1, gt=0, description="fine-tuning learning rate = lr * this")


class _Adapting(_FineTune):
    """Full fine-tuning plus a weighted adaptation loss on the target's unlabelled scans
    (``medtl.training.strategies.adapt``)."""

    weight: float = Field(default=1.0, ge=0, description="the adaptation loss's weight (dann: TLlib's trade-off)")
    weight_schedule: Literal["ganin", "constant"] = Field(
        "constant", description="how the weight rises over training: ganin (2/(1+exp(-gamma p))-1, Ganin et al. 2016) or constant")
    gamma: float = Field(default=10.0, gt=0, description="steepness of Ganin's schedule")


class DannConfig(_Adapting):
    """Domain-adversarial training: a discriminator on gradient-reversed features (Ganin et al. 2016)."""

    kind: Literal["dann"] = Field("dann", description=KIND_HELP)
    weight_schedule: Literal["ganin", "constant"] = Field(
        "ganin", description="the gradient reversal's coefficient over training: ganin (rises from 0) or constant")
    align_layer: str | None = Field(None, description="whose pooled features the discriminator sees (a layer group); "
                                                      "null: the head's input")
    discriminator_hidden: int = Field(default=256, ge=1, description="hidden width of the domain discriminator")


class CoralConfig(_Adapting):
    """Deep CORAL: source and target feature covariances aligned (Sun & Saenko 2016)."""

    kind: Literal["coral"] = Field("coral", description=KIND_HELP)
    align_layer: str | None = Field(None, description="whose pooled features are aligned (a layer group); null: the head's input")


class MccConfig(_Adapting):
    """Minimum class confusion on the target's predictions (Jin et al. 2020)."""

    kind: Literal["mcc"] = Field("mcc", description=KIND_HELP)
    temperature: float = Field(default=2.5, gt=0, description="softmax temperature of the target predictions")


class FewShotConfig(_FineTune):
    """Full fine-tuning on the source plus ``shots`` labelled target scans per class
    (``medtl.training.strategies.fewshot``): the upper baseline for a site that can label a few."""

    kind: Literal["few-shot"] = Field("few-shot", description=KIND_HELP)
    shots: int = Field(ge=1, description="labelled target scans per class (drawn with the seed from the target's training scans)")
    shot_repeat: int = Field(default=1, ge=1, description="times each shot appears per epoch")


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
    epochs: int = Field(default=10, ge=1, description="epochs of every strategy that does not set its own epochs")
    epochs_scale: float = Field(default=1.0, gt=0, description="multiplies every epoch count (train.epochs and each "
                                "strategy's *epochs, at least 1) for a quick first try; applied when the config is "
                                "loaded, so the resolved config shows the epochs that run (medtl compare --quick: 0.2)")
    batch_size: int = Field(default=32, ge=1, description="the global batch (under torchrun split over processes)")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw or sgd (with momentum)")
    lr: float = Field(default=1e-3, gt=0, description="learning rate of fine-tuning strategies that do not set their own lr")
    head_lr: float = Field(default=1e-2, gt=0, description="learning rate of heads on cached features (frozen; the lp-ft "
                                                           "probe): they learn faster")
    weight_decay: float = Field(default=1e-4, ge=0, description="decoupled (adamw) or L2 (sgd) weight decay")
    momentum: float = Field(0.9, description="sgd momentum")
    schedule: Literal["cosine", "onecycle", "constant"] = Field("cosine", description="learning-rate schedule per arm")
    seed: int = Field(0, description="the seed of subsets, initialisation and batch order")
    seeds: list[int] | None = Field(None, description="several seeds: every strategy once per seed, mean ± std in the table")
    class_weighting: Literal["none", "balanced"] = Field("balanced", description="balanced: loss weights inverse to class "
                                                                                 "frequency in train")
    patience: int | None = Field(default=None, ge=1, description="early stopping after this many epochs without a better "
                                                                 "validation AUC; null: off (the best epoch is kept either way)")
    augment: list[dict[str, Any]] = Field(default_factory=list, description="MONAI random dictionary transforms by name, "
                                          "e.g. {name: RandFlipd, prob: 0.5, spatial_axis: 1}")
    device: str = Field("auto", description="auto (CUDA when there is one), cpu, cuda, cuda:1, ...")
    amp: bool = Field(True, description="bf16 autocast (CUDA only)")
    channels_last: bool = Field(True, description="NHWC memory layout for the backbone (CUDA and CPU)")
    bootstrap: int = Field(default=1000, ge=0, description="bootstrap resamples of the test metrics' 95% intervals")

    @property
    def all_seeds(self) -> list[int]:
        return list(self.seeds) if self.seeds else [self.seed]


class TrackingConfig(_Strict):
    experiment: str = Field("medtl", description="the MLflow experiment of the comparison's runs")
    model_name: str = Field("medtl-model", description="the registered model the best strategy is registered under")
    register_best: bool = Field(True, description="register the best strategy's model under model_name (alias "
                                                  "champion if it beats the current one, else challenger)")
    system_metrics: bool = Field(True, description="CPU, memory, disk, network (and GPU) on every child run, every 10 s "
                                                   "(MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL changes the interval)")


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
    selection: SelectionConfig = Field(default_factory=SelectionConfig, description="label-free model selection "
                                       "(validators scored on the target's unlabelled scans)")

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
        own = {s.name: getattr(s, field) for s in cfg.strategies if field in s.model_fields_set}
        if not own:
            continue
        theirs = ", ".join(f"{n} {v}" for n, v in own.items())
        hint = " or train.epochs_scale (medtl compare --quick) to shorten every arm" if field == "epochs" else ""
        if len(own) == len(cfg.strategies):
            out.append(f"--set {key} changes nothing: every strategy sets its own {field} ({theirs}); "
                       f"set strategies.<name>.{field}{hint}")
        else:
            out.append(f"--set {key} does not reach {', '.join(own)}, which set their own {field} ({theirs})")
    return out


def plan_arms(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """The arms a comparison runs, in order (seed by seed, strategy by strategy), with the settings each
    strategy sets itself; ``epochs`` falls back to ``train.epochs`` like the schedules do."""
    arms = []
    for seed in cfg.train.all_seeds:
        for s in cfg.strategies:
            settings = {k: getattr(s, k) for k in sorted(s.model_fields_set) if k not in ("name", "kind", "epochs")}
            arms.append({"arm": f"{s.name}-seed{seed}", "strategy": s.name, "kind": s.kind, "seed": seed,
                         "epochs": getattr(s, "epochs", None) or cfg.train.epochs, "settings": settings})
    return arms
