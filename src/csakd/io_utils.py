"""Small file helpers: atomic writes and refusing to overwrite."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from csakd.errors import CsakdError, OutputExistsError


def check_writable(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is False."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} exists: pass --overwrite to replace it")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (atomic on POSIX).

    A failure (or a kill) leaves the old file as it was and no partial new file under its name.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise CsakdError(f"could not write {target}: {exc.strerror or exc}") from exc
    except BaseException:
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
