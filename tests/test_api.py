"""The Python API talks like the CLI: it says which MLflow names a config dict left to defaults."""

import warnings

import pytest

from medtl import api
from medtl.errors import MedtlError, MedtlWarning


def test_config_dict_without_tracking_names_the_experiment_and_model(mlflow_uri, tmp_path) -> None:
    cfg = {"data": {"manifest": str(tmp_path / "missing.csv")}}  # fails at loading, after the notice
    with pytest.warns(MedtlWarning, match="runs go to MLflow experiment 'medtl' and the best model is registered as 'medtl-model'"):
        with pytest.raises(MedtlError):
            api.compare(cfg)
    cfg["tracking"] = {"experiment": "mine", "model_name": "mine"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedtlWarning)
        with pytest.raises(MedtlError):
            api.compare(cfg)
