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
images (grey and colour, non-square, up- and down-sampling, the percentile rule). The steps are
the array forms of the per-scan dictionary transforms (``ScanIntensity.map_batch``,
``ToChannels``, ``SquarePad``, MONAI's ``Resize``), which take a batch as well as one image; only
the order (planes kept, resized per batch) is this module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Resize, Transform
from torchvision.transforms.v2.functional import normalize

from medtl.config import PreprocessConfig
from medtl.data.intensity import ScanIntensity
from medtl.data.readers import array_scan
from medtl.data.transforms import SquarePad, ToChannels
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


CHUNK = 1024  # images mapped at once while the planes are made


def _planes(items: Sequence[Item], info: Any, pp: PreprocessConfig, channels: int) -> torch.Tensor:
    """Every image's [0, 1] plane, square, (N, C, side, side) float32.

    Made ``CHUNK`` images at a time into one preallocated tensor: a whole-split float copy, its
    intensity map and its padding, held at once, set the build's peak at 346 MiB over the
    baseline for 16k OrganAMNIST images against 200 MiB for 1k (239 MiB at 16k in chunks;
    benchmarks/bench_memory.py)."""
    rows, cols = items[0]["image"].shape[:2]
    intensity, to_channels, pad = ScanIntensity(pp), ToChannels(channels), SquarePad()
    c = min(info.raw_shape[-1], 3) if info.color else 1  # RGBA: alpha dropped; drop_alpha checks the count
    side = max(rows, cols)
    out = torch.empty((len(items), c, side, side), dtype=torch.float32)
    for start in range(0, len(items), CHUNK):
        stack = torch.from_numpy(np.stack([it["image"] for it in items[start:start + CHUNK]])).to(torch.float32)
        stack = stack.permute(0, 3, 1, 2) if info.color else stack.unsqueeze(1)  # (n, C, rows, cols)
        planes = to_channels.drop_alpha(_plain(intensity.map_batch(stack, info)), info.path)
        del stack
        out[start:start + len(planes)] = _plain(pad(planes))
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
        self.to_channels = ToChannels(spec.channels)
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
        x = self.to_channels.repeat_grey(x, view=True)  # a view: normalisation writes the one copy
        if self.transform is not None:  # per image: each draws its own random parameters
            x = torch.stack([_plain(self.transform({"image": img.contiguous()})["image"]) for img in x]).float()
        # NormalizeIntensity's channel-wise arithmetic ((x - mean[c]) / std[c]) on the whole batch at once
        x = normalize(x, self.mean, self.std)
        return [{**self.items[int(i)], "image": img} for i, img in zip(idx, x)]
