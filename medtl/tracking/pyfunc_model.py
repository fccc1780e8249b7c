"""Model-from-code entry point that MLflow logs beside the weights (MLflow 3's recommended form)."""

import mlflow

from medtl.tracking.pyfunc import MedtlPyfunc

mlflow.models.set_model(MedtlPyfunc())
