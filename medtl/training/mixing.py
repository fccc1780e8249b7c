"""Mixup and CutMix of training batches (``train.mixup``), by torchvision's ``transforms.v2``.

The loop hands each training batch to a ``BatchMixer`` before the forward pass; a mixed batch comes
back with soft targets (convex combinations of one-hot labels), which ``nn.CrossEntropyLoss`` takes
as they are, with the class weights and label smoothing of the hard-label loss. Each image is paired
with its neighbour in the (shuffled) batch, and the mixing weight is drawn from torch's generator,
which the loop reseeds every epoch, so a resumed run mixes as an uninterrupted one did.
"""

from __future__ import annotations

import torch


class BatchMixer:
    """Mixes a batch with probability ``prob``: ``mixup`` (images blended), ``cutmix`` (a box pasted in) or
    ``either`` (one of the two, drawn per batch). Images (N, C, H, W) only: a head on cached feature
    vectors is never mixed."""

    def __init__(self, num_classes: int, alpha: float = 0.2, prob: float = 1.0, mode: str = "mixup") -> None:
        from torchvision.transforms import v2  # here: the loop is imported by every command, torchvision's v2 is slow to load

        kinds = {"mixup": [v2.MixUp(alpha=alpha, num_classes=num_classes)],
                 "cutmix": [v2.CutMix(alpha=alpha, num_classes=num_classes)]}
        kinds["either"] = kinds["mixup"] + kinds["cutmix"]
        chosen = kinds[mode]
        self.transform = chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)
        self.prob = prob

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The mixed images and their soft targets (N, classes); or the batch as it came and None (not drawn this
        time, or fewer than two images to mix)."""
        if self.prob == 0 or len(y) < 2 or (self.prob < 1 and float(torch.rand(())) >= self.prob):
            return x, None
        return self.transform(x, y)
