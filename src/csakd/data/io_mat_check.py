"""A structural check of MATLAB v5 (.mat) files before scipy parses them.

scipy's compiled MAT v5 reader trusts the file: a damaged or crafted file (an unknown data type code, a
dimensions element of the wrong size, a data element shorter than its dimensions say) can crash the whole
process with a segmentation fault instead of raising an exception. :func:`check_mat5` walks the file's element
tree in pure Python first, following the published MAT-file format (MathWorks, "MAT-File Format", v5/v7:
a 128-byte header, then ``miMATRIX`` elements, each possibly wrapped in a zlib-compressed ``miCOMPRESSED``
element), and refuses anything that does not follow it.

What is checked:

* every variable's header: its tag, the array-flags element (``miUINT32``, 8 bytes), the dimensions element
  (``miINT32``, at least 2 non-negative sizes) and the name element (``miINT8``);
* for the variables that will be loaded (``deep``): the data elements too. Numeric classes need a real part
  (and an imaginary part when the complex flag is set) of a numeric type holding exactly ``prod(dims)``
  values; character arrays one data element of a character type; cell arrays ``prod(dims)`` nested
  ``miMATRIX`` elements, each checked in the same way. Other classes (struct, object, sparse, function
  handles, opaque objects) are not loaded by csakd and are reported as not loadable.

Compressed elements are decompressed in chunks that are dropped once checked (no memory beyond a chunk).
"""

from __future__ import annotations

import math
import mmap
import struct
import zlib
from pathlib import Path

from csakd.errors import InputError

__all__ = ["check_mat5"]

MI_MATRIX, MI_COMPRESSED = 14, 15
#: Data type code -> bytes per value (the numeric and character types of the format).
MI_SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8, 16: 1, 17: 2, 18: 4}
MI_NUMERIC = {1, 2, 3, 4, 5, 6, 7, 9, 12, 13}
MI_CHARACTER = {1, 2, 3, 4, 5, 6, 16, 17, 18}
MX_CELL, MX_CHAR, MX_OPAQUE = 1, 4, 17
MX_NUMERIC = set(range(6, 16))  # double, single, int8 ... uint64 (logical is uint8 with a flag)
MAX_DEPTH = 16
CHUNK = 1 << 20


class _Damaged(Exception):
    """The file does not follow the format; the message says where and how."""


class _Stream:
    """Sequential reads over a byte range of the file, or over the zlib stream inside it (decompressed in
    chunks as it is read)."""

    def __init__(self, buf: memoryview, *, compressed: bool = False) -> None:
        self.buf = buf
        self.pos = 0  # position in the (decompressed) stream
        self.z = zlib.decompressobj() if compressed else None
        self.src = 0  # how much of buf the decompressor has been given
        self.pending = b""

    def _fill(self, want: int) -> None:
        """Decompress until ``pending`` holds ``want`` bytes or the input ends."""
        assert self.z is not None
        while len(self.pending) < want:
            if self.z.unconsumed_tail:
                data = self.z.unconsumed_tail
            elif self.src < len(self.buf):
                data = bytes(self.buf[self.src : self.src + CHUNK])
                self.src += len(data)
            else:
                return
            try:
                self.pending += self.z.decompress(data, max(want - len(self.pending), 4096))
            except zlib.error as exc:
                raise _Damaged(f"a compressed element does not decompress ({exc})") from exc

    def remaining(self, n: int) -> int:
        """How many of the next ``n`` bytes exist."""
        if self.z is None:
            return max(0, min(n, len(self.buf) - self.pos))
        self._fill(min(n, CHUNK))
        return min(n, len(self.pending))

    def read(self, n: int) -> bytes:
        if self.z is None:
            if self.pos + n > len(self.buf):
                raise _Damaged(f"an element runs past the end of its container (byte {self.pos + n})")
            out = bytes(self.buf[self.pos : self.pos + n])
        else:
            self._fill(n)
            if len(self.pending) < n:
                raise _Damaged("a compressed element ends before its contents do")
            out, self.pending = self.pending[:n], self.pending[n:]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        if self.z is None:
            if self.pos + n > len(self.buf):
                raise _Damaged(f"an element runs past the end of its container (byte {self.pos + n})")
            self.pos += n
            return
        while n > 0:
            step = min(n, CHUNK)
            self.read(step)
            n -= step


def _tag(s: _Stream, e: str, *, allow_small: bool) -> tuple[int, int, bool]:
    """(data type, nbytes, small) of the element tag at the stream's position (the tag is consumed)."""
    (first,) = struct.unpack(e + "I", s.read(4))
    if first >> 16:  # the small data element format: the data sit in the tag's second word
        if not allow_small:
            raise _Damaged("a matrix starts with a small-element tag")
        nbytes, mtype = first >> 16, first & 0xFFFF
        if nbytes > 4:
            raise _Damaged(f"a small data element declares {nbytes} bytes (at most 4 fit)")
        return mtype, nbytes, True
    (nbytes,) = struct.unpack(e + "I", s.read(4))
    return first, nbytes, False


def _element(s: _Stream, e: str, types: set[int], what: str) -> tuple[int, bytes | None, int]:
    """Read one data element of one of ``types``: (type, its data when at most 4 KiB, nbytes)."""
    mtype, nbytes, small = _tag(s, e, allow_small=True)
    if mtype not in types:
        raise _Damaged(f"the {what} element has data type {mtype}, expected one of {sorted(types)}")
    if small:
        return mtype, s.read(4)[:nbytes], nbytes
    data = s.read(nbytes) if nbytes <= 4096 else None
    if data is None:
        s.skip(nbytes)
    s.skip(s.remaining(-nbytes % 8))  # padding to 8 bytes (tolerated when missing at the very end)
    return mtype, data, nbytes


def _matrix(s: _Stream, e: str, nbytes: int, *, deep: bool, depth: int, where: str) -> tuple[str, bool]:
    """Check the contents (``nbytes`` of them) of one ``miMATRIX`` element; returns (name, loadable)."""
    if depth > MAX_DEPTH:
        raise _Damaged(f"{where}: cells nested more than {MAX_DEPTH} deep")
    if nbytes == 0:
        return "", True  # an empty element of a cell array
    start = s.pos
    _, flags, n = _element(s, e, {6}, "array flags")
    if flags is None or n != 8:
        raise _Damaged(f"{where}: the array-flags element holds {n} bytes, expected 8")
    word = struct.unpack(e + "I", flags[:4])[0]
    mclass, is_complex = word & 0xFF, bool(word & 0x800)
    loadable = False
    if mclass == MX_OPAQUE:  # no dimensions: scipy reads only the name here
        _, name_b, _ = _element(s, e, {1}, "name")
    else:
        _, dims_b, n = _element(s, e, {5}, "dimensions")
        if dims_b is None or n % 4 or n < 8:
            raise _Damaged(f"{where}: the dimensions element holds {n} bytes, expected 4 per dimension, >= 2")
        dims = struct.unpack(e + f"{n // 4}i", dims_b)
        if min(dims) < 0:
            raise _Damaged(f"{where}: negative dimensions {dims}")
        _, name_b, _ = _element(s, e, {1}, "name")
        count = math.prod(dims)
        loadable = mclass in MX_NUMERIC or mclass in (MX_CHAR, MX_CELL)
        if deep and loadable:
            if mclass in MX_NUMERIC:
                for part in ("real part", "imaginary part")[: 2 if is_complex else 1]:
                    mtype, _, n = _element(s, e, MI_NUMERIC, part)
                    if n != count * MI_SIZES[mtype]:
                        raise _Damaged(
                            f"{where}: its {part} holds {n} bytes, but {dims} values of data type {mtype} need "
                            f"{count * MI_SIZES[mtype]}"
                        )
            elif mclass == MX_CHAR:
                mtype, _, n = _element(s, e, MI_CHARACTER, "characters")
                if mtype != 16 and n != count * MI_SIZES[mtype]:
                    raise _Damaged(f"{where}: {n} bytes of characters for dimensions {dims}")
            else:
                for i in range(count):
                    t, n, _small = _tag(s, e, allow_small=False)
                    if t != MI_MATRIX:
                        raise _Damaged(f"{where}: cell {i} is an element of data type {t}, expected a matrix")
                    inner = s.pos
                    _, ok = _matrix(s, e, n, deep=True, depth=depth + 1, where=f"{where}{{{i}}}")
                    if not ok:  # scipy would parse it, unchecked: sparse, struct, object, function...
                        raise _Damaged(f"{where}{{{i}}} is not numeric, character or cell data")
                    s.skip(n - (s.pos - inner))
    if s.pos - start > nbytes:
        raise _Damaged(f"{where}: its parts take {s.pos - start} bytes but its matrix element declares {nbytes}")
    return (name_b or b"").decode("latin-1"), loadable


def _variables(view: memoryview, e: str) -> list[tuple[int, int, memoryview]]:
    """The top-level elements after the header: (data type, nbytes, contents)."""
    out: list[tuple[int, int, memoryview]] = []
    pos = 128
    while pos < len(view):
        if len(view) - pos < 8:
            raise _Damaged(f"{len(view) - pos} stray bytes after the last variable")
        mtype, nbytes = struct.unpack(e + "II", view[pos : pos + 8])
        if mtype not in (MI_MATRIX, MI_COMPRESSED) or nbytes == 0:
            raise _Damaged(f"variable {len(out) + 1} is an element of data type {mtype} ({nbytes} bytes), "
                           "expected a matrix (14) or a compressed matrix (15)")
        if pos + 8 + nbytes > len(view):
            raise _Damaged(f"variable {len(out) + 1} declares {nbytes} bytes but the file ends first")
        out.append((mtype, nbytes, view[pos + 8 : pos + 8 + nbytes]))
        pos += 8 + nbytes
    return out


def _open_matrix(mtype: int, body: memoryview, e: str, where: str) -> tuple[_Stream, int]:
    """A stream at the contents of a top-level variable, and their size."""
    if mtype == MI_MATRIX:
        return _Stream(body), len(body)
    s = _Stream(body, compressed=True)
    t, n, _small = _tag(s, e, allow_small=False)
    if t != MI_MATRIX or n == 0:
        raise _Damaged(f"{where} decompresses to an element of data type {t} ({n} bytes), expected a matrix")
    return s, n


def check_mat5(path: Path, load: set[str] | None = None) -> dict[str, bool]:
    """Check the structure of the MATLAB v5/v7 file ``path`` before scipy reads it.

    Args:
        path: a v5/v7 MAT file (128-byte header, then data elements).
        load: names of the variables that will be loaded, checked down to their data; None: all of them.

    Returns:
        ``{variable name: loadable}``: whether each variable is of a class csakd loads (numeric, char, cell).

    Raises:
        InputError: naming the file and what is wrong, for anything that does not follow the format.
    """
    what = str(path)
    size = path.stat().st_size
    if size < 128:
        raise InputError(f"{what} is too short for a MATLAB v5 file ({size} bytes; its header alone is 128)")
    out: dict[str, bool] = {}
    with open(path, "rb") as fh:
        # not closed explicitly: slices of its memoryview may outlive this block; it is freed with them
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mm)
    try:
        endian = bytes(view[126:128])
        if endian not in (b"IM", b"MI"):
            raise _Damaged(f"the header's endian indicator is {endian!r}, expected b'IM' or b'MI'")
        e = "<" if endian == b"IM" else ">"
        for i, (mtype, _nbytes, body) in enumerate(_variables(view, e)):
            where = f"variable {i + 1}"
            s, n = _open_matrix(mtype, body, e, where)
            name, loadable = _matrix(s, e, n, deep=False, depth=0, where=where)
            if loadable and (load is None or name in load):
                s, n = _open_matrix(mtype, body, e, where)
                _matrix(s, e, n, deep=True, depth=0, where=f"variable {name!r}")
            out[name] = loadable
    except (_Damaged, struct.error) as exc:
        raise InputError(f"{what} is not a valid MATLAB v5 file (damaged, truncated or not MATLAB): {exc}") from exc
    return out
