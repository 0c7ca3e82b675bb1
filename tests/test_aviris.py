"""The reference AVIRIS layout: a tiny fake tree in the real file format (small H, C)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from csakd.data import AvirisReferenceDataset, read_split_list
from csakd.errors import InputError

C, HR, LR, CROP = 8, 20, 4, 16  # the truth is 20x20 and cropped to 16x16; LR is 4x4 (scale 4)


def make_tree(root: Path, prefixes: dict[str, list[str]], seed: int = 0) -> dict[str, np.ndarray]:
    """Write the list files and, per prefix, ``GT.npz.npy``, ``hrmsi.npz``, ``lrhsi.npz``.

    Returns the raw truth arrays by prefix. In ``lrhsi<k>`` every value is ``k / 10`` plus a small ramp, so
    the variant a sample came from can be told by its mean.
    """
    rng = np.random.default_rng(seed)
    truths: dict[str, np.ndarray] = {}
    for split, names in prefixes.items():
        (root / f"{split}.txt").write_text("\n".join(names) + "\n\n")
        for prefix in names:
            base = root / prefix
            base.parent.mkdir(parents=True, exist_ok=True)
            gt = rng.integers(-50, 4000, size=(HR, HR, C)).astype(np.int16)  # raw, (H, W, C)
            np.save(str(base) + "GT.npz.npy", gt)
            truths[prefix] = gt
            np.savez(
                str(base) + "hrmsi.npz",
                hrmsi4=rng.random((CROP, CROP, 4)),
                hrmsi6=rng.random((CROP, CROP, 6)),
            )
            ramp = rng.random((LR, LR, C)) * 0.01
            np.savez(
                str(base) + "lrhsi.npz",
                **{key: ramp + k / 10 for k, key in enumerate(["lrhsi", "lrhsi1", "lrhsi2", "lrhsi3"])},
            )
    return truths


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    truths = make_tree(
        tmp_path, {"train": ["train/Cashin_18", "train/Moffett_3", "train/Lunar_7"], "val": ["val/X_1"]}
    )
    return tmp_path, truths


def test_split_list(tree: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = tree
    assert read_split_list(root, "train") == ["train/Cashin_18", "train/Moffett_3", "train/Lunar_7"]
    with pytest.raises(InputError, match=r"test\.txt does not exist"):
        read_split_list(root, "test")
    with pytest.raises(InputError, match="split 'dev' is unknown"):
        read_split_list(root, "dev")
    (root / "test.txt").write_text("# nothing\n\n")
    with pytest.raises(InputError, match="lists no samples"):
        read_split_list(root, "test")


def test_sample_shapes_scaling_and_names(tree: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, truths = tree
    ds = AvirisReferenceDataset(root, "train", crop=CROP)
    assert len(ds) == 3 and ds.names[1] == "train/Moffett_3"
    s = ds[1]
    assert set(s) == {"lr_hsi", "hr_msi", "hr_hsi"}
    assert s["lr_hsi"].shape == (C, LR, LR) and s["hr_msi"].shape == (4, CROP, CROP)
    assert s["hr_hsi"].shape == (C, CROP, CROP)
    assert all(t.dtype == torch.float32 for t in s.values())
    gt = truths["train/Moffett_3"][:CROP, :CROP, :].astype(np.float64)  # top-left crop
    expected = (gt - gt.min()) / (gt.max() - gt.min())
    np.testing.assert_allclose(s["hr_hsi"].numpy(), expected.transpose(2, 0, 1), atol=1e-7)
    assert float(s["hr_hsi"].min()) == 0.0 and float(s["hr_hsi"].max()) == 1.0
    msi = np.load(root / "train/Moffett_3hrmsi.npz")["hrmsi4"]
    np.testing.assert_allclose(s["hr_msi"].numpy(), msi.transpose(2, 0, 1), atol=1e-7)  # not rescaled
    assert ds[-1]["hr_hsi"].shape == (C, CROP, CROP)
    with pytest.raises(IndexError):
        ds[3]


def test_six_band_msi_and_no_crop(tree: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, truths = tree
    ds = AvirisReferenceDataset(root, "val", msi_bands=6, crop=CROP)
    assert ds[0]["hr_msi"].shape == (6, CROP, CROP)
    whole = AvirisReferenceDataset(root, "val", crop=None)
    with pytest.raises(InputError, match=r"hrmsi4 is 16x16 but the cropped truth is 20x20"):
        whole[0]
    np.savez(root / "val/X_1hrmsi.npz", hrmsi4=np.zeros((HR, HR, 4)), hrmsi6=np.zeros((HR, HR, 6)))
    np.savez(root / "val/X_1lrhsi.npz", lrhsi=np.zeros((HR // 4, HR // 4, C)))
    gt = truths["val/X_1"].astype(np.float64)  # whole, scaled over the whole image
    np.testing.assert_allclose(
        whole[0]["hr_hsi"].numpy(), ((gt - gt.min()) / (gt.max() - gt.min())).transpose(2, 0, 1), atol=1e-7
    )


def test_default_crop_needs_256(tree: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = tree
    ds = AvirisReferenceDataset(root, "val")  # crop=256 by default
    with pytest.raises(InputError, match=r"20x20 pixels, smaller than crop=256"):
        ds[0]


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_fixed_shift_picks_that_variant(tree: tuple[Path, dict[str, np.ndarray]], shift: int) -> None:
    root, _ = tree
    ds = AvirisReferenceDataset(root, "train", shift=shift, crop=CROP)
    for i in range(len(ds)):
        assert round(float(ds[i]["lr_hsi"].mean()) * 10) == shift


def test_mixed_shift_is_seeded_and_varies(tree: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = tree
    ds = AvirisReferenceDataset(root, "train", shift="mixed", generator_seed=5, crop=CROP)
    twin = AvirisReferenceDataset(root, "train", shift="mixed", generator_seed=5, crop=CROP)
    draws = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        twin.set_epoch(epoch)
        keys = [ds.lr_key(i) for i in range(len(ds))]
        assert keys == [twin.lr_key(i) for i in range(len(ds))]  # same seed, epoch, index: same draw
        got = [round(float(ds[i]["lr_hsi"].mean()) * 10) for i in range(len(ds))]
        assert got == [int(k[-1]) if k[-1].isdigit() else 0 for k in keys]  # the sample uses the drawn key
        draws.extend(got)
    assert set(draws) == {0, 1, 2, 3}  # all four variants appear over 36 draws
    other = AvirisReferenceDataset(root, "train", shift="mixed", generator_seed=6, crop=CROP)
    seq5 = []
    seq6 = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        other.set_epoch(epoch)
        seq5 += [ds.lr_key(i) for i in range(3)]
        seq6 += [other.lr_key(i) for i in range(3)]
    assert seq5 != seq6


def test_dataloader_batches(tree: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = tree
    batch = next(iter(DataLoader(AvirisReferenceDataset(root, "train", crop=CROP), batch_size=2)))
    assert batch["lr_hsi"].shape == (2, C, LR, LR) and batch["hr_hsi"].shape == (2, C, CROP, CROP)


def test_missing_files_named_and_counted(tree: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = tree
    (root / "train/Moffett_3hrmsi.npz").unlink()
    (root / "train/Lunar_7GT.npz.npy").unlink()
    (root / "train/Lunar_7lrhsi.npz").unlink()
    with pytest.raises(
        InputError, match=r"3 file\(s\) named by .*train\.txt are missing, the first: .*Moffett_3hrmsi\.npz"
    ):
        AvirisReferenceDataset(root, "train")
    with pytest.raises(InputError, match=r"test\.txt does not exist"):
        AvirisReferenceDataset(root, "test")


def test_bad_arguments(tree: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = tree
    with pytest.raises(InputError, match="msi_bands=5"):
        AvirisReferenceDataset(root, "train", msi_bands=5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="shift=4"):
        AvirisReferenceDataset(root, "train", shift=4)
    with pytest.raises(InputError, match="crop=0"):
        AvirisReferenceDataset(root, "train", crop=0)


def test_inconsistent_files(tmp_path: Path) -> None:
    make_tree(tmp_path, {"test": ["a"]})
    np.savez(tmp_path / "alrhsi.npz", lrhsi=np.zeros((5, 5, C)))  # 16 / 5 is not an integer scale
    with pytest.raises(InputError, match="grid ratio must be one integer scale"):
        AvirisReferenceDataset(tmp_path, "test", crop=CROP)[0]
    np.savez(tmp_path / "alrhsi.npz", lrhsi=np.zeros((4, 4, C + 1)))
    with pytest.raises(InputError, match="has 9 bands but the truth has 8"):
        AvirisReferenceDataset(tmp_path, "test", crop=CROP)[0]
    np.savez(tmp_path / "alrhsi.npz", other=np.zeros((4, 4, C)))
    with pytest.raises(InputError, match="has no array 'lrhsi': it holds other"):
        AvirisReferenceDataset(tmp_path, "test", crop=CROP)[0]
    np.save(tmp_path / "aGT.npz.npy", np.full((HR, HR, C), 3.0))
    with pytest.raises(InputError, match="is constant"):
        AvirisReferenceDataset(tmp_path, "test", crop=CROP)[0]
    (tmp_path / "aGT.npz.npy").write_bytes(b"\x93NUMPY")
    with pytest.raises(InputError, match=r"could not be read as \.npy"):
        AvirisReferenceDataset(tmp_path, "test", crop=CROP)[0]
