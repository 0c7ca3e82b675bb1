"""What the commands share: option types, the input/output check, JSON output, the help's format and
examples, and the option groups several commands take (degradation, cube layout)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers like 1,4,4,1") from exc


def _check_io(args: argparse.Namespace, outputs: dict[str, Any], inputs: dict[str, Any],
              folders: Sequence[str] = ()) -> None:
    """Before any work: no output may be an input (or lie in an input folder), two outputs may not be one
    file, and an existing output file needs ``--overwrite`` (:func:`csakd.files.check_outputs`)."""
    from csakd.files import check_outputs

    check_outputs(outputs, inputs, overwrite=getattr(args, "overwrite", None), folders=folders)


def _json_out(path: str | None, data: Any) -> None:
    if path:
        from csakd.files import write_json

        write_json(path, data)


# ---------------------------------------------------------------------------------------------- help
#: The model presets (csakd.models.list_models(), written out so that the parser needs no PyTorch; a test
#: keeps the two equal).
PRESET_NAMES = ("lite", "lite-teacher", "student", "teacher")
_PRESET_NAMES = ", ".join(PRESET_NAMES)
#: csakd.losses.LossWeights' defaults (written out for the same reason; a test keeps them equal).
_LOSS_DEFAULTS = {"pixel": 1.0, "sam": 0.1, "beba": 0.1, "response_kd": 0.1, "feature_kd": 0.1}
DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda or cuda:N (default auto)"


#: One example per command, shown at the end of its --help.
EXAMPLES = {
    "demo": "csakd demo --out csakd-demo --json csakd-demo/metrics.json",
    "simulate": "csakd simulate --hr-hsi scene.npz --srf srf.csv --out-lr lr.npz --out-msi msi.npz --hsi-snr 35",
    "train": "csakd train --data cubes --srf srf.csv --out runs/kd --max-minutes 10",
    "eval": "csakd eval --checkpoint runs/kd/student.pt --method gsa --data test_cubes --out runs/kd/eval",
    "fuse": "csakd fuse --lr-hsi lr.tif --hr-msi msi.tif --checkpoint runs/kd/student.pt --out fused.tif",
    "fit-scene": "csakd fit-scene --lr scene.mat --lr-variable hsi --msi scene.mat --msi-variable rgb "
                 "--out fused.tif --report-dir report --minutes 3",
    "info": "csakd info --preset student --bands 172 --msi-bands 4 --scale 4",
    "export": "csakd export --checkpoint runs/kd/student.pt --out student.onnx",
    "bench": "csakd bench --preset lite --device cpu --bands 172 --msi-bands 4 --size 256 --json bench.json",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks, and adds ``(default: X)`` to options whose help does not name a default
    (not to flags, nor to defaults of None: those say in words what None means)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" not in text and action.option_strings and default is not None and default is not False
                and default is not argparse.SUPPRESS and not action.required):
            text += " (default: %(default)s)"
        return text


def _add_examples(sub: Any) -> None:
    """Each command's help ends with its example (:data:`EXAMPLES`)."""
    for name, parser in sub.choices.items():
        parser.formatter_class = HelpFormatter
        parser.epilog = f"example:\n  {EXAMPLES[name]}"


# ---------------------------------------------------------------------------------------------- shared args
def add_degradation_args(p: argparse.ArgumentParser, *, required_srf: bool = False) -> None:
    g = p.add_argument_group("degradation (how pairs are simulated)")
    g.add_argument("--srf", required=required_srf,
                   help="spectral response: a CSV (wavelength_nm, one column per MSI band), a matrix file "
                        "(.npy/.mat/.txt, MSI bands x HSI bands), or a sensor name (colour:NAME, pyrsr:NAME[:BANDS])"
                        + ("" if required_srf else " (default: none; train --data needs one, eval uses the "
                                                   "checkpoint's)"))
    g.add_argument("--scale", type=int, default=4, help="ratio of the HR and LR grids (default 4)")
    g.add_argument("--blur-size", type=int, default=9, help="Gaussian blur kernel size in HR pixels (default 9)")
    g.add_argument("--blur-sigma", type=float, default=2.0, help="Gaussian blur sigma in HR pixels (default 2)")
    g.add_argument("--psf", help="a 2-D PSF array file to use instead of the Gaussian (default: none, the Gaussian)")
    g.add_argument("--phase", type=int, default=0, help="decimation phase: the kept pixel of each cell (default 0)")
    g.add_argument("--wavelengths",
                   help="a text/CSV file of the HR-HSI band centres (nm) when the files lack them (default: the "
                        "files')")


def degradation_config(args: argparse.Namespace, **extra: Any) -> Any:
    from csakd.degradation import DegradationConfig

    return DegradationConfig(scale=args.scale, blur_size=args.blur_size, blur_sigma=args.blur_sigma,
                             psf=args.psf, phase=args.phase, srf=args.srf, **extra)


def add_cube_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--variable", help="name of the array in .mat/.npz files (default: the only 3-D array)")
    p.add_argument("--layout", choices=["auto", "chw", "hwc"], default="auto",
                   help="array layout: bands first (chw) or last (hwc); auto (the default): hwc for .mat (MATLAB's), "
                        "chw for .npy/.npz, the file's own for TIFF")


def _wavelengths(args: argparse.Namespace) -> Any:
    if getattr(args, "wavelengths", None):
        from csakd.data.readers import read_wavelengths

        return read_wavelengths(args.wavelengths)
    return None

