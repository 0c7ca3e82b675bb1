"""Checkpoints that carry everything needed to use a model, loaded without executing code.

A model checkpoint is a dict of plain values and tensors (``torch.load(..., weights_only=True)`` reads
it): ``format``, ``version``, ``role`` (teacher / student), ``model_config``, ``state_dict``,
``wavelengths`` (nm or None), ``scale``, ``normalization``, ``response`` (the spectral response used to
simulate the training MSI, or None), ``degradation``, ``train_config``, ``epoch``, ``step`` and
``metrics`` (validation metrics at save time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from csakd.errors import CheckpointError
from csakd.io_utils import atomic_write
from csakd.models import DTSNet, ModelConfig, load_reference_model
from csakd.models.reference import is_reference_state_dict
from csakd.normalization import Normalization

FORMAT = "csakd-checkpoint"
VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


@dataclass
class LoadedModel:
    """A model and what it needs to be used: its normalisation, wavelengths, scale and metadata."""

    model: DTSNet
    role: str
    normalization: Normalization
    wavelengths: list[float] | None
    response: dict[str, Any] | None
    degradation: dict[str, Any] | None
    metadata: dict[str, Any]

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def model_payload(
    model: nn.Module,
    *,
    role: str,
    normalization: Normalization,
    wavelengths: list[float] | None = None,
    response: dict[str, Any] | None = None,
    degradation: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    epoch: int = 0,
    step: int = 0,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    net = unwrap(model)
    assert isinstance(net, DTSNet)
    return {
        "format": FORMAT,
        "version": VERSION,
        "role": role,
        "model_config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "wavelengths": None if wavelengths is None else [float(w) for w in wavelengths],
        "scale": net.config.scale,
        "normalization": normalization.to_dict(),
        "response": response,
        "degradation": degradation,
        "train_config": train_config,
        "epoch": epoch,
        "step": step,
        "metrics": metrics or {},
    }


def save_payload(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (a temporary file renamed onto ``path``)."""
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_payload(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` with ``weights_only=True``: a file that would run code is refused."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p} is empty")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot load {p} as a weights-only PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc


def load_checkpoint(path: str | os.PathLike[str], *, scale: int = 4) -> LoadedModel:
    """Load a csakd checkpoint, or a reference implementation's bare state dict (``scale`` then applies)."""
    payload = read_payload(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        try:
            config = ModelConfig.from_dict(payload["model_config"])
            model = DTSNet(config)
            model.load_state_dict(payload["state_dict"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} is damaged or of another version: {exc}") from exc
        return LoadedModel(
            model=model,
            role=str(payload.get("role", "student")),
            normalization=Normalization.from_dict(payload["normalization"]),
            wavelengths=payload.get("wavelengths"),
            response=payload.get("response"),
            degradation=payload.get("degradation"),
            metadata={k: payload.get(k) for k in ("epoch", "step", "metrics", "train_config")},
        )
    if isinstance(payload, dict) and is_reference_state_dict(payload):
        model = load_reference_model(payload, scale=scale)
        return LoadedModel(model, model.config.name, Normalization("none"), None, None, None,
                           {"source": "reference implementation"})
    raise CheckpointError(f"{path} is neither a csakd checkpoint nor a CSAKD reference state dict")


def check_compatible(loaded: LoadedModel, *, bands: int, msi_bands: int, scale: int | None = None,
                     what: str = "input") -> None:
    """Refuse data whose band counts or scale differ from the checkpoint's, naming both."""
    cfg = loaded.config
    problems = []
    if bands != cfg.bands:
        problems.append(f"{bands} HSI bands (the checkpoint expects {cfg.bands})")
    if msi_bands != cfg.msi_bands:
        problems.append(f"{msi_bands} MSI bands (the checkpoint expects {cfg.msi_bands})")
    if scale is not None and scale != cfg.scale:
        problems.append(f"scale {scale} (the checkpoint was trained at x{cfg.scale})")
    if problems:
        raise CheckpointError(f"the {what} does not fit the checkpoint: " + "; ".join(problems))
