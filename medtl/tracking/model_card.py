"""A model card (Mitchell et al., 2019) in markdown: what the model is for, what it saw, how well it did.

Written for each logged model from its comparison: intended use, data (counts only, never a path or
a patient), per-domain test metrics with their intervals, and the limitations a reader must know.
"""

from __future__ import annotations

import math
from typing import Any

from medtl.metrics.classification import METRICS

SHOWN = ("auc", "acc", "balanced_acc", "sensitivity", "specificity", "f1", "ece")
# what an array must be (enforced by medtl.tracking.serving.check_array); pixel values carry no units
ARRAY_RULES = (
    "Pixel values carry no units, so an array (an `image` cell) must say what it holds: any array that is not "
    "`uint8` needs `modality` (the DICOM code: CT, MR, CR, ...) and `photometric` (MONOCHROME2, or RGB for colour); "
    "a CT array must be in Hounsfield units and say `units: HU` (stored values need RescaleSlope/RescaleIntercept "
    "first). MONOCHROME1 arrays are refused (invert them first). A `uint8` array is read as a display image, as its "
    "PNG would be. An array that does not say is refused, never guessed; sending the file itself is simplest."
)


def _ci(metrics: dict[str, float], name: str, suffix: str) -> str:
    v = metrics.get(f"test_{name}{suffix}", math.nan)
    lo, hi = metrics.get(f"test_{name}_ci_low{suffix}", math.nan), metrics.get(f"test_{name}_ci_high{suffix}", math.nan)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else f"{v:.3f}"


def performance_table(metrics: dict[str, float], domains: list[str]) -> str:
    """Markdown table: overall and one row per domain, each metric with its 95% interval."""
    names = [n for n in SHOWN if n in METRICS]
    rows = [("all", "")] + ([(d, f".{d}") for d in domains] if len(domains) > 1 else [])
    lines = ["| domain | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for label, suffix in rows:
        n = metrics.get(f"test_n{suffix}", math.nan)
        lines.append(f"| {label} | {int(n) if math.isfinite(n) else 'n/a'} | " + " | ".join(_ci(metrics, m, suffix) for m in names) + " |")
    return "\n".join(lines)


def _counts(data: Any) -> str:
    lines = ["| split | scans | " + " | ".join(data.classes) + " | domains |", "|---|---|" + "---|" * len(data.classes) + "---|"]
    for split, items in data.splits.items():
        per_class = [sum(1 for it in items if it["label"] == i) for i in range(len(data.classes))]
        per_domain = {}
        for it in items:
            per_domain[it["domain"]] = per_domain.get(it["domain"], 0) + 1
        doms = ", ".join(f"{d}: {n}" for d, n in sorted(per_domain.items()))
        lines.append(f"| {split} | {len(items)} | " + " | ".join(map(str, per_class)) + f" | {doms} |")
    return "\n".join(lines)


def _selected(arm: Any) -> str:
    """How the weights were chosen (an ensemble: its members), and the test-time flips the model applies."""
    build = getattr(arm, "build", None) or {}
    flips = f"; test-time flips {build['tta']} (probabilities averaged with the unflipped image's)" if build.get("tta") else ""
    if "members" in build:
        members = ", ".join(f"`{m['strategy']}` seed {m['seed']}" + (f" (flips {m['tta']})" if m.get("tta") else "")
                            for m in build["members"])
        return f"- Ensemble of {len(build['members'])} chosen on validation (mean probability): {members}; validation AUC {arm.val_auc:.3f}"
    return f"- Selected at epoch {arm.fit.best_epoch + 1} by validation AUC {arm.val_auc:.3f}{flips}"


def model_card(arm: Any, comparison: Any, tags: dict[str, str], run_id: str | None = None) -> str:
    """The card for one arm's model, from its comparison (config, data, metrics, provenance tags)."""
    cfg, data, spec = comparison.config, comparison.data, arm.model.spec
    domains = sorted(set(arm.test_items["domain"])) if len(arm.test_items) else data.domains()
    pp = cfg.preprocess
    window = pp.window if isinstance(pp.window, str) else f"level {pp.window.level}, width {pp.window.width}"
    n_test = len(arm.test_labels)
    per_domain_n = ", ".join(f"{d}: {int(arm.metrics.get(f'test_n.{d}', 0))}" for d in domains)
    small = [d for d in domains if arm.metrics.get(f"test_n.{d}", n_test) < 100] if len(domains) > 1 else []
    limits = [
        "Research use only. Not a medical device; not validated for diagnosis, triage or any clinical decision.",
        f"Evaluated on {n_test} test scans"
        + (f" ({per_domain_n})" if len(domains) > 1 else "")
        + "; intervals are 95% percentile bootstrap "
        + ("over patients" if cfg.data.manifest is not None else "over scans")
        + f" ({cfg.train.bootstrap} resamples). Small sets give wide intervals: read the interval, not the point.",
        (f"Trained and selected on {', '.join(cfg.data.source_domains)} only; "
         f"{', '.join(d for d in data.domains() if d not in cfg.data.source_domains) or 'no other domain'} appear(s) only in the test set. "
         if cfg.data.source_domains else f"Only these domains were seen: {', '.join(data.domains())}. ")
        + "Other sites, scanners, protocols, populations or reconstruction kernels may shift performance without "
        "warning; measure before use (`medtl evaluate`).",
        f"Each scan is reduced to one 2D input ({pp.slice_rule} slice rule, window {window} where it applies, "
        f"{spec.size}x{spec.size} pixels); findings outside that plane are invisible to the model.",
        f"Probabilities come from a softmax; calibration on the test set: ECE {arm.metrics.get('test_ece', math.nan):.3f} "
        "(see the calibration plot). Binary decisions use a 0.5 threshold (MedMNIST's ACC).",
        "Per-domain AUC is undefined (n/a) where a domain's test set holds a single class.",
    ]
    if small:
        limits.append(f"Fewer than 100 test scans in: {', '.join(small)}.")
    if data.notes:
        limits.append("Data notes: " + "; ".join(data.notes) + ".")
    lines = [
        f"# Model card: {cfg.tracking.model_name} ({arm.strategy}, seed {arm.seed})",
        "",
        "## Intended use",
        f"Classifies a medical image into one of: {', '.join(data.classes)}. Input: a DICOM file, a DICOM series folder, "
        "a NIfTI volume, a PNG/JPEG image (by path, or its bytes base64 in a `content` column), or an array that "
        "says what it holds; the model applies its own preprocessing (below) and returns one probability per "
        "class. Intended for research on transfer learning and domain shift by people who can judge the "
        "limitations below.",
        "",
        "## Input arrays",
        ARRAY_RULES,
        "",
        "## Model",
        f"- Backbone: `{arm.build.get('backbone') or arm.model.backbone.name}`, pretrained weights `{arm.weights_id}` (sha256 `{arm.weights_sha256 or 'random init'}`)",
        f"- Transfer strategy: `{arm.strategy}` (kind `{arm.kind}`"
        + (f", head `{arm.build['head']}`" if arm.build.get("head") else "") + ")",
        f"- Input: {spec.channels} x {spec.size} x {spec.size}, mean {list(spec.mean)}, std {list(spec.std)}, "
        f"{spec.interpolation} resize ({spec.source})",
        f"- Preprocessing: intensity `{pp.intensity}`, window `{window}`, slice rule `{pp.slice_rule}`"
        + (f", modality assumed `{pp.assume_modality}` when a file does not say" if pp.assume_modality else ""),
        _selected(arm),
        "",
        "## Data",
        f"- Source: {'curated manifest' if cfg.data.manifest is not None else 'MedMNIST npz'}, "
        f"sha256 `{tags.get('medtl.manifest_sha256', 'n/a')}`; data fingerprint `{data.fingerprint[:16]}`",
        f"- Classes: {', '.join(data.classes)}; domains: {', '.join(data.domains())}"
        + (f"; trained on source domains {cfg.data.source_domains}" if cfg.data.source_domains else ""),
        "",
        _counts(data),
        "",
        "## Performance (test set, 95% bootstrap intervals)",
        "",
        performance_table(arm.metrics, domains),
        "",
        "## Limitations",
        *[f"- {x}" for x in limits],
        "",
        "## Provenance",
        f"- medtl {tags.get('medtl.version', '?')}, git commit `{tags.get('medtl.git_commit', '?')}`"
        + (" (uncommitted changes)" if tags.get("medtl.git_dirty") == "true" else ""),
        f"- Comparison `{cfg.name}`, MLflow run `{run_id or 'n/a'}`",
        "",
    ]
    return "\n".join(lines)
