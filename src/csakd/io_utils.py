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
from collections.abc import Callable, Iterator
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
