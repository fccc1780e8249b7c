"""Domain shift on MedMNIST-C: every strategy's source and target results, drop, BE/rBE, shift metrics, CKA;
the adaptation arms' gain over ``full`` and ``lp-ft``; which arm each label-free validator picks.

    python benchmarks/bench_shift.py configs/breastmnist_c.yaml [configs/organamnist_c.yaml ...]
    python benchmarks/bench_shift.py --smoke --results /tmp/RESULTS.md     # seconds, for the test suite

Runs ``medtl compare`` on each config (tracked in MLflow as usual), prints the shift table and writes it,
with the command, machine, versions, wall time and load average, into the ``shift`` section of
``benchmarks/RESULTS.md``. Beside each strategy is the same model after AdaBN (``+adabn``) and the frozen
ImageNet extractor's own feature distances: the obvious alternatives, measured in the same run. Each
line's ``gain_*`` columns are its pooled target AUC/ACC minus those of the plain ``full`` and ``lp-ft``
arms; the validators' table says which arm each label-free validator picks and where that pick ranks
on the true target AUC, and whether it beats every arm of today (``TODAY`` kinds, their ``+adabn``
and ``+tent`` lines included).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START, END = "<!-- shift:start -->", "<!-- shift:end -->"
SMOKE = ["data.subset={train: 64, val: 32, test: 24}", "data.corruptions.names=[pixelate, speckle_noise]",
         "data.corruptions.severities=[5]", "data.corruptions.train_per_domain=16", "preprocess.size=32",
         "train.bootstrap=20", "shift.permutations=20", "shift.max_items=24", "shift.gradcam=1", "shift.tent=true",
         "strategies=[{name: frozen, epochs: 2}, {name: full, epochs: 1}, {name: dann, epochs: 1}, {name: mcc, epochs: 1}]",
         "name=bench-shift-smoke"]
TODAY = ("frozen", "progressive", "full", "lp-ft", "surgical", "scratch")  # the kinds before adaptation arms


def fmt(v: object) -> str:
    if isinstance(v, tuple):
        return f"[{v[0]:.3f}, {v[1]:.3f}]"
    if isinstance(v, float):
        return "–" if v != v else f"{v:.3f}"
    return str(v)


def markdown(df) -> str:  # noqa: ANN001
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def with_gains(table):  # noqa: ANN001, ANN201
    """Each line's pooled target AUC/ACC minus the plain ``full`` and ``lp-ft`` arms' (where they ran)."""
    table = table.copy()
    for ref in ("full", "lp-ft"):
        row = table[table["strategy"] == ref]
        for met in ("auc", "acc"):
            table[f"gain_{met}_vs_{ref}"] = table[f"target_{met}"] - float(row[f"target_{met}"].iloc[0]) if len(row) else float("nan")
    return table


def verdict(comp, table) -> list[str]:  # noqa: ANN001
    """Per validator: does the arm it picks without target labels beat every arm of today on target AUC and ACC?"""
    chosen = comp.selection_table()
    if chosen.empty:
        return ["- no unlabelled target scans (data.corruptions.train_per_domain): no label-free selection"]
    kinds = {a.strategy: a.kind for a in comp.arms}
    today = table[[kinds.get(str(s).split("+")[0]) in TODAY for s in table["strategy"]]]
    best_auc = today.loc[today["target_auc"].idxmax()]
    best_acc = today.loc[today["target_acc"].idxmax()]
    out = [f"- best of today's arms on the target: AUC {best_auc['target_auc']:.3f} (`{best_auc['strategy']}`), "
           f"ACC {best_acc['target_acc']:.3f} (`{best_acc['strategy']}`)", "", markdown(chosen), ""]
    for r in chosen.itertuples():
        beats = r.target_auc > best_auc["target_auc"] and r.target_acc > best_acc["target_acc"]
        out.append(f"- `{r.validator}` picks `{r.picks}` (rank {fmt(r.rank_on_target_auc)} of {fmt(r.of)} on target AUC): "
                   f"{'beats' if beats else 'does not beat'} every arm of today on both target AUC and ACC")
    return out


def run(config: str, overrides: list[str]) -> tuple[str, float, tuple[float, float]]:
    from medtl import api

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    comp = api.compare(config, overrides)
    wall = time.perf_counter() - t0
    table = with_gains(comp.shift_table())
    groups = next((a.model.backbone.group_names for a in comp.arms), [])
    ext = comp.shift_extractor
    source, targets = __import__("medtl.experiment.shift", fromlist=["source_target"]).source_target(comp.config, comp.data)
    text = [f"### {comp.config.name}",
            "", f"- data: {'; '.join(comp.data.notes) or 'as configured'}",
            f"- source {source}; {len(targets)} target domain(s); test images: {len(comp.data.splits['test'])}",
            f"- frozen ImageNet extractor, source vs all targets: MMD {ext.get('shift.mmd', float('nan')):.4f} "
            f"(p {ext.get('shift.mmd_p', float('nan')):.3f}), CORAL {ext.get('shift.coral', float('nan')):.3g}, "
            f"Fréchet {ext.get('shift.frechet', float('nan')):.3f}, PAD {ext.get('shift.proxy_a_distance', float('nan')):.3f}",
            f"- wall time {wall / 60:.1f} min; load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end; "
            f"MLflow parent run `{comp.run_id}`",
            f"- cka.<group>: linear CKA of each model with the frozen extractor at that layer group ({', '.join(groups)}),"
            " on the probe images (1: fine-tuning left the group's features as they were)",
            "", markdown(table), "", "Label-free model selection (which arm each validator picks without target labels):", "",
            *verdict(comp, table), ""]
    print("\n".join(text))
    return "\n".join(text), wall, (load0, os.getloadavg()[0])


def write_section(results: Path, body: str) -> None:
    old = results.read_text() if results.is_file() else "# Benchmark results\n"
    section = f"{START}\n{body}\n{END}"
    if START in old and END in old:
        new = old[: old.index(START)] + section + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    results.write_text(new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="*", default=["configs/breastmnist_c.yaml"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--smoke", action="store_true", help="a tiny run of breastmnist_c (seconds)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    a = p.parse_args(argv)
    import torch

    import medtl

    overrides = [*SMOKE, *a.overrides] if a.smoke else a.overrides
    configs = [str(ROOT / "configs" / "breastmnist_c.yaml")] if a.smoke else a.configs
    parts = [run(c, overrides)[0] for c in configs]
    cmd = "python benchmarks/bench_shift.py " + " ".join(sys.argv[1:] if argv is None else argv)
    head = ["## Domain shift on MedMNIST-C (`benchmarks/bench_shift.py`)", "",
            f"- command: `{cmd.strip()}`",
            f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
            f"torch threads {torch.get_num_threads()}, device {'cuda' if torch.cuda.is_available() else 'cpu'}",
            f"- versions: Python {platform.python_version()}, torch {torch.__version__}, medtl {medtl.__version__}",
            "- columns: source/target AUC and ACC (MedMNIST definitions) with 95% bootstrap intervals, target = all "
            "target domains pooled; drop = source - target; BE/rBE as MedMNIST-C defines them (normalised by its "
            "AlexNet baselines); mmd/coral/frechet/proxy_a_distance: the strategy's penultimate features, source vs "
            "targets pooled; `+adabn`: the same model with batch-norm statistics re-estimated on each target domain; "
            "`+tent`: the same model after TENT on each target domain; gain_<m>_vs_<arm>: target <m> minus that of the "
            "plain arm; validators: source_val (source validation AUC), snd, entropy, dev (medtl.metrics.validators), "
            "scored on the unlabelled corrupted training images; rank 1 = the best arm on the true target AUC", ""]
    write_section(a.results, "\n".join(head + parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
