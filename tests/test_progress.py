"""Progress where a person watches: a terminal, and a notebook (whose stderr is no terminal)."""

import io
import sys
import types

from medtl import progress


class _KernelStream(io.StringIO):
    """Stands in for ipykernel's OutStream: what sys.stderr is inside a Jupyter kernel."""


_KernelStream.__module__ = "ipykernel.iostream"


def test_a_notebook_gets_a_progress_bar(monkeypatch) -> None:
    monkeypatch.delenv("MEDTL_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    stream = _KernelStream()
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setattr(sys, "stderr", stream)
    assert progress.progress_enabled()
    assert list(progress.track(range(5), "extracting train features", total=5)) == [0, 1, 2, 3, 4]
    assert "extracting train features" in stream.getvalue() and "/5 " in stream.getvalue()


def test_logs_and_ci_stay_quiet(monkeypatch) -> None:
    monkeypatch.delenv("MEDTL_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not progress.progress_enabled()
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setattr(sys, "stderr", _KernelStream())
    monkeypatch.setenv("CI", "1")
    assert not progress.progress_enabled()
