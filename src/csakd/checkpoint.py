"""Checkpoints that carry everything needed to use a model, loaded without executing code.

A model checkpoint is a dict of plain values and tensors (``torch.load(..., weights_only=True)`` reads
it): ``format``, ``version``, ``role`` (teacher / student), ``model_config``, ``state_dict``,
``wavelengths`` (nm or None), ``scale``, ``normalization``, ``response`` (the spectral response used to
simulate the training MSI, or None), ``degradation``, ``train_config``, ``epoch``, ``step`` and
``metrics`` (validation metrics at save time).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from csakd.errors import CheckpointError
from csakd.files import atomic_write
from csakd.models import DTSNet, ModelConfig, load_reference_model
from csakd.models.reference import infer_reference_config, is_reference_state_dict
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


class _RecordingWriter:
    """A binary file wrapper that keeps the OSError a write raised: ``torch.save`` reports failed writes
    (disk full, file too large) as a bare RuntimeError, which this lets :func:`save_payload` undo."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_payload(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (a temporary ``.part`` file renamed onto ``path``).

    Raises:
        CsakdError: the write failed (disk full, permissions...), naming ``path``; the old file, if any,
            is left as it was and no partial file remains under its name.
    """

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            rec = _RecordingWriter(fh)
            try:
                torch.save(payload, rec)  # type: ignore[arg-type]
            except RuntimeError as exc:
                if rec.error is not None:
                    raise rec.error from exc
                raise

    return atomic_write(path, write)


def _one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _refusal(p: Path, exc: Exception) -> CheckpointError:
    """A one-line CheckpointError for a file ``torch.load(weights_only=True)`` could not read."""
    text = _one_line(exc, 10_000)
    forbidden = re.search(r"GLOBAL ([\w.]+)", text)
    if forbidden:
        return CheckpointError(
            f"cannot load checkpoint {p}: refused: it holds a Python object ({forbidden.group(1)}) that a weights-only "
            "load does not allow, because building it could run code; csakd reads only tensors and plain "
            "values (save the weights as a state dict or a csakd checkpoint)"
        )
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        detail = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
        why = f" ({detail.group(1)})" if detail else ""
        return CheckpointError(
            f"cannot load checkpoint {p}: not a PyTorch checkpoint that can be read without running code{why}: "
            "expected a file written by torch.save (damaged, truncated, or another format?)"
        )
    first = re.split(r"(?<=\.) ", text, maxsplit=1)[0]
    return CheckpointError(
        f"cannot load checkpoint {p} (damaged or truncated?): {type(exc).__name__}: {_one_line(first, 200)}"
    )


def _check_zip_checksums(p: Path) -> None:
    """Refuse a zip-format checkpoint (what ``torch.save`` writes) whose entries fail their CRC-32 check.

    ``torch.load`` does not verify the checksums, so a corrupted byte would otherwise load as a silently
    different weight or setting."""
    if not zipfile.is_zipfile(p):
        return  # the legacy format, or damage that torch.load reports itself
    try:
        with zipfile.ZipFile(p) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error) as exc:
        raise CheckpointError(f"checkpoint {p} is damaged: its zip structure is broken ({_one_line(exc)})") from exc
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {p} is damaged: the checksum of its entry {bad} does not match the contents "
            "(a corrupted or partly copied file)"
        )


def read_payload(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` with ``weights_only=True``: a file that would run code is refused.

    Raises:
        CheckpointError: (one line) a missing, empty, damaged or truncated file, or one that holds Python
            objects other than tensors and plain values (which could run code when loaded).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p} is empty")
    _check_zip_checksums(p)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. about the pickle protocol of foreign files
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _refusal(p, exc) from exc


@functools.lru_cache(maxsize=64)
def _declared_numel(config_json: str) -> int:
    """Parameters and buffers of the network of this (JSON) config, counted on the ``meta`` device."""
    with torch.device("meta"):
        net = DTSNet(ModelConfig.from_dict(json.loads(config_json)))
    return sum(t.numel() for t in net.state_dict().values())


def check_declared_size(config: ModelConfig, path: str | os.PathLike[str]) -> None:
    """Refuse a model config whose weights could not be in the checkpoint file, before building it.

    The network is built on PyTorch's ``meta`` device (no memory) to count its parameters and buffers; a
    checkpoint stores each of them, in at least 2 bytes (bf16), so a config that declares more than the file
    could hold is damaged or crafted and would only make csakd allocate memory for nothing.

    Raises:
        CheckpointError: naming the declared size and the file size.
    """
    p = Path(path)
    try:
        numel = _declared_numel(json.dumps(config.to_dict(), sort_keys=True))
    except Exception as exc:
        raise CheckpointError(f"checkpoint {p}: its model config cannot be built: {_one_line(exc)}") from exc
    size = p.stat().st_size
    if 2 * numel > size + 4096:
        raise CheckpointError(
            f"checkpoint {p} declares a model of {numel} parameters ({2 * numel / 2**20:.1f} MiB at the least), "
            f"but the file holds only {size / 2**20:.1f} MiB: damaged or not a checkpoint of this model"
        )


#: The checkpoint format versions this csakd reads.
READABLE_VERSIONS = tuple(range(1, VERSION + 1))


def check_version(version: object, path: str | os.PathLike[str]) -> None:
    """Refuse a checkpoint whose format ``version`` this csakd cannot read (newer, or not a version at all),
    naming the version found and the versions readable."""
    readable = ", ".join(map(str, READABLE_VERSIONS))
    if version is None:  # files of the first format, written before the field was checked
        return
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"checkpoint {path} has format version {version!r}: this csakd reads versions {readable}")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}, newer than this csakd reads (versions {readable}): "
            "upgrade csakd (pip install -U csakd) to use it"
        )


_DAMAGE = (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError)


def load_checkpoint(path: str | os.PathLike[str], *, scale: int = 4) -> LoadedModel:
    """Load a csakd checkpoint, or a reference implementation's bare state dict (``scale`` then applies).

    Nothing in the file is executed (``weights_only=True``), and the model's declared size is checked against
    the file's before any memory is allocated for it (:func:`check_declared_size`).

    Raises:
        CheckpointError: (one line) the file is missing, damaged, refused (it would run code), of another
            format or version, or its fields are not what a checkpoint holds.
    """
    payload = read_payload(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        check_version(payload.get("version"), path)
        try:
            config = ModelConfig.from_dict(payload["model_config"])
            check_declared_size(config, path)
            model = DTSNet(config)
            model.load_state_dict(payload["state_dict"])
            normalization = Normalization.from_dict(payload["normalization"])
            wavelengths = payload.get("wavelengths")
            if wavelengths is not None:
                wavelengths = [float(w) for w in wavelengths]
                if len(wavelengths) != config.bands:
                    raise ValueError(f"{len(wavelengths)} wavelengths for {config.bands} bands")
            for key in ("response", "degradation"):
                if payload.get(key) is not None and not isinstance(payload[key], dict):
                    raise TypeError(f"{key} is a {type(payload[key]).__name__}, expected a dict or None")
            return LoadedModel(
                model=model,
                role=str(payload.get("role", "student")),
                normalization=normalization,
                wavelengths=wavelengths,
                response=payload.get("response"),
                degradation=payload.get("degradation"),
                metadata={k: payload.get(k) for k in ("epoch", "step", "metrics", "train_config")},
            )
        except CheckpointError:
            raise
        except _DAMAGE as exc:
            raise CheckpointError(
                f"checkpoint {path} is damaged or of another version: {type(exc).__name__}: {_one_line(exc)}"
            ) from exc
    try:
        if isinstance(payload, dict) and is_reference_state_dict(payload):
            config = infer_reference_config(payload, scale=scale)
            check_declared_size(config, path)
            model = load_reference_model(payload, scale=scale, config=config)
            return LoadedModel(model, model.config.name, Normalization("none"), None, None, None,
                               {"source": "reference implementation"})
    except CheckpointError:
        raise
    except _DAMAGE as exc:
        raise CheckpointError(
            f"checkpoint {path} looks like a CSAKD reference state dict but is damaged: "
            f"{type(exc).__name__}: {_one_line(exc)}"
        ) from exc
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
