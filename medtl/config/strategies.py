"""One validated model per strategy kind, joined as a discriminated union on ``kind``.

A setting of another kind is rejected by the type; ``{name: full}`` without ``kind`` means kind full.
A new kind adds its model here and its home under ``medtl/training/strategies/``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, TypeAdapter, model_validator

from medtl.config.sections import _Strict

KIND_HELP = "what the arm trains (its strategy kind); default: the name, when the name is a kind"


class _Strategy(_Strict):
    """What every arm has: a name (``kind`` defaults to it), its epochs and base rate."""

    name: str = Field(description="the arm's name (runs, tables, --set strategies.<name>.<key>)")
    epochs: int | None = Field(default=None, ge=1, description="this arm's epochs; null: train.epochs")
    lr: float | None = Field(default=None, gt=0, description="this arm's learning rate; null: train.lr (frozen: train.head_lr)")
    tta: list[Literal["hflip", "vflip"]] = Field(
        default_factory=list, description="test-time flips: validation (hence every selection), test and the served model "
        "average the probabilities of the image and each flipped copy; hflip (left-right) is wrong for lateralised labels "
        "(OrganAMNIST's left/right kidney, lung, femur: use vflip or none); []: off")


CONCAT = "concat"  # the frozen arm's ``layer`` that reads every layer group's pooled features, concatenated


class FrozenConfig(_Strategy):
    """A head on features cached from the frozen backbone (``medtl.training.strategies.frozen``)."""

    kind: Literal["frozen"] = Field("frozen", description=KIND_HELP)
    head: Literal["linear", "mlp", "logreg"] = Field(
        "linear", description="the head on the frozen features: linear or mlp (trained by the loop), or logreg (scikit-learn's "
                              "logistic regression on standardised features, C chosen by cross-validation on the training "
                              "split; served as a linear head)")
    layer: str | list[str] | None = Field(None, description="what the head reads: one layer group's pooled output, a list of "
                                                            "groups (concatenated), or concat (every group); null: the last")
    layers: list[str | list[str]] | Literal["all"] | None = Field(
        None, description="a layer sweep: a head per choice (each as layer reads it; all: every single group), the best "
                          "on validation AUC is kept")
    logreg_cs: int = Field(default=10, ge=1, description="head logreg: values of C tried, log-spaced over 1e-4..1e4")
    logreg_folds: int = Field(default=5, ge=2, description="head logreg: stratified folds (patient-level) of the training "
                                                           "split that choose C")
    logreg_scoring: Literal["auc", "log_loss"] = Field("auc", description="head logreg: what the folds score C by: auc "
                                                                          "(as arms are selected; one-vs-rest when multi-class) "
                                                                          "or log_loss")

    @model_validator(mode="after")
    def _one_layer_rule(self) -> FrozenConfig:
        if self.layer is not None and self.layers is not None:
            raise ValueError(f"strategy '{self.name}': give 'layer' or 'layers' (a sweep), not both")
        choices = [self.layer] if self.layers is None or self.layers == "all" else list(self.layers)
        if any(isinstance(c, list) and not c for c in choices) or self.layers == []:
            raise ValueError(f"strategy '{self.name}': an empty list of layer groups")
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
    probe_epochs: int = Field(default=0, ge=0, description="0: a random head, as the methods' papers start; n: the head first "
                              "fitted for n epochs on cached ImageNet features (LP-FT's probe), then adaptation from it")
    ft_lr_scale: float = Field(default=1.0, gt=0, description="the adaptation phase's learning rate = lr * this "
                               "(with a probe, LP-FT's 0.1 keeps the probed features)")


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


class EnsembleConfig(_Strict):
    """Trains nothing: averages the probabilities of the ``top_k`` arms ranked on validation, every seed of each
    (``medtl.experiment.ensemble``); tracked, compared and registrable like any arm."""

    name: str = Field(description="the arm's name (runs, tables, --set strategies.<name>.<key>)")
    kind: Literal["ensemble"] = Field("ensemble", description=KIND_HELP)
    top_k: int = Field(default=3, ge=1, description="how many arms join, the best by mean validation AUC over seeds (as the "
                                                    "best arm is picked); every seed of each joins")
    members: list[str] | None = Field(None, description="the arms it may choose from (names of trained strategies); null: all")


# One model per kind; a new kind adds its model here and its home under medtl/training/strategies/
# (the ensemble's is medtl/experiment/ensemble.py: it trains nothing, it averages trained arms).
TRAINED_MODELS: tuple[type[_Strategy], ...] = (FrozenConfig, ProgressiveConfig, FullConfig, LpFtConfig, SurgicalConfig,
                                               ScratchConfig, DannConfig, CoralConfig, MccConfig, FewShotConfig)
TRAINED_KINDS: tuple[str, ...] = tuple(m.model_fields["kind"].default for m in TRAINED_MODELS)
STRATEGY_MODELS: tuple[type[_Strict], ...] = (*TRAINED_MODELS, EnsembleConfig)
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
