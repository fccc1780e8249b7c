"""Test AUC and ACC of medtl's strategies on MedMNIST, next to the published MedMNIST v2 numbers.

Each dataset's config (``configs/<name>.yaml``: official splits, a stated training subset for
OrganAMNIST on CPU) runs through the Python API (``medtl.api.compare``, untracked) with every
strategy of the config, on efficientnet_lite0 (ImageNet weights that install offline) and on the
torchvision ResNets where their checkpoint is in ``$TORCH_HOME/hub/checkpoints``. The table gives
the input size the backbone was fed, test AUC and ACC with 95% bootstrap intervals, and minutes;
the target is the best pretrained strategy at or above the best published AUC and ACC, the whole
comparison within 60 minutes on 2 CPU cores.

``--cli`` first times the command a user runs (``python -m medtl compare <config>``, tracked in
a throwaway MLflow store) and records its wall time and printed table; the API pass then loads
the arms that run trained instead of training them again.

Ablation: each *lever* (``LEVERS`` below, or ``--lever NAME=KEY=VALUE,...``) is a set of config
overrides. The config runs with and without it on the same splits and seeds, and a row gives what
it changed in the arm selected on validation: validation AUC (what selection saw), test AUC and ACC,
with a 95% interval paired over the same test images. ``--npz PATH`` runs a config unchanged but
for its data path on another MedMNIST file, beside that dataset's published bar (``--published``).

    python benchmarks/bench_accuracy.py --cli           # full run; updates benchmarks/RESULTS.md
    python benchmarks/bench_accuracy.py --smoke         # seconds: 48 images at 32 px, 1 epoch
    python benchmarks/bench_accuracy.py --npz dermamnist.npz --datasets breastmnist   # another dataset, same config
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import MEDMNIST, RESULTS, header, load_average, markdown_table, write_section  # noqa: E402
from medtl import api  # noqa: E402
from medtl.experiment.results import ArmResult, Comparison, pick_best  # noqa: E402
from medtl.metrics.classification import paired_bootstrap_delta  # noqa: E402
from medtl.experiment.run import run_folder  # noqa: E402
from medtl.config import ExperimentConfig, load_config  # noqa: E402
from medtl.models.registry import get_backbone  # noqa: E402

SECTION, CLI_SECTION = "bench_accuracy", "bench_accuracy_cli"
CONFIGS = ROOT / "configs"
TARGET_MINUTES = 60.0
# MedMNIST v2 (Yang et al., Sci. Data 2023, Table 3; https://medmnist.com/v2), test AUC / ACC, trained
# from scratch for 100 epochs; the 224 px models saw the 28 px images upsampled. BreastMNIST and
# OrganAMNIST: as quoted in issue 18. The other rows were transcribed from public copies of the table
# (found with code search, 2026-12-05): ResNet-50 (224) for every dataset from
# habib-analyst/MedMNIST_v2_Reproducibility_Benchmark configs/benchmark-references.json ("source":
# medmnist.com/v2); PathMNIST, PneumoniaMNIST, RetinaMNIST all four ResNet rows and DermaMNIST
# ResNet-18 (28) from project READMEs that quote the paper's table. A row not found is left out, not
# guessed: BloodMNIST, OrganCMNIST, OrganSMNIST have their ResNet-50 (224) row only, DermaMNIST lacks
# ResNet-18 (224) and ResNet-50 (28). Check against the paper before quoting a gap to the third digit.
PUBLISHED: dict[str, list[tuple[str, int, float, float]]] = {
    "breastmnist": [("ResNet-18 (28)", 28, 0.901, 0.863), ("ResNet-18 (224)", 224, 0.891, 0.833),
                    ("ResNet-50 (224)", 224, 0.866, 0.842)],
    "organamnist": [("ResNet-18 (28)", 28, 0.997, 0.935), ("ResNet-18 (224)", 224, 0.998, 0.951),
                    ("ResNet-50 (224)", 224, 0.998, 0.947)],
    "pathmnist": [("ResNet-18 (28)", 28, 0.983, 0.907), ("ResNet-18 (224)", 224, 0.989, 0.909),
                  ("ResNet-50 (28)", 28, 0.990, 0.911), ("ResNet-50 (224)", 224, 0.989, 0.892)],
    "dermamnist": [("ResNet-18 (28)", 28, 0.917, 0.735), ("ResNet-50 (224)", 224, 0.912, 0.731)],
    "retinamnist": [("ResNet-18 (28)", 28, 0.717, 0.524), ("ResNet-18 (224)", 224, 0.710, 0.493),
                    ("ResNet-50 (28)", 28, 0.726, 0.528), ("ResNet-50 (224)", 224, 0.716, 0.511)],
    "pneumoniamnist": [("ResNet-18 (28)", 28, 0.944, 0.854), ("ResNet-18 (224)", 224, 0.956, 0.864),
                       ("ResNet-50 (28)", 28, 0.948, 0.854), ("ResNet-50 (224)", 224, 0.962, 0.884)],
    "bloodmnist": [("ResNet-50 (224)", 224, 0.997, 0.950)],
    "organcmnist": [("ResNet-50 (224)", 224, 0.993, 0.911)],
    "organsmnist": [("ResNet-50 (224)", 224, 0.975, 0.785)],
}
# MedMNIST+ (Doerrich et al., Sci. Rep. 2025), the best end-to-end model at 28 px (ImageNet weights,
# images zero-padded to 224, 100 epochs), test AUC / ACC as quoted in issue 18; other datasets not transcribed.
PUBLISHED_PLUS: dict[str, list[tuple[str, int, float, float]]] = {
    "breastmnist": [("AlexNet", 28, 0.891, 0.865)],
    "organamnist": [("VGG16", 28, 0.995, 0.932)],
}
# Levers for the ablation rows: name -> config overrides (``--set`` syntax) applied over the config as it
# is, turning a lever on (or, ``no_*``, off where the default config has it); ``strategies.*.KEY`` sets KEY
# on every trained strategy of the config. ``--lever NAME=KEY=VALUE,...`` adds or replaces one. The
# ``ensemble`` entry is an arm of its own: its row against the best single arm is its ablation.
LEVERS: dict[str, list[str]] = {
    "size": ["preprocess.size=224"],  # the weights' own input size instead of the config's CPU-sized one
    "no_augment": ["train.augment=[]"],  # the configs' augmentations off: what they add
    "no_tta": ["strategies.*.tta=[]"],  # test-time flips off
    "cv": ["selection.method=cv", "selection.folds=5"],  # arms chosen by 5-fold cv on train+val, then refit
    "logreg": ["strategies.frozen.head=logreg"],  # the frozen head a logistic regression with C by cv
    "label_smoothing": ["train.label_smoothing=0.1"],
    "mixup": ["train.mixup={alpha: 0.2}"],
}
TORCHVISION = ("resnet18", "resnet50")  # the published architectures, where their ImageNet checkpoint is present
SMOKE = ["data.subset={train: 48, val: 24, test: 24}", "preprocess.size=32", "train.bootstrap=20", "data.num_workers=0"]
SMOKE_STRATEGIES = ["frozen", "full"]


@dataclass(frozen=True)
class Target:
    """A config run on a MedMNIST file: its own (``configs/<name>.yaml`` on ``<name>.npz``), or, with
    ``--npz``, another dataset's images through a config unchanged but for ``data.npz``."""

    name: str  # the images (the MedMNIST file's name)
    config: str  # configs/<config>.yaml
    npz: Path
    published: str  # whose published bar the table shows

    @property
    def key(self) -> str:
        """Section and run-file name: one per (images, config)."""
        return self.name if self.name == self.config else f"{self.name}-{self.config}"

    @property
    def label(self) -> str:
        return self.name if self.name == self.config else f"{self.name} (configs/{self.config}.yaml)"


@dataclass
class Run:
    """One comparison (a dataset on one backbone, with a lever or not) or the reason it was skipped."""

    dataset: str  # Target.key
    backbone: str
    comparison: Comparison | None = None
    minutes: float = float("nan")  # wall time of the whole comparison
    timed_by: str = ""
    skipped: str = ""
    notes: list[str] = field(default_factory=list)
    lever: str = ""  # the ablation lever this run adds ("" for the config as it is)


def datasets_present() -> list[str]:
    """MedMNIST files in ../shared that have a config here (the published ones first)."""
    names = [p.stem for p in sorted(CONFIGS.glob("*.yaml"))]
    found = [n for n in names if (MEDMNIST / f"{n}.npz").is_file()]
    return sorted(found, key=lambda n: (n not in PUBLISHED, n))


def targets_for(args: argparse.Namespace) -> list[Target]:
    """``--datasets`` on their own files, or each named config on ``--npz``."""
    if args.npz is None:
        names = args.datasets or datasets_present()
        return [Target(n, n, MEDMNIST / f"{n}.npz", args.published or n) for n in names]
    npz = args.npz.resolve()
    name = npz.name.removesuffix(".npz")
    return [Target(name, c, npz, args.published or name) for c in args.datasets or ["breastmnist", "organamnist"]]


def effective_config(target: Target, workdir: Path, strategies: list[str] | None) -> Path:
    """The config as this run uses it (data path absolute, strategies filtered; nothing else changed),
    written to ``workdir`` so that the CLI and the API read the same file and share one run folder."""
    path = CONFIGS / f"{target.config}.yaml"
    if not path.is_file():
        raise SystemExit(f"bench_accuracy: no config {path}")
    tree = yaml.safe_load(path.read_text())
    tree["data"]["npz"] = str(target.npz)
    scopes = ("", target.config, target.key)
    strategies = [s.rpartition(":")[2] for s in strategies or [] if s.rpartition(":")[0] in scopes]
    if strategies:
        unknown = sorted(set(strategies) - {s["name"] for s in tree["strategies"]})
        if unknown:
            raise SystemExit(f"bench_accuracy: {target.config} has no strategy {unknown}")
        tree["strategies"] = [s for s in tree["strategies"] if s["name"] in strategies]
    out = workdir / ".medtl" / "bench" / f"{target.key}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(tree, sort_keys=False))
    return out


def overrides_for(cfg_path: Path, args: argparse.Namespace, backbone: str, cuda: bool) -> list[str]:
    """``--set`` overrides for this dataset (``name:key=value`` applies to dataset ``name`` only), then this run's."""
    out = []
    for o in args.set:
        key, value = o.split("=", 1) if "=" in o else (o, "")
        dataset, _, key = key.rpartition(":")
        if dataset in ("", cfg_path.stem):
            out.append(f"{key}={value}" if "=" in o else o)
    if backbone != "efficientnet_lite0":
        out.append(f"backbone.name={backbone}")
    if args.seeds > 1:
        out.append(f"train.seeds=[{', '.join(str(s) for s in range(args.seeds))}]")
    if cuda and not args.keep_subset:
        out.append("data.subset=null")  # the full official splits where a GPU makes them affordable
    if args.smoke:
        out += SMOKE
        for s in trained_strategies(cfg_path):
            out.append(f"strategies.{s['name']}.epochs=1")
            if s.get("kind", s["name"]) == "lp-ft":
                out.append(f"strategies.{s['name']}.probe_epochs=1")
    return out


def trained_strategies(cfg_path: Path) -> list[dict[str, Any]]:
    """The config's strategy entries that train (an ``ensemble`` entry takes no epochs or per-arm settings)."""
    return [s for s in yaml.safe_load(cfg_path.read_text())["strategies"] if s.get("kind", s["name"]) != "ensemble"]


def parse_lever(text: str) -> tuple[str, list[str]]:
    """``NAME=KEY=VALUE,KEY=VALUE`` -> (NAME, overrides). A comma starts a new override only where a
    ``KEY=`` follows, so values may hold commas (``train.seeds=[0, 1]``)."""
    name, sep, rest = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z][\w-]*", name) or "=" not in rest:
        raise SystemExit(f"bench_accuracy: --lever {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...]")
    return name, [o.strip() for o in re.split(r",\s*(?=[\w.:*-]+=)", rest)]


def expand_lever(overrides: list[str], strategies: list[str]) -> list[str]:
    """``strategies.*.KEY=VALUE`` -> one override per strategy of the config; the rest as they are."""
    out = []
    for o in overrides:
        out += [o.replace("strategies.*.", f"strategies.{s}.", 1) for s in strategies] if o.startswith("strategies.*.") else [o]
    return out


@contextlib.contextmanager
def working_dir(path: Path):  # noqa: ANN201
    """``compare`` keeps its run folders and caches under the working directory."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_cli(cfg_path: Path, overrides: list[str], workdir: Path, target: Target) -> dict[str, Any]:
    """Time ``python -m medtl compare`` as a user runs it (tracked, in a store inside ``workdir``).

    The file it reads is ``configs/<name>.yaml`` with the data path made absolute (and the strategies
    filtered where ``--strategies`` says so)."""
    cmd = [sys.executable, "-m", "medtl", "compare", str(cfg_path), *[a for o in overrides for a in ("--set", o)]]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}", "PYTHONPATH": str(ROOT)}
    before = load_average()
    start = time.perf_counter()
    p = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"bench_accuracy: medtl compare failed (exit {p.returncode}): {p.stderr.strip()[-2000:]}")
    data = [] if target.name == target.config else [f"--set 'data.npz={target.npz.name}'"]
    shown = ["python -m medtl compare", f"configs/{target.config}.yaml", *data, *[f"--set '{o}'" for o in overrides]]
    return {"dataset": target.key, "command": " ".join(shown), "seconds": wall, "stdout": p.stdout, "load_before": before, "load_after": load_average()}


def run_api(cfg_path: Path, overrides: list[str], workdir: Path, resume: bool) -> tuple[Comparison, float, int]:
    """The comparison through the Python API (untracked); with ``resume``, finished arms are loaded."""
    cfg = load_config(cfg_path, overrides)
    with working_dir(workdir):
        folder = run_folder(cfg)
        done = len(list(folder.glob("*/result.pt"))) if resume else 0
        start = time.perf_counter()
        comparison = api.compare(cfg, resume=resume, track=False)
    return comparison, time.perf_counter() - start, done


def weights_label(cfg: ExperimentConfig, strategy_kind: str) -> str:
    if strategy_kind == "scratch":
        return f"{cfg.backbone.name}, random init"
    return f"{cfg.backbone.name}, ImageNet ({get_backbone(cfg.backbone.name).weights.id})"


def fmt_ci(mean: float, ci: tuple[float, float], std: float | None = None) -> str:
    sd = f" ± {std:.3f}" if std is not None and not np.isnan(std) else ""
    return f"{mean:.3f}{sd} [{ci[0]:.3f}, {ci[1]:.3f}]"


def selected_arms(comp: Comparison) -> list[ArmResult]:
    """Every seed of the pretrained strategy that validation AUC selects (what a user gets)."""
    arms = [a for a in comp.arms if a.kind != "scratch"] or comp.arms
    best = pick_best(arms)
    return sorted((a for a in arms if a.strategy == best.strategy and a.weights_id == best.weights_id), key=lambda a: a.seed)


def result_rows(run: Run, label: str) -> list[list[Any]]:
    comp = run.comparison
    assert comp is not None
    cfg = comp.config
    size = comp.spec.size
    kinds = {a.strategy: a.kind for a in comp.arms}
    chosen = selected_arms(comp)[0].strategy
    rows = []
    for r in comp.table().to_dict("records"):
        name = f"**{r['strategy']}** (selected)" if r["strategy"] == chosen else r["strategy"]
        rows.append([label, name, weights_label(cfg, kinds[r["strategy"]]), f"{size} px (28 px upsampled)", r["seeds"],
                     f"{r['val_auc']:.3f}", fmt_ci(r["test_auc"], r["test_auc_ci"], r.get("test_auc_std")),
                     fmt_ci(r["test_acc"], r["test_acc_ci"], r.get("test_acc_std")), f"{r['minutes']:.1f}"])
    return rows


def target_row(target: Target, runs: list[Run]) -> list[Any]:
    """Best published AUC and ACC against medtl's best pretrained strategy: the one its validation
    AUC selects (what a user gets), and, for reference, the best test figures of any pretrained arm."""
    pub = [*PUBLISHED.get(target.published, []), *PUBLISHED_PLUS.get(target.published, [])] or None
    done = [r for r in runs if r.comparison is not None]
    if not done:
        return [target.label, "", "not run", "", "", ""]
    arms = [a for r in done for a in r.comparison.arms if a.kind != "scratch"]  # type: ignore[union-attr]
    best = pick_best(arms)
    by_strategy: dict[tuple[str, str], list[Any]] = {}
    for a in arms:
        by_strategy.setdefault((a.weights_id, a.strategy), []).append(a)
    mean = lambda group, k: float(np.mean([a.metrics[f"test_{k}"] for a in group]))  # noqa: E731
    sel = [a for a in arms if a.strategy == best.strategy and a.weights_id == best.weights_id]
    auc, acc = mean(sel, "auc"), mean(sel, "acc")
    top_auc = max(mean(g, "auc") for g in by_strategy.values())
    top_acc = max(mean(g, "acc") for g in by_strategy.values())
    minutes = sum(r.minutes for r in done)
    timing = f"{minutes:.1f} min ({'; '.join(r.timed_by for r in done)})"
    within = "yes" if minutes <= TARGET_MINUTES else "NO"
    if pub is None:
        return [target.label, f"no published row for {target.published}", f"{best.strategy}: {auc:.3f} / {acc:.3f}", "", timing, within]
    p_auc, p_acc = max(p[2] for p in pub), max(p[3] for p in pub)
    met = "yes" if auc >= p_auc and acc >= p_acc else "NO"
    any_met = "yes" if top_auc >= p_auc and top_acc >= p_acc else "no"
    return [target.label, f"{p_auc:.3f} / {p_acc:.3f}", f"{best.strategy}: {auc:.3f} / {acc:.3f}",
            f"{met} (best of any pretrained arm on test: {top_auc:.3f} / {top_acc:.3f}, met: {any_met})", timing, within]


def published_rows(dataset: str, label: str | None = None) -> list[list[Any]]:
    """The published rows of MedMNIST dataset ``dataset`` (none where it has none)."""
    v2 = [[label or dataset, f"MedMNIST v2 (published, {dataset})", f"{name.split(' ')[0]}, from scratch, 100 epochs",
           f"{px} px" + (" (28 px upsampled)" if px != 28 else ""), "", "", f"{auc:.3f}", f"{acc:.3f}", ""]
          for name, px, auc, acc in PUBLISHED.get(dataset, [])]
    plus = [[label or dataset, f"MedMNIST+ best at 28 px (published, {dataset})", f"{name}, ImageNet, end-to-end, 100 epochs",
             f"{px} px (zero-padded to 224)", "", "", f"{auc:.3f}", f"{acc:.3f}", ""]
            for name, px, auc, acc in PUBLISHED_PLUS.get(dataset, [])]
    return v2 + plus


def paired_delta(base: list[ArmResult], lever: list[ArmResult], n: int, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Lever minus base for test AUC and ACC (mean over seeds) with a 95% percentile interval from one
    bootstrap over test images shared by both sides (paired: the same resampled images score both)."""
    y = base[0].test_labels
    if any(len(a.test_labels) != len(y) or not np.array_equal(a.test_labels, y) for a in [*base, *lever]):
        raise SystemExit("bench_accuracy: the lever's test split differs from the config's: not an ablation")
    return paired_bootstrap_delta(y, [a.test_probs for a in base], [a.test_probs for a in lever], n, seed)


def ablation_rows(target: Target, base: Run | None, levers: list[Run], levers_def: dict[str, list[str]], n_boot: int) -> list[list[Any]]:
    rows: list[list[Any]] = []
    if base is None or base.comparison is None:
        return rows
    b = selected_arms(base.comparison)
    b_val = float(np.mean([a.val_auc for a in b]))
    for r in levers:
        if r.comparison is None:
            rows.append([target.label, r.lever, f"`{'`, `'.join(levers_def.get(r.lever, []))}`", r.skipped, "", "", "", ""])
            continue
        lv = selected_arms(r.comparison)
        d = paired_delta(b, lv, n_boot)
        val = float(np.mean([a.val_auc for a in lv]))
        sign = lambda v: f"{v:+.3f}"  # noqa: E731
        rows.append([target.label, r.lever, f"`{'`, `'.join(levers_def.get(r.lever, []))}`",
                     f"{b[0].strategy} → {lv[0].strategy}", f"{b_val:.3f} → {val:.3f} ({sign(val - b_val)})",
                     f"{sign(d['auc'][0])} [{sign(d['auc'][1])}, {sign(d['auc'][2])}]",
                     f"{sign(d['acc'][0])} [{sign(d['acc'][1])}, {sign(d['acc'][2])}]", f"{r.minutes:.1f}"])
    return rows


def cli_section(records: list[dict[str, Any]], argv: list[str] | None, load_before: str, load_after: str) -> str:
    parts = [f"## `medtl compare` on {os.cpu_count()} CPU cores: wall time and the printed table", "",
             *header("bench_accuracy.py", argv, load_before, load_after), ""]
    for rec in records:
        parts += [f"`{rec['command']}`: **{rec['seconds'] / 60:.1f} min** wall "
                  f"(load average before {rec['load_before']}, after {rec['load_after']})", "", "```",
                  rec["stdout"].rstrip(), "```", ""]
    return "\n".join(parts)


def accuracy_section(target: Target, runs: list[Run], argv: list[str] | None, load_before: str, load_after: str,
                     seeds: int, levers_def: dict[str, list[str]], n_boot: int) -> str:
    cols = ["dataset", "strategy", "backbone + weights", "input to backbone", "seeds", "val AUC", "test AUC [95% CI]",
            "test ACC [95% CI]", "minutes"]
    plain = [r for r in runs if not r.lever]
    rows: list[list[Any]] = []
    for r in plain:
        if r.comparison is None:
            rows.append([target.label, "all", r.backbone, "", "", "", r.skipped, "", ""])
        else:
            rows += result_rows(r, target.label)
    rows += published_rows(target.published, target.label)
    target_table = [target_row(target, plain)]
    notes = [f"- {target.label} / {r.backbone}: {n}" for r in plain for n in r.notes]
    if target.name != target.config:
        notes.insert(0, f"- configs/{target.config}.yaml run unchanged but for `data.npz` ({target.npz.name})")
    if target.published not in PUBLISHED:
        notes.insert(0, f"- no published MedMNIST v2 row for {target.published} in bench_accuracy.PUBLISHED")
    lever_runs = [r for r in runs if r.lever]
    base = next((r for r in plain if r.comparison is not None), None)
    ablation = ablation_rows(target, base, lever_runs, levers_def, n_boot) if lever_runs else []
    aspect = ("published: MedMNIST v2 (Yang et al., Sci. Data 2023), trained from scratch for 100 epochs; its 224 px "
              "models saw the 28 px images upsampled; MedMNIST+ (Doerrich et al., Sci. Rep. 2025), its best end-to-end "
              "model on the 28 px images (ImageNet weights, zero-padded to 224). ACC: argmax (binary: score 0.5), as "
              "MedMNIST computes it")
    return "\n".join([
        f"## Accuracy against the published MedMNIST v2 results: {target.label}",
        "",
        *header("bench_accuracy.py", argv, load_before, load_after, "monai", "timm", "torchvision"),
        f"- seeds: {seeds} per strategy (mean ± std over seeds where more than one; intervals: 95% bootstrap over test "
        "images, bounds averaged over seeds); **selected**: the pretrained strategy with the best mean validation AUC",
        f"- {aspect}",
        "",
        markdown_table(cols, rows, right=(4, 8)),
        "",
        f"Target: medtl's best pretrained strategy (selected on validation AUC) at or above the best published AUC "
        f"and ACC, and the whole comparison within {TARGET_MINUTES:.0f} minutes on 2 CPU cores.",
        "",
        markdown_table(["dataset", "best published AUC / ACC", "medtl (selected on validation): AUC / ACC",
                        "target met?", "total wall time", f"<= {TARGET_MINUTES:.0f} min?"], target_table),
        "",
        *([(f"Ablation: what each lever changes in the arm selected on validation (the config with the lever minus the "
            f"config as it is, same splits and seeds; test intervals: 95%, {n_boot} bootstrap resamples of the test images "
            "shared by both sides). Validation AUC is what selection saw."), "",
           markdown_table(["dataset", "lever", "overrides", "selected arm", "val AUC (selection)", "Δ test AUC [95% CI]",
                           "Δ test ACC [95% CI]", "minutes with lever"], ablation), ""] if lever_runs else []),
        *(["Notes:", *notes] if notes else []),
    ])


def run_target(target: Target, cfg_path: Path, args: argparse.Namespace, backbone: str, overrides: list[str], workdir: Path,
               lever: str = "") -> tuple[Run, dict[str, Any] | None]:
    """One comparison; with ``--cli`` (not for levers) timed as ``medtl compare`` first."""
    run = Run(target.key, backbone, lever=lever)
    resume, rec = args.resume, None
    if args.cli and not lever:
        rec = run_cli(cfg_path, overrides, workdir, target)
        run.minutes, run.timed_by = rec["seconds"] / 60, "`medtl compare` wall time"
        resume = True
    comp, seconds, reused = run_api(cfg_path, overrides, workdir, resume)
    run.comparison = comp
    if rec is None:
        if reused:
            run.minutes = sum(a.seconds for a in comp.arms) / 60
            run.timed_by = f"sum of arm times; {reused} arm(s) loaded from an earlier run in {workdir}"
        else:
            run.minutes, run.timed_by = seconds / 60, "API wall time"
    run.notes += comp.data.notes
    all_strategies = [st["name"] for st in yaml.safe_load((CONFIGS / f"{target.config}.yaml").read_text())["strategies"]]
    ran = [st.name for st in comp.config.strategies]
    if ran != all_strategies:
        run.notes.append(f"only {', '.join(ran)} of the config's {', '.join(all_strategies)} ran: "
                         "the wall time and the target are for these alone")
    return run, rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=None,
                   help="configs to run (default: every MedMNIST file in ../shared with a config here; with --npz: breastmnist organamnist)")
    p.add_argument("--npz", type=Path, default=None,
                   help="run each --datasets config unchanged but for data.npz=PATH (another MedMNIST file; --set data.npz=PATH says the same)")
    p.add_argument("--published", default=None, metavar="DATASET",
                   help=f"whose published MedMNIST v2 bar to show (default: the file's name; known: {', '.join(PUBLISHED)})")
    p.add_argument("--strategies", nargs="+", default=None, help="default: every strategy of the config; DATASET:STRATEGY for one dataset only")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 per strategy (default 3; --smoke: 1)")
    p.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", *TORCHVISION],
                   help="torchvision ones run only where their ImageNet checkpoint is present")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run; DATASET:KEY=VALUE for one dataset only")
    p.add_argument("--lever", action="append", default=[], metavar="NAME=KEY=VALUE,...", help="add or replace an ablation lever")
    p.add_argument("--levers", nargs="*", default=None, metavar="NAME",
                   help=f"levers to ablate on the first backbone (default: all of LEVERS and --lever: {', '.join(LEVERS)}; "
                        "--smoke: only --lever ones; bare --levers: none)")
    p.add_argument("--cli", action="store_true", help="time `python -m medtl compare` first; the API pass reuses its arms")
    p.add_argument("--workdir", type=Path, default=None, help="where run folders and caches go (default: a temporary folder)")
    p.add_argument("--resume", action="store_true", help="load arms already finished in --workdir instead of training them")
    p.add_argument("--keep-subset", action="store_true", help="on a GPU, keep the configs' CPU subsets")
    p.add_argument("--smoke", action="store_true", help="48 train images at 32 px, frozen and full, 1 epoch; writes nothing unless --results")
    p.add_argument("--results", type=Path, default=None, help="RESULTS.md to update (default benchmarks/RESULTS.md; smoke: none)")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.smoke else 3
    for o in [o for o in args.set if o.startswith("data.npz=")]:  # the same route as --npz, so the labels say which images
        args.set.remove(o)
        args.npz = args.npz or Path(o.partition("=")[2])
    levers_def = dict(LEVERS)
    extra = dict(parse_lever(t) for t in args.lever)
    levers_def.update(extra)
    chosen = args.levers if args.levers is not None else list(extra if args.smoke else levers_def)
    unknown = sorted(set(chosen) - set(levers_def))
    if unknown:
        print(f"bench_accuracy: unknown lever(s) {unknown} (known: {', '.join(levers_def)})", file=sys.stderr)
        return 2
    if args.npz is not None and not args.npz.is_file():
        print(f"bench_accuracy: --npz {args.npz}: file not found", file=sys.stderr)
        return 2
    if args.published is not None and args.published not in PUBLISHED:
        print(f"bench_accuracy: --published {args.published}: no published row (known: {', '.join(PUBLISHED)})", file=sys.stderr)
        return 2
    targets = targets_for(args)
    if args.smoke and args.strategies is None:
        args.strategies = SMOKE_STRATEGIES
    if not targets:
        print(f"bench_accuracy: no MedMNIST file with a config in {MEDMNIST} (set MEDTL_SHARED)", file=sys.stderr)
        return 2
    import torch

    cuda = torch.cuda.is_available()
    load_before = load_average()
    results = args.results or (None if args.smoke else RESULTS)
    runs: list[Run] = []
    cli_records: list[dict[str, Any]] = []
    n_boot = 20 if args.smoke else 1000

    def save() -> str:  # a long run keeps what it has
        return write(results, targets, runs, cli_records, argv, load_before, args.seeds, levers_def, n_boot)

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medtl-bench-acc-")))
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        for t in targets:
            cfg_path = effective_config(t, workdir, args.strategies)
            for i, b in enumerate(args.backbones):
                weights = get_backbone(b).weights
                ckpt = getattr(weights, "checkpoint_path", None)
                if ckpt is not None and not ckpt().is_file():
                    runs.append(Run(t.key, b, skipped=f"skipped: checkpoint absent ({ckpt()})"))
                    continue
                overrides = overrides_for(cfg_path, args, b, cuda)
                numerics = [("AMP + channels_last", True), ("fp32", False)] if cuda else [("fp32", False)]
                for j, (label, amp) in enumerate(numerics):
                    ov = [*overrides, f"train.amp={str(amp).lower()}", f"train.channels_last={str(amp).lower()}"] if cuda else overrides
                    name = b if not cuda else f"{b} ({label})"
                    run, rec = run_target(t, cfg_path, args, name, ov, workdir)
                    runs.append(run)
                    cli_records += [rec] if rec else []
                    save()
                    if i or j:
                        continue  # levers: on the first backbone and numerics only
                    names = [st.name for st in load_config(cfg_path, ov).trained]  # the arms after --set
                    for lever in chosen:
                        lov = [*ov, *expand_lever(levers_def[lever], names)]
                        lrun, _ = run_target(t, cfg_path, args, name, lov, workdir, lever=lever)
                        runs.append(lrun)
                        save()
    body = save()
    print(body)
    if results is not None:
        print(f"\nwrote {results}")
    return 0


def write(results: Path | None, targets: list[Target], runs: list[Run], cli_records: list[dict[str, Any]],
          argv: list[str] | None, load_before: str, seeds: int, levers_def: dict[str, list[str]], n_boot: int) -> str:
    """One section per dataset and config (``bench_accuracy-<key>``), so that one's rerun keeps the others'."""
    load_after = load_average()
    bodies = []
    for t in targets:
        body = accuracy_section(t, [r for r in runs if r.dataset == t.key], argv, load_before, load_after, seeds, levers_def, n_boot)
        bodies.append(body)
        if results is not None:
            write_section(results, f"{SECTION}-{t.key}", body)
            records = [rec for rec in cli_records if rec["dataset"] == t.key]
            if records:
                write_section(results, f"{CLI_SECTION}-{t.key}", cli_section(records, argv, load_before, load_after))
    return "\n\n".join(bodies)


if __name__ == "__main__":
    raise SystemExit(main())
