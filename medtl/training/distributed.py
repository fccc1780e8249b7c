"""Data-parallel fine-tuning under ``torchrun``: one process per GPU (NCCL) or per CPU worker (gloo).

Under ``torchrun`` every rank runs the same comparison; fine-tuning arms train one model with
``DistributedDataParallel``, each rank on its slice of every global batch, and validation and test
predictions are sharded and gathered, so every rank sees the same metrics and takes the same
early-stopping decisions. Only rank 0 writes to MLflow and to disk (checkpoints, arm results,
the feature cache). Outside ``torchrun`` (no ``WORLD_SIZE`` > 1) nothing here is active and
training is exactly the single-process loop.

The aim is that N ranks with a per-rank batch of B/N take the *same steps* as one process with
batch B, not just statistically similar ones:

* ``GlobalBatchSampler`` draws the single-process permutation (the loader's own generator, reseeded
  each epoch) and gives rank r the slice ``batch[r::N]`` of each global batch. torch's
  ``DistributedSampler`` permutes by its own seed and pads ranks to equal length, which changes
  the batches.
* the loss is a sum over the rank's samples divided by the global sample weight (all-reduced),
  times N, so DDP's gradient average is the global batch mean, also for a short last batch and
  for class weights;
* batch norm normalises by global-batch statistics (``synced_batchnorm``, below).
What still differs is floating-point summation order (and random augmentations, which are drawn
per rank), so results match a single-process run to a tolerance, not bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a ``torchrun`` job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistContext:
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as ``torchrun`` sets them (a single process otherwise)."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))

    def device(self, name: str = "auto") -> torch.device:
        """``cuda:LOCAL_RANK`` for a CUDA job, else what ``train.device`` names."""
        if name in ("auto", "cuda") and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank if self.active else torch.cuda.current_device())
        return torch.device("cpu" if name == "auto" else name)


SINGLE = DistContext()


def is_main_process() -> bool:
    """Rank 0, or not under ``torchrun``: the process that tracks, writes and prints."""
    return DistContext.from_env().is_main


@contextmanager
def process_group(ctx: DistContext, device: torch.device) -> Iterator[None]:
    """Join the ``torchrun`` job for the duration (NCCL on CUDA, gloo on CPU); a no-op for one process."""
    if not ctx.active or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


class GlobalBatchSampler(Sampler[list[int]]):
    """Rank ``rank``'s share ``batch[rank::world_size]`` of each batch of ``batch_sampler`` (the
    single-process batches). A rank may get an empty share of a last batch shorter than the world:
    the loop then runs a zero-sample step, so every rank still takes part in each all-reduce."""

    def __init__(self, batch_sampler: BatchSampler, rank: int, world_size: int) -> None:
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batch_sampler:
            yield list(batch)[self.rank::self.world_size]

    def __len__(self) -> int:
        return len(self.batch_sampler)


def shard_range(n: int, ctx: DistContext) -> range:
    """Contiguous shards, so that gathering them in rank order restores the original order."""
    per = -(-n // ctx.world_size)
    return range(min(n, ctx.rank * per), min(n, (ctx.rank + 1) * per))


class _ShardSampler(Sampler[int]):
    def __init__(self, n: int, ctx: DistContext) -> None:
        self.indices = shard_range(n, ctx)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def distributed_loader(like: DataLoader, ctx: DistContext, train: bool) -> DataLoader:
    """``like`` (a single-process loader) for rank ``ctx.rank``: its share of every global batch
    when training (same generator, so the same permutation on every rank and as one process), a
    contiguous shard when evaluating. The per-rank batch is the global one divided by the world."""
    ds, bs = like.dataset, like.batch_size or 1
    if train:
        if bs % ctx.world_size:
            from medtl.errors import ConfigError

            raise ConfigError("train.batch_size", f"{bs} is the global batch; it must divide by the {ctx.world_size} processes")
        gen = like.generator
        base: Sampler[int] = RandomSampler(ds, generator=gen) if isinstance(like.sampler, RandomSampler) else SequentialSampler(ds)
        sampler: Any = GlobalBatchSampler(BatchSampler(base, bs, drop_last=like.drop_last), ctx.rank, ctx.world_size)
        collate = _allow_empty(like.collate_fn)
    else:
        sampler, gen = BatchSampler(_ShardSampler(len(ds), ctx), bs, drop_last=False), None
        collate = like.collate_fn
    return DataLoader(ds, batch_sampler=sampler, num_workers=like.num_workers, generator=gen, collate_fn=collate,
                      pin_memory=like.pin_memory, worker_init_fn=like.worker_init_fn)


class _allow_empty:  # noqa: N801 - a picklable collate wrapper (worker processes)
    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, batch: list[Any]) -> Any:
        return None if not batch else self.collate(batch)


def global_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Sums over ranks of a few numbers (one all-reduce)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if ctx.active:
        dist.all_reduce(t)
    return t.tolist()


def gather_rows(arrays: tuple[np.ndarray, ...], ctx: DistContext) -> tuple[np.ndarray, ...]:
    """Each rank's rows of ``arrays`` concatenated in rank order, on every rank (a rank may have none)."""
    if not ctx.active:
        return arrays
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, arrays)
    return tuple(np.concatenate([p[i] for p in parts if len(p[i])] or [parts[0][i]]) for i in range(len(arrays)))


def _global_batch_norm(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm by the statistics of the global batch, for any backend and device.

    Written by hand because ``torch.nn.SyncBatchNorm`` refuses CPU tensors (gloo) and, as a module
    replacement, drops the activation of timm's ``BatchNormAct2d`` (the default backbone's). The
    per-channel sum, sum of squares and count are all-reduced with
    ``torch.distributed.nn.functional.all_reduce``, which is differentiable, so gradients flow
    through the global statistics as they do in one process.
    """
    from torch.distributed.nn.functional import all_reduce

    acc = torch.float64 if x.device.type == "cpu" else torch.float32
    c, dims = x.shape[1], [0, *range(2, x.ndim)]
    xa = x.to(acc)
    count = torch.full((1,), x.numel() / max(c, 1), dtype=acc, device=x.device)
    stats = all_reduce(torch.cat([xa.sum(dims), (xa * xa).sum(dims), count]))
    n = stats[-1]
    mean = stats[:c] / n
    var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
    if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
            self.running_var.mul_(1 - m).add_(m * (var * n / (n - 1).clamp_min(1)).to(self.running_var.dtype))
    shape = [1, c] + [1] * (x.ndim - 2)
    y = ((xa - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)).to(x.dtype)
    if self.affine:
        y = y * self.weight.view(shape) + self.bias.view(shape)
    return y


def _synced_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return type(self).__mro__[1].forward(self, x)  # the layer's own class
    y = _global_batch_norm(self, x)  # type: ignore[arg-type]
    for post in ("drop", "act"):  # timm's norm+act layers (BatchNormAct2d): dropout, then activation
        if isinstance(getattr(self, post, None), nn.Module):
            y = getattr(self, post)(y)
    return y


_SYNCED: dict[type, type] = {}


def _synced_class(cls: type) -> type:
    if cls not in _SYNCED:
        _SYNCED[cls] = type(f"GlobalBatch{cls.__name__}", (cls,), {"forward": _synced_forward})
    return _SYNCED[cls]


@contextmanager
def synced_batchnorm(model: nn.Module, ctx: DistContext) -> Iterator[None]:
    """Batch-norm layers normalise by global-batch statistics for the duration, then are their own
    class again (switched in place, so parameters, buffers, state-dict keys and the layer-group
    references stay as they are, and the logged model is the single-process architecture)."""
    if not ctx.active:
        yield
        return
    swapped = [(m, type(m)) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m, cls in swapped:
        m.__class__ = _synced_class(cls)
    try:
        yield
    finally:
        for m, cls in swapped:
            m.__class__ = cls


def ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped for data-parallel training over its currently trainable parameters
    (rebuilt whenever a schedule unfreezes a group: DDP fixes its parameter set when built)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
