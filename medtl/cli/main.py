"""``medtl`` command line (INTERFACE.md): a thin layer over ``medtl.api``.

On bad input: one line on stderr naming the file or setting and the problem; exit 2 for usage
and config, 1 for data and runtime; a traceback only with ``--debug``. The parser and the
entry point live here, the commands in ``commands.py``, what they print in ``output.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from typing import Any

from medtl import __version__
from medtl.cli.commands import (
    QUICK,
    cmd_compare,
    cmd_config,
    cmd_curate,
    cmd_demo,
    cmd_evaluate,
    cmd_import_medmnist,
    cmd_index,
    cmd_inspect,
    cmd_predict,
    cmd_preview,
)


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
