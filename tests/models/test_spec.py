"""The input spec travels with the model (issue 19), as timm's ``pretrained_cfg`` does: made once
with its size, read from the model after, and kept through saving, loading and logging."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from medtl.experiment.results import ArmResult
from medtl.experiment.run import compare
from medtl.config import PreprocessConfig, load_config
from medtl.models.registry import InputSpec, get_backbone, input_spec, list_backbones
from medtl.models.transfer import create_model
from medtl.tracking.pyfunc import MedtlClassifier, model_meta
from tests.conftest import ROOT, tiny_config
from tests.test_import_graph import import_graph


def test_the_model_carries_the_spec_it_was_built_with() -> None:
    spec = input_spec("tiny", 24)
    assert spec.size == 24 and spec.mean == get_backbone("tiny").weights.input_spec().mean
    model, built = create_model("tiny", num_classes=2, spec=spec)
    assert model.spec is spec and built.spec is spec and model.backbone.name == "tiny"
    assert copy.deepcopy(model).spec == spec  # plain attributes: copies keep them
    assert not any("spec" in k for k in model.state_dict())  # and the weights file holds tensors only
    default, _ = create_model("tiny", num_classes=2)
    assert default.spec == get_backbone("tiny").weights.input_spec()  # the weights' own size


def test_a_comparison_s_models_keep_its_spec_through_save_load_and_logging(marker_data, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(marker_data, strategies=[{"name": "frozen", "epochs": 1}, {"name": "full", "epochs": 1}])
    cfg["preprocess"]["size"] = 24  # not the tiny backbone's own 32
    comp = compare(load_config(cfg))
    assert comp.spec.size == 24
    for arm in comp.arms:
        assert arm.model.spec == comp.spec, arm.strategy
        assert ArmResult.load(arm.folder).model.spec == comp.spec, f"{arm.strategy}: resumed arm lost its size"
        meta = model_meta(arm.model, comp.data.classes, PreprocessConfig(**cfg["preprocess"]), "linear", arm.strategy)
        assert meta["backbone"] == "tiny" and InputSpec.from_dict(meta["input_spec"]) == comp.spec
        served = MedtlClassifier(meta, arm.model.state_dict())
        assert served.spec == served.model.spec == comp.spec  # the logged spec, not the registry's 32


def test_the_registry_is_a_leaf_and_the_package_registers_the_builtins() -> None:
    assert not {m for m in import_graph()["medtl.models.registry"] if m.startswith("medtl.models")}
    assert {"resnet18", "efficientnet_lite0", "tiny"} <= set(list_backbones())
    p = subprocess.run([sys.executable, "-c", "from medtl.models.registry import list_backbones; print(list_backbones())"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "efficientnet_lite0" in p.stdout and "resnet18" in p.stdout, p.stderr[-1000:]
