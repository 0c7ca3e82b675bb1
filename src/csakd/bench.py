"""Speed and memory of the networks: ``csakd bench``.

Measures, for one preset at a given band count and size: parameters, MACs, latency at batch 1 (median of
repeats after warm-up), throughput at larger batches, peak memory, and optionally one training step
(forward, losses, backward, AdamW) at batch 8 / crop 128. Paths: PyTorch eager in fp32 (CPU and GPU), bf16
autocast and channels-last on GPU, and ONNX Runtime on the CPU when it is installed. ``latency_ms_b1`` and
``path`` name the fastest path at batch 1; ``matmul`` gives the device's dense matrix-multiply rate and
``arithmetic_bound_ms_b1`` the time the network's arithmetic would take at that rate. Weights are random
(speed does not depend on them); every path runs the same weights.
"""

from __future__ import annotations

import logging
import resource
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csakd.devices import resolve_device
from csakd.losses import LossWeights, teacher_loss
from csakd.models import DTSNet, count_macs, count_params, preset_config

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` (device-synchronised), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _inputs(cfg: Any, batch: int, size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, cfg.bands, size // cfg.scale, size // cfg.scale, generator=g) * 2 - 1
    msi = torch.rand(batch, cfg.msi_bands, size, size, generator=g) * 2 - 1
    return lr.to(device), msi.to(device)


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                repeats: int = 5) -> dict[str, Any]:
    """The device's dense matrix-multiply rate: ``n x n`` by ``n x n`` (2048 on a CPU, 8192 on a GPU),
    best of ``repeats``, in GFLOP/s (2 n^3 FLOPs per product). The roof the network's arithmetic runs against."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.rand(n, n, device=device).to(dtype)
    b = torch.rand(n, n, device=device).to(dtype)
    times = time_it(lambda: a @ b, device, warmup=1, repeats=repeats)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "gflops": 2 * n**3 / min(times) / 1e9}


def _load_average() -> list[float] | None:
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def eager_path(model: DTSNet, device: torch.device, amp: torch.dtype | None, channels_last: bool
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    net = model.to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @torch.inference_mode()
    def run(lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        if channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
            msi = msi.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            return net(lr, msi)[0]

    return run


def onnx_path(model: DTSNet, threads: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The model exported to ONNX and run by ONNX Runtime on the CPU (None when not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    tmp = Path(tempfile.mkdtemp()) / "model.onnx"
    cfg = model.config
    lr, msi = _inputs(cfg, 1, 8 * cfg.scale, torch.device("cpu"))
    from csakd.inference.export import log_exporter_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(model.cpu().eval(), (lr, msi), str(tmp), input_names=["lr_hsi", "hr_msi"],
                          output_names=["hr_hsi", "features"], opset_version=17, dynamo=False,
                          dynamic_axes={"lr_hsi": {0: "b", 2: "h", 3: "w"}, "hr_msi": {0: "b", 2: "H", 3: "W"}})
    log_exporter_warnings(caught)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])

    def run(lr: torch.Tensor, msi: torch.Tensor) -> torch.Tensor:
        out = session.run(["hr_hsi"], {"lr_hsi": lr.numpy(), "hr_msi": msi.numpy()})[0]
        return torch.from_numpy(np.asarray(out))

    return run


def bench(
    preset: str,
    *,
    bands: int = 172,
    msi_bands: int = 4,
    scale: int = 4,
    size: int = 256,
    device: str = "auto",
    batches: tuple[int, ...] = (1,),
    repeats: int = 5,
    warmup: int = 2,
    train_step: bool = False,
    paper: bool = False,
    onnx: bool = True,
    residual: str | None = None,
) -> dict[str, Any]:
    """Benchmark one preset (``residual`` overrides its residual base); returns a JSON-able dict (see the module
    docstring)."""
    dev = resolve_device(device)
    cfg = preset_config(preset, paper=paper, bands=bands, msi_bands=msi_bands, scale=scale,
                        **({"residual": residual} if residual else {}))
    torch.manual_seed(0)
    model = DTSNet(cfg)
    with torch.no_grad():  # a residual network's head starts at zero; give it weights so every path computes
        for p in model.head.parameters():
            p.normal_(0, 1e-3)
    threads = torch.get_num_threads()
    result: dict[str, Any] = {
        "preset": preset, "paper": paper, "residual": cfg.residual, "bands": bands, "msi_bands": msi_bands,
        "scale": scale, "size": size,
        "device": str(dev), "threads": threads, "params": count_params(model), "macs": count_macs(cfg, size),
        "paths": {},
    }
    paths: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "eager-fp32": eager_path(model, dev, None, False)
    }
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        paths["eager-bf16-channels-last"] = eager_path(model, dev, torch.bfloat16, True)
    elif onnx:
        ort_run = onnx_path(model, threads)
        if ort_run is not None:
            paths["onnxruntime-fp32"] = ort_run
    result["load_average_before"] = _load_average()
    reference = None
    for name, run in paths.items():
        entry: dict[str, Any] = {}
        for batch in batches:
            lr, msi = _inputs(cfg, batch, size, dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            def call(run: Callable[..., torch.Tensor] = run, lr: torch.Tensor = lr, msi: torch.Tensor = msi) -> object:
                return run(lr, msi)

            times = time_it(call, dev, warmup=warmup, repeats=repeats)
            median = statistics.median(times)
            entry[f"b{batch}"] = {"median_ms": median * 1e3, "min_ms": min(times) * 1e3,
                                  "images_per_s": batch / median, "repeats": repeats}
            if dev.type == "cuda":
                entry[f"b{batch}"]["peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
            if batch == batches[0]:
                out = run(lr, msi).float().cpu()
                if reference is None:
                    reference = out
                entry["max_abs_diff_vs_eager_fp32"] = float((out - reference).abs().max())
        entry["peak_rss_mb"] = _peak_rss_mb()
        result["paths"][name] = entry
    result["load_average_after"] = _load_average()
    first = f"b{batches[0]}"
    best = min(result["paths"], key=lambda k: result["paths"][k][first]["median_ms"])
    result["path"] = best
    result[f"latency_ms_{first}"] = result["paths"][best][first]["median_ms"]
    if "b1" not in first:
        result["latency_ms_b1"] = None
    # the machine's roof beside the network: its fp32 (and on a GPU bf16) matrix-multiply rate, and the time
    # the network's arithmetic (2 x MACs per image) would take at that rate
    rates = [matmul_rate(dev)]
    if dev.type == "cuda":
        rates.append(matmul_rate(dev, torch.bfloat16))
    result["matmul"] = rates
    result["arithmetic_bound_ms_b1"] = {r["dtype"]: 2 * result["macs"] / (r["gflops"] * 1e9) * 1e3 for r in rates}
    if train_step:
        result["train_step"] = bench_train_step(cfg, dev, repeats=max(2, repeats // 2))
    return result


def bench_train_step(cfg: Any, device: torch.device, *, batch: int = 8, crop: int = 128, repeats: int = 3
                     ) -> dict[str, Any]:
    """Seconds of one training step of this model alone (forward, teacher losses, backward, AdamW)."""
    model = DTSNet(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lr, msi = _inputs(cfg, batch, crop, device)
    target = torch.rand(batch, cfg.bands, crop, crop, device=device) * 2 - 1
    amp = torch.bfloat16 if device.type == "cuda" else None
    w = LossWeights()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out, _ = model(lr, msi)
        teacher_loss(out.float(), target, w)["loss"].backward()
        opt.step()

    times = time_it(step, device, warmup=1, repeats=repeats)
    return {"batch": batch, "crop": crop, "precision": "bf16-autocast" if amp else "fp32",
            "median_ms": statistics.median(times) * 1e3}
