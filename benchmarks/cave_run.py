"""Train on CAVE scenes and evaluate on held-out ones (the cave256-x4 protocol), writing one JSON.

cave256-x4: each scene's centre 256x256 crop (31 bands) divided by its maximum; HR-MSI through the Nikon
D700 response (``srf/nikon_d700.csv``, resampled to 400..700 nm, each band normalised to sum 1); LR-HSI by a
9x9 Gaussian blur of sigma 2 (reflect padding) then every 4th pixel from index 0; no noise at evaluation.

Held out (never trained on): the scenes that csakd's deterministic split sends to validation (sorted by
name, every 5th: clay_ms and watercolors_ms of the ten in ../shared/data/cave); they also pick the best
checkpoints, so the figures are validation figures, not a blind test.

    python benchmarks/cave_run.py --minutes 10 --device cpu --widths small --out runs/cave-cpu \
        --json benchmarks/results/cave_cpu_x4.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import SHARED_DATA, environment

from csakd.cli import main as csakd_main
from csakd.data.hr_cubes import list_cube_files, split_files

WIDTHS = {
    # the paper's networks
    "paper": [],
    # small enough to learn something on 2 CPU cores in minutes
    "small": ["--nf", "32", "--gc", "16", "--teacher-blocks", "2,2,2,2", "--student-blocks", "1,2,2,1"],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cave", type=Path, default=SHARED_DATA / "cave",
                   help="CAVE scene folders, or the .npz files of benchmarks/pack_cave.py "
                        "(default ../shared/data/cave)")
    p.add_argument("--srf", type=Path, default=SHARED_DATA / "srf" / "nikon_d700.csv",
                   help="the Nikon D700 response (default ../shared/data/srf/nikon_d700.csv)")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--widths", choices=sorted(WIDTHS), default="small")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--recipe", default="default")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more csakd train options")
    args = p.parse_args(argv)
    cave = args.cave
    for needed in (cave, args.srf):
        if not needed.exists():
            print(f"{needed} not found: this benchmark needs ../shared/data (or --cave / --srf)", file=sys.stderr)
            return 2
    train, held_out = split_files(list_cube_files(cave), 0.2)
    args.out.mkdir(parents=True, exist_ok=False)
    for name, files in (("train", train), ("test", held_out)):
        (args.out / name).mkdir()
        for f in files:
            (args.out / name / f.name).symlink_to(f.resolve())
    protocol = ["--center-crop", "256", "--srf", str(args.srf), "--scale", "4",
                "--blur-size", "9", "--blur-sigma", "2", "--phase", "0"]
    t0 = time.monotonic()
    code = csakd_main(["train", "--data", str(args.out / "train"), "--val-data", str(args.out / "test"), *protocol,
                       "--out", str(args.out / "run"), "--max-minutes", str(args.minutes), "--epochs", "100000",
                       "--crop", str(args.crop), "--batch-size", str(args.batch_size), "--samples-per-epoch", "64",
                       "--val-every", "5", "--device", args.device, "--recipe", args.recipe, "--quiet",
                       *WIDTHS[args.widths], *args.extra])
    if code:
        return code
    train_seconds = time.monotonic() - t0
    run = args.out / "run"
    code = csakd_main(["eval", "--checkpoint", str(run / "teacher.pt"), "--checkpoint", str(run / "student.pt"),
                       "--data", str(args.out / "test"), "--center-crop", "256", "--device", args.device,
                       "--out", str(args.out / "eval"), "--json", str(args.out / "eval.json")])
    if code:
        return code
    evaluation = json.loads((args.out / "eval.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    record = {
        "benchmark": "cave256-x4 short run",
        "command": " ".join(["benchmarks/cave_run.py", *(sys.argv[1:] if argv is None else argv)]),
        **environment(),
        "protocol": "cave256-x4 (see benchmarks/cave_run.py)",
        "train_scenes": [f.name for f in train],
        "held_out_scenes": [f.name for f in held_out],
        "widths": args.widths,
        "recipe": args.recipe,
        "budget_minutes": args.minutes,
        "train_wall_seconds": round(train_seconds, 1),
        "epochs": summary["epochs"],
        "steps": summary["steps"],
        # the checkpoints kept (epoch 0: the network as initialised, its residual base) and every validation
        # on the held-out scenes: does training add to the base, and when
        "best": summary.get("best", {}),
        "validation_curve": [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                             if line.strip() and json.loads(line).get("kind", "").startswith("val/")],
        "metrics": evaluation["methods"],
        "per_image": evaluation["per_image"],
        "definitions": "psnr: per-band peak (paper); psnr_fixed: peak 1; sam in degrees; ergas with scale 4; "
                       "rmse on the [0, 1] scale times each scene's maximum (raw 16-bit units); ssim mean over bands",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
