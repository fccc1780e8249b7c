"""What the command line prints: tables (rich) and the inspect report. ``print`` lives only in the CLI."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, tuple) and len(v) == 2:
        return f"[{v[0]:.3f}, {v[1]:.3f}]"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def print_table(df: Any, title: str | None = None) -> None:
    """A rich table on a terminal; plain aligned text otherwise (logs, CI)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for c in df.columns:
        table.add_column(str(c), justify="left" if c in ("strategy", "path", "label") else "right", no_wrap=True)
    cells = [[_fmt(v) for v in row] for row in df.itertuples(index=False)]
    for row in cells:
        table.add_row(*row)
    widths = [max([len(str(c))] + [len(r[i]) for r in cells]) for i, c in enumerate(df.columns)]
    Console(width=max(100, min(250, sum(widths) + 3 * len(widths) + 1))).print(table)  # cells never wrap mid-value


def _mean_std(row: Any, key: str) -> str:
    std = row.get(f"{key}_std")
    return f"{row[key]:.3f}" if std is None or std != std else f"{row[key]:.3f} ± {std:.3f}"


def _comparison_table(comp: Any) -> Any:
    """Strategies as rows: AUC and ACC with their 95% bootstrap intervals (mean ± std over seeds when
    there are several), per-domain values, minutes."""
    import pandas as pd

    out = []
    for _, r in comp.table().iterrows():
        row = {"strategy": r["strategy"], "seeds": int(r["seeds"]), "val_auc": _mean_std(r, "val_auc")}
        if (cv := r.get("cv_val_auc")) is not None and cv == cv:  # selection.method cv: mean over folds ± std over folds
            row["cv_val_auc"] = _mean_std(r, "cv_val_auc")
        for k in ("auc", "acc"):
            row[f"test_{k}"] = _mean_std(r, f"test_{k}")
            row[f"test_{k}_ci"] = r[f"test_{k}_ci"]
        per_domain = [c for c in r.index if c.startswith(("test_auc.", "test_acc."))]
        if len(per_domain) <= 8:  # a few domains fit here; many (corruptions) are in the shift table
            row.update({c: r[c] for c in per_domain})
        row["minutes"] = r["minutes"]
        out.append(row)
    return pd.DataFrame(out)


def _secondary_table(comp: Any) -> Any:
    """Balanced accuracy, sensitivity, specificity, F1, ECE: value [95% CI] (mean ± std over seeds)."""
    import pandas as pd

    names = {"balanced_acc": "bal_acc", "sensitivity": "sens", "specificity": "spec", "f1": "f1", "ece": "ece"}
    out = []
    for _, r in comp.table().iterrows():
        row = {"strategy": r["strategy"]}
        for k, label in names.items():
            lo, hi = r[f"test_{k}_ci"]
            row[label] = f"{_mean_std(r, f'test_{k}')} [{lo:.3f}, {hi:.3f}]"
        out.append(row)
    return pd.DataFrame(out)


def print_comparison(comp: Any, title: str) -> None:
    print_table(_comparison_table(comp), title)
    print_table(_secondary_table(comp), "binary: of class 1; multi-class: macro means; ECE: top-label, 15 bins")
    sweep = comp.sweep_table()
    if len(sweep):
        sweep = sweep.assign(val_auc=[f"{a:.3f}" if s != s else f"{a:.3f} ± {s:.3f}" for a, s in zip(sweep["val_auc"], sweep["val_auc_std"])])
        print_table(sweep.drop(columns="val_auc_std"), "layer sweep (frozen features, validation AUC)")
    shift = comp.shift_table()
    if len(shift):
        print_table(shift, "domain shift: source vs target (95% CI), drop, MedMNIST-C BE/rBE, feature distances "
                           "(source vs targets pooled), CKA with the frozen extractor per layer group")
    chosen = comp.selection_table()
    if len(chosen):
        print_table(chosen, "label-free model selection: the arm each validator picks without target labels "
                            "(rank: where it stands on the true target AUC, 1 = best)")


# -- demo -----------------------------------------------------------------------------------------


def _join(values: Any, sep: str = "x") -> str:
    return sep.join("?" if v is None else f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _inspect_text(r: dict[str, Any]) -> str:
    lines = [r["path"]]
    head = " ".join(v for v in (r["kind"], r["modality"], r["photometric"]) if v)
    head += f"  raw {_join(r['raw_shape'])} ({' x '.join(r['raw_axes'])})"
    if r["spacing"] and any(v is not None for v in r["spacing"]):
        head += f"  spacing {_join(r['spacing'])} mm"
    if r["orientation"]:
        head += f"  orientation {r['orientation']}"
    lines.append("  " + head)
    if r["transfer_syntax"]:
        lines.append(f"  transfer syntax {r['transfer_syntax']}")
    if r.get("slice_gaps"):
        lines.append(f"  slice geometry: gantry tilt {r['tilt_deg']:.2f}°, slice gaps {_join(r['slice_gaps'], '..')} mm")
    if r["value_range"]:
        lines.append(f"  values {_join(r['value_range'], '..')} ({r['value_units']})")
    lines.append(f"  -> {r['backbone']}: {_join(r['input_shape'])} {r['dtype']}, mean {r['input_mean']:.3f} std {r['input_std']:.3f}")
    lines += [f"     {step}" for step in r["preprocessing"]]
    return "\n".join(lines)
