"""Data-parallel training over several processes (``torchrun`` / PyTorch DDP).

How a run is spread over ``W`` processes (ranks ``0..W-1``), one GPU per process (or CPU processes):

- **Launch**: ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and ``MASTER_ADDR`` /
  ``MASTER_PORT``); :func:`context_from_env` reads them, :func:`init_process_group` joins the group (NCCL when
  the device is CUDA, gloo on the CPU). A process group that the caller already initialised is used as it is.
  ``WORLD_SIZE=1`` (or no torchrun at all) is the plain single-process path: no process group, no DDP.
- **Device**: ``auto`` / ``cuda`` become ``cuda:LOCAL_RANK``; ``cpu`` stays the CPU (gloo).
- **Data**: every rank builds the same per-epoch permutation of the training samples; global batch ``k``
  is ``order[k B : (k + 1) B]`` (``B`` the configured ``batch_size``) and rank ``r`` takes its ``r``-th
  contiguous share of ``B / W`` samples (:func:`shard_order`). Only full global batches are used, as the
  single-process loader does with ``drop_last``. ``W`` must divide ``B`` and an epoch must hold at least
  one global batch (:func:`check_global_batch`), else :class:`~csakd.errors.InputError` before any work.
- **Gradients**: DDP averages the ranks' gradients. The losses of :mod:`csakd.losses` are means over the
  images of a batch with equal weight per image (and the networks have no batch normalisation), so the
  average of ``W`` equal-size shard means is the mean over the global batch: with training noise off, a
  step on ``W`` ranks equals a step of one process on the whole global batch (up to float rounding).
- **Training noise**: each rank draws from its own generator, seeded ``seed + 1 + rank`` for a new run
  (rank 0 of any run, and a single process, therefore draw exactly as before). ``last.pt`` keeps every
  rank's generator state with the world size; a resume on the same number of processes restores them
  (exact), a resume on another number reseeds each rank from ``(seed, epoch, rank)`` (:func:`rank_noise_seed`).
  With noise on, results therefore depend on the world size; with noise off they do not. The batch-wide
  noise power (``noise_per_image=False``) is taken over a rank's own ``B / W`` images.

The helpers below are no-ops (or return their input) when the context is not distributed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from csakd.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "DistContext",
    "all_gather_objects",
    "all_true",
    "broadcast_object",
    "check_global_batch",
    "context_from_env",
    "destroy_process_group",
    "device_for_rank",
    "init_process_group",
    "is_main_process",
    "max_over_ranks",
    "rank_noise_seed",
    "shard_order",
    "sum_over_ranks",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: this process's global rank (0 .. world_size - 1).
        world_size: the number of processes.
        local_rank: the rank on this machine (picks the GPU).
        backend: ``nccl`` / ``gloo`` once the group is joined, None otherwise.
        owns_group: whether csakd initialised the process group (and so destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes files, logs and shows progress."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise InputError(f"environment variable {name}={raw!r}: expected an integer (as torchrun sets it)") from exc


def context_from_env() -> DistContext:
    """The rank / world size of this process, from an initialised process group or torchrun's variables.

    Without either (a plain ``python`` launch) this is rank 0 of 1. Nothing is initialised here.

    Raises:
        InputError: the variables are not integers or are inconsistent (rank outside 0..world_size-1).
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=_env_int("LOCAL_RANK", 0),
            backend=str(dist.get_backend()),
            owns_group=False,
        )
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if world < 1:
        raise InputError(f"WORLD_SIZE={world}: expected a positive number of processes")
    if not 0 <= rank < world:
        raise InputError(f"RANK={rank} with WORLD_SIZE={world}: expected a rank in 0..{world - 1}")
    if local < 0:
        raise InputError(f"LOCAL_RANK={local}: expected a non-negative integer")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def is_main_process() -> bool:
    """True on rank 0 (or without any distributed launch): the process that writes a run's files."""
    return context_from_env().is_main


def device_for_rank(name: str, ctx: DistContext) -> torch.device:
    """The device of this rank for the ``--device`` setting ``name``.

    Single process: ``auto`` is CUDA when available, else the CPU; any other name is used as given.
    Distributed: ``auto`` and ``cuda`` become ``cuda:LOCAL_RANK`` (the CPU for ``auto`` without CUDA), ``cpu``
    stays the CPU; ``cuda:N`` is refused, since every process would take the same GPU.

    Raises:
        InputError: an unknown name, CUDA asked for but absent, ``cuda:N`` under a multi-process launch, or a
            LOCAL_RANK beyond the GPUs of this machine.
    """
    try:
        device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                              "cpu" if name == "auto" else name)
    except RuntimeError as exc:
        raise InputError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but CUDA is not available on this machine")
    if not ctx.enabled or device.type != "cuda":
        return device
    if device.index is not None:
        raise InputError(
            f"device {name!r} names one GPU, but under torchrun each of the {ctx.world_size} processes takes "
            "the GPU of its LOCAL_RANK: pass --device cuda (or auto)"
        )
    count = torch.cuda.device_count()
    if ctx.local_rank >= count:
        raise InputError(
            f"LOCAL_RANK={ctx.local_rank} but this machine has {count} GPU(s): start at most {count} processes "
            "per node (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", ctx.local_rank)


def check_global_batch(batch_size: int, world_size: int, samples_per_epoch: int) -> int:
    """The per-rank batch ``batch_size / world_size``, after checking that the split is possible.

    Raises:
        InputError: ``world_size`` does not divide ``batch_size``, or an epoch holds fewer samples than one
            global batch (the ranks would get unequal shares, and their averaged gradients would not be the
            mean over the batch).
    """
    if world_size < 1:
        raise InputError(f"world size {world_size}: expected at least one process")
    if batch_size % world_size:
        raise InputError(
            f"batch size {batch_size} is not divisible by the {world_size} processes: the batch size is the global "
            f"batch, split evenly over the processes; pass a --batch-size that is a multiple of {world_size}"
        )
    if world_size > 1 and samples_per_epoch < batch_size:
        raise InputError(
            f"an epoch has {samples_per_epoch} samples, fewer than the global batch {batch_size}: with "
            f"{world_size} processes every step needs a full batch; raise --samples-per-epoch or lower --batch-size"
        )
    return batch_size // world_size


def shard_order(order: Sequence[int], batch_size: int, rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s samples of the global permutation ``order``, in the order it loads them.

    Global batch ``k`` is ``order[k * batch_size : (k + 1) * batch_size]`` (full batches only; a trailing
    partial batch is dropped); the rank takes the ``rank``-th contiguous slice of ``batch_size / world_size``
    of each. Concatenating the ranks' ``k``-th local batches in rank order gives global batch ``k``.
    """
    local = batch_size // world_size
    if local * world_size != batch_size or not 0 <= rank < world_size:
        raise InputError(f"cannot split batches of {batch_size} over {world_size} processes for rank {rank}")
    out: list[int] = []
    for start in range(0, len(order) - batch_size + 1, batch_size):
        begin = start + rank * local
        out.extend(int(i) for i in order[begin : begin + local])
    return out


def rank_noise_seed(seed: int, rank: int, epoch: int | None = None) -> int:
    """The seed of rank ``rank``'s training-noise generator.

    A new run (``epoch`` None): ``seed + 1 + rank`` (rank 0 of any run seeds ``seed + 1``, as a single
    process always has). A resume on a different number of processes (``epoch`` the epochs completed):
    a 63-bit seed drawn from ``numpy.random.SeedSequence((seed, epoch, rank))``, distinct per rank and epoch.
    """
    if epoch is None:
        return int(seed) + 1 + int(rank)
    state = np.random.SeedSequence([abs(int(seed)), int(epoch), int(rank)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def init_process_group(ctx: DistContext, device: torch.device, *, timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group of a multi-process launch (NCCL for CUDA devices, gloo for the CPU).

    Uses torchrun's ``env://`` rendezvous (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``); a group
    that is already initialised is used as it is. Sets the CUDA device of this rank. Returns the context with
    ``backend`` (and ``owns_group`` when this call created the group); a single-process context comes back
    unchanged.
    """
    if not ctx.enabled:
        return ctx
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, str(dist.get_backend()), False)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise InputError(
                f"WORLD_SIZE={ctx.world_size} but {name} is not set: launch with torchrun, which sets it "
                "(or set MASTER_ADDR and MASTER_PORT yourself)"
            )
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=ctx.rank,
        world_size=ctx.world_size,
        timeout=timedelta(minutes=timeout_minutes),
        **kwargs,
    )
    if ctx.is_main:
        log.info("distributed training: %d processes, backend %s", ctx.world_size, backend)
    return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, backend, True)


def destroy_process_group(ctx: DistContext) -> None:
    """Leave the process group if ``ctx`` created it (a group initialised by the caller is left alone)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- collectives
def max_over_ranks(value: float, ctx: DistContext, device: torch.device) -> float:
    """The largest of the ranks' ``value`` (``value`` itself in a single process)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_true(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True only when ``flag`` is True on every rank (``flag`` itself in a single process)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def sum_over_ranks(values: dict[str, float], ctx: DistContext, device: torch.device) -> dict[str, float]:
    """Each value summed over the ranks (every rank must pass the same keys)."""
    if not ctx.enabled or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself in a single process)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
