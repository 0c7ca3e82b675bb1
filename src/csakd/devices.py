"""Devices: the name a user gives (``auto``, ``cpu``, ``cuda``, ``cuda:N``) as a :class:`torch.device`."""

from __future__ import annotations

import torch

from csakd.errors import InputError


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA where available, else the CPU; a CUDA device asked for on a machine without one is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device
