"""The config's sections other than the strategies: data, preprocessing, backbone, training, tracking,
shift analysis and selection. Every model forbids unknown keys (INTERFACE.md), so a typo never
silently falls back to a default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
    """How arms are chosen: on the validation split (holdout) or by k-fold cross-validation on train+val
    (``medtl.experiment.crossval``); and label-free selection for a target site (``medtl.experiment.selection``)."""

    method: Literal["holdout", "cv"] = Field(
        "holdout", description="holdout: every arm trains on train, is chosen on val; cv: train and val are pooled and cut "
                               "into patient-level stratified folds, every arm trains once per fold, and the arm and its "
                               "epoch count are chosen by the mean validation AUC over folds (reported ± std). For small "
                               "datasets, where one validation split makes the choice noise. Time: k folds cost k times each "
                               "arm's training, and refit one training more (k + 1)")
    folds: int = Field(default=5, ge=2, le=20, description="cv: the number of folds (patients of train+val, seeded by the arm's seed)")
    then: Literal["refit", "ensemble"] = Field(
        "refit", description="cv: refit (the chosen settings trained once more on all of train+val for the chosen epoch "
                             "count; the model tested and registered) or ensemble (the fold models' probabilities averaged "
                             "on test; the arm's model holds every fold model, logged and registered whole)")
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


class MixupConfig(_Strict):
    """Batches of images mixed with their neighbours' (torchvision's MixUp / CutMix), targets mixed alike."""

    alpha: float = Field(default=0.2, gt=0, description="the mixing weight's Beta(alpha, alpha); small: mostly one image "
                                                        "(Zhang et al. 2018 use 0.1-0.4 on ImageNet)")
    prob: float = Field(default=1.0, ge=0, le=1, description="the chance a training batch is mixed")
    mode: Literal["mixup", "cutmix", "either"] = Field("mixup", description="mixup (images blended), cutmix (a box pasted "
                                                                             "in), either (one of the two per batch)")


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
    label_smoothing: float = Field(default=0.0, ge=0, lt=1, description="targets' label smoothing in the training loss "
                                   "(torch's CrossEntropyLoss); validation loss and selection stay on the plain labels")
    mixup: MixupConfig | None = Field(None, description="mix training batches (fine-tuning arms; heads on cached features "
                                                        "are not mixed); see train.mixup.*; null: off")
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
