"""Evaluate fusion methods on pairs with ground truth: per-image and mean metrics, tables and figures."""

from __future__ import annotations

import copy
import csv
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csakd.checkpoint import LoadedModel
from csakd.degradation import upsample_in_phase
from csakd.files import check_result
from csakd.metrics import compute_metrics, summarize
from csakd.normalization import from_network, to_network

log = logging.getLogger(__name__)

Method = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METRIC_KEYS = ("psnr", "psnr_fixed", "sam", "ergas", "rmse", "ssim")


@dataclass
class EvalPair:
    """A test pair in [0, 1] (bands first) with the factor back to the data's units and wavelengths."""

    name: str
    lr_hsi: torch.Tensor
    hr_msi: torch.Tensor
    hr_hsi: torch.Tensor
    peak: float = 1.0
    wavelengths: np.ndarray | None = None


def bicubic_method(scale: int, phase: int = 0) -> Method:
    """Bicubic upsampling of the LR-HSI in phase with the decimation."""

    def run(lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        return upsample_in_phase(lr, scale, phase)

    return run


def model_method(loaded: LoadedModel, device: torch.device) -> Method:
    """A trained network as a method on [0, 1] inputs."""
    model = loaded.model.to(device).eval()

    @torch.no_grad()
    def run(lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        out, _ = model(to_network(lr.to(device)), to_network(msi.to(device)))
        return from_network(out.float()).cpu()

    return run


def bf16_method(loaded: LoadedModel, device: torch.device) -> Method:
    """The GPU fast path: bf16 autocast with channels-last weights and inputs (the residual base stays fp32)."""
    model = copy.deepcopy(loaded.model).to(device).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @torch.no_grad()
    def run(lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        lr_n = to_network(lr.to(device)).contiguous(memory_format=torch.channels_last)
        msi_n = to_network(msi.to(device)).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out, _ = model(lr_n, msi_n)
        return from_network(out.float()).cpu()

    return run


def onnx_method(checkpoint: str | Path, workdir: Path, threads: int | None = None) -> Method:
    """The CPU fast path: the checkpoint exported to ONNX (checked against PyTorch) run by ONNX Runtime."""
    from csakd.inference.export import export_onnx
    from csakd.inference.onnx_runtime import OnnxFuser

    path = workdir / (Path(checkpoint).stem + ".onnx")
    export_onnx(checkpoint, path, overwrite=True)
    fuser = OnnxFuser(path, providers=["CPUExecutionProvider"], threads=threads)

    def run(lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        out = fuser.run_network(to_network(lr).numpy(), to_network(msi).numpy())
        return from_network(torch.from_numpy(out))

    return run


def path_deltas(methods: dict[str, dict[str, float]], separator: str = "@") -> dict[str, dict[str, float]]:
    """For every method ``NAME@PATH``, its mean PSNR and SAM minus those of ``NAME`` (the fp32 eager pass)."""
    deltas: dict[str, dict[str, float]] = {}
    for name, means in methods.items():
        base = name.split(separator, 1)[0]
        if separator in name and base in methods:
            deltas[name] = {f"{k}_delta": means[k] - methods[base][k] for k in ("psnr", "sam") if k in means}
    return deltas


def evaluate(
    methods: dict[str, Method],
    pairs: Sequence[EvalPair],
    *,
    scale: int,
    out_dir: Path | None = None,
    figures: int = 3,
) -> dict[str, Any]:
    """Run every method on every pair; metrics on [0, 1] outputs clamped to [0, 1].

    PSNR uses the paper's per-band peak (``psnr``) and a fixed peak of 1 (``psnr_fixed``); SAM in degrees;
    ERGAS with the scale; RMSE in the data's units (``rmse``: the [0, 1] error times the cube's normalising
    peak) and on the [0, 1] scale (``rmse_01``); SSIM averaged over bands. Returns
    ``{"methods": {name: means}, "per_image": [rows]}``.
    """
    rows: list[dict[str, Any]] = []
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for k, pair in enumerate(pairs):
        lr, msi, hr = pair.lr_hsi[None], pair.hr_msi[None], pair.hr_hsi[None]
        for name, method in methods.items():
            t0 = time.perf_counter()
            raw = method(lr, msi).float()
            seconds = time.perf_counter() - t0
            check_result(raw.detach().cpu().numpy(), f"the output of {name} on {pair.name}", target="any metrics file",
                         cause="a checkpoint with non-finite weights or inputs far outside its range, or a baseline "
                               "that failed numerically on this pair")
            pred = raw.clamp(0, 1)
            m = compute_metrics(pred, hr, scale=scale, units=pair.peak)
            rows.append({"method": name, "image": pair.name, **{key: float(m[key][0]) for key in METRIC_KEYS},
                         "rmse_01": float(m["rmse"][0]) / pair.peak, "seconds": seconds})
            if k < figures:
                outputs.setdefault(pair.name, {})[name] = pred[0].numpy()
    summary: dict[str, Any] = {"methods": {}, "per_image": rows}
    for name in methods:
        mine = [{k: r[k] for k in (*METRIC_KEYS, "rmse_01", "seconds")} for r in rows if r["method"] == name]
        summary["methods"][name] = summarize(mine)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(out_dir / "metrics.csv", rows)
        from csakd.figures import save_comparison_figure

        for pair in pairs[:figures]:
            save_comparison_figure(
                out_dir / f"{pair.name}.png", pair.hr_hsi.numpy(), outputs[pair.name], pair.wavelengths,
                title=pair.name,
            )
    return summary


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())


#: The column headers of the two RMSEs, naming their units: the [0, 1] scale the metrics are computed on, and
#: the data's own units (the [0, 1] error times each cube's normalising peak: 16-bit CAVE PNGs give ~65535).
RMSE_01 = "RMSE ([0,1])"
RMSE_DATA = "RMSE (data units)"


def _rmse_01(m: dict[str, float]) -> float:
    return m.get("rmse_01", float("nan"))


def markdown_table(methods: dict[str, dict[str, float]], complexity: dict[str, dict[str, int]] | None = None) -> str:
    """A Markdown table of mean metrics, with parameters and MACs (per image) where known."""
    complexity = complexity or {}
    lines = [
        f"| method | PSNR (dB) | SAM (deg) | ERGAS | {RMSE_01} | {RMSE_DATA} | SSIM | params | GMACs | s / image |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in methods.items():
        c = complexity.get(name, {})
        params = f"{c['params'] / 1e6:.2f}M" if "params" in c else "-"
        macs = f"{c['macs'] / 1e9:.1f}" if "macs" in c else "-"
        lines.append(
            f"| {name} | {m['psnr']:.2f} | {m['sam']:.3f} | {m['ergas']:.3f} | {_rmse_01(m):.4g} | {m['rmse']:.4g} "
            f"| {m['ssim']:.4f} "
            f"| {params} | {macs} | {m.get('seconds', float('nan')):.3f} |"
        )
    return "\n".join(lines) + "\n"


def format_table(methods: dict[str, dict[str, float]]) -> str:
    """A plain-text table of mean metrics, one row per method."""
    head = (f"{'method':<14}{'PSNR dB':>9}{'SAM deg':>9}{'ERGAS':>8}{RMSE_01:>13}{RMSE_DATA:>19}{'SSIM':>8}"
            f"{'s/img':>8}")
    lines = [head, "-" * len(head)]
    for name, m in methods.items():
        lines.append(
            f"{name:<14}{m['psnr']:>9.2f}{m['sam']:>9.3f}{m['ergas']:>8.3f}{_rmse_01(m):>13.4g}{m['rmse']:>19.4g}"
            f"{m['ssim']:>8.4f}{m.get('seconds', float('nan')):>8.3f}"
        )
    return "\n".join(lines)
