"""A scan becomes exactly the backbone's input: its size, channels and normalisation."""

import numpy as np
import pytest
import torch

from medtl.config import PreprocessConfig
from medtl.data.synthetic import write_ct_dicom, write_nifti
from medtl.data.transforms import preprocess_scan
from medtl.models.registry import get_backbone


@pytest.fixture(scope="module")
def spec():
    return get_backbone("efficientnet_lite0").weights.input_spec()


def test_constant_ct_maps_to_backbone_normalisation(tmp_path, spec) -> None:
    """HU above the window top is 1.0 after windowing, i.e. (1 - mean) / std after normalisation."""
    hu = np.full((40, 60), 500.0)
    hu[:, :30] = -1000.0  # half air: below the window, 0.0 -> (0 - mean) / std
    path = write_ct_dicom(tmp_path / "ct.dcm", hu, 1.0, "X", "Y^Z")
    x, info = preprocess_scan(path, spec, PreprocessConfig(window="soft_tissue"))
    assert tuple(x.shape) == (spec.channels, spec.size, spec.size) and x.dtype == torch.float32
    assert info.in_hu and info.modality == "CT"
    hi = (1.0 - spec.mean[0]) / spec.std[0]
    lo = (0.0 - spec.mean[0]) / spec.std[0]
    # the plane is padded to a square with 0 (=air) above and below: rows 0..~40 are padding
    centre_row = x[0, spec.size // 2]
    assert centre_row[: spec.size // 2 - 10].max() == pytest.approx(lo, abs=1e-4)
    assert centre_row[spec.size // 2 + 10 :].min() == pytest.approx(hi, abs=1e-4)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2]), "grey is repeated to the three channels"


def test_size_override_is_stated(spec) -> None:
    small = spec.with_size(64)
    assert small.size == 64 and "overridden" in small.source and small.mean == spec.mean


def test_dicom_and_nifti_of_the_same_slab_look_the_same(tmp_path, spec) -> None:
    """Orientation is normalised: the NIfTI (RAS) and the DICOM (LPS) of one slice give one plane."""
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 200, (3, 48, 64))
    vol[:, 5:12, 40:50] = 900.0  # an asymmetric bright block to catch flips
    dcm = write_ct_dicom(tmp_path / "a.dcm", vol[1], 1.0, "X", "Y^Z")
    nii = write_nifti(tmp_path / "a.nii.gz", vol, 1.0, 5.0)
    pp = PreprocessConfig(assume_modality="CT", window="bone")
    a, _ = preprocess_scan(dcm, spec, pp)
    b, info = preprocess_scan(nii, spec, pp)
    assert info.kind == "nifti"
    assert torch.allclose(a, b, atol=2e-2), float((a - b).abs().max())


def test_slice_rules_on_a_volume(tmp_path, spec) -> None:
    vol = np.zeros((5, 32, 32))
    for z in range(5):
        vol[z] = z * 100.0
    nii = write_nifti(tmp_path / "v.nii.gz", vol, 1.0, 1.0)
    pp = dict(assume_modality="CT", window={"level": 200.0, "width": 400.0}, slice_axis="axial")
    mean = lambda **kw: float(preprocess_scan(nii, spec.with_size(32), PreprocessConfig(**pp, **kw))[0][:, 10:20, 10:20].mean())  # noqa: E731
    middle, mip = mean(slice_rule="middle"), mean(slice_rule="mip")
    first = mean(slice_rule="index", slice_index=0)  # the most inferior slice
    last = mean(slice_rule="index", slice_index=-1)
    assert mip == pytest.approx(last) and last > middle > first
    x25, _ = preprocess_scan(nii, spec.with_size(32), PreprocessConfig(**pp, slice_rule="2.5d"))
    c = x25[:, 16, 16]
    assert c[0] < c[1] < c[2] or c[0] > c[1] > c[2], "2.5D: three adjacent slices as channels"


def test_array_twins_take_a_batch_as_the_dictionary_forms_take_one_image() -> None:
    """ToChannels and SquarePad (the batch path's steps) equal ToChannelsd and SquarePadd image by image."""
    from monai.data import MetaTensor

    from medtl.data.readers import ScanInfo
    from medtl.data.transforms import INFO, SquarePad, SquarePadd, ToChannels, ToChannelsd
    from medtl.errors import ScanError

    rng = torch.Generator().manual_seed(0)
    for c, channels in ((1, 3), (4, 3), (3, 3), (1, 1)):
        batch = torch.rand((5, c, 7, 12), generator=rng)
        got = SquarePad()(ToChannels(channels)(batch))
        assert got.shape == (5, channels, 12, 12)
        for i in range(5):
            d = {"image": MetaTensor(batch[i]), INFO: ScanInfo(path="x", kind="array")}
            want = SquarePadd("image")(ToChannelsd("image", channels)(d))
            assert torch.equal(got[i], want["image"].as_tensor())
            assert want[INFO].applied[-1] == "pad: 7x12 zero-padded to 12x12 (nothing cropped)"
    grey = torch.rand((2, 1, 4, 4), generator=rng)
    assert torch.equal(ToChannels(3).repeat_grey(grey, view=True), ToChannels(3)(grey))
    with pytest.raises(ScanError, match="3 channels cannot become 1"):
        ToChannels(1)(torch.rand(3, 4, 4), "x.png")
