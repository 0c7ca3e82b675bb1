"""Fuse with an exported ONNX model through ONNX Runtime, without PyTorch.

This module never imports torch (nor any csakd module that does), so that a fusion-only install is small:

.. code-block:: bash

    pip install numpy onnxruntime          # the runtime (onnxruntime-gpu for CUDA)
    pip install --no-deps csakd            # csakd itself, without its training dependencies
    # then only the file libraries of the formats you read or write:
    #   .npy / .npz / ENVI: nothing more      .mat v5: scipy      .mat v7.3: h5py
    #   .tif: rasterio (GeoTIFF) or tifffile  CAVE PNG folders: pillow

:class:`OnnxFuser` reads the metadata that :func:`csakd.inference.export.export_onnx` writes into the file
(bands, MSI bands, scale, wavelengths, normalisation) and applies exactly what
:func:`csakd.inference.fuse.fuse_arrays` does: the checkpoint's normalisation to [0, 1]
(:meth:`csakd.normalization.Normalization.factors_numpy`), then ``x * 2 - 1`` to the network's [-1, 1]; the
output back with ``(y + 1) / 2`` times the HSI factor. It refuses, before running anything, images whose band
counts differ from the file's (naming both), whose grids are not ``scale`` apart, or with NaN / Inf.

The whole image goes through in one pass (the attention fusions reduce over every pixel of the image).

Example:
    >>> fuser = OnnxFuser("student.onnx")  # doctest: +SKIP
    >>> hr_hsi = fuser.fuse(lr_hsi, hr_msi)  # (C, h, w), (c, 4h, 4w) -> (C, 4h, 4w) float32  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from csakd.errors import CheckpointError, InputError
from csakd.inference import pipeline
from csakd.inference.pipeline import Runtime, check_arrays
from csakd.normalization import Normalization, from_network, to_network

__all__ = ["FORMAT", "OnnxFuser", "Providers", "default_providers", "fuse_files_onnx", "providers_for_device"]

log = logging.getLogger(__name__)

#: The ``csakd_format`` metadata value of csakd's ONNX files (the same as ``csakd.inference.export.FORMAT``).
FORMAT = "csakd-onnx"
#: The ``csakd_format_version`` values this csakd reads (``csakd.inference.export.FORMAT_VERSION`` is the newest).
READABLE_FORMAT_VERSIONS = (1,)
_REQUIRED = ("bands", "msi_bands", "scale", "normalization")

#: ONNX Runtime providers: names, or ``(name, options)`` pairs such as ``("CUDAExecutionProvider", {"device_id": 1})``.
Providers = Sequence[str | tuple[str, dict[str, Any]]]


def sniff_model_file(path: str | os.PathLike[str]) -> str | None:
    """What a model file holds, by its first bytes: ``"torch"`` (a zip archive or a pickle, as ``torch.save``
    writes), ``"onnx"`` (a protobuf ModelProto, whose first field is the ir_version varint) or None (unknown,
    or not readable)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if head[:1] == b"\x08":
        return "onnx"
    return None


def default_providers() -> list[str]:
    """ONNX Runtime providers to use: CUDA first when this onnxruntime build has it, then the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or list(available)


def providers_for_device(device: str) -> list[str | tuple[str, dict[str, Any]]]:
    """ONNX Runtime providers for a csakd ``--device`` value: ``auto`` (:func:`default_providers`), ``cpu``,
    ``cuda`` or ``cuda:N`` (CUDA, then the CPU for any node CUDA lacks).

    Raises:
        InputError: an unknown device, or ``cuda`` with an onnxruntime build that has no CUDA provider.
    """
    import onnxruntime as ort

    if device == "auto":
        return list(default_providers())
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise InputError(
                f"device {device!r}: this onnxruntime has no CUDA provider (it has "
                f"{', '.join(ort.get_available_providers())}): install onnxruntime-gpu, or use cpu"
            )
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise InputError(f"device {device!r}: expected cuda or cuda:N with N a GPU index")
        return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
    raise InputError(f"device {device!r}: expected auto, cpu, cuda or cuda:N")


class OnnxFuser(Runtime):
    """An exported csakd model run by ONNX Runtime: ``fuse(lr_hsi, hr_msi)`` in the files' units.

    Args:
        path: a ``.onnx`` file written by :func:`csakd.inference.export.export_onnx`.
        providers: ONNX Runtime execution providers, by default :func:`default_providers` (CUDA if this
            onnxruntime build has it, else the CPU); :func:`providers_for_device` maps ``--device`` values.
        threads: ONNX Runtime's intra-op threads (None: its default, one per core).

    Attributes:
        metadata: the file's metadata, each value decoded from JSON.
        bands, msi_bands, scale: what the model fuses.
        wavelengths: (C,) nm, or None.
        normalization: how the files' units map to [0, 1].
        providers: the providers the session actually uses.
        what: how messages name it (``the ONNX model NAME.onnx``).

    It is the ONNX Runtime strategy of the file pipeline (a :class:`~csakd.inference.pipeline.Runtime`, used by
    :func:`fuse_files_onnx`).

    Raises:
        CheckpointError: a missing file, one ONNX Runtime cannot load, or one without csakd's metadata.
        CsakdError: onnxruntime is not installed.
    """

    def __init__(self, path: str | os.PathLike[str], *, providers: Providers | None = None,
                 threads: int | None = None) -> None:
        self.path = Path(path).expanduser()
        self.what = f"the ONNX model {self.path.name}"
        if not self.path.is_file():
            raise CheckpointError(f"ONNX model {self.path} does not exist: expected a .onnx file from csakd export")
        if sniff_model_file(self.path) == "torch":
            raise CheckpointError(
                f"{self.path} is not an ONNX file: it is a PyTorch checkpoint (torch.save's format). Fuse it with "
                f"--runtime torch, or export it first: csakd export --checkpoint {path} --out model.onnx"
            )
        try:
            import onnxruntime as ort
        except ImportError as exc:
            from csakd.errors import CsakdError

            raise CsakdError(f"fusing with an ONNX model needs onnxruntime ({exc}): pip install onnxruntime") from exc
        options = ort.SessionOptions()
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise InputError(f"threads={threads!r}: expected a positive integer")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=list(providers or default_providers())
            )
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise CheckpointError(
                f"cannot load {self.path} with ONNX Runtime ({type(exc).__name__}: {str(exc)[:200]})"
            ) from exc
        self.providers: list[str] = list(self.session.get_providers())
        self.metadata = self._read_metadata(self.session.get_modelmeta().custom_metadata_map)
        md = self.metadata
        try:
            self.bands = int(md["bands"])
            self.msi_bands = int(md["msi_bands"])
            self.scale = int(md["scale"])
            self.normalization = Normalization.from_dict(md["normalization"])
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{self.path}: damaged csakd metadata ({exc})") from exc
        wl = md.get("wavelengths")
        self.wavelengths: np.ndarray | None = None if wl is None else np.asarray(wl, dtype=np.float64)
        self._check_graph()
        log.info("loaded %s: %d HSI bands, %d MSI bands, x%d, providers %s", self.path, self.bands, self.msi_bands,
                 self.scale, ", ".join(self.providers))

    def _read_metadata(self, props: dict[str, str]) -> dict[str, Any]:
        if "csakd_format" not in props:
            raise CheckpointError(
                f"{self.path} has no csakd metadata: expected an ONNX file written by csakd export "
                f"(found metadata keys {sorted(props) or 'none'})"
            )
        out: dict[str, Any] = {}
        for key, text in props.items():
            try:
                out[key] = json.loads(text)
            except json.JSONDecodeError:
                out[key] = text
        if out["csakd_format"] != FORMAT:
            raise CheckpointError(f"{self.path}: csakd_format is {out['csakd_format']!r}, expected {FORMAT!r}")
        version = out.get("csakd_format_version")
        if version is not None and version not in READABLE_FORMAT_VERSIONS:
            readable = ", ".join(map(str, READABLE_FORMAT_VERSIONS))
            raise CheckpointError(f"{self.path} has csakd_format_version {version!r}: this csakd reads versions "
                                  f"{readable} (upgrade csakd to use a file of a newer version)")
        missing = [k for k in _REQUIRED if k not in out]
        if missing:
            raise CheckpointError(f"{self.path}: csakd metadata lacks {', '.join(missing)}")
        return out

    def _check_graph(self) -> None:
        """The graph's inputs must be ``lr_hsi`` and ``hr_msi`` with the metadata's band counts."""
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        for name, bands in (("lr_hsi", self.bands), ("hr_msi", self.msi_bands)):
            shape = inputs.get(name)
            if shape is None or len(shape) != 4:
                raise CheckpointError(
                    f"{self.path}: expected a 4-D input {name!r}, the graph has {inputs}"
                )
            if isinstance(shape[1], int) and shape[1] != bands:
                raise CheckpointError(
                    f"{self.path}: input {name} has {shape[1]} channels but the metadata says {bands}"
                )

    # ---------------------------------------------------------------- as a csakd.inference.pipeline.Runtime
    @property
    def response(self) -> dict[str, Any] | None:
        return self.metadata.get("response")

    @property
    def model_config(self) -> dict[str, Any]:
        return {"scale": self.scale, **(self.metadata.get("model_config") or {})}

    def check_bands(self, bands: int, msi_bands: int) -> None:
        problems = []
        if bands != self.bands:
            problems.append(f"lr_hsi has {bands} bands ({self.what} expects {self.bands})")
        if msi_bands != self.msi_bands:
            problems.append(f"hr_msi has {msi_bands} bands ({self.what} expects {self.msi_bands})")
        if problems:
            raise CheckpointError(f"the input does not fit {self.what}: " + "; ".join(problems))

    def result_cause(self) -> str:
        return _onnx_cause(self.path)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: path, bands, MSI bands, scale, normalisation, providers, role, versions."""
        return {
            "path": str(self.path),
            "bands": self.bands,
            "msi_bands": self.msi_bands,
            "scale": self.scale,
            "normalization": self.normalization.to_dict(),
            "providers": self.providers,
            "role": self.metadata.get("role"),
            "csakd_version": self.metadata.get("csakd_version"),
            "exporter": self.metadata.get("exporter"),
            "opset": self.metadata.get("opset"),
        }

    def run_network(self, lr_hsi: np.ndarray, hr_msi: np.ndarray) -> np.ndarray:
        """The bare graph on the network's [-1, 1] scale (no checks, no normalisation).

        Shape:
            - lr_hsi: (B, C, h, w) float32; hr_msi: (B, c, H, W) float32
            - output: (B, C, H, W) float32
        """
        out = self.session.run(
            ["hr_hsi"],
            {"lr_hsi": np.ascontiguousarray(lr_hsi, dtype=np.float32),
             "hr_msi": np.ascontiguousarray(hr_msi, dtype=np.float32)},
        )[0]
        return np.asarray(out, dtype=np.float32)

    def fuse(self, lr_hsi: np.ndarray, hr_msi: np.ndarray) -> np.ndarray:
        """Fuse one pair in the files' units, as :func:`csakd.inference.fuse.fuse_arrays` does.

        Shape:
            - lr_hsi: (C, h, w); hr_msi: (c, scale h, scale w)
            - output: (C, scale h, scale w) float32

        Raises:
            CheckpointError: band counts other than the model's.
            InputError: not 3-D arrays, grids not ``scale`` apart, or NaN / Inf values.
        """
        lr = np.array(lr_hsi, dtype=np.float32)
        msi = np.array(hr_msi, dtype=np.float32)
        check_arrays(lr, msi, self)
        lr, msi = lr[None], msi[None]
        f_hsi, f_msi = self.normalization.factors_numpy(lr)
        out = self.run_network(to_network(lr / f_hsi), to_network(msi / f_msi))
        fused = from_network(out) * f_hsi
        return np.asarray(fused[0], dtype=np.float32)


def fuse_files_onnx(
    lr_path: str | os.PathLike[str],
    msi_path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    providers: Providers | None = None,
    threads: int | None = None,
    variable_lr: str | None = None,
    variable_msi: str | None = None,
    layout: Literal["auto", "chw", "hwc"] = "auto",
    strict: bool = False,
    clip: bool = True,
    report: dict[str, Any] | None = None,
) -> Path:
    """Read the two files, fuse with the ONNX model, write the result in the format of ``out_path``'s extension.

    The counterpart of :func:`csakd.inference.fuse.fuse_files` without PyTorch. Everything is checked
    (output free and of a known format, model, files, band counts, grids, finite values) before the output
    is written; an existing output needs ``overwrite``. Wavelengths come from the LR-HSI (else the model's
    metadata); band names from the LR-HSI; georeferencing from the HR-MSI. Georeferenced inputs must cover the
    same footprint and nodata pixels are nodata in the output (:mod:`csakd.inference.geo`). ``clip`` and
    ``report`` as for :func:`csakd.inference.fuse.fuse_files` (the response and blur from the metadata).

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.
    """
    return pipeline.fuse_files(
        lambda: OnnxFuser(onnx_path, providers=providers, threads=threads), lr_path, msi_path, onnx_path, out_path,
        model_option="model", overwrite=overwrite, variable_lr=variable_lr, variable_msi=variable_msi,
        layout=layout, strict=strict, clip=clip, report=report,
    )


def _onnx_cause(path: Path) -> str:
    """The likely cause of a non-finite result from finite inputs: non-finite weights in the ONNX file (counted
    when the ``onnx`` package is installed), else an overflow."""
    try:
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        bad = 0
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.dtype.kind == "f":
                bad += int(arr.size - np.count_nonzero(np.isfinite(arr)))
    except Exception:  # no onnx package, or a file it cannot parse: no count
        return (f"the inputs are finite: the model {path} may hold non-finite weights, or the network overflowed "
                "(are the inputs in the units it was trained on?)")
    if bad:
        return f"the ONNX model {path} has {bad} non-finite weight(s) (NaN or Inf): it is damaged; export it again"
    return (f"the inputs and the weights of {path} are finite, so the network overflowed: are the inputs in the "
            "units it was trained on?")
