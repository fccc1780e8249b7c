"""In-memory 2D images (MedMNIST) prepared a batch at a time, by the same MONAI steps as one scan.

``scan_transforms`` runs a dozen dictionary transforms per image. For a 28 px MedMNIST image that
is about 3 ms of Python and MetaTensor bookkeeping per image, more than the backbone's own forward
pass at 64 px (benchmarks/bench_speed.py), so per-image preprocessing made extraction 2.6x slower
than a plain batched loop. Here, for a split whose images are arrays of one shape:

* once, over the whole split: the intensity map (planned per image as ``ScanIntensity.plan`` does:
  one fixed range for 8-bit images or a CT window, each image's own percentiles otherwise), alpha
  dropped, zero-padding to a square. Kept: these planes in [0, 1] at their own size (28 px grey:
  3 KiB an image), not the backbone input (48 KiB at 64 px, 588 KiB at 224 px), so memory does
  not grow with the input size the backbone is fed;
* per batch: one MONAI ``Resize`` call for the whole batch (grey planes of one batch are the
  channels of one image to it), grey repeated to the backbone's channels, the configured random
  augmentations per image, then the weights' mean and std over the batch (torchvision's batch
  ``normalize``: the arithmetic of MONAI's channel-wise ``NormalizeIntensity``).

Every step is a per-channel or per-element operation, so a batch gives the tensors
``scan_transforms`` gives image by image; tests/data/test_batched.py checks it on real MedMNIST
images (grey and colour, non-square, up- and down-sampling, the percentile rule). Written here
because MONAI has no batch form of this pipeline; the arithmetic is MONAI's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Resize, ScaleIntensityRange, SpatialPad, Transform
from torchvision.transforms.v2.functional import normalize

from medtl.config import PreprocessConfig
from medtl.data.intensity import ScanIntensity, intensity_rule
from medtl.data.readers import array_scan
from medtl.errors import ScanError
from medtl.models.registry import InputSpec

Item = dict[str, Any]


def batchable(items: Sequence[Item]) -> bool:
    """Items whose images are finite in-memory 2D arrays (grey, RGB or RGBA) of one shape and dtype."""
    if not items:
        return False
    first = items[0]["image"]
    if not isinstance(first, np.ndarray):
        return False
    color = first.ndim == 3 and first.shape[-1] in (3, 4)
    if first.ndim - int(color) != 2:
        return False
    for it in items:
        a = it["image"]
        if not isinstance(a, np.ndarray) or a.shape != first.shape or a.dtype != first.dtype:
            return False
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return False  # the per-scan path names the image and applies preprocess.nonfinite
    return True


def _plain(t: torch.Tensor) -> torch.Tensor:
    """MONAI array transforms return MetaTensors; the batch path carries no geometry."""
    return t.as_tensor() if hasattr(t, "as_tensor") else t


def _intensity(stack: torch.Tensor, info: Any, pp: PreprocessConfig) -> torch.Tensor:
    """(N, C, H, W) float32 in the images' units -> [0, 1], each image by the map its scan would get."""
    planner = ScanIntensity(pp)
    if intensity_rule(info, pp) != "percentile":  # one map for all: a fixed range or a CT window
        m = planner.plan(stack[:1, 0], info)
        if m.hi <= m.lo:
            out = torch.zeros_like(stack)
        else:
            out = _plain(ScaleIntensityRange(m.lo, m.hi, 0.0, 1.0, clip=True)(stack))
        return 1.0 - out if m.invert else out
    # each image's own percentiles, with ScanIntensity's fallbacks (min..max, then all 0)
    flat = stack.reshape(len(stack), -1).numpy()
    lo, hi = np.percentile(flat, pp.percentiles, axis=1)
    flat_lo, flat_hi = flat.min(axis=1), flat.max(axis=1)
    same = hi <= lo
    lo, hi = np.where(same, flat_lo, lo).astype(np.float64), np.where(same, flat_hi, hi).astype(np.float64)
    const = hi <= lo
    scale = np.where(const, 1.0, hi - lo)
    shape = (-1,) + (1,) * (stack.ndim - 1)
    out = (stack - torch.as_tensor(lo, dtype=torch.float32).view(shape)) / torch.as_tensor(scale, dtype=torch.float32).view(shape)
    out = out.clamp_(0.0, 1.0)
    out[torch.as_tensor(const)] = 0.0
    return 1.0 - out if info.photometric == "MONOCHROME1" else out


CHUNK = 1024  # images mapped at once while the planes are made


def _planes(items: Sequence[Item], info: Any, pp: PreprocessConfig, channels: int) -> torch.Tensor:
    """Every image's [0, 1] plane, square, (N, C, side, side) float32.

    Made ``CHUNK`` images at a time into one preallocated tensor: a whole-split float copy, its
    intensity map and its padding, held at once, set the build's peak at 346 MiB over the
    baseline for 16k OrganAMNIST images against 200 MiB for 1k (239 MiB at 16k in chunks;
    benchmarks/bench_memory.py)."""
    rows, cols = items[0]["image"].shape[:2]
    c = 3 if info.color else 1  # RGBA: alpha dropped, as ToChannelsd does
    if c not in (1, channels):
        raise ScanError(info.path, f"{c} channels cannot become {channels}")
    side = max(rows, cols)
    out = torch.empty((len(items), c, side, side), dtype=torch.float32)
    for start in range(0, len(items), CHUNK):
        stack = torch.from_numpy(np.stack([it["image"] for it in items[start:start + CHUNK]])).to(torch.float32)
        stack = stack.permute(0, 3, 1, 2) if info.color else stack.unsqueeze(1)  # (n, C, rows, cols)
        planes = _intensity(stack, info, pp)[:, :c]
        del stack
        n = len(planes)
        if rows != cols:  # zero-padded to a centred square, as SquarePadd does (nothing cropped)
            planes = _plain(SpatialPad(spatial_size=(side, side), method="symmetric", mode="constant")(
                planes.reshape(n * c, rows, cols))).reshape(n, c, side, side)
        out[start:start + n] = planes
    return out


class BatchedArrays(torch.utils.data.Dataset):
    """A split of in-memory 2D images; ``dataset[indices]`` through ``__getitems__`` prepares a batch at once.

    ``transform`` holds the random augmentations (a MONAI ``Compose``), so MONAI's
    ``worker_init_fn`` and the training loop reseed them as they reseed a ``CacheDataset``'s.
    """

    def __init__(self, items: Sequence[Item], spec: InputSpec, pp: PreprocessConfig,
                 augment: Sequence[Transform] = ()) -> None:
        if not batchable(items):
            raise ValueError("BatchedArrays needs finite in-memory 2D arrays of one shape (see batchable)")
        self.items = [{k: v for k, v in it.items() if k != "image"} for it in items]
        self.spec = spec
        # the one place the random transforms live: MONAI's set_rnd reseeds every Randomizable it finds
        # among the attributes, so a second reference would be seeded twice, from different numbers
        self.transform = Compose(list(augment), map_items=False) if augment else None
        first = items[0]
        _, info = array_scan(first["image"], str(first.get("path", "array")))  # the ScanInfo every image gets
        self.planes = _planes(items, info, pp, spec.channels)
        self.resize = Resize(spatial_size=(spec.size, spec.size), mode=spec.interpolation, anti_aliasing=True)
        self.mean, self.std = list(spec.mean), list(spec.std)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Item:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        x = self.planes[idx]
        b, c, side, _ = x.shape
        x = _plain(self.resize(x.reshape(b * c, side, side))).reshape(b, c, self.spec.size, self.spec.size)
        if c == 1 and self.spec.channels != 1:
            x = x.expand(-1, self.spec.channels, -1, -1)  # a view: normalisation writes the one copy
        if self.transform is not None:  # per image: each draws its own random parameters
            x = torch.stack([_plain(self.transform({"image": img.contiguous()})["image"]) for img in x]).float()
        # NormalizeIntensity's channel-wise arithmetic ((x - mean[c]) / std[c]) on the whole batch at once
        x = normalize(x, self.mean, self.std)
        return [{**self.items[int(i)], "image": img} for i, img in zip(idx, x)]
