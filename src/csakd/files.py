"""Small file helpers: atomic writes and refusing to overwrite.

Atomic writes: the data go to a hidden temporary file beside the target, ``.<name>.<random>.part``, which is
flushed to disk (``fsync``) and renamed onto the target only once it is complete. A failure removes the
temporary file; a process killed mid-write (SIGKILL, power loss) leaves the target as it was, and may leave
the ``.part`` file behind (safe to delete).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from csakd.errors import CsakdError, InputError, OutputExistsError

#: Suffix of the temporary files that atomic writes create beside their targets.
PART_SUFFIX = ".part"


def check_parent(path: Path) -> None:
    """Raise :class:`InputError` when a component of ``path``'s folder exists but is not a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"cannot write {path}: {parent} is a file, not a folder")
            return


def check_writable(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is False, and
    :class:`InputError` if its folder cannot exist (a file stands where a folder should be)."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} exists: pass --overwrite to replace it")
    check_parent(p)
    return p


def default_file_mode() -> int:
    """The mode a newly created file gets under the current umask (mkstemp's files are 0600).

    The umask is read from ``/proc/self/status`` where possible, since setting it to read it back is not
    thread-safe."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_error(target: Path, exc: OSError) -> CsakdError:
    """The error to raise when writing ``target`` failed with ``exc``: names the path and the reason."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the device (free some space or write elsewhere)"
    elif exc.errno == errno.EFBIG:
        reason = "the file is larger than this system allows (file size limit)"
    elif exc.errno is None and "written" in str(exc):
        reason = f"the write was cut short ({exc}): is the disk full?"
    else:
        reason = exc.strerror or str(exc) or type(exc).__name__
    return CsakdError(f"could not write {target}: {reason}; nothing was written under that name")


def new_part_file(target: Path) -> Path:
    """Create an empty hidden temporary file ``.<name>.<random>.part`` beside ``target`` (and its folder)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=PART_SUFFIX, dir=target.parent)
    os.close(fd)
    return Path(tmp)


def commit_part_file(tmp: Path, target: Path, mode: int | None = None) -> None:
    """``fsync`` ``tmp``, give it the usual file mode, and rename it onto ``target`` (atomic on POSIX)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    with contextlib.suppress(OSError):
        os.chmod(tmp, default_file_mode() if mode is None else mode)
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (atomic on POSIX).

    A failure (or a kill) leaves the old file as it was and no partial new file under its name.

    Raises:
        CsakdError: an OSError while writing (disk full, permissions, a file where a folder should be),
            naming ``path``; the temporary file is removed first.
    """
    target = Path(path)
    tmp_path: Path | None = None
    try:
        tmp_path = new_part_file(target)
        yield tmp_path
        commit_part_file(tmp_path, target)
    except OSError as exc:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        if isinstance(exc, CsakdError):  # OutputExistsError is an OSError too
            raise
        raise write_error(target, exc) from exc
    except BaseException:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp)`` then move ``tmp`` onto ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON to ``path`` atomically, or to stdout when ``path`` is ``-``."""
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default)
    if str(path) == "-":
        print(text)
        return
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------- outputs vs inputs
#: Data-file suffixes an ENVI header may pair with (kept in step with ``csakd.data.io_envi.ENVI_DATA_SUFFIXES``).
_ENVI_DATA = ("", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".bin")
_ENVI_WRITE = (".hdr", ".img", ".dat")


def _with_case(p: Path) -> list[Path]:
    return [p, p.with_suffix(p.suffix.upper())] if p.suffix else [p]


def input_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files (or the folder) that reading ``path`` reads: the path itself, plus the sidecars its format
    implies that exist beside it: an ENVI header's data file (``x.img``, ``x.dat``, ``x.raw``, ...) or a data
    file's header (``x.hdr``, ``x.img.hdr``), and a GeoTIFF's ``x.tif.aux.xml``. A folder (a CAVE scene, a
    folder of cubes) stands for everything in it."""
    p = Path(path).expanduser()
    found = [p]
    if p.is_dir():
        return found
    candidates: list[Path] = []
    if p.suffix.lower() == ".hdr":
        base = p.with_suffix("")
        candidates += [c for s in _ENVI_DATA for c in _with_case(Path(str(base) + s))]
    else:
        candidates += _with_case(Path(str(p) + ".hdr")) + _with_case(p.with_suffix(".hdr"))
    candidates.append(Path(str(p) + ".aux.xml"))
    found += [c for c in candidates if c != p and c.is_file()]
    return found


def output_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files that writing ``path`` creates: ENVI ``x.hdr`` / ``x.img`` (or ``x.dat``) together, a GeoTIFF
    and the ``.aux.xml`` GDAL may write beside it, else the file itself."""
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix in _ENVI_WRITE:
        return [p.with_suffix(".hdr"), p.with_suffix(".img")] if suffix == ".hdr" else [p.with_suffix(".hdr"), p]
    if suffix in (".tif", ".tiff"):
        return [p, Path(str(p) + ".aux.xml")]
    return [p]


def _identity(p: Path) -> tuple[Path, tuple[int, int] | None]:
    """The resolved path (symlinks and ``..`` followed) and, for an existing file, its (device, inode)."""
    resolved = Path(os.path.abspath(p)).resolve()
    try:
        st = os.stat(resolved)
        return resolved, (st.st_dev, st.st_ino)
    except OSError:
        return resolved, None


def _same(a: tuple[Path, tuple[int, int] | None], b: tuple[Path, tuple[int, int] | None]) -> bool:
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


def _inside(child: Path, folder: Path) -> bool:
    return child != folder and folder in child.parents


def _named(label: str, given: object, actual: Path) -> str:
    """``--out x.hdr`` or ``--out x.hdr (its file x.img)`` when the clashing file is a sidecar."""
    text = f"{label} {given}"
    if Path(str(given)).expanduser() != actual:
        text += f" (its file {actual})"
    return text


def check_outputs(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    inputs: Mapping[str, str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None],
    *,
    overwrite: bool | None,
    folders: Iterable[str] = (),
) -> None:
    """Refuse, before any work, outputs that would destroy an input or each other, or replace a file unasked.

    Args:
        outputs: what a command writes, by option (``{"--out": "o.tif", "--json": "r.json"}``); ``None`` and
            ``"-"`` (stdout) are skipped.
        inputs: what it reads, by option: a path, several paths, or ``None``. Values that are not files
            (a sensor name such as ``colour:NAME``) compare as paths that do not exist, which is harmless.
        overwrite: the command's ``--overwrite``; ``None`` for commands that have no such option (an existing
            output file is then always refused).
        folders: the options of ``outputs`` that are folders (a run folder, ``--report-dir``): a folder may
            be written anywhere inside, so no input may lie in it; whether a non-empty folder may be reused is
            the command's own rule.

    Every comparison is by the resolved path (symlinks, ``..`` and ``.`` followed) and, for existing files,
    by (device, inode), so hard links count as the same file. The files a format implies are compared too:
    ENVI headers and data files, a GeoTIFF's ``.aux.xml``, the folder of a CAVE scene (:func:`input_files`,
    :func:`output_files`).

    Raises:
        InputError: an output is (or would write) one of the inputs, an output lies inside an input folder or
            an input inside an output folder, or two outputs are the same file; naming both paths. Refused
            whatever ``overwrite`` says.
        OutputExistsError: an output file exists and ``overwrite`` is not True.
    """
    folder_labels = set(folders)
    outs: list[tuple[str, object, bool, list[tuple[Path, tuple[Path, tuple[int, int] | None]]]]] = []
    for label, given in outputs.items():
        if given is None or str(given) == "-" or str(given) == "":
            continue
        is_folder = label in folder_labels
        files = [Path(given).expanduser()] if is_folder else output_files(given)
        outs.append((label, given, is_folder, [(f, _identity(f)) for f in files]))
    ins: list[tuple[str, object, list[tuple[Path, bool, tuple[Path, tuple[int, int] | None]]]]] = []
    for label, value in inputs.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        for given in values:
            if given is None or str(given) in ("", "-"):
                continue
            files = input_files(given)
            ins.append((label, given, [(f, f.is_dir(), _identity(f)) for f in files]))

    for o_label, o_given, o_folder, o_files in outs:
        for i_label, i_given, i_files in ins:
            for o_path, o_id in o_files:
                for i_path, i_dir, i_id in i_files:
                    if _same(o_id, i_id):
                        why = "is the same file as"
                    elif i_dir and _inside(o_id[0], i_id[0]):
                        why = "lies inside the input folder"
                    elif o_folder and _inside(i_id[0], o_id[0]):
                        why = "is the folder that holds"
                    else:
                        continue
                    raise InputError(
                        f"{_named(o_label, o_given, o_path)} {why} the input {_named(i_label, i_given, i_path)}: "
                        "csakd never writes its own inputs, with or without --overwrite; choose another output path"
                    )
    for n, (a_label, a_given, _, a_files) in enumerate(outs):
        for b_label, b_given, _, b_files in outs[n + 1:]:
            for a_path, a_id in a_files:
                for b_path, b_id in b_files:
                    if _same(a_id, b_id):
                        raise InputError(
                            f"{_named(a_label, a_given, a_path)} and {_named(b_label, b_given, b_path)} are the "
                            "same file: each output needs its own path"
                        )
    for label, o_given, is_folder, o_files in outs:
        if is_folder:
            continue
        for f, _ in o_files[:2] if Path(str(o_given)).suffix.lower() in _ENVI_WRITE else o_files[:1]:
            if f.is_dir():
                raise InputError(f"{label} {f} is a folder: expected a file name")
            if f.exists() and overwrite is not True:
                how = ("pass --overwrite to replace it" if overwrite is not None
                       else "this command has no --overwrite: remove it or choose another name")
                raise OutputExistsError(f"output file {f} ({label}) already exists: {how}")
            check_parent(f)


def check_result(values: Any, what: str, *, target: object, cause: str | Callable[[], str]) -> None:
    """Refuse to write a result that holds NaN or Inf values: raise naming their count, ``cause`` (the likely
    reason, or a function that finds it, called only then) and ``target``, which is then not written.

    Raises:
        CsakdError: ``values`` (an array) is not all finite.
    """
    import numpy as np

    arr = np.asarray(values)
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        if callable(cause):
            cause = cause()
        raise CsakdError(
            f"{what} has {bad} non-finite value(s) (NaN or Inf) among {arr.size}: {cause}; nothing was written to "
            f"{target}"
        )
