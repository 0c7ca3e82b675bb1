"""Nothing lost when a process dies or the disk fills: atomic writes, resume after SIGKILL, full disks.

* A writer process is SIGKILLed at several moments while it writes a large cube (``.npy``, GeoTIFF, ENVI) or a
  checkpoint (``save_payload``): the target path then holds the old complete file or the new complete file,
  never a mix or a torn file. What may remain is hidden temporary files ``.<name>.<random>.part`` beside it
  (safe to delete; nothing reads them: they are dot files and do not end in a data suffix).
* ``csakd train`` killed after its first epoch and resumed with ``--resume`` ends with exactly the weights
  of an uninterrupted run (CPU, ``--deterministic``).
* A full disk (``ENOSPC``) or a file-size limit while writing gives a CsakdError naming the path, and leaves
  nothing under the target name (an existing file is kept as it was).
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import csakd.checkpoint as checkpoint
import csakd.data.io_envi as io_envi
import csakd.data.io_mat as io_mat
import csakd.data.io_numpy as io_numpy
import csakd.data.io_tiff as io_tiff
from csakd.checkpoint import read_payload, save_payload
from csakd.data import Cube, read_cube, write_cube
from csakd.errors import CsakdError, InputError, OutputExistsError
from csakd.files import write_json

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
OLD_BANDS, NEW_BANDS, SIDE = 2, 4, 768  # old 4.5 MiB, new 9 MiB of float32

# ------------------------------------------------------------------------------------------ SIGKILL mid-write
KILLER = textwrap.dedent(r'''
    """Write old files, then fork writers of new files and SIGKILL them at the moments asked for."""
    import json, os, signal, sys, time
    from pathlib import Path
    import numpy as np, torch
    from csakd.data import Cube, write_cube
    from csakd.checkpoint import save_payload

    root, old_bands, new_bands, side = Path(sys.argv[1]), *map(int, sys.argv[2:5])
    targets = {"npy": "out.npy", "tif": "out.tif", "envi": "out.hdr", "checkpoint": "ckpt.pt"}

    def write(fmt, path, gen):
        bands = old_bands if gen == 1 else new_bands
        if fmt == "checkpoint":
            save_payload(path, {"gen": gen, "w": torch.full((bands, side, side), float(gen))})
        else:
            write_cube(path, Cube(np.full((bands, side, side), float(gen), np.float32)), overwrite=True)

    def has_part(d):
        return any(n.endswith(".part") for n in os.listdir(d))

    def die_at_replace(nth):
        real = os.replace
        calls = [0]
        def replace(a, b):
            calls[0] += 1
            if calls[0] == nth + 1:  # nth renames done, die before the next
                os.kill(os.getpid(), signal.SIGKILL)
            return real(a, b)
        os.replace = replace

    report = []
    for fmt, moments in json.loads(sys.argv[5]).items():
        d0 = root / fmt / "measure"
        d0.mkdir(parents=True)
        write(fmt, d0 / targets[fmt], 2)
        t0 = time.perf_counter()
        write(fmt, d0 / targets[fmt], 2)
        seconds = time.perf_counter() - t0
        for i, moment in enumerate(moments):
            d = root / fmt / str(i)
            d.mkdir()
            write(fmt, d / targets[fmt], 1)
            pid = os.fork()
            if pid == 0:
                if isinstance(moment, str) and moment.startswith("rename"):
                    die_at_replace(int(moment[len("rename"):]))
                write(fmt, d / targets[fmt], 2)
                os._exit(0)
            waited = None
            if moment == "start":
                os.kill(pid, signal.SIGKILL)
            elif isinstance(moment, float):
                deadline = time.monotonic() + 10
                while not has_part(d) and time.monotonic() < deadline:
                    time.sleep(0.0005)
                time.sleep(moment * seconds)
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            report.append({"fmt": fmt, "dir": str(d), "target": targets[fmt], "moment": moment, "killed": killed,
                           "write_seconds": seconds})
    print(json.dumps(report))
''')

MOMENTS: dict[str, list[Any]] = {
    # "start": killed right after the fork; a float f: killed f x (the write's duration) after its temporary
    # file appeared; "renameN": the writer kills itself after N renames onto target names; "done": no kill
    "npy": ["start", 0.0, 0.3, 0.7, "rename0", "done"],
    "tif": ["start", 0.0, 0.3, 0.7, "rename0", "done"],
    "envi": ["start", 0.0, 0.3, 0.7, "rename0", "rename1", "rename2", "done"],
    "checkpoint": ["start", 0.0, 0.3, 0.7, "rename0", "done"],
}
PART = re.compile(r"^\.(out\.npy|out\.tif|out\.hdr|out\.img|ckpt\.pt)\.[^/]+\.part$")


def _content(fmt: str, target: Path) -> str:
    """'old', 'new', or a description of what else is there."""
    try:
        if fmt == "checkpoint":
            payload = read_payload(target)
            gen, w = payload["gen"], payload["w"]
            shape, values = tuple(w.shape), w
        else:
            cube = read_cube(target)
            shape, values = cube.data.shape, cube.data
            gen = int(values.flat[0])
    except CsakdError as exc:
        return f"unreadable: {exc}"
    expected = {1: (OLD_BANDS, SIDE, SIDE), 2: (NEW_BANDS, SIDE, SIDE)}
    if gen in expected and shape == expected[gen] and bool((values == gen).all()):
        return "old" if gen == 1 else "new"
    return f"a torn file: generation {gen}, shape {shape}"


@pytest.fixture(scope="module")
def kills(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("kill")
    script = root / "killer.py"
    script.write_text(KILLER)
    out = subprocess.run([sys.executable, str(script), str(root), str(OLD_BANDS), str(NEW_BANDS), str(SIDE),
                          json.dumps(MOMENTS)], env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("fmt", list(MOMENTS))
def test_a_killed_writer_leaves_the_old_file_or_the_new_one(fmt: str, kills: list[dict[str, Any]]) -> None:
    cases = [c for c in kills if c["fmt"] == fmt]
    assert len(cases) == len(MOMENTS[fmt])
    mid_write = 0
    for case in cases:
        d, target, moment = Path(case["dir"]), case["target"], case["moment"]
        names = set(os.listdir(d))
        targets = {"out.hdr", "out.img"} if fmt == "envi" else {target}
        stray = {n for n in names - targets if not PART.match(n)}
        assert not stray, f"{moment}: files other than the target and hidden .part files: {stray}"
        parts = {n for n in names if PART.match(n)}
        if fmt == "envi" and (moment in ("rename0", "rename1") or "out.hdr" not in names):
            # killed during the renames that commit a pair (microseconds): the old header is removed before
            # the first, so the pair is incomplete and refused, never an old header over new data
            assert case["killed"] and "out.hdr" not in names
            with pytest.raises(InputError, match="does not exist"):
                read_cube(d / "out.hdr")
            with pytest.raises(InputError, match=r"no ENVI \.hdr is beside it"):
                read_cube(d / "out.img")
            # the data file itself is whole: the old one before the first rename, the new one after
            sizes = {"rename0": [OLD_BANDS], "rename1": [NEW_BANDS]}.get(moment, [OLD_BANDS, NEW_BANDS])
            assert (d / "out.img").stat().st_size in [b * SIDE * SIDE * 4 for b in sizes]
            continue
        state = _content(fmt, d / target)
        assert state in ("old", "new"), f"{fmt}, killed at {moment}: the target holds {state}"
        if moment in ("done", "rename2"):
            assert state == "new" and not parts, (moment, state, parts)
        if moment in ("start", "rename0"):
            assert state == "old", moment
        if isinstance(moment, float) and case["killed"] and parts and state == "old":
            mid_write += 1  # killed by the clock while the new file was being written
    assert mid_write >= 1, f"no kill landed while the new file was being written: {cases}"


def test_outputs_are_never_overwritten_without_overwrite(tmp_path: Path) -> None:
    cube = Cube(np.ones((2, 4, 4), np.float32))
    for name in ("a.npy", "a.npz", "a.mat", "a.tif", "a.hdr"):
        write_cube(tmp_path / name, cube)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for name in ("a.npy", "a.npz", "a.mat", "a.tif", "a.hdr", "a.img"):
        with pytest.raises(OutputExistsError, match="--overwrite"):
            write_cube(tmp_path / name, Cube(np.zeros((3, 4, 4), np.float32)))
    (tmp_path / "b.img").write_bytes(b"mine")  # one file of an ENVI pair is enough to refuse
    with pytest.raises(OutputExistsError, match=r"b\.img"):
        write_cube(tmp_path / "b.hdr", cube)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "b.img"} == before
    assert (tmp_path / "b.img").read_bytes() == b"mine" and not (tmp_path / "b.hdr").exists()


# ------------------------------------------------------------------------------------------ resume after SIGKILL
def _train_args(data: Path, srf: Path, out: Path) -> list[str]:
    return ["train", "--data", str(data), "--srf", str(srf), "--out", str(out), "--epochs", "3", "--batch-size", "2",
            "--crop", "16", "--samples-per-epoch", "8", "--nf", "8", "--gc", "4", "--teacher-blocks", "1,1,1,1",
            "--student-blocks", "1,1,1,1", "--device", "cpu", "--deterministic", "--quiet", "--keep-last",
            "--blur-size", "3", "--blur-sigma", "1", "--val-fraction", "0.34", "--seed", "3"]


# the resumed run, then the uninterrupted one, each as `csakd ARGS` would run them (one interpreter start for both)
RESUME_THEN_REFERENCE = """
import sys, json
from csakd.cli import main
codes = [main(args) for args in json.loads(sys.argv[1])]
sys.exit(max(codes))
"""


def test_training_killed_after_an_epoch_resumes_to_the_same_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    wl = np.linspace(420, 680, 6)
    for i in range(3):
        write_cube(tmp_path / "cubes" / f"s{i}.npz", Cube(rng.random((6, 24, 24)).astype(np.float32), wavelengths=wl))
    grid = np.arange(400, 701, 10)
    (tmp_path / "srf.csv").write_text("wavelength_nm,B,G,R\n" + "\n".join(
        f"{g},{np.exp(-((g - 460) / 40) ** 2):.5f},{np.exp(-((g - 550) / 40) ** 2):.5f},"
        f"{np.exp(-((g - 620) / 40) ** 2):.5f}" for g in grid))
    full, cut = tmp_path / "full", tmp_path / "cut"
    args = {run: _train_args(tmp_path / "cubes", tmp_path / "srf.csv", run) for run in (full, cut)}
    killed = subprocess.Popen([sys.executable, "-m", "csakd.cli", *args[cut]], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (cut / "last.pt").exists():  # written (atomically) at the end of every epoch
        assert killed.poll() is None, "the run ended before its first last.pt"
        assert time.monotonic() < deadline, "no last.pt after 120 s"
        time.sleep(0.002)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    state = read_payload(cut / "last.pt")
    assert 1 <= state["epoch"] < 3, f"killed at epoch {state['epoch']}: too late to test resuming"

    runs = [[*args[cut], "--resume"], args[full]]
    done = subprocess.run([sys.executable, "-c", RESUME_THEN_REFERENCE, json.dumps(runs)], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed {cut / 'last.pt'} at epoch {state['epoch']}" in done.stderr

    a, b = read_payload(full / "last.pt"), read_payload(cut / "last.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 12)
    assert set(a["models"]) == set(b["models"]) == {"teacher", "student"}
    for role in a["models"]:
        assert a["models"][role].keys() == b["models"][role].keys()
        for name, tensor in a["models"][role].items():
            torch.testing.assert_close(b["models"][role][name], tensor, rtol=0, atol=0, msg=f"{role} {name}")
        for sa, sb in zip(a["optimizers"][role]["state"].values(), b["optimizers"][role]["state"].values(),
                          strict=True):
            torch.testing.assert_close(sb["exp_avg_sq"], sa["exp_avg_sq"], rtol=0, atol=0)
    for role in ("teacher", "student"):  # the best checkpoints are complete files too
        assert read_payload(cut / f"{role}.pt")["format"] == "csakd-checkpoint"


# ------------------------------------------------------------------------------------------ full disk
class _DiskFull:
    """A binary file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, path: Any, mode: str, room: int) -> None:
        self.fh = open(path, mode)
        self.room = room

    def write(self, data: Any) -> int:
        raw = bytes(data)
        if len(raw) > self.room:
            self.fh.write(raw[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(raw)
        return self.fh.write(raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)

    def __enter__(self) -> _DiskFull:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


def _half_then_enospc(write_first: Callable[[Path], None]) -> Callable[..., None]:
    def writer(*args: Any) -> None:
        tmp = next(a for a in args if isinstance(a, Path) and a.name.endswith(".part"))
        write_first(tmp)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    return writer


def _patch_disk_full(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    room = 100_000

    def opener(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return _DiskFull(path, mode, room) if "w" in mode else open(path, mode, *args, **kwargs)
    if kind in ("npy", "npz"):
        monkeypatch.setattr(io_numpy, "open", opener, raising=False)
    elif kind == "mat":
        monkeypatch.setattr(io_mat, "open", opener, raising=False)
    elif kind == "checkpoint":
        monkeypatch.setattr(checkpoint, "open", opener, raising=False)
    elif kind == "envi":
        monkeypatch.setattr(io_envi, "write_envi", lambda h, d, ht, dt, cube: _half_then_enospc(
            lambda tmp: tmp.write_bytes(bytes(room)))(ht, dt))
    elif kind == "tif":
        monkeypatch.setattr(io_tiff, "write_tiff_rasterio", lambda rio, tmp, cube: _half_then_enospc(
            lambda t: t.write_bytes(b"II*\0" + bytes(room)))(tmp))
    elif kind == "json":
        real = Path.write_text

        def write_text(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
            if not self.name.endswith(".part"):
                return real(self, text, *args, **kwargs)
            real(self, text[:room], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(Path, "write_text", write_text)


WRITES: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "npy": ("out.npy", lambda p: write_cube(p, _big_cube(), overwrite=True)),
    "npz": ("out.npz", lambda p: write_cube(p, _big_cube(), overwrite=True)),
    "mat": ("out.mat", lambda p: write_cube(p, _big_cube(), overwrite=True)),
    "tif": ("out.tif", lambda p: write_cube(p, _big_cube(), overwrite=True)),
    "envi": ("out.hdr", lambda p: write_cube(p, _big_cube(), overwrite=True)),
    "checkpoint": ("ckpt.pt", lambda p: save_payload(p, {"w": torch.ones(4, 256, 256)})),
    "json": ("out.json", lambda p: write_json(p, {"values": list(range(100_000))})),
}


def _big_cube() -> Cube:
    return Cube(np.full((4, 256, 256), 2.0, np.float32), wavelengths=np.linspace(400, 700, 4))


def _leftovers(d: Path, keep: set[str]) -> set[str]:
    return {n for n in os.listdir(d) if n not in keep}


@pytest.mark.parametrize("kind", list(WRITES))
@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_gives_a_clear_error_and_leaves_nothing_half_written(
    kind: str, existing: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, write = WRITES[kind]
    target = tmp_path / name
    keep: set[str] = set()
    if existing:
        write(target)
        keep = set(os.listdir(tmp_path))
        before = {n: (tmp_path / n).read_bytes() for n in keep}
    _patch_disk_full(monkeypatch, kind)
    with pytest.raises(CsakdError) as info:
        write(target)
    message = str(info.value)
    assert str(target) in message or str(target.with_suffix(".img")) in message, message
    assert "no space left on the device" in message, message
    assert not _leftovers(tmp_path, keep), f"left behind: {_leftovers(tmp_path, keep)}"
    if existing:
        assert {n: (tmp_path / n).read_bytes() for n in keep} == before


@pytest.fixture()
def file_size_limit() -> Iterator[Callable[[int], None]]:
    """Lower RLIMIT_FSIZE for this process (Python ignores SIGXFSZ: writes past it fail with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN

    def limit(n: int | None) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft if n is None else n, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("kind", [*WRITES, "tif-tifffile"])
def test_a_write_cut_short_by_the_system_fails_cleanly(kind: str, tmp_path: Path, file_size_limit: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The real writers (numpy, scipy, GDAL, tifffile, torch) hit a real failing write() (file size limit)."""
    if kind == "tif-tifffile":
        monkeypatch.setattr(io_tiff, "import_rasterio", lambda: None)
    name, write = WRITES[kind.split("-")[0]]
    file_size_limit(200_000)  # every output above is > 256 KiB
    try:
        with pytest.raises(CsakdError) as info:
            write(tmp_path / name)
    finally:
        file_size_limit(None)
    assert str(tmp_path / name) in str(info.value) or ".img" in str(info.value)
    assert "\n" not in str(info.value)
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)
