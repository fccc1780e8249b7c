"""``medtl preview``: the raw plane beside the backbone input (de-normalised), captioned with the rules."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from medtl.config import PreprocessConfig
from medtl.data.preview import denormalise, render_preview
from medtl.data.synthetic import write_ct_dicom, write_nifti
from medtl.data.transforms import prepare_scan
from medtl.models.registry import get_backbone


@pytest.fixture(scope="module")
def spec():
    return get_backbone("efficientnet_lite0").weights.input_spec().with_size(96)


def test_denormalise_inverts_the_backbone_normalisation(spec) -> None:
    picture = torch.rand(3, 8, 8)
    m = torch.tensor(spec.mean).view(3, 1, 1)
    s = torch.tensor(spec.std).view(3, 1, 1)
    back = denormalise((picture - m) / s, spec.mean, spec.std)
    assert np.allclose(back, picture.permute(1, 2, 0).numpy(), atol=1e-6)


def test_preview_of_a_volume_shows_the_chosen_plane_and_says_so(tmp_path, spec) -> None:
    vol = np.full((9, 40, 50), -1000.0)
    vol[4, 10:20, 5:15] = 400.0  # only the middle slice holds the bright block
    nii = write_nifti(tmp_path / "v.nii.gz", vol, 1.0, 2.0)
    prep = prepare_scan(nii, spec, PreprocessConfig(assume_modality="CT", window="bone"), raw_plane=True)
    assert prep.raw_plane.shape == (1, 40, 50), "the raw plane in display layout (rows, columns), before padding"
    assert float(prep.raw_plane.max()) == 400.0, "in HU, not windowed"
    assert "slice: axial slice 4 of 9 (0-based; the middle)" in prep.steps
    assert any(s.startswith("intensity: CT window bone") for s in prep.steps)
    assert any(s.startswith("normalise:") and "timm pretrained_cfg" in s for s in prep.steps)
    out = render_preview(prep, tmp_path / "p.png")
    img = np.asarray(Image.open(out).convert("L"))
    assert img.shape == (640, 1000) and img.std() > 10


def test_preview_command_writes_a_png(tmp_path) -> None:
    dcm = write_ct_dicom(tmp_path / "ct.dcm", np.random.default_rng(0).normal(0, 300, (64, 64)), 0.7, "x", "y")
    p = subprocess.run([sys.executable, "-m", "medtl", "preview", str(dcm), "--out", str(tmp_path / "o" / "p.png"),
                        "--preprocess", "window=lung"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "o" / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "medtl", "preview", str(dcm), "--out", str(tmp_path / "x.png"),
                          "--preprocess", "window=lungs"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("medtl: error: --preprocess window: unknown window 'lungs' (allowed: lung,")
