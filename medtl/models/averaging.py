"""Averaged class probabilities: test-time flips of one model, and ensembles of several.

One module for both, so a served model is always "members, each over its views": a plain arm is
one member with no flips, an arm with ``tta`` one member over its flipped copies, an ``ensemble``
arm several members (each with its own head, layer and flips). Its output is the log of the mean
probability, so ``softmax(output)`` is that mean (to float rounding) and every caller that turns
logits into probabilities (``predict_probs``, the pyfunc) needs no second code path.

Flips act on the preprocessed NCHW tensor. ``hflip`` mirrors left and right: wrong for labels that
are lateralised (OrganAMNIST's left/right kidney, lung and femur classes), where it averages a class
with its mirror twin; ``vflip`` mirrors head and feet.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

FLIPS: dict[str, int] = {"hflip": -1, "vflip": -2}  # the tensor axis each mirrors (NCHW: width, height)


def views(x: torch.Tensor, tta: Sequence[str]) -> list[torch.Tensor]:
    """The input and each of its flipped copies (one flip each, in the order given)."""
    unknown = [f for f in tta if f not in FLIPS]
    if unknown:
        raise ValueError(f"unknown test-time augmentation {unknown} (known: {', '.join(FLIPS)})")
    return [x, *(x.flip(FLIPS[f]) for f in tta)]


def mean_probs(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean of probability tensors, as log-probabilities (the output of an ``Averaged``)."""
    return torch.log(torch.stack([p.float() for p in parts]).mean(0))


class Averaged(nn.Module):
    """Members' class probabilities, each averaged over its test-time views, then over members with equal weight."""

    def __init__(self, members: Sequence[nn.Module], tta: Sequence[Sequence[str]] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.tta = [tuple(t) for t in (tta if tta is not None else [()] * len(members))]
        if len(self.tta) != len(self.members):
            raise ValueError(f"{len(self.members)} members but {len(self.tta)} test-time augmentation lists")
        for t in self.tta:
            views(torch.zeros(1, 1, 1, 1), t)  # an unknown flip is refused when built, not at the first scan

    @property
    def spec(self) -> Any:
        """The members' input specification (one preprocessing serves them all)."""
        return self.members[0].spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mean_probs([torch.softmax(torch.stack([m(v).float() for v in views(x, t)]), -1).mean(0)
                           for m, t in zip(self.members, self.tta)])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The members' penultimate features of the unflipped image, side by side (``medtl evaluate``'s shift)."""
        return torch.cat([m.features(x) for m in self.members], 1)


def with_tta(model: nn.Module, tta: Sequence[str]) -> nn.Module:
    """``model`` itself without flips (its numbers bit-identical to before), else one member over its views."""
    return Averaged([model], [tta]) if tta else model


class HeadOverViews(nn.Module):
    """A head on cached features of V views, ``(B, V, D)``: what ``Averaged`` computes on flipped images, from
    the features of each flipped copy (the ``frozen`` arm's validation and test read its feature cache)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return mean_probs([torch.softmax(torch.stack([self.head(f[:, v]).float() for v in range(f.shape[1])]), -1).mean(0)])


def build_members(members: Sequence[dict[str, Any]], num_classes: int) -> Averaged:
    """An ensemble's module from its members' build records (``backbone, head, layer, spec, tta``), weights not
    loaded: the ``ArmResult`` on disk and the served model rebuild it alike. One preprocessing serves every member,
    so their input specifications must agree."""
    from medtl.models.registry import InputSpec
    from medtl.models.transfer import create_model

    specs = {json.dumps(m["spec"], sort_keys=True) for m in members}
    if len(specs) > 1:
        raise ValueError("an ensemble's members must share one input specification (they share one preprocessing)")
    models = [create_model(m["backbone"], num_classes, pretrained=False, head=m["head"], layer=m["layer"],
                           spec=InputSpec.from_dict(m["spec"]))[0] for m in members]
    return Averaged(models, [m.get("tta", []) for m in members])
