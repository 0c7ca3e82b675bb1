"""The command line with bad arguments and bad files: exit code 2, one ``csakd: error: ...`` line, no traceback,
and no output written.

Every case runs ``csakd.cli.main`` in this process inside :func:`tests.conftest.fuzz_case` (counted in the
"fuzz: N cases tried" summary, with a time limit). A case passes when the command either succeeds and leaves
complete outputs, or exits with code 2 after printing exactly one error line and leaves no output at all.
Cases marked ``xfail(strict=True)`` are known bugs outside the files this suite's author could change: each
names the fix; once it is made the case passes and strict xfail fails until the mark is removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csakd.checkpoint import model_payload, save_payload
from csakd.cli import main
from csakd.data import Cube, read_cube, write_cube
from csakd.degradation import DegradationConfig, SpectralResponse
from csakd.models import create_model
from csakd.normalization import Normalization
from tests.conftest import fuzz_case

BANDS, MSI, SIZE = 6, 3, 16
# capsys is read after every run (run_cli), so sharing it between the examples of one test is safe
CLI_FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
WAVELENGTHS = np.linspace(420.0, 680.0, BANDS)


pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_cube(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    maps = [np.sin(2 * np.pi * (a * xx + b * yy) + c) for a, b, c in rng.random((3, 3)) * 3]
    spectra = rng.random((3, BANDS)) + 0.2
    cube = sum(0.5 * (1 + m)[None] * s[:, None, None] for m, s in zip(maps, spectra, strict=True))
    return (cube / cube.max()).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Valid inputs: a cube folder, an SRF, a tiny checkpoint that carries its degradation, an LR/MSI pair."""
    root = tmp_path_factory.mktemp("cli")
    (root / "cubes").mkdir()
    for i in range(2):
        write_cube(root / "cubes" / f"s{i}.npz", Cube(smooth_cube(i), wavelengths=WAVELENGTHS))
    grid = np.arange(400, 701, 10)
    curves = [np.exp(-0.5 * ((grid - c) / 30) ** 2) for c in (460, 550, 620)]
    (root / "srf.csv").write_text("wavelength_nm,B,G,R\n" + "\n".join(
        f"{g},{curves[0][i]:.6f},{curves[1][i]:.6f},{curves[2][i]:.6f}" for i, g in enumerate(grid)))
    response = SpectralResponse.from_matrix(np.random.default_rng(0).random((MSI, BANDS)))
    model = create_model("student", bands=BANDS, msi_bands=MSI, nf=8, gc=4, blocks=(1, 1, 1, 1))
    save_payload(root / "m.pt", model_payload(
        model, role="student", normalization=Normalization("per_image"), wavelengths=list(WAVELENGTHS),
        response=response.to_dict(), degradation=DegradationConfig(scale=4, blur_size=3, blur_sigma=1.0).to_dict()))
    rng = np.random.default_rng(1)
    np.save(root / "lr.npy", rng.random((BANDS, SIZE // 4, SIZE // 4), dtype=np.float32))
    write_cube(root / "msi.tif", Cube(rng.random((MSI, SIZE, SIZE), dtype=np.float32)))
    np.save(root / "hr.npy", smooth_cube(5))
    (root / "wl.txt").write_text("\n".join(str(v) for v in WAVELENGTHS))
    (root / "wl5.txt").write_text("\n".join(str(v) for v in WAVELENGTHS[:5]))
    nan = rng.random((BANDS, SIZE // 4, SIZE // 4), dtype=np.float32)
    nan[1, 2, 3] = np.nan
    np.save(root / "lr_nan.npy", nan)
    np.save(root / "msi_30x32.npy", rng.random((MSI, 30, 32), dtype=np.float32))
    np.save(root / "msi_8x8.npy", rng.random((MSI, 8, 8), dtype=np.float32))
    np.save(root / "msi_4bands.npy", rng.random((4, SIZE, SIZE), dtype=np.float32))
    np.save(root / "psf_nan.npy", np.full((3, 3), np.nan))
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    (root / "psf_huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    scipy.io.savemat(root / "psf_crash.mat", {"psf": np.ones((3, 3)) / 9}, do_compression=False)
    raw = bytearray((root / "psf_crash.mat").read_bytes())
    raw[raw.find(struct.pack("<II", 9, 72))] = 0x47  # an invalid data type code: scipy's reader segfaults on it
    (root / "psf_crash.mat").write_bytes(bytes(raw))
    (root / "junk.pt").write_bytes(b"garbage" * 10)
    (root / "empty").write_bytes(b"")
    return {p.name: p for p in root.iterdir()} | {"root": root}


def _fresh(root: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=root))


ERROR_LINE = re.compile(r"^csakd(?: [a-z]+)?: error: ")


def run_cli(capsys: pytest.CaptureFixture[str], argv: Sequence[str]) -> tuple[int, str, bool]:
    """(exit code, stderr, whether argparse refused the arguments) of ``csakd ARGV``; other exceptions
    propagate: they are what a user would see as a traceback."""
    try:
        code = main(list(argv))
        parse_error = False
    except SystemExit as exc:  # argparse: usage line, then "csakd CMD: error: ..."
        code, parse_error = int(exc.code or 0), True
    return code, capsys.readouterr().err, parse_error


def check_refused(code: int, err: str, parse_error: bool, outputs: Sequence[Path], match: str | None = None) -> str:
    """Exit code 2, exactly one error line (``csakd: error:`` for csakd's own errors), no traceback, and none
    of ``outputs`` written. Returns the error line."""
    assert code == 2, f"exit code {code}, stderr: {err[-500:]}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if ERROR_LINE.match(line)]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    if not parse_error:
        assert lines[0].startswith("csakd: error: "), lines[0]
    if match:
        assert re.search(match, lines[0]), lines[0]
    for p in outputs:
        assert not p.exists(), f"{p} was written although the command failed"
        assert not [q for q in p.parent.glob(f".{p.name}*")], f"temporary files of {p} were left"
    return lines[0]


def known_bug(reason: str) -> Any:
    return pytest.mark.xfail(strict=True, reason=reason)


# ------------------------------------------------------------------------------------------ explicit bad arguments
def _sim(f: dict[str, Path], out: Path, *extra: str, hr: str = "hr.npy") -> tuple[list[str], list[Path]]:
    outs = [out / "lr.npy", out / "msi.npy"]
    return ["simulate", "--hr-hsi", str(f[hr]), "--srf", str(f["srf.csv"]), "--wavelengths", str(f["wl.txt"]),
            "--out-lr", str(outs[0]), "--out-msi", str(outs[1]), *extra], outs


def _fuse(f: dict[str, Path], out: Path, *extra: str, lr: str = "lr.npy", msi: str = "msi.tif",
          ckpt: str = "m.pt", name: str = "fused.tif") -> tuple[list[str], list[Path]]:
    return ["fuse", "--lr-hsi", str(f[lr]), "--hr-msi", str(f[msi]), "--checkpoint", str(f[ckpt]), "--out",
            str(out / name), "--device", "cpu", *extra], [out / name]


def _train(f: dict[str, Path], out: Path, *extra: str) -> tuple[list[str], list[Path]]:
    return ["train", "--data", str(f["cubes"]), "--srf", str(f["srf.csv"]), "--out", str(out / "run"), "--epochs",
            "1", "--batch-size", "1", "--crop", "8", "--nf", "8", "--gc", "4", "--teacher-blocks", "1,1,1,1",
            "--student-blocks", "1,1,1,1", "--device", "cpu", "--quiet", "--blur-size", "3", "--blur-sigma", "1",
            *extra], [out / "run"]


def _eval(f: dict[str, Path], out: Path, *extra: str) -> tuple[list[str], list[Path]]:
    return ["eval", "--checkpoint", str(f["m.pt"]), "--data", str(f["cubes"]), "--device", "cpu", "--figures", "0",
            "--out", str(out / "eval"), *extra], [out / "eval"]


def _info(f: dict[str, Path], out: Path, *extra: str) -> tuple[list[str], list[Path]]:
    return ["info", *extra, "--json", str(out / "info.json")], [out / "info.json"]


CASES: list[Any] = [
    # simulate: degradation settings, crops, spectral responses, wavelengths, formats
    ("simulate", ("--scale", "-2"), "scale must be a positive integer"),
    ("simulate", ("--scale", "abc"), "invalid int value"),
    ("simulate", ("--blur-size", "4"), "blur_size must be a positive odd integer"),
    ("simulate", ("--blur-size", "999"), "too small for reflect padding"),
    ("simulate", ("--blur-sigma", "nan"), "blur_sigma must be a positive number"),
    ("simulate", ("--blur-sigma", "-1"), "blur_sigma"),
    ("simulate", ("--phase", "4"), r"phase must be an integer in \[0, scale=4\)"),
    ("simulate", ("--hsi-snr", "nan"), "hsi_snr_db must be a finite number"),
    ("simulate", ("--msi-snr", "inf"), "msi_snr_db must be a finite number"),
    ("simulate", ("--shift", "99"), r"shift of \(99, 99\) pixels is not smaller"),
    ("simulate", ("--crop", "6"), "not a multiple of the scale 4"),
    ("simulate", ("--crop", "10000"), "smaller than the centre crop 10000"),
    ("simulate", ("--psf", "PSF_NAN"), "NaN or infinite"),
    ("simulate", ("--psf", "NOWHERE"), "not found"),
    ("simulate", ("--psf", "PSF_HUGE"), r"would need 7\.3 TiB"),
    ("simulate", ("--psf", "PSF_CRASH"), "not a valid MATLAB v5 file .* data type 71"),
    ("simulate", ("--blur-size", "30001"), "larger than 4097"),
    ("simulate", ("--srf", "colour:No Such Camera"), "unknown colour-science camera"),
    ("simulate", ("--srf", "JUNK"), "unsupported suffix"),
    ("simulate", ("--wavelengths", "WL5"), "5 wavelengths were given for an HSI of 6 bands"),
    ("simulate", ("--wavelengths", "EMPTY"), "holds no values"),
    ("simulate", ("--layout", "hwc"), "wavelengths were given for an HSI of 16 bands"),
    ("simulate", ("--layout", "sideways"), "invalid choice"),
    ("simulate", ("--scale", "0"), "scale"),
    # fuse: inputs that do not fit each other or the checkpoint, devices, outputs
    ("fuse", {"msi": "msi_30x32.npy"}, "hr_msi is 30x32 but lr_hsi is 4x4"),
    ("fuse", {"msi": "msi_8x8.npy"}, "a ratio of 2, but the model fuses at x4"),
    ("fuse", {"msi": "msi_4bands.npy"}, r"4 MSI bands \(the checkpoint expects 3\)"),
    ("fuse", {"lr": "lr_nan.npy"}, r"lr_hsi .*1 non-finite value\(s\) \(1 NaN, 0 Inf\)"),
    ("fuse", {"ckpt": "junk.pt"}, "not a PyTorch checkpoint"),
    ("fuse", {"ckpt": "empty"}, "is empty"),
    ("fuse", {"ckpt": "cubes"}, "does not exist"),
    ("fuse", {"lr": "empty"}, "unknown"),
    ("fuse", {"name": "fused.xyz"}, r"cannot write '\.xyz' files"),
    ("fuse", {"name": "hr.npy/fused.npy"}, "is a file, not a folder"),
    ("fuse", ("--device", "tpu"), "device 'tpu'"),
    ("fuse", ("--device", "cuda:7"), "CUDA is not available|cuda"),
    # info
    ("info", ("--preset", "student", "--bands", "0"), "bands=0: expected a positive integer"),
    ("info", ("--preset", "giant"), "unknown model preset 'giant'"),
    ("info", ("--checkpoint", "JUNK"), "not a PyTorch checkpoint"),
    ("info", (), "needs --preset NAME or --checkpoint FILE"),
    ("info", ("--preset", "student", "--size", "0"), "size"),
    ("info", ("--preset", "student", "--size", "7"), "size"),
    # train: settings refused before any work; the run folder is never created
    ("train", ("--epochs", "0"), "epochs=0: expected a positive integer"),
    ("train", ("--crop", "6"), "crop 6 must be a positive multiple of the scale 4"),
    ("train", ("--crop", "1000"), "smaller than the crop 1000"),
    ("train", ("--normalize", "abc"), "--normalize 'abc': expected max, none or a number"),
    ("train", ("--nf", "0"), "nf=0: expected a positive integer"),
    ("train", ("--teacher-blocks", "1,2"), "expected four non-negative counts"),
    ("train", ("--max-minutes", "-1"), "max_minutes=-1.0"),
    ("train", ("--device", "tpu"), "device 'tpu'"),
    ("train", ("--mode", "offline"), "needs a trained teacher"),
    ("train", ("--mode", "offline", "--teacher-checkpoint", "JUNK"), "not a PyTorch checkpoint"),
    ("train", ("--center-crop", "6"), "not a multiple of the scale 4"),
    ("train", ("--resume",), "no training state"),
    ("train", ("--train-snr", "nan"), "SNR must be a finite number"),
    ("train", ("--w-sam", "-1"), "loss weight sam must be >= 0"),
    ("train", ("--val-data", "NOWHERE"), "does not exist"),
    ("train", ("--val-fraction", "-1"), "val"),
    ("train", ("--val-fraction", "nan"), "val"),
    ("train", ("--lr-teacher", "nan"), "lr"),
    ("train", ("--weight-decay", "-1"), "weight"),
    ("train", ("--workers", "-1"), "workers"),
    ("train", ("--center-crop", "0"), "crop"),
    ("train", ("--grad-clip", "-1"), "clip"),
    # eval
    ("eval", ("--center-crop", "1000"), "smaller than the centre crop 1000"),
    ("eval", ("--snr", "nan"), "SNR must be a finite number"),
    ("eval", ("--device", "tpu"), "device 'tpu'"),
    ("eval", ("--scale", "3", "--srf", "SRF"), r"scale 3 \(the checkpoint was trained at x4\)"),
]


def _case_id(case: Any) -> str:
    values = case.values if hasattr(case, "values") else case
    extra = values[1]
    return f"{values[0]}-" + ("-".join(extra) if isinstance(extra, tuple) else "-".join(f"{k}={v}" for k, v in
                                                                                      extra.items()))


@pytest.mark.parametrize(("command", "extra", "message"), CASES, ids=[_case_id(c) for c in CASES])
def test_bad_arguments_and_files_end_in_one_error_line_and_no_output(
    command: str, extra: Any, message: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    out = _fresh(files["root"])
    names = {"PSF_NAN": files["psf_nan.npy"], "PSF_HUGE": files["psf_huge.npy"], "PSF_CRASH": files["psf_crash.mat"],
             "NOWHERE": files["root"] / "nowhere", "JUNK": files["junk.pt"],
             "WL5": files["wl5.txt"], "EMPTY": files["empty"], "SRF": files["srf.csv"]}
    if isinstance(extra, dict):
        resolved = dict(extra)
        if "name" in resolved and "/" in resolved["name"]:  # a file standing where a folder should be
            shutil.copy(files["hr.npy"], out / resolved["name"].split("/")[0])
        argv, outputs = _fuse(files, out, **resolved)
    else:
        args = tuple(str(names.get(a, a)) for a in extra)
        argv, outputs = {"simulate": _sim, "fuse": _fuse, "train": _train, "eval": _eval, "info": _info}[command](
            files, out, *args)
    is_known = request.node.get_closest_marker("xfail") is not None
    with fuzz_case(" ".join([command, *map(str, extra)]), max_bytes=None, known_bug=is_known):
        code, err, parse_error = run_cli(capsys, argv)
        check_refused(code, err, parse_error, outputs, message)


# ------------------------------------------------------------------------------------------ damaged input files
def _damage(content: bytes, data: st.DataObject) -> tuple[bytes, str]:
    if data.draw(st.booleans(), label="truncate"):
        cut = data.draw(st.integers(0, len(content) - 1), label="cut")
        return content[:cut], f"truncated to {cut}"
    b = bytearray(content)
    where = st.integers(0, min(len(b), 512) - 1) | st.integers(0, len(b) - 1)
    flips = data.draw(st.lists(st.tuples(where, st.integers(0, 7)), min_size=1, max_size=3), label="flips")
    for i, bit in flips:
        b[i] ^= 1 << bit
    return bytes(b), f"flipped at {flips}"


@CLI_FUZZ
@given(data=st.data())
def test_fuse_with_a_damaged_input_succeeds_completely_or_fails_cleanly(
    data: st.DataObject, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    which = data.draw(st.sampled_from(["lr.npy", "msi.tif", "m.pt"]), label="file")
    content, how = _damage(files[which].read_bytes(), data)
    out = _fresh(files["root"])
    (out / which).write_bytes(content)
    local = dict(files) | {which: out / which}
    argv, outputs = _fuse(local, out, name=data.draw(st.sampled_from(["f.npy", "f.hdr", "f.tif"]), label="out"))
    with fuzz_case(f"fuse with {which} {how}", max_bytes=None):
        code, err, parse_error = run_cli(capsys, argv)
        if code == 0:
            assert read_cube(outputs[0]).data.shape == (BANDS, SIZE, SIZE)
        else:
            check_refused(code, err, parse_error, outputs)


@CLI_FUZZ
@given(data=st.data())
def test_simulate_with_a_damaged_input_succeeds_completely_or_fails_cleanly(
    data: st.DataObject, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    suffix = data.draw(st.sampled_from([".npz", ".mat", ".tif", ".hdr"]), label="format")
    src = files["root"] / f"hr{suffix}"
    if not src.exists():
        write_cube(src, Cube(smooth_cube(5), wavelengths=WAVELENGTHS))
    out = _fresh(files["root"])
    mutable = src.with_suffix(".img") if suffix == ".hdr" else src
    content, how = _damage(mutable.read_bytes(), data)
    for p in (src, src.with_suffix(".img")) if suffix == ".hdr" else (src,):
        shutil.copy(p, out / p.name)
    (out / mutable.name).write_bytes(content)
    argv, outputs = _sim(files | {"x": out / src.name}, out, hr="x")
    with fuzz_case(f"simulate from {suffix} {how}", max_bytes=None):
        code, err, parse_error = run_cli(capsys, argv)
        if code == 0:
            assert read_cube(outputs[0]).data.shape == (BANDS, SIZE // 4, SIZE // 4)
            assert read_cube(outputs[1]).data.shape == (MSI, SIZE, SIZE)
        else:
            check_refused(code, err, parse_error, outputs)


_BAD_VALUES = ["-3", "0.5", "nan", "inf", "-inf", "1e400", "", "x", "9999999999", "--", "-1e-9"]
_SIMULATE_OPTIONS = ["--blur-size", "--blur-sigma", "--phase", "--hsi-snr", "--msi-snr", "--shift", "--crop", "--seed",
                     "--layout", "--variable"]


@CLI_FUZZ
@given(option=st.sampled_from(_SIMULATE_OPTIONS), value=st.sampled_from(_BAD_VALUES) | st.text(max_size=6))
def test_simulate_with_odd_option_values_succeeds_or_fails_cleanly(
    option: str, value: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _fresh(files["root"])
    argv, outputs = _sim(files, out, f"{option}={value}")
    with fuzz_case(f"simulate {option}={value!r}", max_bytes=None):
        code, err, parse_error = run_cli(capsys, argv)
        if code == 0:
            assert all(read_cube(p).data.ndim == 3 for p in outputs)
        else:
            check_refused(code, err, parse_error, outputs)


# ------------------------------------------------------------------------------------------ untrusted checkpoints
class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("command", ["fuse", "info", "eval", "train"])
def test_a_checkpoint_that_would_run_code_is_refused_by_every_command(
    command: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _fresh(files["root"])
    marker = out / "pwned"
    torch.save({"state_dict": _Touch(marker)}, out / "evil.pt")
    local = files | {"evil.pt": out / "evil.pt"}
    argv, outputs = {
        "fuse": lambda: _fuse(local, out, ckpt="evil.pt"),
        "info": lambda: _info(local, out, "--checkpoint", str(out / "evil.pt")),
        "eval": lambda: (["eval", "--checkpoint", str(out / "evil.pt"), "--data", str(files["cubes"]), "--out",
                          str(out / "eval")], [out / "eval"]),
        "train": lambda: _train(local, out, "--mode", "offline", "--teacher-checkpoint", str(out / "evil.pt")),
    }[command]()
    with fuzz_case(f"{command} with a code-running checkpoint", max_bytes=None):
        code, err, parse_error = run_cli(capsys, argv)
        check_refused(code, err, parse_error, outputs, r"refused: it holds a Python object \(posix\.system\)")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ existing outputs
def test_existing_outputs_are_never_overwritten_without_overwrite(files: dict[str, Path],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = _fresh(files["root"])
    argv, (lr, msi) = _sim(files, out)
    msi.write_bytes(b"precious")  # only the second output exists: nothing at all may be written
    with fuzz_case("simulate onto an existing --out-msi", max_bytes=None):
        code, err, parse_error = run_cli(capsys, argv)
        assert code == 2 and "--overwrite" in err and not parse_error
        assert msi.read_bytes() == b"precious" and not lr.exists()
    with fuzz_case("simulate --overwrite", max_bytes=None):
        code, err, _ = run_cli(capsys, [*argv, "--overwrite"])
        assert code == 0, err
        assert read_cube(msi).data.shape == (MSI, SIZE, SIZE) and read_cube(lr).data.shape[0] == BANDS

    run = out / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    argv, _ = _train(files, out)
    with fuzz_case("train into a non-empty folder", max_bytes=None):
        code, err, _ = run_cli(capsys, argv)
        check_refused(code, err, False, [], "not empty: pass --resume")
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"] and (run / "notes.txt").read_text() == "mine"


def test_info_of_an_absurd_band_count_counts_without_allocating(capsys: pytest.CaptureFixture[str]) -> None:
    """Counting happens on the meta device: 10^8 bands report their (huge) counts instead of allocating."""
    from csakd.cli import main

    assert main(["info", "--preset", "student", "--bands", "100000000", "--size", "16", "--json", "-"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] > 100_000_000 * 100_000_000  # the head's C x C convolution alone


# ------------------------------------------------------------------------------------------ outputs never inputs
# Every command x every output option x every input option, the output given as the input's own path, an aliased
# path (``dir/./../dir/name``), a symbolic link and a hard link to it, with and without --overwrite: refused before
# any work, one error line naming both paths, every input byte for byte as it was. A folder output (a run folder,
# --report-dir, eval --out) collides with an input inside it; a file output with an input folder it lies in.
COMMANDS: dict[str, dict[str, Any]] = {
    "fuse": {"argv": ["fuse", "--device", "cpu"], "inputs": {"--lr-hsi": "lr.npy", "--hr-msi": "msi.tif",
                                                             "--checkpoint": "m.pt"},
             "outputs": {"--out": "o.tif", "--json": "o.json"}},
    "simulate": {"argv": ["simulate"], "inputs": {"--hr-hsi": "hr.npy", "--srf": "srf.csv", "--wavelengths": "wl.txt"},
                 "outputs": {"--out-lr": "lr.npy", "--out-msi": "msi.npy", "--json": "s.json"}},
    "export": {"argv": ["export", "--no-check"], "inputs": {"--checkpoint": "m.pt"},
               "outputs": {"--out": "m.onnx", "--json": "e.json"}},
    "fit-scene": {"argv": ["fit-scene", "--steps", "1", "--device", "cpu", "--quiet", "--no-figures"],
                  "inputs": {"--lr": "lr.npy", "--msi": "msi.tif"},
                  "outputs": {"--out": "f.tif", "--json": "f.json", "--report-dir": "rep"},
                  "folders": {"--report-dir"}},
    "eval": {"argv": ["eval", "--device", "cpu", "--figures", "0"],
             "inputs": {"--checkpoint": "m.pt", "--data": "cubes"},
             "outputs": {"--json": "e.json", "--out": "ev"}, "folders": {"--out"}, "no_overwrite": True},
    "train": {"argv": ["train", "--epochs", "1", "--device", "cpu", "--quiet"],
              "inputs": {"--data": "cubes", "--srf": "srf.csv", "--wavelengths": "wl.txt"},
              "outputs": {"--out": "run", "--json": "t.json", "--test-json": "tt.json"}, "folders": {"--out"}},
    "info": {"argv": ["info"], "inputs": {"--checkpoint": "m.pt"}, "outputs": {"--json": "i.json"},
             "no_overwrite": True},
}
FORMS = ("same", "alias", "symlink", "hardlink")


def _alias(p: Path) -> str:
    return f"{p.parent}/./../{p.parent.name}/{p.name}"


def _pointing_at(form: str, target: Path, d: Path, as_folder: bool) -> str | None:
    """A path that names ``target`` through ``form`` (a new link in ``d``), or None where the form cannot apply."""
    if form == "same":
        return str(target)
    if form == "alias":
        return _alias(target)
    link = d / f"{form}-{target.name}"
    if form == "symlink":
        link.symlink_to(target, target_is_directory=target.is_dir())
        return str(link)
    if target.is_dir() or as_folder:
        return None  # no hard links to folders
    os.link(target, link)
    return str(link)


def _snapshot(files: dict[str, Path]) -> dict[str, bytes]:
    root = files["root"]
    out = {}
    for p in [*root.iterdir(), *(root / "cubes").iterdir()]:
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _matrix(command: str) -> list[tuple[str, str, str, bool]]:
    spec = COMMANDS[command]
    overwrites = [False] if spec.get("no_overwrite") else [False, True]
    return [(o, i, form, ow) for o in spec["outputs"] for i in spec["inputs"] for form in FORMS for ow in overwrites]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_command_writes_its_own_inputs_whatever_the_path_or_options(
    command: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = COMMANDS[command]
    folders = spec.get("folders", set())
    tried = 0
    for out_opt, in_opt, form, overwrite in _matrix(command):
        d = _fresh(files["root"])
        source = files[spec["inputs"][in_opt]]
        if out_opt in folders:  # the output folder is the input folder, or the folder holding the input file
            given = _pointing_at(form, source if source.is_dir() else source.parent, d, as_folder=True)
        elif source.is_dir():  # a file output inside an input folder
            named = _pointing_at(form, source, d, as_folder=True)
            given = None if named is None else f"{named}/new{Path(spec['outputs'][out_opt]).suffix}"
        else:
            given = _pointing_at(form, source, d, as_folder=False)
        if given is None:
            continue
        outputs = {o: str(d / name) for o, name in spec["outputs"].items()} | {out_opt: given}
        argv = [*spec["argv"], *(x for i, name in spec["inputs"].items() for x in (i, str(files[name])))]
        argv += [x for o, p in outputs.items() for x in (o, p)] + (["--overwrite"] if overwrite else [])
        before = _snapshot(files)
        label = f"{command} {out_opt} = {in_opt} ({form}{', --overwrite' if overwrite else ''})"
        with fuzz_case(label, max_bytes=None):
            code, err, parse_error = run_cli(capsys, argv)
            line = check_refused(code, err, parse_error, [], "never writes its own inputs|inside the input folder")
            named = [f"{i} {files[n]}" for i, n in spec["inputs"].items()]
            if out_opt not in folders:  # a folder holding every input may name any of them
                named = [f"{in_opt} {files[spec['inputs'][in_opt]]}"]
            assert f"{out_opt} {given}" in line and any(n in line for n in named), line
            assert _snapshot(files) == before, f"{label}: an input changed or a file appeared beside them"
            assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in d.iterdir() if p.is_symlink()
                                                                  or p.name.startswith("hardlink-")), list(d.iterdir())
        tried += 1
    assert tried >= len(_matrix(command)) // 2


@pytest.mark.parametrize("suffix", [".hdr", ".img"])
@pytest.mark.parametrize("out_name", ["e.hdr", "e.img", "e.dat"])
def test_an_envi_output_never_replaces_either_file_of_an_input_pair(
    suffix: str, out_name: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d = _fresh(files["root"])
    write_cube(d / "e.hdr", Cube(np.random.default_rng(0).random((BANDS, 4, 4), dtype=np.float32)))
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    argv, _ = _fuse(files | {"x": d / f"e{suffix}"}, d, "--overwrite", lr="x", name=out_name)
    with fuzz_case(f"fuse --lr-hsi e{suffix} --out {out_name} --overwrite", max_bytes=None):
        code, err, parse_error = run_cli(capsys, argv)
        line = check_refused(code, err, parse_error, [], "never writes its own inputs")
        assert str(d / out_name) in line and str(d / f"e{suffix}") in line
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name in before} == before


def test_a_geotiff_sidecar_and_a_cave_folder_count_as_the_input(files: dict[str, Path],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = _fresh(files["root"])
    shutil.copy(files["msi.tif"], d / "m.tif")
    (d / "m.tif.aux.xml").write_text("<PAMDataset/>")
    cases = {"--out onto the input's .aux.xml owner": _fuse(files | {"x": d / "m.tif"}, d, "--overwrite", msi="x",
                                                           name="m.tif")[0],
             "--json onto the input's .aux.xml": [*_fuse(files | {"x": d / "m.tif"}, d, msi="x", name="o.npy")[0],
                                                   "--json", str(d / "m.tif.aux.xml")]}
    scene = d / "scene_ms"
    scene.mkdir()
    cases["--out inside a CAVE scene folder input"] = [*_sim(files | {"x": scene}, d, hr="x")[0][:-4],
                                                      "--out-lr", str(scene / "lr.npy"), "--out-msi", str(d / "m.npy")]
    for label, argv in cases.items():
        before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
        with fuzz_case(label, max_bytes=None):
            code, err, parse_error = run_cli(capsys, argv)
            check_refused(code, err, parse_error, [scene / "lr.npy", d / "o.npy"],
                          "never writes its own inputs|inside the input folder")
        assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before


# ------------------------------------------------------------------------------------------ --json is an output
def _json_argv(command: str, files: dict[str, Path], d: Path) -> list[str]:
    spec = COMMANDS.get(command)
    if spec is None:
        return {"bench": ["bench", "--preset", "lite", "--bands", "4", "--size", "16", "--no-onnx"],
                "demo": ["demo", "--out", str(d / "demo"), "--quiet"]}[command]
    argv = [*spec["argv"], *(x for i, name in spec["inputs"].items() for x in (i, str(files[name])))]
    return argv + [x for o, name in spec["outputs"].items() if o != "--json" for x in (o, str(d / name))]


@pytest.mark.parametrize("command", [*COMMANDS, "bench", "demo"])
def test_an_existing_json_target_is_refused_without_overwrite_in_every_command(
    command: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d = _fresh(files["root"])
    notes = d / "notes.txt"
    notes.write_text("my notes")
    argv = [*_json_argv(command, files, d), "--json", str(notes)]
    with fuzz_case(f"{command} --json onto an existing file", max_bytes=None):
        code, err, parse_error = run_cli(capsys, argv)
        line = check_refused(code, err, parse_error, [], r"notes\.txt \(--json\) already exists")
        has_overwrite = command not in ("eval", "info", "bench")
        assert ("pass --overwrite" in line) == has_overwrite, line
    assert notes.read_text() == "my notes" and sorted(p.name for p in d.iterdir()) == ["notes.txt"]


JSON_COLLISIONS = [("fuse", "--out", "o.npy"), ("simulate", "--out-lr", "l.npy"), ("simulate", "--out-msi", "m.npy"),
                   ("export", "--out", "m.onnx"), ("fit-scene", "--out", "f.npy"), ("train", "--out", "run"),
                   ("train", "--test-json", "tt.json"), ("eval", "--out", "ev"), ("fit-scene", "--report-dir", "r"),
                   ("demo", "--out", "demo")]


@pytest.mark.parametrize(("command", "option", "name"), JSON_COLLISIONS, ids=[f"{c}{o}" for c, o, _ in JSON_COLLISIONS])
@pytest.mark.parametrize("form", ["same", "alias"])
def test_json_equal_to_another_output_is_refused(command: str, option: str, name: str, form: str,
                                                 files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d = _fresh(files["root"])
    argv = _json_argv(command, files, d)
    if option in argv:
        argv[argv.index(option) + 1] = str(d / name)
    else:
        argv += [option, str(d / name)]
    json_path = str(d / name) if form == "same" else _alias(d / name)
    with fuzz_case(f"{command} --json = {option} ({form})", max_bytes=None):
        code, err, parse_error = run_cli(capsys, [*argv, "--json", json_path])
        line = check_refused(code, err, parse_error, [d / name], "are the same file")
        assert option in line and "--json" in line and json_path in line, line
    assert list(d.iterdir()) == []


def test_json_is_written_atomically_with_overwrite_and_stdout_stays_allowed(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d = _fresh(files["root"])
    (d / "r.json").write_text("old")
    argv, (out,) = _fuse(files, d, name="o.npy")
    with fuzz_case("fuse --json onto an existing file with --overwrite", max_bytes=None):
        code, err, _ = run_cli(capsys, [*argv, "--json", str(d / "r.json"), "--overwrite"])
        assert code == 0, err
        assert json.loads((d / "r.json").read_text())["out"] == str(out)
        assert read_cube(out).data.shape == (BANDS, SIZE, SIZE)
        assert sorted(p.name for p in d.iterdir()) == ["o.npy", "r.json"]  # no .part left
    with fuzz_case("fuse --json -", max_bytes=None):
        code = main([*_fuse(files, d, name="o2.npy")[0], "--json", "-"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert json.loads(captured.out[captured.out.index("{"):])["out"] == str(d / "o2.npy")


# ------------------------------------------------------------------------------------------ non-finite results
@pytest.fixture(scope="module")
def nan_checkpoint(files: dict[str, Path]) -> Path:
    payload = torch.load(files["m.pt"], weights_only=True)
    state = dict(payload["state_dict"])
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = state[name].clone()
    state[name].view(-1)[3] = float("nan")
    save_payload(files["root"] / "nan.pt", {**payload, "state_dict": state})
    return files["root"] / "nan.pt"


@pytest.mark.parametrize("out_name", ["f.npy", "f.tif", "f.hdr"])
@pytest.mark.parametrize("tile", [None, "8"])
def test_a_checkpoint_with_one_nan_weight_writes_nothing(out_name: str, tile: str | None, nan_checkpoint: Path,
                                                         files: dict[str, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    d = _fresh(files["root"])
    argv, outputs = _fuse(files | {"nan.pt": nan_checkpoint}, d, *(["--tile", tile, "--overlap", "4"] if tile else []),
                          ckpt="nan.pt", name=out_name)
    if out_name.endswith(".hdr"):
        outputs.append(d / "f.img")
    with fuzz_case(f"fuse with a NaN weight -> {out_name}, tile {tile}", max_bytes=None):
        code, err, parse_error = run_cli(capsys, argv)
        line = check_refused(code, err, parse_error, outputs, r"non-finite value\(s\)")
        assert re.search(rf"the checkpoint {re.escape(str(nan_checkpoint))} has 1 non-finite weight", line), line
        assert "nothing was written" in line and list(d.iterdir()) == []


def test_eval_refuses_a_checkpoint_with_a_nan_weight(nan_checkpoint: Path, files: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    d = _fresh(files["root"])
    argv = ["eval", "--checkpoint", str(nan_checkpoint), "--data", str(files["cubes"]), "--device", "cpu",
            "--figures", "0", "--out", str(d / "ev"), "--json", str(d / "e.json")]
    with fuzz_case("eval with a NaN weight", max_bytes=None):
        code, err, parse_error = run_cli(capsys, argv)
        check_refused(code, err, parse_error, [d / "ev", d / "e.json"], r"has 1 non-finite weight")


def test_a_tiled_fusion_that_turns_non_finite_midway_leaves_no_partial_file(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first window is written, the second holds a NaN: the temporary file goes, the target never appears."""
    import csakd.inference.tiled as tiled
    from csakd.errors import CsakdError

    def two_windows(loaded: Any, lr: Any, msi: Any, *, writer: Any, **kwargs: Any) -> None:
        block = np.ones((BANDS, SIZE // 2, SIZE), np.float32)
        writer(slice(0, SIZE // 2), slice(0, SIZE), block)
        block = block.copy()
        block[2, 3, 4] = np.inf
        writer(slice(SIZE // 2, SIZE), slice(0, SIZE), block)

    monkeypatch.setattr(tiled, "fuse_tiled_arrays", two_windows)
    for name in ("t.npy", "t.tif", "t.hdr", "t.npz"):
        d = _fresh(files["root"])
        with fuzz_case(f"tiled fusion non-finite midway -> {name}", max_bytes=None):
            with pytest.raises(CsakdError, match=r"rows 8:16, columns 0:16 has 1 non-finite value") as info:
                tiled.fuse_files_tiled(files["lr.npy"], files["msi.tif"], files["m.pt"], d / name, tile=8,
                                       device="cpu")
            assert f"nothing was written to {d / name}" in str(info.value)
            assert list(d.iterdir()) == [], list(d.iterdir())


# ------------------------------------------------------------------------------------------ input types and ranges
@pytest.fixture(scope="module")
def odd_inputs(files: dict[str, Path]) -> dict[str, Path]:
    root = files["root"] / "odd"
    root.mkdir()
    rng = np.random.default_rng(7)
    lr = rng.random((BANDS, SIZE // 4, SIZE // 4), dtype=np.float32)
    np.save(root / "bool.npy", lr > 0.5)
    scipy.io.savemat(root / "logical.mat", {"x": (lr > 0.5).transpose(1, 2, 0)})
    np.save(root / "int8.npy", (lr * 100).astype(np.int8))
    negative = lr - 0.5
    np.save(root / "negative.npy", negative)
    np.save(root / "huge.npy", np.full_like(lr, 1e30))
    return {p.name: p for p in root.iterdir()} | {"negative_count": Path(str(int((negative < 0).sum())))}


@pytest.mark.parametrize("name", ["bool.npy", "logical.mat"])
def test_boolean_inputs_are_refused_naming_the_file_and_its_type(name: str, odd_inputs: dict[str, Path],
                                                                files: dict[str, Path],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    d = _fresh(files["root"])
    argv, outputs = _fuse(files | {"x": odd_inputs[name]}, d, lr="x")
    with fuzz_case(f"fuse a boolean {name}", max_bytes=None):
        code, err, parse_error = run_cli(capsys, argv)
        line = check_refused(code, err, parse_error, outputs, "boolean")
        assert str(odd_inputs[name]) in line and re.search(r"bool|logical", line.split("boolean", 1)[1]), line


@pytest.mark.parametrize(("name", "warning"), [
    ("int8.npy", r"holds int8 integers \(range -128\.\.127\): read as plain numbers"),
    ("negative.npy", r"has NEG negative value\(s\) among 96"),
    ("huge.npy", r"has 96 value\(s\) beyond 1e\+06 \(largest 1e\+30\)"),
])
@pytest.mark.parametrize("strict", [False, True])
def test_integer_negative_and_absurd_inputs_are_stated_and_refused_with_strict(
    name: str, warning: str, strict: bool, odd_inputs: dict[str, Path], files: dict[str, Path],
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    warning = warning.replace("NEG", odd_inputs["negative_count"].name)
    d = _fresh(files["root"])
    argv, outputs = _fuse(files | {"x": odd_inputs[name]}, d, *(["--strict"] if strict else []), lr="x", name="f.npy")
    with fuzz_case(f"fuse {name}{' --strict' if strict else ''}", max_bytes=None), caplog.at_level("INFO"):
        code, err, parse_error = run_cli(capsys, argv)
        logged = [r.getMessage() for r in caplog.records]
        if strict and name != "int8.npy":  # an integer type alone is stated, not refused
            line = check_refused(code, err, parse_error, outputs, warning)
            assert "--strict" in line and str(odd_inputs[name]) in line
        else:
            assert code == 0, err
            assert any(re.search(warning, m) for m in logged), logged
            assert read_cube(outputs[0]).data.shape == (BANDS, SIZE, SIZE)


# ------------------------------------------------------------------------------------------ format versions
def test_a_checkpoint_of_a_newer_format_version_is_refused_by_every_command(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    payload = torch.load(files["m.pt"], weights_only=True)
    d = _fresh(files["root"])
    save_payload(d / "v99.pt", {**payload, "version": 99})
    local = files | {"v99.pt": d / "v99.pt"}
    for argv, outputs in (_fuse(local, d, ckpt="v99.pt"), _info(local, d, "--checkpoint", str(d / "v99.pt")),
                          (["eval", "--checkpoint", str(d / "v99.pt"), "--data", str(files["cubes"]), "--out",
                            str(d / "ev")], [d / "ev"]),
                          (["export", "--checkpoint", str(d / "v99.pt"), "--out", str(d / "m.onnx")], [d / "m.onnx"])):
        with fuzz_case(f"{argv[0]} with a version-99 checkpoint", max_bytes=None):
            code, err, parse_error = run_cli(capsys, argv)
            check_refused(code, err, parse_error, outputs, r"format version 99, newer than this csakd reads "
                                                           r"\(versions 1\)")


def test_an_onnx_file_of_a_newer_format_version_is_refused() -> None:
    from types import SimpleNamespace

    from csakd.errors import CheckpointError
    from csakd.inference.onnx_runtime import OnnxFuser

    props = {"csakd_format": '"csakd-onnx"', "csakd_format_version": "7", "bands": "6", "msi_bands": "3",
             "scale": "4", "normalization": '{"kind": "none"}'}
    with fuzz_case("ONNX csakd_format_version 7", max_bytes=None):
        with pytest.raises(CheckpointError, match=r"x\.onnx has csakd_format_version 7: this csakd reads versions 1"):
            OnnxFuser._read_metadata(SimpleNamespace(path=Path("x.onnx")), props)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ SIGTERM
def test_sigterm_during_fuse_ends_in_one_line_and_exit_143_with_nothing_written(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import time

    import csakd.inference.fuse as fuse

    real = fuse.fuse_arrays

    def terminated_midway(*args: Any, **kwargs: Any) -> np.ndarray:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        return real(*args, **kwargs)

    monkeypatch.setattr(fuse, "fuse_arrays", terminated_midway)
    d = _fresh(files["root"])
    argv, _ = _fuse(files, d, name="f.tif")
    before = signal.getsignal(signal.SIGTERM)
    with fuzz_case("SIGTERM during fuse", max_bytes=None):
        t0 = time.monotonic()
        code, err, _ = run_cli(capsys, argv)
        assert code == 143 and err.strip().splitlines()[-1] == "csakd: terminated", (code, err)
        assert time.monotonic() - t0 < 4 and list(d.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before  # main() puts the previous handler back


def test_sigterm_during_train_keeps_the_last_checkpoint_and_resume_continues(
    files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    import signal
    import subprocess
    import sys
    import time

    from csakd.checkpoint import read_payload

    d = _fresh(files["root"])
    # the last value counts; --keep-last: the finished run's state is compared
    argv, _ = _train(files, d, "--epochs", "40", "--samples-per-epoch", "2", "--crop", "16", "--keep-last")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    run = d / "run"
    with fuzz_case("SIGTERM during train, then --resume", seconds=150, max_bytes=None):
        proc = subprocess.Popen([sys.executable, "-m", "csakd.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while not (run / "last.pt").exists():
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no last.pt after 90 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err[-2000:]
        assert err.strip().splitlines()[-1] == "csakd: terminated" and "Traceback" not in err, err[-2000:]
        epoch = read_payload(run / "last.pt")["epoch"]  # a complete checkpoint
        assert 1 <= epoch < 40
        assert not [p for p in run.iterdir() if p.name.endswith(".part")]
        with caplog.at_level("INFO"):  # resumed in this process: one interpreter start less
            assert main([*argv, "--epochs", str(epoch + 1), "--resume"]) == 0
        assert any(f"resumed {run / 'last.pt'} at epoch {epoch}" in r.getMessage() for r in caplog.records)
        assert read_payload(run / "last.pt")["epoch"] == epoch + 1
