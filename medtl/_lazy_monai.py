"""MONAI's optional dependencies imported when first used, not when MONAI is imported.

``import monai`` imports every MONAI submodule, and each of those calls
``monai.utils.optional_import`` for the libraries it may need: mlflow (MONAI's handlers),
torchvision.models (MONAI's FPN networks, which pulls in torch._dynamo), tifffile (whole-slide
readers), matplotlib, OpenCV, scikit-image... medtl uses none of them through MONAI, yet they
were most of the time ``medtl inspect`` took to answer on one small file
(``benchmarks/bench_startup.py``).

``install()`` (called by the command line, ``medtl.cli.main``, which owns its process; importing
medtl as a library changes nothing process-wide, so notebooks get MONAI as MONAI imports itself)
wraps ``optional_import`` as MONAI defines it: a
request for one of ``DEFERRED``'s packages with no version check and no special ``as_type``,
when the module is installed, returns at once an object that imports the real module (or
attribute) on first use; everything else goes to MONAI's own function unchanged. The success
flag is the installed-package check MONAI's import would have made, so MONAI's feature flags
keep their meaning. ``MEDTL_EAGER_MONAI=1`` turns this off.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from typing import Any

_TARGET = "monai.utils.module"
# what MONAI asks for that medtl never uses through MONAI, and that costs most to import
DEFERRED = frozenset({"mlflow", "torchvision", "matplotlib", "tifffile", "cv2", "skimage", "sklearn", "pandas"})


class _DeferredModule(types.ModuleType):
    """Stands for ``name`` until an attribute is asked for, then is the real module."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_medtl_real"] = None

    def _medtl_load(self) -> types.ModuleType:
        real = self.__dict__["_medtl_real"]
        if real is None:
            real = importlib.import_module(self.__name__)
            self.__dict__["_medtl_real"] = real
        return real

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._medtl_load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._medtl_load())


def _installed(module: str) -> bool:
    """Whether the module can be found, without importing it or its parent packages."""
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
        for i in range(1, len(parts)):
            if spec is None or not spec.submodule_search_locations:
                return False
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), list(spec.submodule_search_locations))
    except (ImportError, ValueError):
        return False
    return spec is not None


class _DeferredAttr:
    """Stands for ``module.name`` (a class or function) until it is called or looked into."""

    def __init__(self, module: str, name: str) -> None:
        self._medtl_where = (module, name)

    def _medtl_load(self) -> Any:
        module, name = self._medtl_where
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._medtl_load()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_medtl_"):
            raise AttributeError(attr)
        return getattr(self._medtl_load(), attr)


def _wrap(optional_import: Any) -> Any:
    def deferred_optional_import(module: str, version: str = "", *args: Any, **kwargs: Any) -> tuple[Any, bool]:
        name = kwargs.get("name", "")
        plain = not version and not args and kwargs.get("as_type", "default") == "default" \
            and not kwargs.get("version_args") and not kwargs.get("allow_namespace_pkg")
        if not plain or module.split(".", 1)[0] not in DEFERRED or module in sys.modules or not _installed(module):
            return optional_import(module, version, *args, **kwargs)
        if not name:
            return _DeferredModule(module), True
        if _installed(f"{module}.{name}"):
            return _DeferredModule(f"{module}.{name}"), True
        return _DeferredAttr(module, name), True

    deferred_optional_import.__doc__ = optional_import.__doc__
    deferred_optional_import.__wrapped__ = optional_import  # type: ignore[attr-defined]
    return deferred_optional_import


class _Patcher(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``monai.utils.module`` with the normal machinery, then wraps its ``optional_import``."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)  # once: the real finder does the work
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        if hasattr(module, "optional_import"):
            module.optional_import = _wrap(module.optional_import)


def install() -> None:
    """Defer MONAI's optional imports in this process (a no-op once MONAI is imported)."""
    if os.environ.get("MEDTL_EAGER_MONAI", "").lower() in ("1", "true", "yes", "on") or _TARGET in sys.modules:
        return
    if not any(isinstance(f, _Patcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _Patcher())
