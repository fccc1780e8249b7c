"""``medtl`` command line (INTERFACE.md): a thin layer over ``medtl.api``.

On bad input: one line on stderr naming the file or setting and the problem; exit 2 for usage
and config, 1 for data and runtime; a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from medtl import __version__


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        sys.stderr.write(f"medtl: error: {message}\n")
        raise SystemExit(2)


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


def cmd_demo(a: argparse.Namespace) -> int:
    from medtl import api

    comp = api.demo(a.out)
    print_comparison(comp, "medtl demo: frozen vs fine-tuned (test set, 95% bootstrap CI)")
    reg = comp.registry
    if reg:
        print(f"registered {reg['name']} v{reg['version']} as '{reg['alias']}' ({reg['reason']})")
        print(f"try: medtl predict models:/{reg['name']}@champion {Path(a.out) / 'data' / 'scanner_a'}/<file>.dcm")
    print(comp.run_id)
    return 0


def _pp_overrides(items: list[str]) -> dict[str, Any]:
    """``--preprocess key=value`` pairs (YAML values) as a ``preprocess`` section."""
    import yaml

    from medtl.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--preprocess {item}", "expected key=value, e.g. window=lung")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def _preprocess_arg(items: list[str]) -> Any:
    from pydantic import ValidationError

    from medtl.config import PreprocessConfig
    from medtl.errors import ConfigError

    try:
        return PreprocessConfig.model_validate(_pp_overrides(items))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "preprocess"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--preprocess {where}", msg) from None


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
    if r["value_range"]:
        lines.append(f"  values {_join(r['value_range'], '..')} ({r['value_units']})")
    lines.append(f"  -> {r['backbone']}: {_join(r['input_shape'])} {r['dtype']}, mean {r['input_mean']:.3f} std {r['input_std']:.3f}")
    lines += [f"     {step}" for step in r["preprocessing"]]
    return "\n".join(lines)


def cmd_inspect(a: argparse.Namespace) -> int:
    from medtl import api
    from medtl.errors import MedtlError

    pp = _preprocess_arg(a.preprocess)
    failed = 0
    results = []
    for p in a.paths:
        try:
            results.append(api.inspect_scan(p, a.backbone, pp))
        except MedtlError as e:
            failed += 1
            sys.stderr.write(f"medtl: error: {e}\n")
    if a.json:
        print(json.dumps(results if len(a.paths) > 1 else (results[0] if results else {}), indent=2, default=str))
    else:
        print("\n".join(_inspect_text(r) for r in results))
    return 1 if failed else 0


def cmd_preview(a: argparse.Namespace) -> int:
    from medtl import api

    out = api.preview(a.path, a.out, a.backbone, _preprocess_arg(a.preprocess))
    print(f"wrote {out}")
    return 0


def cmd_curate(a: argparse.Namespace) -> int:
    from medtl import api

    fields = [f.strip() for f in a.domain_from.split(",") if f.strip()] if a.domain_from else None
    labels = [v.strip() for v in a.labels.split(",") if v.strip()] if a.labels else None
    r = api.curate(a.manifest, a.out, seed=a.seed, labels=labels, domain_from=fields,
                   preprocess=_preprocess_arg(a.preprocess))
    print(f"kept {len(r.manifest)} rows, quarantined {len(r.quarantine)}; "
          f"{len(r.duplicates)} duplicate group(s); {len(r.leaking_patients)} patient(s) across splits")
    for line in r.warnings:
        print(f"warning: {line}")
    print(f"wrote {Path(a.out) / 'manifest.csv'}, {Path(a.out) / 'quarantine.csv'}, {Path(a.out) / 'report.md'}")
    return 0


def cmd_import_medmnist(a: argparse.Namespace) -> int:
    from medtl import api

    path = api.import_medmnist(a.npz, a.out, limit=a.limit)
    print(f"wrote {path} (official splits kept; one pseudo-patient per image: MedMNIST has no patient ids)")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from medtl import api

    comp = api.compare(a.config, a.set, resume=a.resume)
    if comp.run_id is None and not api.is_main_process():
        return 0  # under torchrun, rank 0 prints (and tracks) for the job
    print_comparison(comp, f"{comp.config.name}: test set, 95% bootstrap CI")
    if comp.registry:
        r = comp.registry
        print(f"registered {r['name']} v{r['version']} as '{r['alias']}' ({r['reason']})")
    print(comp.run_id)
    return 0


def _report_errors(rows: list[tuple[str, str]]) -> int:
    """Each unreadable scan as its own one-line error; exit 1 if there was any."""
    for _, error in rows:
        sys.stderr.write(f"medtl: error: {error}\n")
    return 1 if rows else 0


def cmd_predict(a: argparse.Namespace) -> int:
    from medtl import api

    df = api.predict(a.model_uri, a.paths)
    good = df[df["error"].isna()]
    prob_cols = [c for c in df.columns if c.startswith("p_")]
    if a.json:
        out = [{"path": r["path"], "probabilities": {c[2:]: float(r[c]) for c in prob_cols}, "label": r["label"]}
               for _, r in good.iterrows()]
        print(json.dumps(out, indent=2))
    elif len(good):
        print_table(good[["path", *prob_cols, "label"]])
    bad = df[df["error"].notna()]
    return _report_errors(list(zip(bad["path"], bad["error"])))


def cmd_evaluate(a: argparse.Namespace) -> int:
    from medtl import api

    ev = api.evaluate(a.model_uri, a.manifest, split=a.split, bootstrap=a.bootstrap, seed=a.seed)
    if a.json:
        print(json.dumps(ev.as_dict(), indent=2))
    else:
        n = ev.as_dict()["overall"]["n"]
        print_table(ev.table(), f"{a.model_uri} on {n} scans{f' ({a.split} split)' if a.split else ''}: 95% bootstrap CI")
    return _report_errors([(s["path"], s["error"]) for s in ev.skipped])


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="medtl", description="Transfer learning and domain adaptation for medical images.")
    p.add_argument("--version", action="version", version=f"medtl {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("demo", help="offline end-to-end demo: synthetic DICOM/NIfTI, frozen vs fine-tuned, MLflow")
    d.add_argument("--out", default="medtl-demo", help="folder for the demo's data (default: medtl-demo)")
    d.set_defaults(func=cmd_demo)

    pp_help = "a preprocess setting, e.g. window=lung or slice_rule=2.5d (repeatable)"
    i = sub.add_parser("inspect", help="what a scan is and what the backbone will receive")
    i.add_argument("paths", nargs="+", help="DICOM files or series folders, NIfTI, images, FILE.npz#SPLIT/INDEX")
    i.add_argument("--backbone", default="efficientnet_lite0")
    i.add_argument("--json", action="store_true")
    i.add_argument("--preprocess", action="append", default=[], metavar="KEY=VALUE", help=pp_help)
    i.set_defaults(func=cmd_inspect)

    v = sub.add_parser("preview", help="a PNG of what the backbone sees, beside the raw scan")
    v.add_argument("path")
    v.add_argument("--backbone", default="efficientnet_lite0")
    v.add_argument("--out", required=True, help="the PNG to write")
    v.add_argument("--preprocess", action="append", default=[], metavar="KEY=VALUE", help=pp_help)
    v.set_defaults(func=cmd_preview)

    c = sub.add_parser("curate", help="validate a manifest, quarantine bad rows, split by patient")
    c.add_argument("manifest")
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--labels", help="comma-separated known labels; rows with any other label are quarantined")
    c.add_argument("--domain-from", metavar="FIELDS",
                   help="tag domains from DICOM headers: comma-separated of manufacturer, model, institution "
                        "(coded, never the name), slice_thickness, field_strength, kernel, modality, body_part")
    c.add_argument("--preprocess", action="append", default=[], metavar="KEY=VALUE", help=pp_help)
    c.set_defaults(func=cmd_curate)

    n = sub.add_parser("import-medmnist", help="a manifest for a MedMNIST .npz (official splits kept)")
    n.add_argument("npz")
    n.add_argument("--out", required=True)
    n.add_argument("--limit", type=int, default=None, help="keep only the first N images of each split")
    n.set_defaults(func=cmd_import_medmnist)

    m = sub.add_parser("compare", help="run every strategy of a config, tracked in MLflow")
    m.add_argument("config")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    m.add_argument("--resume", action="store_true", help="continue an interrupted comparison of the same config")
    m.set_defaults(func=cmd_compare)

    r = sub.add_parser("predict", help="class probabilities for scans from any MLflow model URI")
    r.add_argument("model_uri", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, models:/MODEL_ID")
    r.add_argument("paths", nargs="+", help="DICOM files, DICOM series folders, NIfTI, images")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="a model's metrics on a manifest, overall and per domain, with 95%% CIs")
    e.add_argument("model_uri", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, models:/MODEL_ID")
    e.add_argument("manifest", help="manifest CSV (path, label, patient_id, optional domain and split)")
    e.add_argument("--split", choices=["train", "val", "test"], help="only this split's rows (default: every row)")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    e.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    from medtl.errors import MedtlError

    try:
        return int(args.func(args) or 0)
    except MedtlError as e:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"medtl: error: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("medtl: interrupted\n")
        return 130
    except Exception as e:  # noqa: BLE001 - never a bare traceback for a user
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"medtl: error: {type(e).__name__}: {' '.join(str(e).split())[:300]} (rerun with --debug for the traceback)\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
