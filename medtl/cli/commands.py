"""One function per ``medtl`` command: arguments in, ``medtl.api`` called, results printed, an exit code out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from medtl.cli.output import _inspect_text, print_comparison, print_table


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
        trains = f"{arm['epochs']} epoch(s)" if arm["epochs"] else "trains nothing, after every seed"  # an ensemble
        print(f"{arm['arm']}: kind {arm['kind']}, {trains}" + (f", {extra}" if extra else ""))
    sel = cfg.selection
    if sel.method == "cv":
        print(f"# selection cv: each trained arm runs {sel.folds + (sel.then == 'refit')} times, once per fold of train+val "
              f"({sel.folds})" + (" and once more on all of it (refit)" if sel.then == "refit" else ", then the fold models averaged"))
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
