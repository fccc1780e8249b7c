"""Shared fixtures: the real data in ../shared (skipped with a reason when absent), a tiny backbone
for fast training tests, synthetic DICOM/NIfTI writers (from medtl.data.synthetic), MLflow stores."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

os.environ.setdefault("MEDTL_PROGRESS", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
warnings.filterwarnings("ignore")
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDTL_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or a skip that says why."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs the shared real data at {p} (../shared beside the project; set MEDTL_SHARED to move it)")
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path()


# -- a tiny backbone: three groups, a few thousand parameters, for loop and strategy tests -------
from medtl.models.registry import BackboneSpec, InputSpec, register_backbone  # noqa: E402


class TinyWeights:
    id = "tiny:fixed-seed"

    def input_spec(self) -> InputSpec:
        return InputSpec(32, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear", "tiny test backbone")

    def load_into(self, model: nn.Module) -> str:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        return "tiny-fixed-seed"


def _tiny_build() -> nn.Module:
    return nn.ModuleDict({
        "stem": nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU()),
        "stage1": nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU()),
        "stage2": nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU()),
    })


def _tiny_split(m: nn.Module):  # noqa: ANN202
    return [(k, m[k]) for k in ("stem", "stage1", "stage2")], nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


register_backbone(BackboneSpec("tiny", _tiny_build, _tiny_split, TinyWeights(), "test", "tiny test backbone"), overwrite=True)


@pytest.fixture()
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture(scope="session")
def marker_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small curated marker dataset (DICOM + NIfTI, two scanners) shared by training tests."""
    from medtl.data.curate import curate
    from medtl.data.synthetic import make_marker_dataset

    root = tmp_path_factory.mktemp("marker")
    manifest = make_marker_dataset(root / "data", patients_per_domain=10, scans_per_patient=2, seed=1)
    curate(manifest, root / "curated", seed=0)
    return root / "curated" / "manifest.csv"


def tiny_config(manifest: Path, **over: object) -> dict:
    cfg = {
        "name": "tiny",
        "data": {"manifest": str(manifest)},
        "preprocess": {"assume_modality": "CT", "window": "lung"},
        "backbone": {"name": "tiny"},
        "strategies": [{"name": "frozen", "epochs": 3}, {"name": "full", "epochs": 2}],
        "train": {"batch_size": 8, "lr": 1e-3, "bootstrap": 50, "seed": 0},
        "tracking": {"experiment": "tiny", "model_name": "tiny-model"},
    }
    for k, v in over.items():
        cfg[k] = v
    return cfg


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# -- helpers shared by the training tests ---------------------------------------------------------
def state_of(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's state, to compare before and after training."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """The same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


def toy_loaders(n: int = 32, batch: int = 8):  # noqa: ANN201
    """A learnable toy task on 32 px noise (label: the centre's sign); a shuffled train loader and a val loader."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = (x[:, 0, 8:24, 8:24].mean((1, 2)) > 0).long()
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0)), DataLoader(ds, batch_size=batch)


def artifact_files(client, run_id: str, path: str | None = None) -> set[str]:  # noqa: ANN001
    """Every artifact path of an MLflow run, folders walked."""
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifact_files(client, run_id, f.path) if f.is_dir else {f.path}
    return out
