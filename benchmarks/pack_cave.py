"""Pack CAVE scenes into a compact folder that a GPU machine can be sent (a device call carries at most 64 MiB).

Each scene folder of ``--cave`` (default ../shared/data/cave) becomes ``OUT/<scene>.npz``: its centre
``--crop`` x ``--crop`` pixels (the cave256-x4 protocol's crop), every band as the original 16-bit integers
(``data``, uint16, (31, H, W), zlib-compressed) and the wavelengths. ``csakd train --data OUT --normalize max``
then reads exactly the cubes it reads from the scene folders with ``--center-crop 256`` (the test in
tests/test_benchmark_scripts.py checks it), about 2.5 MB a scene instead of 8 MB of float32::

    python benchmarks/pack_cave.py --out runs/cave256_u16          # then carry runs/cave256_u16 to the device
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from common import SHARED_DATA

from csakd.data import read_cube
from csakd.data.hr_cubes import center_crop, list_cube_files


def pack(cave: Path, out: Path, crop: int) -> list[Path]:
    """Write one compressed uint16 ``.npz`` per scene folder of ``cave``; return the files written."""
    written = []
    for scene in list_cube_files(cave):
        cube = read_cube(scene)
        data = center_crop(cube.data, crop, 1)
        if data.min() < 0 or data.max() > 65535 or not np.array_equal(data, np.round(data)):
            raise SystemExit(f"{scene}: values are not 16-bit integers; pack_cave.py keeps CAVE's raw counts only")
        target = out / f"{scene.name}.npz"
        wavelengths = cube.wavelengths if cube.wavelengths is not None else np.linspace(400, 700, data.shape[0])
        np.savez_compressed(target, data=data.astype(np.uint16), wavelengths=np.asarray(wavelengths, np.float64))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cave", type=Path, default=SHARED_DATA / "cave", help="folder of CAVE scene folders")
    p.add_argument("--crop", type=int, default=256, help="centre crop in pixels (default 256)")
    p.add_argument("--out", type=Path, required=True, help="new folder for the .npz files")
    args = p.parse_args(argv)
    if not args.cave.is_dir():
        p.error(f"{args.cave} is not a folder of CAVE scenes")
    if args.out.exists():
        p.error(f"--out {args.out} exists: give a new folder")
    args.out.mkdir(parents=True)
    files = pack(args.cave, args.out, args.crop)
    total = sum(f.stat().st_size for f in files)
    print(f"wrote {len(files)} scenes, {total / 2**20:.1f} MiB, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
