"""Start-up: the command line reads a scan without importing what MONAI only might need (mlflow,
torchvision and torch._dynamo, scikit-learn, timm); what MONAI deferred still works when used;
importing medtl as a library leaves MONAI's imports alone; the backbone's input spec is read from
timm once per timm version and remembered."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from medtl.models.registry import InputSpec
from medtl.models.weights import LiteWeights, remembered_spec

HEAVY = ("mlflow", "torchvision", "torch._dynamo", "sklearn", "timm", "tifffile", "pandas")
PROBE = (
    "import sys, medtl._lazy_monai as lazy\n"
    "lazy.install()  # as medtl.cli.main does\n"
    "import medtl.data.transforms\n"
    f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
)


def _imported(eager: bool) -> set[str]:
    env = {**os.environ, "MEDTL_EAGER_MONAI": "1" if eager else "0"}
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    return set(filter(None, p.stdout.strip().split(",")))


def test_reading_scans_does_not_import_what_monai_only_might_need() -> None:
    assert _imported(eager=False) == set()
    assert {"mlflow", "torchvision", "sklearn"} <= _imported(eager=True)  # what MONAI's own import costs


def test_what_monai_deferred_works_when_used() -> None:
    code = ("import medtl._lazy_monai as lazy, sys\n"
            "lazy.install()\n"
            "from monai.networks.blocks import fcn\n"
            "from monai.metrics import embedding_collapse as ec\n"
            "assert 'torchvision' not in sys.modules\n"
            "assert fcn.models.resnet50.__name__ == 'resnet50'\n"  # torchvision imported here, on use
            "import numpy as np\n"
            "assert abs(ec.sklearn_silhouette(np.array([[0.], [0.1], [5.], [5.1]]), [0, 0, 1, 1]) - 0.98) < 0.01\n"
            "print('ok')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_importing_medtl_leaves_monai_imports_alone() -> None:
    code = "import sys, medtl.api, medtl.data.transforms\nprint('torchvision' in sys.modules)\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "True", p.stderr  # MONAI imported as MONAI imports itself


def test_the_input_spec_is_read_once_and_remembered(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    want = LiteWeights(0)._timm_spec()
    assert remembered_spec("k1", lambda: want) == want
    assert json.loads((tmp_path / "medtl" / "input_specs.json").read_text())["k1"]["size"] == want.size

    def unread() -> InputSpec:
        raise AssertionError("read again")

    assert remembered_spec("k1", unread) == want  # remembered: timm is not asked again
    with pytest.raises(AssertionError, match="read again"):
        remembered_spec("k2", unread)  # another key (a new timm version) reads again
    (tmp_path / "medtl" / "input_specs.json").write_text("{not json")
    assert remembered_spec("k1", lambda: want) == want  # a broken file is rebuilt
    assert LiteWeights(0).input_spec() == want
