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

    python benchmarks/bench_accuracy.py --cli           # full run; updates benchmarks/RESULTS.md
    python benchmarks/bench_accuracy.py --smoke         # seconds: 48 images at 32 px, 1 epoch
"""

from __future__ import annotations

import argparse
import contextlib
import os
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
from medtl.experiment.results import Comparison, pick_best  # noqa: E402
from medtl.experiment.run import run_folder  # noqa: E402
from medtl.config import ExperimentConfig, load_config  # noqa: E402
from medtl.models.registry import get_backbone  # noqa: E402

SECTION, CLI_SECTION = "bench_accuracy", "bench_accuracy_cli"
CONFIGS = ROOT / "configs"
TARGET_MINUTES = 60.0
# MedMNIST v2 (Yang et al., Sci. Data 2023, Table 3), test AUC / ACC, trained from scratch for 100
# epochs; the 224 px models saw the 28 px images upsampled.
PUBLISHED: dict[str, list[tuple[str, int, float, float]]] = {
    "breastmnist": [("ResNet-18 (28)", 28, 0.901, 0.863), ("ResNet-18 (224)", 224, 0.891, 0.833),
                    ("ResNet-50 (224)", 224, 0.866, 0.842)],
    "organamnist": [("ResNet-18 (28)", 28, 0.997, 0.935), ("ResNet-18 (224)", 224, 0.998, 0.951),
                    ("ResNet-50 (224)", 224, 0.998, 0.947)],
}
TORCHVISION = ("resnet18", "resnet50")  # the published architectures, where their ImageNet checkpoint is present
SMOKE = ["data.subset={train: 48, val: 24, test: 24}", "preprocess.size=32", "train.bootstrap=20", "data.num_workers=0"]
SMOKE_STRATEGIES = ["frozen", "full"]


@dataclass
class Run:
    """One comparison (a dataset on one backbone) or the reason it was skipped."""

    dataset: str
    backbone: str
    comparison: Comparison | None = None
    minutes: float = float("nan")  # wall time of the whole comparison
    timed_by: str = ""
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


def datasets_present() -> list[str]:
    """MedMNIST files in ../shared that have a config here (the published ones first)."""
    names = [p.stem for p in sorted(CONFIGS.glob("*.yaml"))]
    found = [n for n in names if (MEDMNIST / f"{n}.npz").is_file()]
    return sorted(found, key=lambda n: (n not in PUBLISHED, n))


def effective_config(name: str, workdir: Path, strategies: list[str] | None) -> Path:
    """The dataset's config as this run uses it (data path absolute, strategies filtered), written
    to ``workdir`` so that the CLI and the API read the same file and share one run folder."""
    tree = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    tree["data"]["npz"] = str(MEDMNIST / f"{name}.npz")
    strategies = [s.rpartition(":")[2] for s in strategies or [] if s.rpartition(":")[0] in ("", name)]
    if strategies:
        unknown = sorted(set(strategies) - {s["name"] for s in tree["strategies"]})
        if unknown:
            raise SystemExit(f"bench_accuracy: {name} has no strategy {unknown}")
        tree["strategies"] = [s for s in tree["strategies"] if s["name"] in strategies]
    path = workdir / ".medtl" / "bench" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


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
        for s in yaml.safe_load(cfg_path.read_text())["strategies"]:
            out.append(f"strategies.{s['name']}.epochs=1")
            if s.get("kind", s["name"]) == "lp-ft":
                out.append(f"strategies.{s['name']}.probe_epochs=1")
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


def run_cli(cfg_path: Path, overrides: list[str], workdir: Path) -> dict[str, Any]:
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
    shown = ["python -m medtl compare", f"configs/{cfg_path.name}", *[f"--set '{o}'" for o in overrides]]
    return {"dataset": cfg_path.stem, "command": " ".join(shown), "seconds": wall, "stdout": p.stdout, "load_before": before, "load_after": load_average()}


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


def result_rows(run: Run) -> list[list[Any]]:
    comp = run.comparison
    assert comp is not None
    cfg = comp.config
    size = comp.spec.size
    kinds = {a.strategy: a.kind for a in comp.arms}
    rows = []
    for r in comp.table().to_dict("records"):
        rows.append([run.dataset, r["strategy"], weights_label(cfg, kinds[r["strategy"]]), f"{size} px (28 px upsampled)",
                     r["seeds"], fmt_ci(r["test_auc"], r["test_auc_ci"], r.get("test_auc_std")),
                     fmt_ci(r["test_acc"], r["test_acc_ci"], r.get("test_acc_std")), f"{r['minutes']:.1f}"])
    return rows


def target_row(dataset: str, runs: list[Run]) -> list[Any]:
    """Best published AUC and ACC against medtl's best pretrained strategy: the one its validation
    AUC selects (what a user gets), and, for reference, the best test figures of any pretrained arm."""
    pub = PUBLISHED.get(dataset)
    done = [r for r in runs if r.comparison is not None]
    if not done:
        return [dataset, "", "not run", "", "", ""]
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
        return [dataset, "no published row", f"{best.strategy}: {auc:.3f} / {acc:.3f}", "", timing, within]
    p_auc, p_acc = max(p[2] for p in pub), max(p[3] for p in pub)
    met = "yes" if auc >= p_auc and acc >= p_acc else "NO"
    any_met = "yes" if top_auc >= p_auc and top_acc >= p_acc else "no"
    return [dataset, f"{p_auc:.3f} / {p_acc:.3f}", f"{best.strategy}: {auc:.3f} / {acc:.3f}",
            f"{met} (best of any pretrained arm on test: {top_auc:.3f} / {top_acc:.3f}, met: {any_met})", timing, within]


def published_rows(dataset: str) -> list[list[Any]]:
    return [[dataset, "MedMNIST v2 (published)", f"{name.split(' ')[0]}, from scratch, 100 epochs",
             f"{px} px" + (" (28 px upsampled)" if px != 28 else ""), "", f"{auc:.3f}", f"{acc:.3f}", ""]
            for name, px, auc, acc in PUBLISHED.get(dataset, [])]


def cli_section(records: list[dict[str, Any]], argv: list[str] | None, load_before: str, load_after: str) -> str:
    parts = [f"## `medtl compare` on {os.cpu_count()} CPU cores: wall time and the printed table", "",
             *header("bench_accuracy.py", argv, load_before, load_after), ""]
    for rec in records:
        parts += [f"`{rec['command']}`: **{rec['seconds'] / 60:.1f} min** wall "
                  f"(load average before {rec['load_before']}, after {rec['load_after']})", "", "```",
                  rec["stdout"].rstrip(), "```", ""]
    return "\n".join(parts)


def accuracy_section(runs: list[Run], datasets: list[str], argv: list[str] | None, load_before: str, load_after: str,
                     seeds: int) -> str:
    cols = ["dataset", "strategy", "backbone + weights", "input to backbone", "seeds", "test AUC [95% CI]",
            "test ACC [95% CI]", "minutes"]
    rows: list[list[Any]] = []
    for d in datasets:
        for r in runs:
            if r.dataset != d:
                continue
            if r.comparison is None:
                rows.append([d, "all", r.backbone, "", "", r.skipped, "", ""])
            else:
                rows += result_rows(r)
        rows += published_rows(d)
    target = [target_row(d, [r for r in runs if r.dataset == d]) for d in datasets]
    notes = [f"- {d} / {r.backbone}: {n}" for d in datasets for r in runs if r.dataset == d for n in r.notes]
    return "\n".join([
        f"## Accuracy against the published MedMNIST v2 results: {', '.join(datasets)}",
        "",
        *header("bench_accuracy.py", argv, load_before, load_after, "monai", "timm", "torchvision"),
        f"- seeds: {seeds} per strategy (mean ± std over seeds where more than one; intervals: 95% bootstrap over test "
        "images, bounds averaged over seeds)",
        "- published: MedMNIST v2 (Yang et al., Sci. Data 2023), trained from scratch for 100 epochs; its 224 px "
        "models saw the 28 px images upsampled. ACC: argmax (binary: score 0.5), as MedMNIST computes it",
        "",
        markdown_table(cols, rows, right=(4, 7)),
        "",
        f"Target: medtl's best pretrained strategy (selected on validation AUC) at or above the best published AUC "
        f"and ACC, and the whole comparison within {TARGET_MINUTES:.0f} minutes on 2 CPU cores.",
        "",
        markdown_table(["dataset", "best published AUC / ACC", "medtl (selected on validation): AUC / ACC",
                        "target met?", "total wall time", f"<= {TARGET_MINUTES:.0f} min?"], target),
        "",
        *(["Notes:", *notes] if notes else []),
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=None, help="default: every MedMNIST file in ../shared with a config here")
    p.add_argument("--strategies", nargs="+", default=None, help="default: every strategy of the config; DATASET:STRATEGY for one dataset only")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per strategy (default 1: the config's seed)")
    p.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", *TORCHVISION],
                   help="torchvision ones run only where their ImageNet checkpoint is present")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run; DATASET:KEY=VALUE for one dataset only")
    p.add_argument("--cli", action="store_true", help="time `python -m medtl compare` first; the API pass reuses its arms")
    p.add_argument("--workdir", type=Path, default=None, help="where run folders and caches go (default: a temporary folder)")
    p.add_argument("--resume", action="store_true", help="load arms already finished in --workdir instead of training them")
    p.add_argument("--keep-subset", action="store_true", help="on a GPU, keep the configs' CPU subsets")
    p.add_argument("--smoke", action="store_true", help="48 train images at 32 px, frozen and full, 1 epoch; writes nothing unless --results")
    p.add_argument("--results", type=Path, default=None, help="RESULTS.md to update (default benchmarks/RESULTS.md; smoke: none)")
    args = p.parse_args(argv)
    datasets = args.datasets or datasets_present()
    if args.smoke and args.strategies is None:
        args.strategies = SMOKE_STRATEGIES
    if not datasets:
        print(f"bench_accuracy: no MedMNIST file with a config in {MEDMNIST} (set MEDTL_SHARED)", file=sys.stderr)
        return 2
    import torch

    cuda = torch.cuda.is_available()
    load_before = load_average()
    results = args.results or (None if args.smoke else RESULTS)
    runs: list[Run] = []
    cli_records: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medtl-bench-acc-")))
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        for d in datasets:
            cfg_path = effective_config(d, workdir, args.strategies)
            for b in args.backbones:
                weights = get_backbone(b).weights
                ckpt = getattr(weights, "checkpoint_path", None)
                if ckpt is not None and not ckpt().is_file():
                    runs.append(Run(d, b, skipped=f"skipped: checkpoint absent ({ckpt()})"))
                    continue
                overrides = overrides_for(cfg_path, args, b, cuda)
                numerics = [("AMP + channels_last", True), ("fp32", False)] if cuda else [("fp32", False)]
                for label, amp in numerics:
                    ov = [*overrides, f"train.amp={str(amp).lower()}", f"train.channels_last={str(amp).lower()}"] if cuda else overrides
                    run = Run(d, b if not cuda else f"{b} ({label})")
                    resume = args.resume
                    if args.cli:
                        rec = run_cli(cfg_path, ov, workdir)
                        cli_records.append(rec)
                        run.minutes, run.timed_by = rec["seconds"] / 60, "`medtl compare` wall time"
                        resume = True
                    comp, seconds, reused = run_api(cfg_path, ov, workdir, resume)
                    run.comparison = comp
                    if not args.cli:
                        if reused:
                            run.minutes = sum(a.seconds for a in comp.arms) / 60
                            run.timed_by = f"sum of arm times; {reused} arm(s) loaded from an earlier run in {workdir}"
                        else:
                            run.minutes, run.timed_by = seconds / 60, "API wall time"
                    run.notes += comp.data.notes
                    all_strategies = [st["name"] for st in yaml.safe_load((CONFIGS / f"{d}.yaml").read_text())["strategies"]]
                    ran = [st.name for st in comp.config.strategies]
                    if ran != all_strategies:
                        run.notes.append(f"only {', '.join(ran)} of the config's {', '.join(all_strategies)} ran: "
                                         "the wall time and the target are for these alone")
                    runs.append(run)
                    write(results, runs, cli_records, datasets, argv, load_before, args.seeds)  # a long run keeps what it has
    body = write(results, runs, cli_records, datasets, argv, load_before, args.seeds)
    print(body)
    if results is not None:
        print(f"\nwrote {results}")
    return 0


def write(results: Path | None, runs: list[Run], cli_records: list[dict[str, Any]], datasets: list[str],
          argv: list[str] | None, load_before: str, seeds: int) -> str:
    """One section per dataset (``bench_accuracy-<dataset>``), so that one dataset's rerun keeps the others'."""
    load_after = load_average()
    bodies = []
    for d in datasets:
        body = accuracy_section([r for r in runs if r.dataset == d], [d], argv, load_before, load_after, seeds)
        bodies.append(body)
        if results is not None:
            write_section(results, f"{SECTION}-{d}", body)
            records = [rec for rec in cli_records if rec["dataset"] == d]
            if records:
                write_section(results, f"{CLI_SECTION}-{d}", cli_section(records, argv, load_before, load_after))
    return "\n\n".join(bodies)


if __name__ == "__main__":
    raise SystemExit(main())
