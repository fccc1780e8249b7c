"""The shift analysis of a comparison: per-domain results, feature distances, CKA, AdaBN, Grad-CAM.

Source domains are ``data.source_domains`` (else every domain of the training split); targets are
``data.target_domains`` (else every other domain of the test split). Training and model selection
see source data only (``medtl.data.datasets.load_data``). After each arm:

* feature distances (``medtl.metrics.shift``) between source and each target domain on the arm's
  penultimate features, on the same images for every model (``shift.max_items`` per domain, drawn
  once with the comparison's seed); the frozen ImageNet extractor's own distances once per comparison;
* linear CKA between the frozen extractor and the arm's backbone at every layer group, on the
  same probe images (source and target);
* the drop from source to each target, MedMNIST-C's BE and rBE for corruption domains;
* with ``shift.adabn``: every target domain again after AdaBN on its own unlabelled scans;
* with ``shift.tent``: likewise after TENT (entropy minimisation of the batch-norm affine
  parameters, ``medtl.training.tent``) on each target domain's own scans.

Metric names (MLflow, on the run that measured them): ``shift.<m>`` source vs all targets pooled,
``shift.<m>.<domain>`` per target (m: mmd, mmd_p, coral, frechet, proxy_a_distance), ``cka.<group>``,
``source.test_<metric>`` / ``target.test_<metric>`` (with ``_ci_low``/``_ci_high``),
``drop.test_<metric>[.<domain>]``, ``shift.error.<c>``, ``shift.be[.<c>]``, ``shift.rbe[.<c>]``, and
``adabn.`` / ``tent.`` before any of these for the adapted model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Subset

from medtl.data.corruptions import parse_domain
from medtl.experiment.shared import SharedData
from medtl.metrics.classification import classification_metrics
from medtl.metrics.robustness import robustness
from medtl.metrics.shift import linear_cka, shift_metrics
from medtl.metrics.summary import summarize
from medtl.models.transfer import concat_features
from medtl.training.adabn import adapt_bn
from medtl.training.feature_cache import extract_features
from medtl.training.loop import predict_probs
from medtl.training.tent import tent

SHIFT_NAMES = ("mmd", "mmd_p", "coral", "frechet", "proxy_a_distance")


def source_target(cfg: Any, data: Any) -> tuple[list[str], list[str]]:
    """The source domains and the target domains of a comparison (targets: only those in the test split)."""
    source = list(cfg.data.source_domains or sorted({it["domain"] for it in data.splits["train"]}))
    in_test = sorted({it["domain"] for it in data.splits["test"]})
    targets = [d for d in (cfg.data.target_domains or in_test) if d not in source and d in in_test]
    return source, targets


@dataclass
class ShiftReport:
    """What an arm's shift analysis found: metrics to log, and what the pictures need."""

    metrics: dict[str, float] = field(default_factory=dict)
    cka: dict[str, float] = field(default_factory=dict)
    embedding: dict[str, Any] = field(default_factory=dict)  # extractor (the frozen ImageNet one), model: (n, D); domain, label: (n,)
    gradcam: list[tuple[np.ndarray, np.ndarray, str]] = field(default_factory=list)  # image (H, W), cam (H, W), caption


class ShiftProbe:
    """The images every model is measured on, and the frozen extractor's features of them (built once)."""

    def __init__(self, shared: SharedData, seed: int) -> None:
        cfg, data = shared.cfg, shared.data
        self.shared = shared
        self.source, self.targets = source_target(cfg, data)
        test = data.splits["test"]
        self.domains = np.array([it["domain"] for it in test])
        self.labels = np.array([it["label"] for it in test])
        rng = np.random.default_rng(seed)
        pick: list[int] = []
        for d in [*self.source, *self.targets]:
            idx = np.flatnonzero(self.domains == d)
            pick += sorted(rng.choice(idx, min(len(idx), cfg.shift.max_items), replace=False).tolist())
        self.index = np.array(pick)
        self.extractor: dict[str, torch.Tensor] | None = None
        self.extractor_metrics: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return bool(self.targets) and self.shared.cfg.shift.enabled

    def _loader(self, index: np.ndarray) -> Any:
        from medtl.data.datasets import loader

        ds = Subset(self.shared.dataset("test"), index.tolist())
        return loader(ds, self.shared.cfg.train.batch_size, shuffle=False, num_workers=0)

    def features(self, backbone: Any) -> dict[str, torch.Tensor]:
        """Pooled features of every layer group on the probe images."""
        return extract_features(backbone, self._loader(self.index), self.shared.device, amp=False,
                                description="shift probe features")["features"]

    def distances(self, feats: torch.Tensor) -> dict[str, float]:
        """``shift.<m>`` (source vs targets pooled) and ``shift.<m>.<domain>`` on one feature matrix of the probe images."""
        cfg = self.shared.cfg.shift
        doms = self.domains[self.index]
        src = feats[np.isin(doms, self.source)].numpy()
        out: dict[str, float] = {}
        tgt_mask = np.isin(doms, self.targets)
        rng = np.random.default_rng(0)
        pooled = rng.choice(np.flatnonzero(tgt_mask), min(int(tgt_mask.sum()), cfg.max_items), replace=False)
        for k, v in shift_metrics(src, feats[pooled].numpy(), cfg.permutations, seed=0).items():
            out[f"shift.{k}"] = v
        for d in self.targets:
            for k, v in shift_metrics(src, feats[doms == d].numpy(), cfg.permutations, seed=0).items():
                out[f"shift.{k}.{d}"] = v
        return out

    def prepare(self, built: Any) -> None:
        """The frozen ImageNet extractor's features and distances (once per comparison)."""
        if self.extractor is None:
            self.extractor = self.features(built.backbone)
            last = built.backbone.group_names[-1]
            self.extractor_metrics = self.distances(self.extractor[last])

    def analyse(self, arm: Any, seed: int) -> ShiftReport:
        cfg = self.shared.cfg
        model = arm.model
        layer = model.read_layers  # what the head reads (several groups: concatenated)
        feats = self.features(model.backbone)
        rep = ShiftReport()
        rep.metrics.update(self.distances(concat_features(feats, layer)))
        doms = self.domains[self.index]
        assert self.extractor is not None
        rep.cka = {g: linear_cka(self.extractor[g], feats[g]) for g in feats}  # every probe image, source and target
        rep.metrics.update({f"cka.{g}": v for g, v in rep.cka.items()})
        rep.embedding = {"extractor": concat_features(self.extractor, layer).numpy(), "model": concat_features(feats, layer).numpy(), "domain": doms,
                         "label": self.labels[self.index]}
        rep.metrics.update(self.outcome(arm.test_labels, arm.test_probs, arm.test_items, "", seed))
        for prefix, method in self.test_time_methods().items():
            probs = np.array(arm.test_probs, copy=True)
            for d in self.targets:
                idx = np.flatnonzero(self.domains == d)
                adapted = method(model, self._loader(idx), self.shared.device)
                probs[idx], _ = predict_probs(adapted, self._loader(idx), self.shared.device, cfg.train.amp, f"{prefix} {d}")
            rep.metrics.update(self.outcome(arm.test_labels, probs, arm.test_items, f"{prefix}.", seed))
        if cfg.shift.gradcam:
            names = model.backbone.group_names  # of several groups read, the deepest's maps (the usual Grad-CAM layer)
            rep.gradcam = self.gradcam(model, max(layer, key=names.index), rep.metrics)
        model.cpu().eval()
        return rep

    def test_time_methods(self) -> dict[str, Any]:
        """Metric prefix -> ``(model, target batches, device) -> adapted copy``, as the config asks."""
        cfg = self.shared.cfg.shift
        methods: dict[str, Any] = {}
        if cfg.adabn:
            methods["adabn"] = adapt_bn
        if cfg.tent:
            methods["tent"] = lambda m, b, dev: tent(m, b, dev, epochs=cfg.tent_epochs, lr=cfg.tent_lr)
        return methods

    def outcome(self, labels: np.ndarray, probs: np.ndarray, items: pd.DataFrame, prefix: str, seed: int) -> dict[str, float]:
        """Source and target metrics with intervals, per-domain metrics, the drop, BE and rBE."""
        cfg = self.shared.cfg
        doms = items["domain"].to_numpy()
        keep = np.isin(doms, [*self.source, *self.targets])
        side = np.where(np.isin(doms, self.source), "source", "target")[keep]
        st = summarize(labels[keep], probs[keep], side.tolist(), items["patient"].to_numpy()[keep].tolist(), "test",
                       cfg.train.bootstrap, seed)
        out: dict[str, float] = {}
        for k, v in st.items():
            for part in ("source", "target"):
                if k.endswith(f".{part}"):
                    out[f"{prefix}{part}.{k.removesuffix('.' + part)}"] = v
        for name in ("auc", "acc", "balanced_acc"):
            s = out[f"{prefix}source.test_{name}"]
            out[f"{prefix}drop.test_{name}"] = s - out[f"{prefix}target.test_{name}"]
            for d in self.targets:
                mask = doms == d
                m = classification_metrics(labels[mask], probs[mask], [name])[name]
                if prefix:  # the unadapted model's per-domain metrics are summarize()'s test_<metric>.<domain>
                    out[f"{prefix}test_{name}.{d}"] = m
                out[f"{prefix}drop.test_{name}.{d}"] = s - m
                if name == "balanced_acc":
                    out[f"{prefix}shift.error.{d}"] = 1.0 - m
        errors = {d: out[f"{prefix}shift.error.{d}"] for d in self.targets}
        if any(parse_domain(d) for d in self.targets):
            dataset = cfg.data.corruptions.dataset if cfg.data.corruptions is not None else None
            clean = 1.0 - out[f"{prefix}source.test_balanced_acc"]
            out.update({f"{prefix}shift.{k}": v for k, v in robustness(errors, clean, dataset).items()})
        return out

    def gradcam(self, model: Any, layer: str, metrics: dict[str, float]) -> list[tuple[np.ndarray, np.ndarray, str]]:
        """Grad-CAM (MONAI) on a few source scans and as many of the most shifted target domain (largest MMD)."""
        import copy

        from monai.visualize import GradCAM

        n = self.shared.cfg.shift.gradcam
        worst = max(self.targets, key=lambda d: metrics.get(f"shift.mmd.{d}", 0.0))
        src = np.flatnonzero(np.isin(self.domains, self.source))[:n]
        tgt = np.flatnonzero(self.domains == worst)[:n]
        net = copy.deepcopy(model).cpu().eval()
        for p in net.parameters():
            p.requires_grad_(True)
        cam = GradCAM(nn_module=net, target_layers=f"backbone.stages.{layer}")
        ds = self.shared.dataset("test")
        out = []
        spec = self.shared.spec
        for i in [*src, *tgt]:
            x = ds[int(i)]["image"].unsqueeze(0).float()
            with torch.enable_grad():
                heat = cam(x.requires_grad_(True))[0, 0].detach().numpy()
            img = x[0, 0].detach().numpy() * spec.std[0] + spec.mean[0]
            out.append((img, heat, f"{self.domains[i]} (label {self.labels[i]})"))
        return out
