"""``csakd bench`` and ``csakd info``: timing a preset, and its (or a checkpoint's) parameters and MACs."""

from __future__ import annotations

import argparse
from typing import Any

from csakd.cli.common import _PRESET_NAMES, DEVICE_HELP, _check_io, _int_tuple, _json_out
from csakd.errors import InputError


# ---------------------------------------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> int:
    from csakd.models import count_config_params, count_macs, count_params, preset_config

    _check_io(args, {"--json": args.json}, {"--checkpoint": args.checkpoint})
    if args.checkpoint:
        from csakd.checkpoint import load_checkpoint

        lm = load_checkpoint(args.checkpoint, scale=args.scale or 4)
        cfg = lm.config
        info: dict[str, Any] = {
            "checkpoint": str(args.checkpoint), "role": lm.role, "bands": cfg.bands, "msi_bands": cfg.msi_bands,
            "scale": cfg.scale, "params": count_params(lm.model), "macs": count_macs(cfg, args.size),
            "size": args.size, "config": cfg.to_dict(), "normalization": lm.normalization.to_dict(),
            "wavelengths": lm.wavelengths, "metrics": lm.metadata.get("metrics"),
        }
    elif args.preset is None and args.paper:
        return _preset_table(args)
    else:
        if args.preset is None:
            raise InputError("csakd info needs --preset NAME or --checkpoint FILE (or --paper alone: the preset table)")
        overrides: dict[str, Any] = {"bands": args.bands, "msi_bands": args.msi_bands, "scale": args.scale or 4}
        if args.feedback is not None:
            overrides["feedback"] = args.feedback
        cfg = preset_config(args.preset, paper=args.paper, **overrides)
        info = {"preset": args.preset, "bands": cfg.bands, "msi_bands": cfg.msi_bands, "scale": cfg.scale,
                "size": args.size, "params": count_config_params(cfg), "macs": count_macs(cfg, args.size),
                "config": cfg.to_dict()}
    if args.json:
        _json_out(args.json, info)
    if args.json != "-":
        print(f"{info.get('preset', info.get('role'))}: {info['bands']} bands, {info['msi_bands']} MSI bands, "
              f"x{info['scale']}: {info['params'] / 1e6:.2f}M parameters, "
              f"{info['macs'] / 1e9:.2f} GMACs at {args.size}x{args.size}")
    return 0


#: The rows of ``csakd info --paper``: (label, preset, overrides).
PRESET_TABLE: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("teacher", "teacher", {}),
    ("student", "student", {}),
    ("student, `apply_joint_hr_blocks=True`", "student", {"apply_joint_hr_blocks": True}),
    ("lite", "lite", {}),
)


def _preset_table(args: argparse.Namespace) -> int:
    """``csakd info --paper``: parameters and MACs of every preset as the paper's network (the README's table)."""
    from csakd.models import count_config_params, count_macs, preset_config

    shape = {"bands": args.bands, "msi_bands": args.msi_bands, "scale": args.scale or 4}
    rows: list[dict[str, Any]] = []
    for label, name, extra in PRESET_TABLE:
        cfg = preset_config(name, paper=True, **shape, **extra)
        rows.append({"preset": label, "blocks": list(cfg.blocks), "nf": cfg.nf, "gc": cfg.gc, "head": cfg.head,
                     "params": count_config_params(cfg), "macs": count_macs(cfg, args.size)})
    info = {**shape, "size": args.size, "network": "the paper's (reference attention, no residual base)",
            "presets": rows}
    if args.json:
        _json_out(args.json, info)
    if args.json != "-":
        print(f"presets at {shape['bands']} bands, {shape['msi_bands']}-band MSI, x{shape['scale']}, "
              f"{args.size}x{args.size}, as the paper's networks (reference attention, no residual base):")
        print("| preset | blocks (joint HR, joint LR, HSI, MSI) | widths nf/gc | head | parameters | GMACs |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            blocks = ", ".join(str(b) for b in r["blocks"])
            print(f"| {r['preset']} | {blocks} | {r['nf']}/{r['gc']} | {r['head']} "
                  f"| {r['params'] / 1e6:.2f}M | {r['macs'] / 1e9:.1f} |")
    return 0


# ---------------------------------------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    from csakd.bench import bench

    _check_io(args, {"--json": args.json}, {})
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = bench(args.preset, bands=args.bands, msi_bands=args.msi_bands, scale=args.scale, size=args.size,
                   device=args.device, batches=args.batches, repeats=args.repeats, warmup=args.warmup,
                   train_step=args.train_step, paper=args.paper, onnx=not args.no_onnx, residual=args.residual)
    from csakd.envinfo import environment

    result.update(environment())
    for name, entry in result["paths"].items():
        for key, val in entry.items():
            if key.startswith("b"):
                print(f"{name:<26} batch {key[1:]:>3}: {val['median_ms']:9.1f} ms  {val['images_per_s']:8.2f} img/s")
    print(f"fastest at batch {args.batches[0]}: {result['path']}")
    for rate in result["matmul"]:
        bound = result["arithmetic_bound_ms_b1"][rate["dtype"]]
        print(f"{rate['dtype']} matmul {rate['gflops']:.0f} GFLOP/s: "
              f"the network's arithmetic alone takes {bound:.1f} ms")
    _json_out(args.json, result)
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("bench", help="latency, throughput, memory and training-step time of a preset")
    p.add_argument("--preset", default="student", help=f"network preset: {_PRESET_NAMES} (default student)")
    p.add_argument("--paper", action="store_true", help="the paper's exact network (reference attention, no residual)")
    p.add_argument("--residual", choices=["none", "bicubic", "regression"],
                   help="the residual base (default: the preset's, regression)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--bands", type=int, default=172, help="HSI bands (default 172)")
    p.add_argument("--msi-bands", type=int, default=4, help="MSI bands (default 4)")
    p.add_argument("--scale", type=int, default=4, help="HR / LR grid ratio (default 4)")
    p.add_argument("--size", type=int, default=256, help="HR image side (default 256)")
    p.add_argument("--batches", type=_int_tuple, default=(1,), help="batch sizes, e.g. 1,16 (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per path and batch (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before them (default 2)")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: PyTorch's, the cores)")
    p.add_argument("--train-step", action="store_true", help="also time a training step (batch 8, crop 128)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime path")
    p.add_argument("--json", help="write the results as JSON to FILE (- for stdout; default: none)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("info", help="parameters and MACs of a preset or a checkpoint")
    p.add_argument("--preset", help=f"network preset: {_PRESET_NAMES} (default: none; this, --checkpoint or --paper)")
    p.add_argument("--checkpoint", help="a checkpoint to describe instead of a preset (default: none)")
    p.add_argument("--bands", type=int, default=172, help="HSI bands of --preset (default 172)")
    p.add_argument("--msi-bands", type=int, default=4, help="MSI bands of --preset (default 4)")
    p.add_argument("--scale", type=int, help="HR / LR grid ratio of --preset, or of a reference state dict (default 4)")
    p.add_argument("--size", type=int, default=256, help="HR image side for the MAC count (default 256)")
    p.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=None,
                   help="count --preset with or without feedback, the base's LR residual read by the joint streams "
                        "(default: the preset's: on, off with --paper)")
    p.add_argument("--paper", action="store_true",
                   help="the paper's exact network (reference attention, no residual); alone, the table of every "
                        "preset at the paper's setting (172 bands, 4-band MSI, x4, 256x256)")
    p.add_argument("--json", help="write JSON to FILE (- for stdout; default: none)")
    p.set_defaults(func=cmd_info)
