"""pyproject.toml installs without setuptools' deprecation warnings (a user reads them as breakage)."""

import warnings

from tests.conftest import ROOT


def test_pyproject_applies_without_deprecation_warnings() -> None:
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_configuration(Distribution(), ROOT / "pyproject.toml")
    messages = [str(w.message).splitlines()[0] for w in caught]
    assert not [m for m in messages if "license" in m.lower()], messages
