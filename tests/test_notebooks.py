"""Every notebook in notebooks/ runs top to bottom (small mode), so none can rot.

Each one executes with nbclient in a fresh kernel, in an empty working folder, with
``MEDTL_NOTEBOOK_SMOKE=1`` (tiny sizes) and ``MEDTL_REPO`` (where the notebook finds ``configs/``
and ``../shared``); the kernel inherits this process's environment, PYTHONPATH included.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_stored_without_outputs() -> None:
    assert NOTEBOOKS, "notebooks/ holds the quickstart at least"
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
        assert not dirty, f"{path.name}: cells {dirty} are stored with outputs (clear them before committing)"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MEDTL_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("MEDTL_REPO", str(ROOT))
    monkeypatch.setenv("MEDTL_PROGRESS", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the notebook's own store, in its working folder
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name}: {str(e)[-3000:]}")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
