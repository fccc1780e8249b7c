"""CLI contract (INTERFACE.md): one-line errors naming the file or setting, exit 2 for config, 1 for data."""

import subprocess
import sys

import pytest


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medtl", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("cmd", ["demo", "inspect", "preview", "curate", "import-medmnist", "compare", "predict"])
def test_every_command_has_help(cmd: str) -> None:
    p = run(cmd, "--help")
    assert p.returncode == 0 and "usage" in p.stdout


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


def test_garbage_file_is_named(tmp_path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"this is not dicom" * 20)
    p = run("inspect", str(bad))
    assert p.returncode == 1 and str(bad) in p.stderr and len(p.stderr.strip().splitlines()) == 1
