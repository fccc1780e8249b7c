"""``medtl`` command line (INTERFACE.md): a thin layer over ``medtl.api``.

On bad input: one line on stderr naming the file or setting and the problem; exit 2 for usage
and config, 1 for data and runtime; a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Any

from medtl import __version__


class _Parser(argparse.ArgumentParser):
    """One-line usage errors (exit 2); an example under every command's help; ``more_help`` adds text
    computed only when help is shown (backbones, config keys), so a plain run imports nothing for it."""

    def __init__(self, *args: Any, more_help: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        if kwargs.get("description"):  # raw epilogs keep their layout; the prose description is wrapped here
            kwargs["description"] = textwrap.fill(kwargs["description"], 100)
        super().__init__(*args, **kwargs)
        self._more_help = more_help

    def format_help(self) -> str:
        if self._more_help is not None:
            self.epilog = "\n\n".join(t for t in (self._more_help(), self.epilog) if t)
            self._more_help = None
        return super().format_help()

    def error(self, message: str) -> None:  # one line, exit 2
        sys.stderr.write(f"medtl: error: {message}\n")
        raise SystemExit(2)


def _show_warnings() -> None:
    """medtl's own warnings as ``medtl: warning: ...`` lines on stderr, every time they occur."""
    import warnings

    from medtl.errors import MedtlWarning

    plain = warnings.showwarning

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, MedtlWarning):
            sys.stderr.write(f"medtl: warning: {message}\n")
        else:
            plain(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", MedtlWarning)


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


# -- demo -----------------------------------------------------------------------------------------
def cmd_demo(a: argparse.Namespace) -> int:
    import shlex

    from medtl import api
    from medtl.demo import example_scans
    from medtl.tracking.results import outcome_lines, venv_command
    from medtl.tracking.store import tracking_uri

    comp = api.demo(a.out)
    print_comparison(comp, "medtl demo: frozen vs fine-tuned (test set, 95% bootstrap CI)")
    lines = outcome_lines(comp, tracking_uri())
    reg = comp.registry
    if reg:  # a command that works as printed: this environment's medtl, files that exist
        scans = " ".join(shlex.quote(str(p)) for p in example_scans(a.out))
        lines = [ln for ln in lines if not ln.startswith("use it:")]
        lines.append(f"try: {venv_command('medtl')} predict models:/{reg['name']}@{reg['alias']} {scans}")
    print("\n".join(lines))
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
    if r.get("slice_gaps"):
        lines.append(f"  slice geometry: gantry tilt {r['tilt_deg']:.2f}°, slice gaps {_join(r['slice_gaps'], '..')} mm")
    if r["value_range"]:
        lines.append(f"  values {_join(r['value_range'], '..')} ({r['value_units']})")
    lines.append(f"  -> {r['backbone']}: {_join(r['input_shape'])} {r['dtype']}, mean {r['input_mean']:.3f} std {r['input_std']:.3f}")
    lines += [f"     {step}" for step in r["preprocessing"]]
    return "\n".join(lines)


def cmd_inspect(a: argparse.Namespace) -> int:
    from medtl import api
    from medtl.errors import MedtlError

    pp = _preprocess_arg(a.preprocess)
    api.input_spec(a.backbone, pp.size)  # an unknown backbone is a usage error (exit 2), not each scan's failure
    failed = 0
    results = []
    for p in a.paths:
        try:
            results.append(api.inspect_scan(p, a.backbone, pp))
        except MedtlError as e:
            failed += 1
            sys.stderr.write(f"medtl: error: {e}\n")
            results.append({"path": str(p), "error": e.problem})  # --json keeps one object per path, in order
    if a.json:
        print(json.dumps(results if len(a.paths) > 1 else results[0], indent=2, default=str))
    elif good := [r for r in results if "error" not in r]:  # nothing read: the errors alone, no blank line first
        print("\n".join(_inspect_text(r) for r in good))
    return 1 if failed else 0


def cmd_preview(a: argparse.Namespace) -> int:
    from medtl import api

    out = api.preview(a.path, a.out, a.backbone, _preprocess_arg(a.preprocess))
    print(f"wrote {out}")
    return 0


def _names(value: str | None) -> list[str] | None:
    """A comma-separated list of names; None when the option was not given."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def cmd_curate(a: argparse.Namespace) -> int:
    from medtl import api

    fields = [f.strip() for f in a.domain_from.split(",") if f.strip()] if a.domain_from else None
    labels = [v.strip() for v in a.labels.split(",") if v.strip()] if a.labels else None
    r = api.curate(a.manifest, a.out, seed=a.seed, labels=labels, domain_from=fields,
                   preprocess=_preprocess_arg(a.preprocess), keep_columns=_names(a.keep_columns))
    print(f"kept {len(r.manifest)} rows, quarantined {len(r.quarantine)}; "
          f"{len(r.duplicates)} duplicate group(s); {len(r.leaking_patients)} patient(s) across splits")
    for line in r.warnings:
        print(f"warning: {line}")
    print(f"wrote {Path(a.out) / 'manifest.csv'}, {Path(a.out) / 'quarantine.csv'}, {Path(a.out) / 'report.md'}")
    return 0


def cmd_index(a: argparse.Namespace) -> int:
    from medtl import api
    from medtl.data.index import report_path

    if (a.labels is None) != (a.on is None):
        from medtl.errors import ConfigError

        raise ConfigError("--labels/--on", "give both: --labels SHEET.csv --on patient|study|accession")
    fields = [f.strip() for f in a.domain_from.split(",") if f.strip()] if a.domain_from else None
    r = api.index(a.folders, a.out, labels=a.labels, on=a.on or "patient", domain_from=fields, pick=a.pick)
    m = r.manifest
    print(f"indexed {r.files} files: {len(m)} rows ({m['patient_id'].nunique()} patients, {m['study_id'].nunique()} studies); "
          f"{len(r.non_images)} non-image objects, {len(r.not_dicom)} files not DICOM")
    for line in r.warnings:
        print(f"warning: {line}")
    if a.labels is None:
        print("next: fill the label column (or rerun with --labels SHEET.csv --on patient), then medtl curate")
    print(f"wrote {a.out}, {report_path(a.out)}")
    return 0


def _add_index_parser(sub: Any) -> None:
    x = sub.add_parser("index", help="a hospital DICOM export (nested folders, mixed series, DICOMDIR) as a manifest",
                       epilog=_example("medtl index export/ --out work/manifest.csv --labels labels.csv --on patient "
                                       "--pick largest-axial"))
    x.add_argument("folders", nargs="+", metavar="DIR", help="export folders (searched recursively)")
    x.add_argument("--out", required=True, help="the manifest CSV to write (a .report.md is written beside it)")
    x.add_argument("--labels", metavar="SHEET.csv", help="label sheet: a 'label' column and the --on key column")
    x.add_argument("--on", choices=["patient", "study", "accession"], help="what the label sheet is keyed on")
    x.add_argument("--domain-from", metavar="FIELDS", help="domain from DICOM headers, as in curate")
    x.add_argument("--pick", metavar="RULE", help="one series per study: largest-axial, largest or description:PATTERN")
    x.set_defaults(func=cmd_index)


def cmd_import_medmnist(a: argparse.Namespace) -> int:
    from medtl import api

    path = api.import_medmnist(a.npz, a.out, limit=a.limit)
    print(f"wrote {path} (official splits kept; one pseudo-patient per image: MedMNIST has no patient ids)")
    return 0


# -- compare --------------------------------------------------------------------------------------
QUICK = "train.epochs_scale=0.2"


def _dry_run(cfg: Any) -> int:
    import yaml

    from medtl.config import plan_arms

    print(f"# {cfg.name}: resolved config (relative paths resolved against the config file's folder)")
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())
    arms = plan_arms(cfg)
    print(f"\n# {len(arms)} arm(s) it would run (nothing was trained):")
    for arm in arms:
        extra = ", ".join(f"{k} {v}" for k, v in arm["settings"].items())
        print(f"{arm['arm']}: kind {arm['kind']}, {arm['epochs']} epoch(s)" + (f", {extra}" if extra else ""))
    print(f"# tracked in experiment '{cfg.tracking.experiment}'"
          + (f"; the best is registered as '{cfg.tracking.model_name}'" if cfg.tracking.register_best else ""))
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from medtl import api

    overrides = ([QUICK] if a.quick else []) + a.set  # an explicit --set train.epochs_scale wins
    if a.dry_run:  # before importing torch and MLflow: a dry run answers in seconds
        return _dry_run(api.resolve_config(a.config, overrides))
    from medtl.tracking.results import outcome_lines
    from medtl.tracking.store import tracking_uri

    comp = api.compare(a.config, overrides, resume=a.resume)
    if comp.run_id is None and not api.is_main_process():
        return 0  # under torchrun, rank 0 prints (and tracks) for the job
    print_comparison(comp, f"{comp.config.name}: test set, 95% bootstrap CI")
    print("\n".join(outcome_lines(comp, tracking_uri())))
    print(comp.run_id)
    return 0


# -- config ---------------------------------------------------------------------------------------
def cmd_config(a: argparse.Namespace) -> int:
    from medtl.config.reference import reference_markdown

    sys.stdout.write(reference_markdown())
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
        print_table(ev.table(), f"{a.model_uri} on {n} scans ({ev.rows_scored}): 95% bootstrap CI")
        shift = ev.shift_table()
        if len(shift):
            print_table(shift, f"domain shift from '{ev.shift['reference']}' (the largest domain), on the model's features")
    return _report_errors([(s["path"], s["error"]) for s in ev.skipped])


# -- the parser: one block per command ------------------------------------------------------------
def _preprocess_help() -> str:
    from medtl.config.reference import section_keys

    keys = section_keys("preprocess")
    width = max(len(k.key) for k in keys) - len("preprocess.")
    rows = [f"  {k.key.removeprefix('preprocess.'):<{width}}  {k.meaning} (default {k.default})" for k in keys]
    return "--preprocess keys (medtl config --reference has every config key):\n" + "\n".join(rows)


def _compare_help() -> str:
    from medtl.config.reference import strategy_kinds
    from medtl.models.registry import get_backbone, list_backbones

    kinds = strategy_kinds()
    lines = ["strategy kinds (each also takes epochs and lr; `medtl config --reference` says what every key means):"]
    lines += [f"  {k:<12} {', '.join(v) if v else '(no settings of its own)'}" for k, v in kinds.items()]
    lines += ["", "backbones (backbone.name):"]
    lines += [f"  {n:<20} {get_backbone(n).description}" for n in list_backbones()]
    return "\n".join(lines)


def _example(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {ln}" for ln in lines)


MODEL_URI_HELP = "any MLflow model URI: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, models:/MODEL_ID"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="medtl", description="Transfer learning and domain adaptation for medical images.",
                epilog="Start with `medtl demo`; `medtl COMMAND --help` shows each command with an example.")
    p.add_argument("--version", action="version", version=f"medtl {__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    d = sub.add_parser("demo", help="offline end-to-end demo: synthetic DICOM/NIfTI, frozen vs fine-tuned, MLflow",
                       description="Writes a small marker dataset of real DICOM and NIfTI files, curates it, compares a "
                                   "head on frozen ImageNet features with full fine-tuning, tracks both in MLflow "
                                   "(sqlite:///mlflow.db here unless MLFLOW_TRACKING_URI is set) and registers the better.",
                       epilog=_example("medtl demo --out medtl-demo"))
    d.add_argument("--out", default="medtl-demo", help="folder for the demo's data and config (default: medtl-demo)")
    d.set_defaults(func=cmd_demo)

    pp_help = "a preprocess setting, e.g. window=lung or slice_rule=2.5d (repeatable; keys below)"
    bb_help = "the backbone whose input to show (default: efficientnet_lite0; medtl compare --help lists them)"
    i = sub.add_parser("inspect", help="what a scan is and what the backbone will receive", more_help=_preprocess_help,
                       epilog=_example("medtl inspect scans/ct_series/ scans/a.nii.gz --preprocess window=lung"))
    i.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or series folders, NIfTI, images, FILE.npz#SPLIT/INDEX")
    i.add_argument("--backbone", default="efficientnet_lite0", help=bb_help)
    i.add_argument("--json", action="store_true", help="one JSON object per scan ({path, error} for a scan that fails)")
    i.add_argument("--preprocess", action="append", default=[], metavar="KEY=VALUE", help=pp_help)
    i.set_defaults(func=cmd_inspect)

    v = sub.add_parser("preview", help="a PNG of what the backbone sees, beside the raw scan", more_help=_preprocess_help,
                       epilog=_example("medtl preview scans/a.dcm --out a.png --preprocess window=bone"))
    v.add_argument("path", help="one scan: DICOM file or series folder, NIfTI, image, FILE.npz#SPLIT/INDEX")
    v.add_argument("--backbone", default="efficientnet_lite0", help=bb_help)
    v.add_argument("--out", required=True, help="the PNG to write")
    v.add_argument("--preprocess", action="append", default=[], metavar="KEY=VALUE", help=pp_help)
    v.set_defaults(func=cmd_preview)

    c = sub.add_parser("curate", help="validate a manifest, quarantine bad rows, split by patient", more_help=_preprocess_help,
                       description="Reads every scan of a manifest (columns path, label, patient_id, optional domain and "
                                   "split); writes OUT/manifest.csv with a split column, OUT/quarantine.csv (path, reason) "
                                   "and OUT/report.md (counts, duplicates, leakage, warnings).",
                       epilog=_example("medtl curate scans/manifest.csv --out curated --labels benign,malignant"))
    c.add_argument("manifest", help="the manifest CSV; relative paths in it are relative to its folder")
    c.add_argument("--out", required=True, help="folder for manifest.csv, quarantine.csv and report.md")
    c.add_argument("--seed", type=int, default=0, help="seed of the patient-level split (default 0)")
    c.add_argument("--labels", help="comma-separated known labels; rows with any other label are quarantined "
                                    "(without it, labels that differ only by case or spacing are warned about)")
    c.add_argument("--domain-from", metavar="FIELDS",
                   help="tag domains from DICOM headers: comma-separated of manufacturer, model, institution "
                        "(coded, never the name), slice_thickness, field_strength, kernel, modality, body_part")
    c.add_argument("--preprocess", action="append", default=[], metavar="KEY=VALUE",
                   help="a preprocess setting used to prove each scan becomes a backbone input (repeatable)")
    c.add_argument("--keep-columns", metavar="COLUMNS",
                   help="comma-separated extra manifest columns to copy into the curated manifest (path, label, "
                        "patient_id, domain and split always are; no other column is)")
    c.set_defaults(func=cmd_curate)

    _add_index_parser(sub)

    n = sub.add_parser("import-medmnist", help="a manifest for a MedMNIST .npz (official splits kept)",
                       epilog=_example("medtl import-medmnist data/breastmnist.npz --out breast --limit 100"))
    n.add_argument("npz", help="a MedMNIST 2D .npz (train/val/test _images and _labels)")
    n.add_argument("--out", required=True, help="folder for manifest.csv (its rows point into the .npz; nothing is copied)")
    n.add_argument("--limit", type=int, default=None, help="keep only the first N images of each split")
    n.set_defaults(func=cmd_import_medmnist)

    m = sub.add_parser("compare", help="run every strategy of a config, tracked in MLflow", more_help=_compare_help,
                       description="Runs every strategy of CONFIG on identical splits and seeds, tracks each as a child "
                                   "run of one comparison run, registers the best (chosen on validation AUC) and says "
                                   "why; prints the tables and the parent run id last.",
                       epilog=_example("medtl compare configs/breastmnist.yaml --quick --dry-run",
                                       "medtl compare my.yaml --set strategies.full.epochs=3 --set train.batch_size=16"))
    m.add_argument("config", help="a YAML config (medtl config --reference lists every key)")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. train.lr=3e-4 or strategies.full.epochs=3 (repeatable; YAML values)")
    m.add_argument("--quick", action="store_true",
                   help=f"a first try: every epoch count scaled by 0.2 ({QUICK}), at least 1 each")
    m.add_argument("--dry-run", action="store_true", help="print the resolved config and the arms it would run; train nothing")
    m.add_argument("--resume", action="store_true", help="continue an interrupted comparison of the same config")
    m.set_defaults(func=cmd_compare)

    r = sub.add_parser("predict", help="class probabilities for scans from any MLflow model URI",
                       epilog=_example("medtl predict models:/medtl-demo@champion scans/a.dcm scans/ct_series/ --json"))
    r.add_argument("model_uri", help=MODEL_URI_HELP)
    r.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files, DICOM series folders, NIfTI, images")
    r.add_argument("--json", action="store_true", help="a JSON list: path, probabilities per class, label")
    r.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="a model's metrics on a manifest, overall and per domain, with 95%% CIs",
                       epilog=_example("medtl evaluate models:/medtl-demo@champion curated/manifest.csv"))
    e.add_argument("model_uri", help=MODEL_URI_HELP)
    e.add_argument("manifest", help="manifest CSV (path, label, patient_id, optional domain and split)")
    e.add_argument("--split", choices=["train", "val", "test", "all"],
                   help="which rows to score (default: test when the manifest has a split column, else every row; "
                        "scoring train rows is warned about)")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    e.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    e.add_argument("--json", action="store_true", help="metrics, intervals, per-domain parts and shift as JSON")
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser("config", help="every config key: type, default, meaning, the strategy kinds it applies to",
                       epilog=_example("medtl config --reference > docs/config.md"))
    g.add_argument("--reference", action="store_true", required=True,
                   help="print the config reference (Markdown), generated from the config models")
    g.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    from medtl import _lazy_monai

    _lazy_monai.install()  # the command owns its process: MONAI's optional imports wait until used
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    _show_warnings()
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
