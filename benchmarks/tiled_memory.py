"""Peak memory and time of tiled, streaming fusion of a large scene (``csakd fuse --tile``), as JSON.

Builds a scene of ``--size`` x ``--size`` HR pixels with 172 bands from real AVIRIS data
(../shared/data/abu_aviris: scenes with at least 172 bands, their first 172, each scaled by its maximum,
mirrored into an LR-HSI mosaic of ``size / 4`` pixels), an HR-MSI of 4 bands (the LR-HSI through four
Gaussian-shaped responses, bicubic-upsampled by 4: a plausible pair, not a simulation of a sensor) and a
checkpoint of a network preset (random weights; time and memory do not depend on them). Both inputs are
written as GeoTIFFs; ``csakd fuse`` then runs in a child process, writing the output tile by tile, and its
peak RSS (the child's ``ru_maxrss``) and wall time are recorded with the output's size, so the bound
"peak RSS << output size" can be read off directly.

    python benchmarks/tiled_memory.py --size 2048 --preset lite --tile 512 --device cpu \
        --work runs/tiled2048 --json benchmarks/results/tiled_memory_2048_lite_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import SHARED_DATA, environment

BANDS, MSI_BANDS, SCALE = 172, 4, 4


def aviris_mosaic(lr_size: int, folder: Path = SHARED_DATA / "abu_aviris") -> np.ndarray:
    """(172, lr_size, lr_size) float32: real AVIRIS scenes (first 172 bands, each / its max), mirrored to fill."""
    from csakd.data import read_cube

    tiles = []
    for path in sorted(folder.glob("*.mat")):
        cube = read_cube(path, variable="data")
        if cube.data.shape[0] >= BANDS:
            data = cube.data[:BANDS].astype(np.float32)
            tiles.append(data / max(float(data.max()), 1e-6))
    if not tiles:
        raise SystemExit(f"no AVIRIS scene with {BANDS} bands under {folder}")
    side = min(min(t.shape[1:]) for t in tiles)
    tiles = [t[:, :side, :side] for t in tiles]
    n = -(-lr_size // side)
    rows = []
    for i in range(n):
        row = []
        for j in range(n):
            t = tiles[(i * n + j) % len(tiles)]
            row.append(t[:, ::-1] if (i % 2) else t)  # mirror every other row of tiles
        rows.append(np.concatenate(row, axis=2))
    return np.ascontiguousarray(np.concatenate(rows, axis=1)[:, :lr_size, :lr_size])


def msi_from(lr: np.ndarray) -> np.ndarray:
    """(4, 4 h, 4 w): four Gaussian-shaped band responses over the LR-HSI, upsampled bicubically by 4."""
    centres, width = np.linspace(0.15, 0.85, MSI_BANDS) * BANDS, BANDS / 10
    bands = np.arange(BANDS)
    response = np.exp(-0.5 * ((bands[None] - centres[:, None]) / width) ** 2)
    response /= response.sum(axis=1, keepdims=True)
    msi_lr = np.tensordot(response, lr, axes=1).astype(np.float32)
    up = F.interpolate(torch.from_numpy(msi_lr)[None], scale_factor=SCALE, mode="bicubic", align_corners=False)
    return up[0].clamp(0, 1).numpy()


def write_inputs(work: Path, size: int, aviris: Path) -> tuple[Path, Path]:
    from csakd.data import Cube, write_cube

    lr = aviris_mosaic(size // SCALE, aviris)
    msi = msi_from(lr)
    lr_path, msi_path = work / "lr_hsi.tif", work / "hr_msi.tif"
    write_cube(lr_path, Cube(lr, wavelengths=np.linspace(400, 2500, BANDS)))
    write_cube(msi_path, Cube(msi))
    return lr_path, msi_path


def write_checkpoint(work: Path, preset: str) -> Path:
    from csakd.checkpoint import model_payload, save_payload
    from csakd.models import create_model
    from csakd.normalization import Normalization

    torch.manual_seed(0)
    model = create_model(preset, bands=BANDS, msi_bands=MSI_BANDS, scale=SCALE)
    with torch.no_grad():  # the residual head starts at zero: give it weights so the network computes
        for p in model.head.parameters():
            p.normal_(0, 1e-3)
    path = work / f"{preset}.pt"
    save_payload(path, model_payload(model, role="student", normalization=Normalization("per_image")))
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048, help="HR side in pixels (a multiple of 4)")
    p.add_argument("--preset", default="lite")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, help="default: the receptive field (exact)")
    p.add_argument("--batch-tiles", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-ext", default=".hdr", choices=[".hdr", ".tif", ".npy"], help="output format")
    p.add_argument("--work", type=Path, required=True, help="folder for the inputs and output (must not exist)")
    p.add_argument("--keep-output", action="store_true", help="keep the fused cube (it is large)")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--aviris", type=Path, default=SHARED_DATA / "abu_aviris",
                   help="folder of the AVIRIS .mat scenes (default ../shared/data/abu_aviris)")
    args = p.parse_args()
    if args.size % SCALE:
        p.error(f"--size {args.size}: expected a multiple of {SCALE}")
    if not args.aviris.is_dir():
        print(f"{args.aviris} not found: this benchmark needs ../shared/data (or --aviris)", file=sys.stderr)
        return 2
    if args.work.exists():
        p.error(f"--work {args.work} exists: give a new folder (the inputs and the large output are written there)")
    args.work.mkdir(parents=True)
    lr_path, msi_path = write_inputs(args.work, args.size, args.aviris)
    checkpoint = write_checkpoint(args.work, args.preset)
    out = args.work / f"fused{args.out_ext}"
    command = ["csakd", "fuse", "--lr-hsi", str(lr_path), "--hr-msi", str(msi_path), "--checkpoint",
               str(checkpoint), "--out", str(out), "--tile", str(args.tile), "--batch-tiles", str(args.batch_tiles),
               "--device", args.device, "--json", str(args.work / "fuse.json")]
    if args.overlap is not None:
        command += ["--overlap", str(args.overlap)]
    load_before = os.getloadavg()
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "csakd", *command[1:]], check=False)
    wall = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_rss_mb = usage.ru_maxrss / 1024.0
    if done.returncode:
        print(f"csakd fuse exited with {done.returncode}", file=sys.stderr)
        return done.returncode
    files = [f for f in args.work.iterdir() if f.name.startswith("fused")]
    output_bytes = sum(f.stat().st_size for f in files)
    fuse_summary = json.loads((args.work / "fuse.json").read_text())
    from csakd.inference.tiled import receptive_field
    from csakd.models import preset_config

    overlap = args.overlap if args.overlap is not None else receptive_field(
        preset_config(args.preset, bands=BANDS, msi_bands=MSI_BANDS, scale=SCALE))
    record = {
        "benchmark": "tiled streaming fusion: peak RSS and time (benchmarks/tiled_memory.py)",
        "command": " ".join(["python", *sys.argv]),
        "fuse_command": " ".join(command),
        **environment(),
        "preset": args.preset, "hr_size": args.size, "bands": BANDS, "msi_bands": MSI_BANDS, "scale": SCALE,
        "tile": args.tile, "overlap": overlap,
        "exact": args.overlap is None, "batch_tiles": args.batch_tiles,
        "device": args.device, "output_format": args.out_ext,
        "output_mb": round(output_bytes / 2**20, 1),
        "input_mb": round((lr_path.stat().st_size + msi_path.stat().st_size) / 2**20, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "peak_rss_over_output": round(peak_rss_mb * 2**20 / max(output_bytes, 1), 3),
        "wall_seconds": round(wall, 1),
        # CPU time of the child: on large windows the kernel's share (page faults, writeback) can pass the user's
        "user_seconds": round(usage.ru_utime, 1), "system_seconds": round(usage.ru_stime, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "fuse_summary": fuse_summary,
    }
    if not args.keep_output:
        for f in files:
            f.unlink()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"peak RSS {peak_rss_mb:.0f} MB for a {output_bytes / 2**20:.0f} MB output in {wall:.0f} s; "
          f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
