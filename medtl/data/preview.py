"""A picture of what the backbone sees, beside the raw scan, with the rules that were applied.

Left: the plane the slice rule chose, in the scan's own units (HU for CT), shown between its
0.5th and 99.5th percentiles with the physical pixel aspect. Right: the backbone input,
de-normalised with the weights' mean and std, exactly as the network receives it. The caption
lists every step (window, slice, padding, resize, normalisation). Only header fields from the
allow-list and the file name appear: no patient identifier.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medtl.data.transforms import PreparedScan


def denormalise(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(C, H, W) normalised -> (H, W, C) in [0, 1], as a picture."""
    m = torch.as_tensor(mean, dtype=image.dtype).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=image.dtype).view(-1, 1, 1)
    return (image * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def _raw_picture(plane: torch.Tensor, color: bool) -> tuple[np.ndarray, str]:
    a = plane.detach().float().numpy()
    if color and a.shape[0] >= 3:
        pic = np.moveaxis(a[:3], 0, -1)
        lo, hi = float(pic.min()), float(pic.max())
        return np.clip((pic - lo) / max(hi - lo, 1e-6), 0, 1), f"values {lo:g}..{hi:g}"
    grey = a[a.shape[0] // 2]  # 2.5D: the centre slice
    lo, hi = np.percentile(grey, [0.5, 99.5])
    return grey, f"shown {lo:.4g}..{hi:.4g} (0.5th..99.5th percentile)"


def render_preview(prep: PreparedScan, out: str | Path, title: str | None = None) -> Path:
    """Write the side-by-side PNG; returns its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = prep.info
    raw_pic, raw_range = _raw_picture(prep.raw_plane if prep.raw_plane is not None else prep.raw[..., 0], info.color)
    model_pic = denormalise(prep.image, prep.spec.mean, prep.spec.std)

    fig = Figure(figsize=(10, 6.4), dpi=100)
    FigureCanvasAgg(fig)
    ax_raw, ax_in = fig.subplots(1, 2)
    aspect = 1.0
    if info.spacing and len(info.raw_axes) >= 2 and not info.volume:
        sp = dict(zip(info.raw_axes, info.spacing))
        if sp.get("rows") and sp.get("columns"):
            aspect = float(sp["rows"]) / float(sp["columns"])
    if raw_pic.ndim == 2:
        lo, hi = np.percentile(raw_pic, [0.5, 99.5])
        ax_raw.imshow(raw_pic, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=aspect,
                      interpolation="nearest")
    else:
        ax_raw.imshow(raw_pic, aspect=aspect, interpolation="nearest")
    units = "HU" if info.in_hu else "stored values"
    raw_shape = "x".join(map(str, info.raw_shape))
    ax_raw.set_title(f"raw plane ({units}, {raw_range})\nfile {raw_shape} ({', '.join(info.raw_axes)})", fontsize=9)
    ax_in.imshow(model_pic, interpolation="nearest")
    c, h, w = prep.image.shape
    ax_in.set_title(f"what the backbone receives: {c}x{h}x{w}\n(de-normalised with the weights' mean/std)", fontsize=9)
    for ax in (ax_raw, ax_in):
        ax.set_xticks([])
        ax.set_yticks([])
    head = title or f"{Path(info.path).name}: {info.kind} {info.modality or ''}".strip()
    fig.suptitle(head, fontsize=11)
    caption = "\n".join(textwrap.fill(s, 130) for s in prep.steps)
    fig.text(0.01, 0.01, caption, fontsize=7.5, family="monospace", va="bottom")
    n_lines = caption.count("\n") + 1
    fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=min(0.5, 0.04 + 0.026 * n_lines), wspace=0.05)
    fig.savefig(out, format="png")
    return out
