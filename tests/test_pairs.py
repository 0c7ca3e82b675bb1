"""Paired datasets: crops agree with whole-image simulation, augmentations keep the three images aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csakd.data.pairs import PairedCrops, SimulatedPairs, augment_views
from csakd.degradation import Degradation, DegradationConfig, SpectralResponse
from csakd.errors import InputError


def make_degradation(bands: int = 6, scale: int = 4) -> Degradation:
    rng = np.random.default_rng(0)
    response = SpectralResponse.from_matrix(rng.random((3, bands)))
    return Degradation(DegradationConfig(scale=scale, blur_size=9, blur_sigma=2.0), response)


def test_crop_equals_the_same_region_of_the_whole_image_simulation() -> None:
    deg = make_degradation()
    cube = torch.rand(6, 64, 48)
    whole_lr, whole_msi = deg.simulate(cube)
    ds = SimulatedPairs([cube.numpy()], deg, crop=16, samples_per_epoch=20, seed=3)
    found = 0
    for i in range(len(ds)):
        item = ds[i]
        hr = item["hr_hsi"]
        # locate the crop in the cube (offsets are multiples of the scale)
        for y in range(0, 64 - 16 + 1, 4):
            for x in range(0, 48 - 16 + 1, 4):
                if torch.equal(cube[:, y : y + 16, x : x + 16], hr):
                    torch.testing.assert_close(item["lr_hsi"], whole_lr[:, y // 4 : y // 4 + 4, x // 4 : x // 4 + 4],
                                               atol=1e-5, rtol=1e-5)
                    torch.testing.assert_close(item["hr_msi"], whole_msi[:, y : y + 16, x : x + 16], atol=1e-6,
                                               rtol=1e-5)
                    found += 1
    assert found == len(ds)


def test_whole_image_mode_matches_simulate() -> None:
    deg = make_degradation()
    cube = torch.rand(6, 32, 32)
    item = SimulatedPairs([cube.numpy()], deg)[0]
    lr, msi = deg.simulate(cube)
    torch.testing.assert_close(item["lr_hsi"], lr, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(item["hr_msi"], msi)


def test_augmented_samples_are_consistent_simulations() -> None:
    """After flips/rotations the LR-HSI is still the degradation of the HR-HSI shown (phase kept)."""
    deg = make_degradation()
    cube = torch.rand(6, 40, 40)
    ds = SimulatedPairs([cube.numpy()], deg, crop=40, augment=True, samples_per_epoch=12, seed=1)
    views = set()
    for i in range(len(ds)):
        item = ds[i]
        views.add(item["hr_hsi"][0, 0, :3].tolist().__repr__())
        lr_interior = deg.degrade_spatial(item["hr_hsi"])[:, 2:-2, 2:-2]
        torch.testing.assert_close(item["lr_hsi"][:, 2:-2, 2:-2], lr_interior, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(item["hr_msi"], deg.response.apply(item["hr_hsi"]), atol=1e-6, rtol=1e-5)
    assert len(views) > 2, "augmentation should produce different views"


def test_same_seed_same_samples_and_epochs_differ() -> None:
    deg = make_degradation()
    cube = np.random.default_rng(0).random((6, 48, 48)).astype(np.float32)
    a = SimulatedPairs([cube], deg, crop=16, augment=True, samples_per_epoch=4, seed=5)
    b = SimulatedPairs([cube], deg, crop=16, augment=True, samples_per_epoch=4, seed=5)
    assert torch.equal(a[2]["lr_hsi"], b[2]["lr_hsi"])
    b.set_epoch(1)
    assert not all(torch.equal(a[i]["hr_hsi"], b[i]["hr_hsi"]) for i in range(4))


def test_paired_crops_stay_aligned() -> None:
    hr = torch.arange(2 * 32 * 32, dtype=torch.float32).reshape(2, 32, 32)
    lr = hr[:, ::4, ::4].clone()
    msi = hr[:1].clone()
    ds = PairedCrops([{"lr_hsi": lr, "hr_msi": msi, "hr_hsi": hr}], 4, crop=16, augment=True,
                     samples_per_epoch=16, seed=0)
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(item["hr_msi"], item["hr_hsi"][:1])
        # each LR pixel is one of the 4x4 cell's HR pixels: the cell contains it
        up = item["lr_hsi"].repeat_interleave(4, -1).repeat_interleave(4, -2)
        cells = item["hr_hsi"].unfold(-2, 4, 4).unfold(-2, 4, 4)
        assert bool((cells == up[:, ::4, ::4, None, None]).flatten(-2).any(-1).all())


def test_augment_views_are_the_dihedral_group() -> None:
    x = torch.arange(9.0).reshape(1, 3, 3)
    views = {tuple(augment_views(x, c).flatten().tolist()) for c in range(8)}
    assert len(views) == 8


def test_bad_inputs() -> None:
    deg = make_degradation()
    with pytest.raises(InputError, match="multiples of the scale"):
        SimulatedPairs([np.zeros((6, 30, 32), np.float32)], deg)
    with pytest.raises(InputError, match="different band counts"):
        SimulatedPairs([np.zeros((6, 32, 32), np.float32), np.zeros((5, 32, 32), np.float32)], deg)
    with pytest.raises(InputError, match="crop 10"):
        SimulatedPairs([np.zeros((6, 32, 32), np.float32)], deg, crop=10)
    with pytest.raises(InputError, match="smaller than the crop"):
        SimulatedPairs([np.zeros((6, 32, 32), np.float32)], deg, crop=64)


def test_spectral_augmentation_keeps_the_pair_consistent_and_scales_each_band() -> None:
    """With spectral augmentation the HR-HSI shown is the cube's crop times one positive factor per band (the
    same at every pixel), and the LR-HSI and HR-MSI are still its simulation."""
    deg = make_degradation()
    cube = torch.rand(6, 40, 40) + 0.1
    plain = SimulatedPairs([cube.numpy()], deg, crop=40, samples_per_epoch=6, seed=2)
    jittered = SimulatedPairs([cube.numpy()], deg, crop=40, samples_per_epoch=6, spectral=0.5, seed=2)
    factors = []
    for i in range(len(jittered)):
        item, ref = jittered[i], plain[i]
        ratio = item["hr_hsi"] / ref["hr_hsi"]  # the same crop: no flips, and the crop is the whole cube
        per_band = ratio.flatten(1).mean(1)
        torch.testing.assert_close(ratio, per_band[:, None, None].expand_as(ratio), atol=1e-5, rtol=1e-5)
        assert (per_band > 0).all()
        factors.append(per_band)
        lr_interior = deg.degrade_spatial(item["hr_hsi"])[:, 2:-2, 2:-2]
        torch.testing.assert_close(item["lr_hsi"][:, 2:-2, 2:-2], lr_interior, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(item["hr_msi"], deg.response.apply(item["hr_hsi"]), atol=1e-5, rtol=1e-5)
    spread = torch.stack(factors)
    assert spread.std(0).min() > 0.05, "each sample should get its own brightness and spectral curve"
    assert (spread.max(1).values / spread.min(1).values).max() > 1.05, "the curve should differ between bands"
    with pytest.raises(InputError, match=r"spectral augmentation 3.0: expected a strength in \[0, 2\]"):
        SimulatedPairs([cube.numpy()], deg, spectral=3.0)
