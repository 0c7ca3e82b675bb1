"""The CSAKD reference implementation's AVIRIS patch layout, readable unchanged.

A root folder holds ``train.txt``, ``val.txt`` and ``test.txt``, one prefix per line (e.g.
``train/Cashin_18``, relative to the root). Each prefix names three files, the prefix with a suffix appended
(no separator):

* ``<prefix>GT.npz.npy``: the HR-HSI truth, an ``(H, W, C)`` NumPy array of raw values (C = 172 in the
  paper). It is cropped to its top-left ``crop x crop`` pixels (256 by default: the region the HR-MSI and
  LR-HSI patches cover) and min-max scaled per image to [0, 1]: ``(x - min) / (max - min)`` with the
  minimum and maximum over all bands and pixels of the cropped patch.
* ``<prefix>hrmsi.npz``: arrays ``hrmsi4`` and ``hrmsi6``, ``(H, W, 4|6)``, already in [0, 1].
* ``<prefix>lrhsi.npz``: ``lrhsi`` (aligned) and ``lrhsi1``, ``lrhsi2``, ``lrhsi3`` (shifted by 1, 2, 3
  LR pixels), ``(h, w, C)``, already in [0, 1].

Samples are returned bands first as float32 tensors, in [0, 1] (mapping to [-1, 1] for the network is the
model side's business).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from csakd.data.cube import check_allocation
from csakd.errors import InputError

__all__ = ["AvirisReferenceDataset", "read_split_list"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
GT_SUFFIX = "GT.npz.npy"
MSI_SUFFIX = "hrmsi.npz"
LR_SUFFIX = "lrhsi.npz"
#: LR-HSI array names by shift in LR pixels.
LR_KEYS = ("lrhsi", "lrhsi1", "lrhsi2", "lrhsi3")


def read_split_list(root: str | Path, split: str) -> list[str]:
    """The prefixes listed in ``<root>/<split>.txt``, in file order.

    Blank lines and lines starting with ``#`` are skipped; surrounding whitespace is removed.

    Raises:
        InputError: an unknown split, a missing or unreadable list file, or a list without entries.
    """
    if split not in SPLITS:
        raise InputError(f"split {split!r} is unknown: expected one of {', '.join(SPLITS)}")
    list_path = Path(root).expanduser() / f"{split}.txt"
    if not list_path.is_file():
        raise InputError(
            f"split list {list_path} does not exist: expected a text file with one prefix per line "
            "(e.g. train/Cashin_18) in the AVIRIS root folder"
        )
    try:
        text = list_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"split list {list_path} could not be read as text: {exc}") from exc
    prefixes = [s.strip() for s in text.splitlines()]
    prefixes = [s for s in prefixes if s and not s.startswith("#")]
    if not prefixes:
        raise InputError(f"split list {list_path} lists no samples: expected one prefix per line")
    return prefixes


def _load_npz_array(path: Path, key: str) -> np.ndarray:
    """One array of an .npz archive, with errors that name the file and the keys present."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if key not in npz.files:
                raise InputError(f"{path} has no array {key!r}: it holds {', '.join(npz.files) or 'nothing'}")
            return np.asarray(npz[key])
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path} could not be read as .npz (damaged or truncated): {exc}") from exc


class AvirisReferenceDataset(Dataset[dict[str, torch.Tensor]]):
    """Paired LR-HSI / HR-MSI / HR-HSI samples in the reference implementation's AVIRIS layout.

    Args:
        root: the folder with ``train.txt`` / ``val.txt`` / ``test.txt`` and the files they name.
        split: which list to read.
        msi_bands: 4 or 6: which HR-MSI array (``hrmsi4`` / ``hrmsi6``) to return.
        shift: 0 for the aligned LR-HSI, 1, 2 or 3 for the variant shifted by that many LR pixels, or
            ``"mixed"``: each access draws one of the four uniformly at random. The draw is a function of
            ``(generator_seed, epoch, index)`` only, so it is reproducible and identical whatever the
            number of DataLoader workers; call :meth:`set_epoch` at the start of each epoch to draw a new
            mix (as with ``DistributedSampler``).
        generator_seed: the seed of the ``"mixed"`` draws.
        crop: the side of the top-left square cropped from the HR-HSI truth, or None to keep it whole.

    Each sample is ``{"lr_hsi": (C, h, w), "hr_msi": (c, H, W), "hr_hsi": (C, H, W)}``, float32 tensors in
    [0, 1]; the prefix of sample ``i`` is ``names[i]``.

    Raises:
        InputError: on construction, for bad arguments, a missing list file, or missing files (naming the
            first missing path and how many are missing); on access, for files whose shapes do not pair up.
    """

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"],
        msi_bands: Literal[4, 6] = 4,
        shift: int | Literal["mixed"] = 0,
        generator_seed: int = 0,
        crop: int | None = 256,
    ) -> None:
        if msi_bands not in (4, 6):
            raise InputError(f"msi_bands={msi_bands!r} is not available: expected 4 or 6 (hrmsi4 / hrmsi6)")
        if shift != "mixed" and (isinstance(shift, bool) or shift not in (0, 1, 2, 3)):
            raise InputError(f"shift={shift!r} is not available: expected 0, 1, 2, 3 or 'mixed'")
        if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 1):
            raise InputError(f"crop={crop!r} is invalid: expected a positive number of pixels or None")
        self.root = Path(root).expanduser()
        self.split = split
        self.msi_bands = int(msi_bands)
        self.shift = shift
        self.generator_seed = int(generator_seed)
        self.crop = crop
        self.epoch = 0
        self.names: list[str] = read_split_list(self.root, split)
        missing = [
            path
            for prefix in self.names
            for path in (self._path(prefix, s) for s in (GT_SUFFIX, MSI_SUFFIX, LR_SUFFIX))
            if not path.is_file()
        ]
        if missing:
            raise InputError(
                f"{len(missing)} file(s) named by {self.root / (split + '.txt')} are missing, the first: "
                f"{missing[0]} (each prefix needs {GT_SUFFIX}, {MSI_SUFFIX} and {LR_SUFFIX} appended)"
            )
        logger.info("AVIRIS %s split: %d samples from %s", split, len(self.names), self.root)

    def _path(self, prefix: str, suffix: str) -> Path:
        """The file of ``prefix`` with ``suffix`` appended (no separator)."""
        return self.root / (prefix + suffix)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that, with the seed and the index, decides the ``shift="mixed"`` draws."""
        self.epoch = int(epoch)

    def lr_key(self, index: int) -> str:
        """The LR-HSI array name used for sample ``index`` now (depends on the epoch when mixed)."""
        if self.shift == "mixed":
            rng = np.random.default_rng((self.generator_seed, self.epoch, index))
            return LR_KEYS[int(rng.integers(len(LR_KEYS)))]
        return LR_KEYS[int(self.shift)]

    def __len__(self) -> int:
        return len(self.names)

    def _load_gt(self, prefix: str) -> np.ndarray:
        """The cropped, min-max scaled truth as ``(C, H, W)`` float32."""
        path = self._path(prefix, GT_SUFFIX)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise InputError(f"{path} could not be read as .npy (damaged or truncated): {exc}") from exc
        if arr.ndim != 3 or arr.dtype.kind not in "iuf":
            raise InputError(
                f"{path} holds {arr.dtype} of shape {arr.shape}: expected a numeric (H, W, C) array"
            )
        if self.crop is not None:
            if arr.shape[0] < self.crop or arr.shape[1] < self.crop:
                raise InputError(
                    f"{path} is {arr.shape[0]}x{arr.shape[1]} pixels, smaller than crop={self.crop}: "
                    "expected at least the crop size (or pass crop=None)"
                )
            arr = arr[: self.crop, : self.crop]
        check_allocation(arr.shape, 4, str(path))
        gt = np.asarray(arr, dtype=np.float64)
        lo, hi = float(gt.min()), float(gt.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError(f"{path} holds NaN or infinite values: expected finite raw values")
        if hi <= lo:
            raise InputError(f"{path} is constant ({lo}): min-max scaling to [0, 1] needs max > min")
        return np.ascontiguousarray(((gt - lo) / (hi - lo)).transpose(2, 0, 1), dtype=np.float32)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Sample ``index``: ``lr_hsi`` (C, h, w), ``hr_msi`` (c, H, W), ``hr_hsi`` (C, H, W), float32."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples")
        index = index % len(self)
        prefix = self.names[index]
        hr_hsi = self._load_gt(prefix)
        msi_path = self._path(prefix, MSI_SUFFIX)
        lr_path = self._path(prefix, LR_SUFFIX)
        msi = _load_npz_array(msi_path, f"hrmsi{self.msi_bands}")
        key = self.lr_key(index)
        lr = _load_npz_array(lr_path, key)
        for arr, path, name in ((msi, msi_path, f"hrmsi{self.msi_bands}"), (lr, lr_path, key)):
            if arr.ndim != 3 or arr.dtype.kind not in "iuf":
                raise InputError(
                    f"{path}: {name} is {arr.dtype} of shape {arr.shape}, expected numeric (H, W, bands)"
                )
        c, hh, ww = hr_hsi.shape
        if msi.shape[:2] != (hh, ww):
            raise InputError(
                f"{msi_path}: hrmsi{self.msi_bands} is {msi.shape[0]}x{msi.shape[1]} but the cropped "
                f"truth is {hh}x{ww}: the HR-MSI and HR-HSI must share the HR grid (check crop)"
            )
        if lr.shape[2] != c:
            raise InputError(
                f"{lr_path}: {key} has {lr.shape[2]} bands but the truth has {c}: expected the same"
            )
        h, w = lr.shape[:2]
        if h < 1 or w < 1 or hh % h or ww % w or hh // h != ww // w:
            raise InputError(
                f"{lr_path}: {key} is {h}x{w} and the truth {hh}x{ww}: "
                "the grid ratio must be one integer scale"
            )
        return {
            "lr_hsi": torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1), dtype=np.float32)),
            "hr_msi": torch.from_numpy(np.ascontiguousarray(msi.transpose(2, 0, 1), dtype=np.float32)),
            "hr_hsi": torch.from_numpy(hr_hsi),
        }
