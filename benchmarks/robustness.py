"""Robustness as the paper reports it: checkpoints on a test folder with a noisy or a misregistered LR-HSI.

Each checkpoint (``--checkpoint FILE`` or ``--checkpoint NAME=FILE``, repeatable; named by the file's stem
when no name is given) is evaluated with ``csakd eval`` on the HR-HSI cubes of ``--test``, the pairs simulated
as the checkpoint was trained (its stored spectral response, blur and scale; ``--srf`` overrides the response):

- clean (no noise, no shift);
- Gaussian noise on the LR-HSI at each SNR of ``--snrs`` (default 40,35,30,25,20 dB; ``csakd eval --snr``;
  noise power = mean square / 10^(SNR/10), per image; the same noise seed for every method);
- the LR-HSI shifted by each of ``--shifts`` LR pixels (default 1,2,3; ``csakd eval --shift``), down and right.

Bicubic upsampling of the same LR-HSI is the reference line. Writes one table as JSON (``--json``: every
metric per method and condition, with the machine, versions and date) and Markdown (``--md``: PSNR and SAM),
and one PNG (``--png``) with two panels: PSNR against SNR and PSNR against shift::

    python benchmarks/robustness.py --test runs/cave-cpu/test --center-crop 256 --device cpu \
        --checkpoint csakd=runs/cave-cpu/run/student.pt --checkpoint teacher=runs/cave-cpu/run/teacher.pt \
        --out runs/robustness --json benchmarks/results/robustness_cpu.json \
        --md benchmarks/results/robustness_cpu.md --png benchmarks/results/robustness_cpu.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import environment

from csakd.cli import main as csakd_main

METRICS = ("psnr", "psnr_fixed", "sam", "ergas", "rmse", "ssim")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--checkpoint", action="append", required=True,
                   help="FILE or NAME=FILE (repeatable); the name defaults to the file's stem")
    p.add_argument("--test", type=Path, required=True, help="folder of HR-HSI test cubes")
    p.add_argument("--snrs", type=_floats, default=[40.0, 35.0, 30.0, 25.0, 20.0],
                   help="LR-HSI SNRs in dB (default 40,35,30,25,20)")
    p.add_argument("--shifts", type=_ints, default=[1, 2, 3], help="LR-HSI shifts in LR pixels (default 1,2,3)")
    p.add_argument("--srf", help="spectral response for the test pairs (default: the checkpoint's)")
    p.add_argument("--center-crop", type=int, help="centre crop of each test cube (e.g. 256)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--out", type=Path, required=True, help="folder for the per-condition evaluations")
    p.add_argument("--json", type=Path, help="the table as JSON (default OUT/robustness.json)")
    p.add_argument("--md", type=Path, help="the table as Markdown (default OUT/robustness.md)")
    p.add_argument("--png", type=Path, help="the figure (default OUT/robustness.png)")
    return p


def named_checkpoints(specs: Sequence[str]) -> dict[str, Path]:
    named: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).stem, spec
        name = name.strip()
        if not name or name == "bicubic" or name in named:
            raise SystemExit(f"robustness: checkpoint name {name!r} is empty, reserved or given twice "
                             "(use NAME=FILE)")
        if not Path(path).is_file():
            raise SystemExit(f"robustness: checkpoint {path} not found")
        named[name] = Path(path).resolve()
    return named


def conditions(snrs: Sequence[float], shifts: Sequence[int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"name": "clean", "snr": None, "shift": 0}]
    out += [{"name": f"snr{s:g}", "snr": s, "shift": 0} for s in snrs]
    out += [{"name": f"shift{k}", "snr": None, "shift": k} for k in shifts if k]
    return out


def markdown(methods: list[str], conds: list[dict[str, Any]], table: dict[str, dict[str, dict[str, float]]],
             header: str) -> str:
    heads = ["clean" if c["name"] == "clean" else (f"{c['snr']:g} dB" if c["snr"] is not None else
                                                    f"shift {c['shift']}") for c in conds]
    lines = [header]
    for key, title, digits in (("psnr", "PSNR (dB)", 2), ("sam", "SAM (deg)", 3)):
        lines += ["", f"{title}:", "", "| method | " + " | ".join(heads) + " |",
                  "| --- | " + " | ".join("---:" for _ in heads) + " |"]
        for m in methods:
            vals = [table[m].get(c["name"], {}).get(key) for c in conds]
            lines.append(f"| {m} | " + " | ".join("" if v is None else f"{v:.{digits}f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"


def figure(path: Path, methods: list[str], conds: list[dict[str, Any]],
           table: dict[str, dict[str, dict[str, float]]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax_snr, ax_shift = fig.subplots(1, 2)
    snr_conds = [c for c in conds if c["name"] == "clean" or c["snr"] is not None]
    shift_conds = [c for c in conds if c["name"] == "clean" or c["shift"]]
    for ax, cs, labels, xlabel in (
        (ax_snr, snr_conds, ["clean" if c["snr"] is None else f"{c['snr']:g}" for c in snr_conds],
         "LR-HSI SNR (dB)"),
        (ax_shift, shift_conds, [str(c["shift"]) if c["shift"] else "0 (clean)" for c in shift_conds],
         "LR-HSI shift (LR pixels)"),
    ):
        x = list(range(len(cs)))
        for m in methods:
            y = [table[m].get(c["name"], {}).get("psnr", float("nan")) for c in cs]
            style = {"color": "black", "linestyle": "--", "marker": "s"} if m == "bicubic" else {"marker": "o"}
            ax.plot(x, y, label=m, **style)
        ax.set_xticks(x)
        ax.set_xticklabels(labels)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("PSNR (dB)")
        ax.grid(True, alpha=0.3)
    ax_snr.set_title("noise on the LR-HSI")
    ax_shift.set_title("misregistered LR-HSI")
    ax_shift.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    named = named_checkpoints(args.checkpoint)
    if not args.test.is_dir():
        p.error(f"{args.test} is not a folder")
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"{args.out} exists and is not empty")
    json_path = args.json or args.out / "robustness.json"
    md_path = args.md or args.out / "robustness.md"
    png_path = args.png or args.out / "robustness.png"
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    conds = conditions(args.snrs, args.shifts)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for cond in conds:
        result_file = args.out / f"{cond['name']}.json"
        argv_eval = ["eval", "--data", str(args.test), "--device", args.device, "--figures", "0",
                     "--seed", str(args.seed), "--json", str(result_file)]
        for name, path in named.items():
            argv_eval += ["--checkpoint", f"{name}={path}"]
        if cond["snr"] is not None:
            argv_eval += ["--snr", str(cond["snr"])]
        if cond["shift"]:
            argv_eval += ["--shift", str(cond["shift"])]
        if args.srf:
            argv_eval += ["--srf", args.srf]
        if args.center_crop:
            argv_eval += ["--center-crop", str(args.center_crop)]
        print(f"robustness: {cond['name']}", file=sys.stderr)
        code = csakd_main(argv_eval)
        if code:
            print(f"robustness: csakd eval failed on {cond['name']} (exit {code})", file=sys.stderr)
            return code
        result = json.loads(result_file.read_text())
        for method, means in result["methods"].items():
            table.setdefault(method, {})[cond["name"]] = {k: means[k] for k in METRICS if k in means}
    methods = ["bicubic", *named] if "bicubic" in table else list(named)

    record = {
        "benchmark": "robustness (benchmarks/robustness.py)",
        "command": " ".join(sys.argv if argv is None else ["benchmarks/robustness.py", *argv]),
        **environment(),
        "test": str(args.test), "center_crop": args.center_crop, "seed": args.seed,
        "checkpoints": {n: str(pth) for n, pth in named.items()},
        "conditions": conds,
        "total_seconds": round(time.monotonic() - t0, 1),
        "metrics": {m: table[m] for m in methods},
        "definitions": "psnr: per-band peak (paper); psnr_fixed: peak 1; sam in degrees; ergas with the scale; "
                       "rmse in the data's units; ssim mean over bands; noise: Gaussian on the LR-HSI, power = "
                       "mean square / 10^(SNR/10) per image; shift: the LR-HSI moved down and right",
    }
    for path in (json_path, md_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    md_path.write_text(markdown(methods, conds, table, f"Robustness on {args.test.name}, {record.get('date', '')}"))
    figure(png_path, methods, conds, table)
    print(f"wrote {json_path}, {md_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
