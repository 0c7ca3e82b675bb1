"""Export a trained fusion network to ONNX, with everything needed to use it inside the file.

The exported graph is the network alone, on its own scale:

=============  ======================  =======================================================================
name           shape                   meaning
=============  ======================  =======================================================================
``lr_hsi``     (B, C, h, w) float32    the LR-HSI mapped to [-1, 1] (after the normalisation below)
``hr_msi``     (B, c, H, W) float32    the HR-MSI mapped to [-1, 1]; ``H = scale h``, ``W = scale w``
``hr_hsi``     (B, C, H, W) float32    the fused HR-HSI on the [-1, 1] scale
=============  ======================  =======================================================================

Batch, height and width are dynamic (one export serves every image size). The fused features that
``DTSNet.forward`` also returns (for distillation) are not exported.

The file's ``metadata_props`` carry, each as a JSON string: ``csakd_format`` (``"csakd-onnx"``),
``csakd_format_version``, ``csakd_version``, ``role``, ``bands``, ``msi_bands``, ``scale``, ``wavelengths``
(nm or null), ``response`` (the spectral response the MSI was simulated with, or null), ``normalization``
(how the files' units map to [0, 1]; see :mod:`csakd.normalization`), ``degradation``, ``model_config``,
``exporter``, ``opset`` and ``torch_version``. :class:`csakd.inference.onnx_runtime.OnnxFuser` reads them
and applies the same normalisation as :func:`csakd.inference.fuse.fuse_arrays`, without PyTorch.

Exporters: the classic TorchScript-based one (``torch.onnx.export(..., dynamo=False)``) is tried first; if
it fails (or is gone from a future PyTorch), the ``torch.export``-based one (``dynamo=True``, which needs
the ``onnxscript`` package). Both give graphs that agree with PyTorch to ~1e-6 on CPU (fp32) for every fusion and
attention form (grid_sample bicubic for the residual base, interpolate with sizes taken from the inputs,
the attention's reshape over a dynamic ``H * W``, grouped convolutions).

Example:
    >>> info = export_onnx("runs/cave/student.pt", "student.onnx")  # doctest: +SKIP
    >>> info["max_abs_diff"] <= 1e-4  # doctest: +SKIP
    True
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

import csakd
from csakd.checkpoint import LoadedModel, load_checkpoint
from csakd.errors import CsakdError, InputError
from csakd.files import atomic_path, check_writable

if TYPE_CHECKING:
    import onnx

__all__ = ["FORMAT", "FORMAT_VERSION", "INPUT_NAMES", "MIN_OPSET", "OUTPUT_NAME", "export_metadata", "export_onnx",
           "export_summary", "log_exporter_warnings"]

log = logging.getLogger(__name__)

#: Value of the ``csakd_format`` metadata entry of every csakd ONNX file.
FORMAT = "csakd-onnx"
#: Version of the metadata layout (``csakd_format_version``).
FORMAT_VERSION = 1
INPUT_NAMES = ("lr_hsi", "hr_msi")
OUTPUT_NAME = "hr_hsi"
#: The residual base uses GridSample (bicubic), which ONNX has from opset 16.
MIN_OPSET = 16

Exporter = Literal["auto", "torchscript", "dynamo"]


class _HrHsiOnly(nn.Module):
    """The network with one output: ``forward(lr_hsi, hr_msi) -> hr_hsi`` (the features are dropped)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> torch.Tensor:
        out, _ = self.net(lr_hsi, hr_msi)
        return out


def export_metadata(loaded: LoadedModel, *, exporter: str, opset: int) -> dict[str, str]:
    """The ``metadata_props`` of an export: every value a JSON string (see the module docstring)."""
    cfg = loaded.config
    values: dict[str, Any] = {
        "csakd_format": FORMAT,
        "csakd_format_version": FORMAT_VERSION,
        "csakd_version": csakd.__version__,
        "role": loaded.role,
        "bands": cfg.bands,
        "msi_bands": cfg.msi_bands,
        "scale": cfg.scale,
        "wavelengths": None if loaded.wavelengths is None else [float(w) for w in loaded.wavelengths],
        "response": loaded.response,
        "normalization": loaded.normalization.to_dict(),
        "degradation": loaded.degradation,
        "model_config": cfg.to_dict(),
        "exporter": exporter,
        "opset": opset,
        "torch_version": torch.__version__,
    }
    return {key: json.dumps(value, default=_json_default) for key, value in values.items()}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def export_onnx(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    opset: int = 17,
    overwrite: bool = False,
    check: bool = True,
    atol: float = 1e-4,
    exporter: Exporter = "auto",
    scale: int = 4,
) -> dict[str, Any]:
    """Export the model of a checkpoint to an ONNX file (see the module docstring for its inputs and metadata).

    Args:
        checkpoint: a csakd checkpoint, or a reference implementation's state dict (then ``scale`` applies).
        out: the ``.onnx`` file to write (atomically: a failed export leaves no file).
        opset: ONNX opset, at least 16 (GridSample); the TorchScript exporter goes up to 20.
        overwrite: replace an existing ``out``.
        check: run the exported graph with ONNX Runtime (CPU) on random inputs at two sizes that differ
            from the tracing size (one of batch 2), and refuse to write it when its output differs from
            PyTorch's by more than ``atol`` (max abs difference on the [-1, 1] scale, fp32).
            ``onnx.checker.check_model`` always runs.
        atol: the tolerance of that comparison.
        exporter: ``"torchscript"`` (``dynamo=False``), ``"dynamo"`` (``torch.export``; needs onnxscript),
            or ``"auto"``: TorchScript first, then dynamo if it fails.
        scale: the scale of a reference state dict (csakd checkpoints carry theirs).

    Returns:
        ``{"out", "bytes", "exporter", "opset", "seconds", "max_abs_diff" (None without check),
        "checks": [{"lr_hsi", "hr_msi", "max_abs_diff"}], "metadata": {key: JSON string}}``.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false (before anything is loaded).
        InputError: ``out`` is not a ``.onnx`` name, an opset below 16, or a non-positive ``atol``.
        CheckpointError: the checkpoint cannot be loaded.
        CsakdError: the export failed, onnx/onnxruntime are missing, or the check found a difference
            above ``atol`` (nothing is written then).
    """
    out_path = Path(out).expanduser()
    if out_path.suffix.lower() != ".onnx":
        raise InputError(f"{out_path}: expected an output file name ending in .onnx")
    check_writable(out_path, overwrite=overwrite)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise InputError(f"opset {opset!r}: expected an integer >= {MIN_OPSET} (bicubic GridSample needs it)")
    if not atol > 0:
        raise InputError(f"atol {atol!r}: expected a positive tolerance")
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise InputError(f"exporter {exporter!r}: expected 'auto', 'torchscript' or 'dynamo'")
    onnx = _import_onnx()

    t0 = time.perf_counter()
    loaded = load_checkpoint(checkpoint, scale=scale)
    net = loaded.model.float().cpu().eval()
    wrapped = _HrHsiOnly(net).eval()
    cfg = loaded.config
    gen = torch.Generator().manual_seed(0)
    example = _random_pair(cfg.bands, cfg.msi_bands, cfg.scale, batch=1, height=8, width=6, generator=gen)

    proto, used = _export(wrapped, example, opset=opset, exporter=exporter)
    metadata = export_metadata(loaded, exporter=used, opset=opset)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"csakd {loaded.role} ({cfg.name}): lr_hsi (B, {cfg.bands}, h, w) and hr_msi (B, {cfg.msi_bands}, "
        f"{cfg.scale}h, {cfg.scale}w) on the [-1, 1] scale -> hr_hsi (B, {cfg.bands}, {cfg.scale}h, {cfg.scale}w)"
    )
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise CsakdError(f"the ONNX graph exported from {checkpoint} fails onnx.checker: {exc}") from exc
    data = proto.SerializeToString()

    checks: list[dict[str, Any]] = []
    if check:
        sizes = [(2, 5, 9), (1, 11, 7)]  # (batch, h, w), both unlike the tracing size (1, 8, 6)
        checks = _compare_with_onnxruntime(wrapped, data, cfg.bands, cfg.msi_bands, cfg.scale, sizes, gen)
        worst = max(c["max_abs_diff"] for c in checks)
        if not worst <= atol:
            bad = next(c for c in checks if not c["max_abs_diff"] <= atol)
            raise CsakdError(
                f"the ONNX export of {checkpoint} differs from PyTorch by {bad['max_abs_diff']:.3g} "
                f"(lr_hsi {bad['lr_hsi']}, hr_msi {bad['hr_msi']}): expected at most {atol}; {out_path} not written"
            )

    with atomic_path(out_path) as tmp:
        tmp.write_bytes(data)
    seconds = time.perf_counter() - t0
    max_diff = max(c["max_abs_diff"] for c in checks) if checks else None
    log.info("exported %s to %s (%s, opset %d, %.1f MB, max abs diff %s) in %.1f s", checkpoint, out_path, used,
             opset, len(data) / 1e6, "unchecked" if max_diff is None else f"{max_diff:.2e}", seconds)
    return {
        "out": str(out_path),
        "bytes": len(data),
        "exporter": used,
        "opset": opset,
        "seconds": seconds,
        "max_abs_diff": max_diff,
        "checks": checks,
        "metadata": metadata,
    }


def export_summary(result: dict[str, Any], *, checkpoint: str | os.PathLike[str] | None = None,
                   out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON summary of :func:`export_onnx`'s ``result`` (``csakd export --json``): the metadata as values
    (not JSON strings), the spectral response as its band count and names (not the matrix), and the paths
    ``checkpoint`` and ``out`` as the user gave them."""
    summary = {k: v for k, v in result.items() if k != "metadata"}
    if out is not None:
        summary["out"] = str(out)
    if checkpoint is not None:
        summary = {"checkpoint": str(checkpoint), **summary}
    metadata: dict[str, Any] = {}
    for key, text in result.get("metadata", {}).items():
        try:
            metadata[key] = json.loads(text)
        except (TypeError, json.JSONDecodeError):
            metadata[key] = text
    response = metadata.get("response")
    if isinstance(response, dict) and "matrix" in response:
        matrix = np.asarray(response["matrix"], dtype=np.float64)
        metadata["response"] = {"msi_bands": int(matrix.shape[0]), "hsi_bands": int(matrix.shape[-1]),
                                "band_names": list(response.get("band_names") or []),
                                "source": response.get("source")}
    summary["metadata"] = metadata
    return summary


def _import_onnx() -> Any:
    try:
        import onnx
        import onnxruntime  # noqa: F401  (needed for the check; fail before the export's work)
    except ImportError as exc:
        raise CsakdError(f"ONNX export needs onnx and onnxruntime ({exc}): pip install 'csakd[onnx]'") from exc
    return onnx


def _random_pair(
    bands: int, msi_bands: int, scale: int, *, batch: int, height: int, width: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform [-1, 1] inputs: lr_hsi (batch, bands, height, width), hr_msi (batch, msi_bands, scale x)."""
    lr = torch.rand(batch, bands, height, width, generator=generator) * 2 - 1
    msi = torch.rand(batch, msi_bands, height * scale, width * scale, generator=generator) * 2 - 1
    return lr, msi


def _export(
    model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], *, opset: int, exporter: Exporter
) -> tuple[onnx.ModelProto, str]:
    """Run one exporter (or, for ``auto``, TorchScript then dynamo); the model proto and the exporter's name."""
    errors: list[str] = []
    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    for name in order:
        try:
            proto = _export_torchscript(model, example, opset) if name == "torchscript" else _export_dynamo(
                model, example, opset)
            return proto, name
        except Exception as exc:  # the exporters raise many kinds; all mean "this exporter failed"
            log.warning("the %s ONNX exporter failed: %s: %s", name, type(exc).__name__, str(exc)[:300])
            errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
    raise CsakdError("ONNX export failed (" + "; ".join(errors) + ")")


def _export_torchscript(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], opset: int) -> onnx.ModelProto:
    import onnx

    buffer = io.BytesIO()  # the TorchScript exporter writes to file-like objects too (its annotation says paths)
    dynamic_axes = {
        "lr_hsi": {0: "batch", 2: "lr_height", 3: "lr_width"},
        "hr_msi": {0: "batch", 2: "height", 3: "width"},
        "hr_hsi": {0: "batch", 2: "height", 3: "width"},
    }
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        torch.onnx.export(
            model, example, buffer,  # type: ignore[arg-type]
            input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    log_exporter_warnings(caught)
    return onnx.load_model_from_string(buffer.getvalue())


def _export_dynamo(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], opset: int) -> onnx.ModelProto:
    scale = example[1].shape[-1] // example[0].shape[-1]
    batch, h, w = torch.export.Dim("batch"), torch.export.Dim("lr_height"), torch.export.Dim("lr_width")
    shapes = {"lr_hsi": {0: batch, 2: h, 3: w}, "hr_msi": {0: batch, 2: scale * h, 3: scale * w}}
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        program = torch.onnx.export(
            model, example, None, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_shapes=shapes, opset_version=opset, dynamo=True,
        )
    log_exporter_warnings(caught)
    if program is None:
        raise CsakdError("the dynamo ONNX exporter returned no program")
    proto: onnx.ModelProto = program.model_proto
    return proto


def log_exporter_warnings(caught: list[warnings.WarningMessage]) -> None:
    """The exporter's warnings, which a user can do nothing about, as one INFO line of ours (each at DEBUG, so
    ``-v`` shows them). Tracer warnings say a value was taken as a constant of the graph (here a weight's shape:
    the group count of the regression base's blur); a size frozen that way would show as a difference in the
    ONNX Runtime check, which tries sizes unlike the tracing size. The rest are constant-folding and deprecation
    notices of PyTorch's exporters."""
    if not caught:
        return
    counts: dict[str, int] = {}
    for w in caught:
        counts[w.category.__name__] = counts.get(w.category.__name__, 0) + 1
        log.debug("exporter: %s: %s", w.category.__name__, str(w.message)[:300])
    kinds = ", ".join(f"{n} {name}" for name, n in counts.items())
    log.info("the ONNX exporter gave %d warning(s) (%s), expected for this network; -v shows them", len(caught), kinds)


def _compare_with_onnxruntime(
    model: nn.Module,
    data: bytes,
    bands: int,
    msi_bands: int,
    scale: int,
    sizes: list[tuple[int, int, int]],
    generator: torch.Generator,
) -> list[dict[str, Any]]:
    """Max abs difference between ONNX Runtime (CPU) and PyTorch eager for each ``(batch, h, w)``."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    results = []
    for batch, h, w in sizes:
        lr, msi = _random_pair(bands, msi_bands, scale, batch=batch, height=h, width=w, generator=generator)
        with torch.no_grad():
            expected = model(lr, msi).numpy()
        got = session.run([OUTPUT_NAME], {"lr_hsi": lr.numpy(), "hr_msi": msi.numpy()})[0]
        if got.shape != expected.shape:
            raise CsakdError(f"the ONNX graph gives shape {got.shape} where PyTorch gives {expected.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - expected))) if np.all(np.isfinite(got)) else float("inf")
        results.append({"lr_hsi": list(lr.shape), "hr_msi": list(msi.shape), "max_abs_diff": diff})
    return results
