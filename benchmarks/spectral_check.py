"""Calibrates ``csakd fuse``'s spectral-consistency warning (:mod:`csakd.inference.checks`).

For each CAVE scene (centre crop, divided by its maximum) and each "training" camera A, a pair is simulated
through A's response (9x9 Gaussian blur, sigma 2, x4, white noise at each ``--snr`` on both images) and its
relative consistency RMSE ``||S(Z) - R Y|| / ||S(Z)||`` is computed with A's response (what a checkpoint
trained through A sees on a pair from A) and with every other camera's (a pair from another camera). The
cameras: the 28 of the camspec database (Jiang et al. 2013, 400-700 nm), the Nikon D700 CSV and colour-science's
Nikon 5100 (NPL)::

    python benchmarks/spectral_check.py --cave ../shared/data/cave --srf-dir ../shared/data/srf \
        --json benchmarks/results/spectral_check.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from common import environment

from csakd.data import read_cube
from csakd.degradation import Degradation, DegradationConfig, SpectralResponse
from csakd.files import write_json
from csakd.inference.checks import CONSISTENCY_WARN, spectral_consistency


def camspec(path: Path, bands: int = 31) -> dict[str, np.ndarray]:
    """The camspec database's cameras as (3, bands) matrices over 400.. nm in 10 nm steps (R, G, B rows)."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    out: dict[str, np.ndarray] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line and not line[0].isdigit() and not line.startswith(("http", "-", "400nm")) and i + 3 < len(lines):
            rows = [np.array(lines[i + k].split(), dtype=np.float64) for k in (1, 2, 3)]
            if all(r.size >= bands for r in rows):
                out[f"camspec:{line}"] = np.stack([r[:bands] for r in rows])
                i += 4
                continue
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cave", type=Path, required=True)
    p.add_argument("--srf-dir", type=Path, required=True)
    p.add_argument("--center-crop", type=int, default=256)
    p.add_argument("--snr", type=float, action="append", help="noise SNR in dB (repeatable; default none, 35, 30)")
    p.add_argument("--train-cameras", default="camspec:Nikon D700,camspec:Canon 5DMarkII,colour:Nikon 5100 (NPL)")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    snrs: list[float | None] = [None, *(args.snr or [35.0, 30.0])]

    scenes = sorted(d for d in args.cave.iterdir() if d.is_dir())
    first = read_cube(scenes[0])
    wl = first.wavelengths
    responses = {k: SpectralResponse.from_matrix(m, source=k).matrix
                 for k, m in camspec(args.srf_dir / "camspec_jiang2013" / "camspec_database.txt").items()}
    responses["csv:nikon_d700"] = SpectralResponse.from_csv(args.srf_dir / "nikon_d700.csv", wl).matrix
    try:
        responses["colour:Nikon 5100 (NPL)"] = SpectralResponse.from_sensor("colour:Nikon 5100 (NPL)", wl).matrix
    except Exception as exc:  # colour-science missing: the others suffice
        print(f"colour:Nikon 5100 (NPL) left out: {exc}", file=sys.stderr)
    train = [name for name in args.train_cameras.split(",") if name in responses]
    rows = []
    for folder in scenes:
        cube = read_cube(folder)
        n, (_, h, w) = args.center_crop, cube.data.shape
        top, left = (h - n) // 2, (w - n) // 2
        x = cube.data[:, top: top + n, left: left + n].astype(np.float32)
        x = torch.from_numpy(x / x.max())
        for a in train:
            for snr in snrs:
                config = DegradationConfig(scale=4, blur_size=9, blur_sigma=2.0, hsi_snr_db=snr, msi_snr_db=snr)
                deg = Degradation(config, SpectralResponse.from_matrix(responses[a], normalize=False))
                lr, msi = deg.simulate(x, generator=torch.Generator().manual_seed(0))
                lr_np, msi_np = lr.numpy(), msi.numpy()
                factor = float(lr_np.max())  # the per_image normalisation: both divided by the LR-HSI's maximum
                for b, m in responses.items():
                    r = spectral_consistency(lr_np, msi_np, m, scale=4, hsi_factor=factor, msi_factor=factor)
                    rows.append({"scene": folder.name, "pair_camera": a, "checkpoint_camera": b, "snr_db": snr,
                                 "same": a == b, "relative_rmse": r["relative_rmse"],
                                 "relative_rmse_after_gain": r["relative_rmse_after_gain"]})
        print(folder.name, file=sys.stderr)

    def stats(values: list[float]) -> dict[str, float]:
        v = np.asarray(values)
        return {"n": int(v.size), "min": float(v.min()), "p05": float(np.quantile(v, 0.05)),
                "median": float(np.median(v)), "p95": float(np.quantile(v, 0.95)), "max": float(v.max())}

    summary = {}
    for snr in snrs:
        same = [r["relative_rmse"] for r in rows if r["same"] and r["snr_db"] == snr]
        # D700 appears twice (camspec and the CSV): a pair of the two is not "another camera"
        other = [r for r in rows if not r["same"] and r["snr_db"] == snr
                 and {r["pair_camera"], r["checkpoint_camera"]} != {"camspec:Nikon D700", "csv:nikon_d700"}]
        diff = [r["relative_rmse"] for r in other]
        caught = float(np.mean(np.asarray(diff) > CONSISTENCY_WARN))
        closest = min(other, key=lambda r: r["relative_rmse"])
        summary[str(snr)] = {"same_camera": stats(same), "other_camera": stats(diff),
                             "other_camera_share_warned": caught,
                             "closest_other": {k: closest[k] for k in ("scene", "pair_camera", "checkpoint_camera",
                                                                        "relative_rmse")}}
    named = {}  # the case: a pair through the Nikon D700, a checkpoint through the D5100, and back
    for a, b in (("camspec:Nikon D700", "colour:Nikon 5100 (NPL)"), ("colour:Nikon 5100 (NPL)", "camspec:Nikon D700"),
                 ("camspec:Nikon D700", "camspec:Nikon D5100")):
        for snr in snrs:
            v = [r["relative_rmse"] for r in rows if r["pair_camera"] == a and r["checkpoint_camera"] == b
                 and r["snr_db"] == snr]
            if v:
                named[f"pair {a}, checkpoint {b}, SNR {snr}"] = {
                    **stats(v), "share_warned": float(np.mean(np.asarray(v) > CONSISTENCY_WARN))}
    result = {"benchmark": "spectral consistency of simulated pairs (benchmarks/spectral_check.py)",
              "protocol": f"cave{args.center_crop}-x4, blur 9/2, x4, noise on both images at each SNR",
              "threshold": CONSISTENCY_WARN, "train_cameras": train, "cameras": sorted(responses),
              "summary": summary, "named_pairs": named, **environment()}
    write_json(args.json, result)
    for snr, s in summary.items():
        print(f"SNR {snr}: same camera max {s['same_camera']['max']:.4f}, other cameras min "
              f"{s['other_camera']['min']:.4f} p05 {s['other_camera']['p05']:.4f} median "
              f"{s['other_camera']['median']:.4f}; warned {100 * s['other_camera_share_warned']:.1f}% of other-camera "
              f"pairs at {CONSISTENCY_WARN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
