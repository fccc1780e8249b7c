"""CLI contract (INTERFACE.md): one-line errors naming the file or setting, exit 2 for config, 1 for data."""

import subprocess
import sys

import pytest


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medtl", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


COMMANDS = ["demo", "inspect", "preview", "curate", "index", "import-medmnist", "compare", "predict", "evaluate", "config"]


def help_text(cmd: str, capsys: pytest.CaptureFixture) -> str:
    """``medtl CMD --help`` in-process (the parser alone; a subprocess per command costs seconds each)."""
    from medtl.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([cmd, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd: str, capsys) -> None:
    out = help_text(cmd, capsys)
    assert out.startswith(f"usage: medtl {cmd}")
    assert f"example:\n  medtl {cmd} " in out, "each command's help ends with an example"


def test_every_argument_says_what_it_is() -> None:
    import argparse

    from medtl.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == sorted(COMMANDS)
    bare = [f"{name} {a.dest}" for name, p in sub.choices.items() for a in p._actions if not a.help]
    assert bare == []


def test_help_teaches_kinds_backbones_and_preprocess_keys(capsys) -> None:
    assert run("compare", "--help").returncode == 0  # once for real, as a user runs it
    compare = help_text("compare", capsys)
    for word in ("frozen", "progressive", "lp-ft", "surgical", "scratch", "efficientnet_lite0", "resnet18", "--quick", "--dry-run"):
        assert word in compare
    inspect = help_text("inspect", capsys)
    for key in ("window", "slice_rule", "slice_axis", "assume_modality", "size"):
        assert f"\n  {key} " in inspect


def test_dry_run_prints_config_and_arms_and_trains_nothing(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {manifest: curated/manifest.csv}\nstrategies: [{name: frozen, epochs: 30}, {name: full, epochs: 5}]\n"
                   "train: {seeds: [0, 1]}\n")
    code = ("import sys; from medtl.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'a dry run answers in seconds: no torch'; raise SystemExit(rc)")
    p = subprocess.run([sys.executable, "-c", code, "compare", str(cfg), "--dry-run", "--quick"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"manifest: {tmp_path / 'curated' / 'manifest.csv'}" in p.stdout, "relative to the config file"
    arms = [ln for ln in p.stdout.splitlines() if "-seed" in ln]
    assert arms == ["frozen-seed0: kind frozen, 6 epoch(s)", "full-seed0: kind full, 1 epoch(s)",
                    "frozen-seed1: kind frozen, 6 epoch(s)", "full-seed1: kind full, 1 epoch(s)"]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".medtl").exists()


def test_shadowed_override_is_a_warning_line(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {npz: x.npz}\nstrategies: [{name: full, epochs: 5}]\n")
    p = run("compare", str(cfg), "--dry-run", "--set", "train.epochs=2")
    assert p.returncode == 0
    assert p.stderr.startswith("medtl: warning: --set train.epochs changes nothing") and len(p.stderr.splitlines()) == 1


def test_config_reference_is_the_docs_page() -> None:
    from tests.conftest import ROOT

    p = run("config", "--reference")
    assert p.returncode == 0 and p.stdout == (ROOT / "docs" / "config.md").read_text()


def test_bad_config_key_exits_2_with_one_line(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {npz: x.npz}\ntrain: {epochz: 3}\n")
    p = run("compare", str(cfg))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.epochz" in lines[0] and "unknown key" in lines[0]
    assert "Traceback" not in p.stderr


def test_missing_scan_exits_1_naming_the_file(tmp_path) -> None:
    missing = tmp_path / "nope.dcm"
    p = run("inspect", str(missing))
    assert p.returncode == 1
    assert p.stderr.strip() == f"medtl: error: {missing}: file not found"
    assert p.stdout == "", "nothing was read: no blank line before the error"


def test_garbage_file_is_named(tmp_path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"this is not dicom" * 20)
    p = run("inspect", str(bad))
    assert p.returncode == 1 and str(bad) in p.stderr and len(p.stderr.strip().splitlines()) == 1
