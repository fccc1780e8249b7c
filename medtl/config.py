"""Experiment configuration: one validated tree, read from YAML, with ``--set`` overrides.

Unknown keys are errors (INTERFACE.md), so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medtl.errors import ConfigError

StrategyKind = Literal["frozen", "progressive", "full", "lp-ft", "surgical", "scratch", "dann", "coral", "mcc", "few-shot"]
# kinds that train with the target sites' unlabelled scans (medtl.training.objectives)
ADAPT_KINDS = ("dann", "coral", "mcc")


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
    """Label-free model selection (``medtl.selection``): on when there are unlabelled target scans."""

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


class StrategyConfig(_Strict):
    """One arm of the comparison. ``kind`` defaults to ``name``; see ``medtl.training.strategies``."""

    name: str
    kind: StrategyKind | None = None
    epochs: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    warmup_epochs: float = Field(default=0.5, ge=0)  # linear warm-up of each group from its unfreeze
    # frozen
    head: Literal["linear", "mlp"] = "linear"
    layer: str | None = None  # which layer group's pooled output feeds the head (default: the last)
    layers: list[str] | Literal["all"] | None = None  # layer sweep: a head per group, best by val AUC
    # progressive
    unfreeze_every: int = Field(default=1, ge=1)  # epochs between unfreezes, top group first
    lr_factor: float = Field(default=2.6, gt=0)  # ULMFiT's divisor per group down from the head
    # which batch-norm layers update their running statistics on the new data: those of trainable
    # groups (the usual), none ("frozen": ImageNet statistics kept, affine weights still learn), or all
    bn_stats: Literal["trainable", "frozen", "all"] = "trainable"
    # surgical
    groups: list[str] = Field(default_factory=list)  # groups trained beside the head
    # lp-ft
    probe_epochs: int = Field(default=10, ge=1)  # linear-probe epochs on cached features
    ft_lr_scale: float = Field(default=0.1, gt=0)  # fine-tuning rate = lr * this
    # dann, coral, mcc: full fine-tuning plus a weighted adaptation loss on unlabelled target scans
    weight: float = Field(default=1.0, ge=0)  # the adaptation loss's weight (dann: TLlib's trade-off)
    # how the weight rises over training: ganin (2/(1+exp(-gamma p))-1; dann's default, on its gradient
    # reversal) or constant (coral's and mcc's default)
    weight_schedule: Literal["ganin", "constant"] | None = None
    gamma: float = Field(default=10.0, gt=0)  # Ganin's schedule steepness
    align_layer: str | None = None  # dann, coral: whose pooled features are aligned (default: the head's input)
    temperature: float = Field(default=2.5, gt=0)  # mcc: softmax temperature of the target predictions
    discriminator_hidden: int = Field(default=256, ge=1)  # dann: hidden width of the domain discriminator
    # few-shot: full fine-tuning on the source plus this many labelled target scans per class
    shots: int | None = Field(default=None, ge=1)
    shot_repeat: int = Field(default=1, ge=1)  # few-shot: times each shot appears per epoch

    @model_validator(mode="after")
    def _default_kind(self) -> StrategyConfig:
        kinds = StrategyKind.__args__  # type: ignore[attr-defined]
        if self.kind is None:
            if self.name not in kinds:
                raise ValueError(f"strategy '{self.name}' needs a kind (one of {', '.join(kinds)})")
            self.kind = self.name  # type: ignore[assignment]
        if self.kind == "surgical" and not self.groups:
            raise ValueError(f"strategy '{self.name}' is surgical and needs 'groups'")
        if self.kind == "few-shot" and self.shots is None:
            raise ValueError(f"strategy '{self.name}' is few-shot and needs 'shots' (labelled target scans per class)")
        if self.layer is not None and self.layers is not None:
            raise ValueError(f"strategy '{self.name}': give 'layer' or 'layers' (a sweep), not both")
        stray = sorted(f for f in self.model_fields_set if self.kind not in _APPLIES.get(f, kinds))
        if stray:
            raise ValueError(f"strategy '{self.name}' ({self.kind}): {', '.join(stray)} does not apply to this kind")
        if self.kind == "scratch" and self.bn_stats == "frozen":
            raise ValueError(f"strategy '{self.name}': a scratch network has no ImageNet statistics to keep (bn_stats)")
        return self


# settings that mean something for some kinds only: set on another kind they are a mistake, not a no-op
_APPLIES: dict[str, tuple[str, ...]] = {
    "head": ("frozen",), "layer": ("frozen",), "layers": ("frozen",),
    "warmup_epochs": ("progressive", "full", "lp-ft", "surgical", "scratch", *ADAPT_KINDS, "few-shot"),
    "unfreeze_every": ("progressive",), "lr_factor": ("progressive",),
    "bn_stats": ("progressive", "full", "lp-ft", "surgical", "scratch", *ADAPT_KINDS, "few-shot"), "groups": ("surgical",),
    "probe_epochs": ("lp-ft",), "ft_lr_scale": ("lp-ft",),
    "weight": ADAPT_KINDS, "weight_schedule": ADAPT_KINDS, "gamma": ADAPT_KINDS, "align_layer": ("dann", "coral"),
    "temperature": ("mcc",), "discriminator_hidden": ("dann",), "shots": ("few-shot",), "shot_repeat": ("few-shot",),
}


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
        default_factory=lambda: [StrategyConfig(name="frozen"), StrategyConfig(name="full")]
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    shift: ShiftConfig = Field(default_factory=ShiftConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)

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
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        subject = f"{source}: {where}" if not isinstance(source, dict) else where
        raise ConfigError(subject, msg) from None
    for attr in ("manifest", "npz", "cache_dir"):
        p = getattr(cfg.data, attr)
        if p is not None and not p.is_absolute():
            setattr(cfg.data, attr, (base / p).resolve())
    return cfg
