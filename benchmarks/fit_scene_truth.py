"""fit-scene on pairs that have a truth: real cubes degraded by a response and a PSF the fit is not told.

Each case takes a real hyperspectral cube from ../shared/data as the truth ``X`` (min-max scaled to [0, 1]):

- the HR-MSI ``Z = g R X + o + n``: ``R`` a camera of srf/camspec_jiang2013 chosen at random (its R, G, B curves,
  400-720 nm, linearly interpolated to the cube's band centres, zero outside), a random gain ``g`` in
  [0.6, 1.4] and offset ``o`` in [0, 0.05] (times the band's mean) per MSI band, white noise at 35 dB SNR;
- the LR-HSI ``Y = D(k * X) + n``: ``k`` a box or a defocus disc (not Gaussian), decimation by the scale at a
  random phase, white noise at 35 dB SNR.

``csakd.fit.fit_scene`` then runs on the two files (nothing else is given: it estimates the PSF, phase, response,
gains and offsets) once per ``--modes`` (full, reduced, both) with a budget of ``--minutes`` each, and the fused
image is compared with the truth: PSNR (per-band peak, mean over bands, dB), SAM (degrees), ERGAS. Beside it:
in-phase bicubic upsampling, GSA, CNMF and HySure, run with the fit's own estimates (PSF, phase, response; the
MSI's estimated offsets removed), the network's residual base alone (``base``: fit-scene's default denoised base,
:mod:`csakd.fit.base`; ``base-plain``: the same checkpoint without the denoising settings, i.e. ``--base plain``),
each fit's network (``fit-<mode>``) and what fit-scene wrote after its fitted-or-base decision (``written-<mode>``).

Cases (cropped to run on one CPU core): two CAVE scenes (31 bands, 128x128, x4), dc_mall (HYDICE, 191 bands),
Pavia (ROSIS, 102 bands) and MUUFL (CASI, 64 bands), 99x99 at x3. The cube files hold no wavelengths except
CAVE's; the others get evenly spaced band centres over their sensors' ranges (dc_mall 400-2400 nm, whose
water-absorption bands were removed, so its centres are approximate; Pavia 430-860; MUUFL 375-1050).

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/fit_scene_truth.py --minutes 0.5 \
        --json benchmarks/results/fit_scene_truth_cpu.json --md benchmarks/results/fit_scene_truth_cpu.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import SHARED_DATA, environment, write_record

from csakd.baselines import get_baseline
from csakd.checkpoint import load_checkpoint
from csakd.data import Cube, read_cube, write_cube
from csakd.degradation import upsample_in_phase
from csakd.degradation.estimate import degrade
from csakd.fit import FitOptions, fit_scene
from csakd.inference.tiled import fuse_tiled_arrays
from csakd.metrics import compute_metrics

CASES = {
    "cave_feathers": {"path": ("cave", "feathers_ms"), "scale": 4, "side": 128, "psf": ("box", 4), "range": None},
    "cave_chart": {"path": ("cave", "chart_and_stuffed_toy_ms"), "scale": 4, "side": 128, "psf": ("disc", 3.0),
                   "range": None},
    "dc_mall": {"path": ("dc_mall", "matlab_dc5.tif"), "scale": 3, "side": 99, "psf": ("disc", 2.2),
                "range": (400.0, 2400.0)},
    "pavia": {"path": ("pavia_muufl", "pavia.mat"), "scale": 3, "side": 99, "psf": ("box", 3),
              "range": (430.0, 860.0)},
    "muufl": {"path": ("pavia_muufl", "MUUFL.mat"), "scale": 3, "side": 99, "psf": ("disc", 2.0),
              "range": (375.0, 1050.0)},
}
METHODS = ("bicubic", "gsa", "cnmf", "hysure")


def cameras() -> dict[str, np.ndarray]:
    """The camspec database: name -> (3, 33) R, G, B curves at 400..720 nm."""
    lines = (SHARED_DATA / "srf" / "camspec_jiang2013" / "camspec_database.txt").read_text().splitlines()
    out: dict[str, np.ndarray] = {}
    i = 0
    while i < len(lines):
        parts = lines[i].split("\t")
        if len(parts) == 1 and lines[i].strip() and i + 3 < len(lines) and len(lines[i + 1].split("\t")) >= 33:
            out[lines[i].strip()] = np.array([[float(v) for v in lines[i + k].split("\t")[:33]] for k in (1, 2, 3)])
            i += 4
        else:
            i += 1
    return out


def psf(kind: str, size: float) -> torch.Tensor:
    """A box of ``size`` pixels (an even box is centred half a pixel off) or a disc of radius ``size``."""
    n = 2 * int(np.ceil(size)) + 1
    u = torch.arange(n, dtype=torch.float64) - n // 2
    if kind == "box":
        lo = -(int(size) // 2)
        inside = (u >= lo) & (u < lo + int(size))
        k = (inside[:, None] & inside[None]).double()
    else:
        k = ((u[:, None] ** 2 + u[None] ** 2) <= size**2).double()
    return k / k.sum()


def add_noise(x: torch.Tensor, snr_db: float, gen: torch.Generator) -> torch.Tensor:
    sigma = float(x.square().mean().sqrt()) / 10 ** (snr_db / 20)
    return x + sigma * torch.randn(x.shape, generator=gen, dtype=x.dtype)


def make_case(name: str, spec: dict[str, Any], rng: np.random.Generator, cams: dict[str, np.ndarray]) -> dict[str, Any]:
    cube = read_cube(SHARED_DATA.joinpath(*spec["path"]))
    data = cube.data.astype(np.float64)
    side, s = spec["side"], spec["scale"]
    h, w = data.shape[-2:]
    r0, c0 = (h - side) // 2, (w - side) // 2
    x = data[:, r0:r0 + side, c0:c0 + side]
    x = (x - x.min()) / (x.max() - x.min())
    bands = x.shape[0]
    wl = cube.wavelengths if cube.wavelengths is not None else np.linspace(*spec["range"], bands)
    camera = sorted(cams)[int(rng.integers(len(cams)))]
    grid = np.arange(400.0, 721.0, 10.0)
    r = np.stack([np.interp(wl, grid, row, left=0.0, right=0.0) for row in cams[camera]])
    r = r / r.sum(axis=1, keepdims=True)
    gain = rng.uniform(0.6, 1.4, 3)
    xt = torch.from_numpy(x)
    z = torch.einsum("kc,chw->khw", torch.from_numpy(r * gain[:, None]), xt)
    offset = rng.uniform(0.0, 0.05, 3) * z.mean(dim=(1, 2)).numpy()
    z = z + torch.from_numpy(offset)[:, None, None]
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    z = add_noise(z, 35.0, gen)
    phase = int(rng.integers(s))
    k = psf(*spec["psf"])
    y = add_noise(degrade(xt, k, s, phase), 35.0, gen)
    return {"name": name, "x": x, "y": y.numpy(), "z": z.numpy(), "wavelengths": wl, "scale": s, "phase": phase,
            "camera": camera, "gain": gain.tolist(), "offset": offset.tolist(), "psf": list(spec["psf"]),
            "bands": bands, "side": side}


def metrics(pred: np.ndarray, truth: np.ndarray, scale: int) -> dict[str, float]:
    m = compute_metrics(torch.from_numpy(np.asarray(pred, dtype=np.float64)), torch.from_numpy(truth), scale=scale)
    return {k: float(m[k][0]) for k in ("psnr", "sam", "ergas")}


def run_case(case: dict[str, Any], modes: list[str], minutes: float, folder: Path) -> dict[str, Any]:
    s = case["scale"]
    write_cube(folder / "lr.npz", Cube(case["y"].astype(np.float32), wavelengths=case["wavelengths"]))
    write_cube(folder / "msi.npy", Cube(case["z"].astype(np.float32)))
    rows: dict[str, dict[str, float]] = {}
    runs: dict[str, Any] = {}
    est_report: dict[str, Any] | None = None
    for mode in modes:
        t0 = time.perf_counter()
        opts = FitOptions(fit=mode, minutes=minutes, baselines=(), figures=False, device="cpu", threads=1,
                          overwrite=True)
        result = fit_scene(folder / "lr.npz", folder / "msi.npy", folder / f"fused_{mode}.npy", folder / f"rep_{mode}",
                           opts)
        seconds = time.perf_counter() - t0
        rep = result.report
        est_report = est_report or rep
        fitted = fuse_tiled_arrays(load_checkpoint(rep["outputs"]["fitted_checkpoint"]), case["y"], case["z"],
                                   tile=0, device="cpu")
        assert fitted is not None
        written = np.load(folder / f"fused_{mode}.npy")
        if "base" not in rows:
            base = fuse_tiled_arrays(load_checkpoint(rep["outputs"]["base_checkpoint"]), case["y"], case["z"],
                                     tile=0, device="cpu")
            assert base is not None
            rows["base"] = metrics(base, case["x"], s)
            for label, drop in (("base-plain", ("detail_eps", "output")), ("base-ridge-only", ("output",)),
                                ("base-subspace-only", ("detail_eps",))):
                part = fuse_tiled_arrays(_without(load_checkpoint(rep["outputs"]["base_checkpoint"]), drop),
                                         case["y"], case["z"], tile=0, device="cpu")
                assert part is not None
                rows[label] = metrics(part, case["x"], s)
        rows[f"fit-{mode}"] = metrics(fitted, case["x"], s)
        rows[f"written-{mode}"] = metrics(written, case["x"], s)
        runs[mode] = {"seconds": round(seconds, 1), "decision": {k: v for k, v in rep["decision"].items()
                                                                 if k != "lines"},
                      "steps": rep["training"].get("steps"), "base": rep["settings"]["base"],
                      "estimates_model_residual_db": rep["estimates"]["model_residual_db"]["all_bands"]}
    assert est_report is not None
    est = est_report["estimates"]
    hs, ms = est_report["normalization"]["hsi_scale"], est_report["normalization"]["msi_scale"]
    r_raw = np.asarray(est["response"]["matrix"]) * ms / hs
    o_raw = np.asarray(est["response"]["offset"]) * ms
    kernel = np.asarray(est["blur"]["kernel"])
    phase = int(est["phase"])
    y, z = case["y"], case["z"] - o_raw[:, None, None]
    for name in METHODS:
        t0 = time.perf_counter()
        if name == "bicubic":
            out = upsample_in_phase(torch.from_numpy(y), s, phase).numpy()
        else:
            out = get_baseline(name)(y, z, s, response=r_raw, phase=phase, blur_kernel=kernel)
        rows[name] = {**metrics(out, case["x"], s), "seconds": round(time.perf_counter() - t0, 1)}
    true_k = psf(*CASES[case["name"]]["psf"]).numpy()
    return {"case": {k: v for k, v in case.items() if k not in ("x", "y", "z", "wavelengths")},
            "estimated": {"phase": phase, "true_phase": case["phase"], "kernel_size": int(kernel.shape[0]),
                          "kernel_l1_error_if_centred": _kernel_l1(kernel, true_k),
                          "model_residual_db": est["model_residual_db"]["all_bands"],
                          "gain_ratio": (np.asarray(est["response"]["row_sums"]) * ms / hs).tolist()},
            "methods": rows, "runs": runs}


def _without(loaded: Any, drop: tuple[str, ...]) -> Any:
    """The same checkpoint without some of fit-scene's denoising settings of the base: ``detail_eps`` (the noise
    ridge) and/or ``output`` (the subspace projection); both dropped is ``--base plain``."""
    from csakd.models import DTSNet

    gone: dict[str, Any] = {"detail_eps": None} if "detail_eps" in drop else {}
    if "output" in drop:
        gone.update(output_mean=None, output_analysis=None, output_synthesis=None)
    cfg = replace(loaded.model.config, **gone)
    model = DTSNet(cfg)
    model.load_state_dict(loaded.model.state_dict())
    return replace(loaded, model=model)


def _kernel_l1(est: np.ndarray, true: np.ndarray) -> float:
    """L1 distance of the estimate to the true PSF, both centred on the same support (phase shifts not undone)."""
    n = max(est.shape[0], true.shape[0])
    a, b = np.zeros((n, n)), np.zeros((n, n))
    oa, ob = (n - est.shape[0]) // 2, (n - true.shape[0]) // 2
    a[oa:oa + est.shape[0], oa:oa + est.shape[0]] = est
    b[ob:ob + true.shape[0], ob:ob + true.shape[0]] = true
    return float(np.abs(a - b).sum())


def markdown(record: dict[str, Any]) -> str:
    cases = record["cases"]
    names: list[str] = []
    for c in cases:
        names += [n for n in c["methods"] if n not in names]
    first = ("bicubic", "gsa", "cnmf", "hysure", "base-plain", "base-ridge-only", "base-subspace-only", "base")
    order = [n for n in first if n in names] + [n for n in names if n not in first]
    head = "| method | " + " | ".join(c["case"]["name"] for c in cases) + " | mean PSNR | mean SAM |"
    lines = [
        f"# fit-scene on pairs with a truth ({record['settings']['minutes']} min per fit, one CPU core)",
        "",
        "PSNR (dB, per-band peak) / SAM (degrees) against the truth; the response, gains, offsets and PSF were not "
        "told to any method (the classical ones run with fit-scene's estimates). See benchmarks/fit_scene_truth.py.",
        "",
        head,
        "| --- " * (len(cases) + 3) + "|",
    ]
    for n in order:
        vals = [c["methods"].get(n) for c in cases]
        cells = [f"{v['psnr']:.2f} / {v['sam']:.2f}" if v else "-" for v in vals]
        got = [v for v in vals if v]
        mean_p = np.mean([v["psnr"] for v in got]) if len(got) == len(vals) else float("nan")
        mean_s = np.mean([v["sam"] for v in got]) if len(got) == len(vals) else float("nan")
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {mean_p:.2f} | {mean_s:.2f} |")
    lines += ["", "`base-plain`: the regression base as `csakd train` builds it, with the estimated PSF "
              "(`--base plain`); `base`: fit-scene's default denoised base (a detail ridge at the HR-MSI's "
              "estimated noise variance, the output projected onto the LR-HSI's noise-whitened principal "
              "subspace of `k` dimensions); `base-ridge-only` and `base-subspace-only`: one of the two.", "",
              "| case | camera | PSF (true) | phase est/true | PSF L1 error | model residual dB | base k, ridge | "
              "decisions |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in cases:
        e = c["estimated"]
        dec = ", ".join(f"{m}: {r['decision']['written']} ({r['decision']['gain_db']:+.3f} dB)"
                        for m, r in c["runs"].items())
        lines.append(f"| {c['case']['name']} | {c['case']['camera']} | {c['case']['psf'][0]} {c['case']['psf'][1]} | "
                     f"{e['phase']}/{e['true_phase']} | {e['kernel_l1_error_if_centred']:.2f} | "
                     f"{e['model_residual_db']:.1f} | {_base_cell(c)} | {dec} |")
    return "\n".join(lines) + "\n"


def _base_cell(case: dict[str, Any]) -> str:
    base = next(iter(case["runs"].values())).get("base") or {}
    if base.get("kind") != "denoised":
        return "plain"
    return f"{base['subspace_dimension'] or 'all'}, {base['detail_eps']:.2g}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--modes", default="full,reduced,both")
    p.add_argument("--minutes", type=float, default=0.75)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/fit_scene_truth_cpu.json"))
    p.add_argument("--md", type=Path, default=Path("benchmarks/results/fit_scene_truth_cpu.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    cams = cameras()
    modes = [m for m in args.modes.split(",") if m]
    t0 = time.perf_counter()
    cases = []
    for name in [c for c in args.cases.split(",") if c]:
        case = make_case(name, CASES[name], rng, cams)
        with tempfile.TemporaryDirectory() as tmp:
            result = run_case(case, modes, args.minutes, Path(tmp))
        cases.append(result)
        print(name, {k: round(v["psnr"], 2) for k, v in result["methods"].items()}, flush=True)
    record = {"what": __doc__.split("\n")[0], "settings": {"minutes": args.minutes, "modes": modes,
                                                           "seed": args.seed, "threads": 1},
              "cases": cases, "seconds": round(time.perf_counter() - t0, 1), "environment": environment()}
    return write_record(record, args.json, args.md, None, markdown, None)


if __name__ == "__main__":
    raise SystemExit(main())
