"""The process-wide state a training run needs, set up once by whoever starts the run.

:func:`setup_process` reads where this process stands in a launch (``torchrun``'s ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), checks that the global batch splits over the processes, picks this rank's device, joins the
process group, and sets PyTorch's deterministic algorithms (when asked for) and the global seed. It returns a
:class:`ProcessContext` for :class:`~csakd.train.trainer.Trainer` (``Trainer(..., process=ctx)``);
:func:`teardown_process` leaves the group again. The caller calls it just before it constructs the trainer:
the seed then gives the networks the same initial weights as any other run with that seed.

A trainer constructed without a context sets one up itself (and tears it down in ``close()``), so that
library code and tests can construct one directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from csakd.devices import resolve_device
from csakd.train import distributed as ddp
from csakd.train.config import TrainConfig

__all__ = ["ProcessContext", "setup_process", "teardown_process"]


@dataclass(frozen=True)
class ProcessContext:
    """This process's place in a run (rank, world size, process group) and the device it trains on."""

    dist: ddp.DistContext
    device: torch.device


def process_device(cfg: TrainConfig, ctx: ddp.DistContext) -> torch.device:
    """The device this rank trains on for ``cfg.device`` (see :func:`~csakd.train.distributed.device_for_rank`)."""
    return ddp.device_for_rank(cfg.device, ctx) if ctx.enabled else resolve_device(cfg.device)


def setup_process(cfg: TrainConfig, *, samples_per_epoch: int | None = None) -> ProcessContext:
    """Set up this process for training with ``cfg``: rank, device, process group, determinism and seed.

    Args:
        cfg: the run's settings (``device``, ``batch_size``, ``deterministic``, ``seed``).
        samples_per_epoch: the training set's length; under a multi-process launch the global batch is
            checked against it (and the process count) before the group is joined.

    Raises:
        InputError: invalid settings, inconsistent launch variables, a batch the processes cannot split, or
            an unusable device.
    """
    cfg.validate()
    ctx = ddp.context_from_env()
    if ctx.enabled and samples_per_epoch is not None:
        ddp.check_global_batch(cfg.batch_size, ctx.world_size, samples_per_epoch)
    device = process_device(cfg, ctx)
    ctx = ddp.init_process_group(ctx, device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)
    return ProcessContext(ctx, device)


def teardown_process(process: ProcessContext) -> None:
    """Leave the process group if :func:`setup_process` created it (a no-op in a single process)."""
    ddp.destroy_process_group(process.dist)
