"""CPU latency of one fusion: PyTorch eager vs ONNX Runtime, for the paper-width student and the lite preset.

For each preset: build the network at ``--bands`` HSI bands, ``--msi-bands`` MSI bands, x``--scale`` (random
weights, every one perturbed so that the head's zero-initialised last convolution is not zero), save it as a
checkpoint, export it with ``csakd.inference.export.export_onnx`` (which itself checks ORT against PyTorch at
two small sizes), then time one ``--size`` x ``--size`` image (batch 1) on the network's [-1, 1] scale:

- ``torch``: ``model(lr_hsi, hr_msi)`` under ``torch.inference_mode()``, ``torch.set_num_threads(--threads)``;
- ``onnxruntime``: ``OnnxFuser.run_network`` (the bare graph), CPUExecutionProvider, ``intra_op_num_threads =
  --threads``, default graph optimisations.

Each is run ``--warmup`` times, then ``--repeats`` times, the two runtimes alternating (so that both see the
same load); the JSON keeps every latency, the median and the minimum, and the max abs difference of the two
outputs at that size. ``--threads`` may list several counts (each is timed). The load average before and after
is recorded: on a shared machine other work inflates the figures, PyTorch's OpenMP pool with 2 threads on 2
busy cores most of all (compare with ``--threads 1``).

    python benchmarks/bench_cpu_runtimes.py --json benchmarks/results/cpu_runtimes.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import environment

from csakd.checkpoint import model_payload, save_payload
from csakd.inference.export import export_onnx
from csakd.inference.onnx_runtime import OnnxFuser
from csakd.models import DTSNet, count_params, preset_config
from csakd.normalization import Normalization


def timed(fns: list[Any], warmup: int, repeats: int) -> tuple[list[list[float]], list[Any]]:
    """Milliseconds of each of ``fns`` (run alternately), and their last outputs."""
    outs = [None] * len(fns)
    for _ in range(warmup):
        outs = [fn() for fn in fns]
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = fn()
            times[i].append((time.perf_counter() - t0) * 1000.0)
    return times, outs


def summary(times: list[float]) -> dict[str, Any]:
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1),
            "all_ms": [round(t, 1) for t in times]}


def bench_preset(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    config = preset_config(name, bands=args.bands, msi_bands=args.msi_bands, scale=args.scale)
    model = DTSNet(config).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    ckpt = save_payload(workdir / f"{name}.pt", model_payload(model, role=name, normalization=Normalization("none")))
    onnx_path = workdir / f"{name}.onnx"
    t0 = time.perf_counter()
    export = export_onnx(ckpt, onnx_path, opset=args.opset)
    export_seconds = time.perf_counter() - t0

    h = args.size // args.scale
    rng = np.random.default_rng(0)
    lr = rng.uniform(-1, 1, (1, args.bands, h, h)).astype(np.float32)
    msi = rng.uniform(-1, 1, (1, args.msi_bands, args.size, args.size)).astype(np.float32)

    lr_t, msi_t = torch.from_numpy(lr), torch.from_numpy(msi)

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            return model(lr_t, msi_t)[0].numpy()

    runs: dict[str, Any] = {}
    diff, out_max = 0.0, 0.0
    for threads in args.threads:
        torch.set_num_threads(threads)
        fuser = OnnxFuser(onnx_path, providers=["CPUExecutionProvider"], threads=threads)
        (torch_times, ort_times), (torch_out, ort_out) = timed(
            [run_torch, lambda f=fuser: f.run_network(lr, msi)], args.warmup, args.repeats)
        diff = max(diff, float(np.abs(ort_out.astype(np.float64) - torch_out).max()))
        out_max = float(np.abs(torch_out).max())
        runs[str(threads)] = {
            "torch_eager": summary(torch_times),
            "onnxruntime": summary(ort_times),
            "speedup_median": round(statistics.median(torch_times) / statistics.median(ort_times), 2),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
        print(f"{name}, {threads} thread(s): torch {runs[str(threads)]['torch_eager']['median_ms']} ms, onnxruntime "
              f"{runs[str(threads)]['onnxruntime']['median_ms']} ms (median of {args.repeats})", file=sys.stderr)
    return {
        "config": config.to_dict(),
        "parameters": count_params(model),
        "onnx_bytes": export["bytes"],
        "export_seconds": round(export_seconds, 1),
        "export_check_max_abs_diff": export["max_abs_diff"],
        "exporter": export["exporter"],
        "lr_hsi": list(lr.shape),
        "hr_msi": list(msi.shape),
        "threads": runs,
        "max_abs_diff": diff,
        "output_abs_max": out_max,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["student", "lite"])
    p.add_argument("--bands", type=int, default=172)
    p.add_argument("--msi-bands", type=int, default=4)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="HR side in pixels (default 256)")
    p.add_argument("--threads", type=int, nargs="+", default=[2], help="intra-op thread counts (default 2)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    import onnx
    import onnxruntime

    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            results[name] = bench_preset(name, args, Path(tmp))
    env = environment()
    env["machine"]["torch_threads"] = args.threads
    env["versions"].update({"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__})
    record = {
        "benchmark": "CPU latency, PyTorch eager vs ONNX Runtime (batch 1)",
        "command": " ".join(sys.argv),
        **env,
        "settings": {"bands": args.bands, "msi_bands": args.msi_bands, "scale": args.scale, "size": args.size,
                     "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats, "opset": args.opset,
                     "dtype": "float32", "inputs": "uniform [-1, 1] (the network's scale)"},
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
