"""The joint estimate of PSF, response and offsets recovers a known, non-Gaussian degradation from a pair.

A 96x96 crop of a real CAVE scene is the truth; the MSI goes through the Nikon D700's response with a gain
and an offset per band (unknown to the estimate), the LR-HSI through a box or a defocus disc (not Gaussian)
and x4 decimation at phase 1. Tolerances (noise-free): the phase exactly, the PSF within 0.06 in L1 (total
mass misplaced: 0 is exact, 2 is disjoint), each band's gain within 2%, each offset within 0.002 (on MSI data
of peak ~1.3), the response within 15% in Frobenius norm (its entries are weakly identifiable from 31
correlated bands: what matters is that ``R X + o`` reproduces the MSI, within 0.1%), and the model residual
below -60 dB. With noise the PSF is within 0.25 in L1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csakd.data import read_cube
from csakd.degradation import resolve_response
from csakd.degradation.estimate import degrade, estimate_degradation
from csakd.errors import InputError
from csakd.fit import estimate_scene
from tests.conftest import shared_path

GAINS = np.array([0.8, 1.0, 1.3])
OFFSETS = np.array([0.02, -0.01, 0.05])


def _psf(kind: str) -> torch.Tensor:
    u = torch.arange(13, dtype=torch.float64) - 6
    if kind == "box":
        k = ((u[:, None].abs() <= 2) & (u[None].abs() <= 2)).double()
    else:  # a defocus disc of radius 3.2 HR pixels
        k = ((u[:, None] ** 2 + u[None] ** 2) <= 3.2**2).double()
    return k / k.sum()


@pytest.fixture(scope="module")
def truth() -> dict:
    cube = read_cube(shared_path("data", "cave", "balloons_ms"))
    x = torch.from_numpy(cube.data[:, 200:296, 200:296].astype(np.float64))
    x = x / x.max()
    srf = shared_path("data", "srf", "nikon_d700.csv")
    r = np.asarray(resolve_response(str(srf), cube.wavelengths, bands=31).matrix) * GAINS[:, None]
    z = torch.einsum("bc,chw->bhw", torch.from_numpy(r), x) + torch.from_numpy(OFFSETS)[:, None, None]
    return {"x": x, "z": z, "r": r, "r_shape": r / GAINS[:, None]}


@pytest.mark.parametrize("kind", ["box", "disc"])
def test_joint_estimate_recovers_a_non_gaussian_psf_the_response_gains_and_offsets(truth: dict, kind: str) -> None:
    torch.set_num_threads(1)
    psf = _psf(kind)
    y = degrade(truth["x"], psf, 4, 1)
    est = estimate_scene(y, truth["z"], 4)
    assert est.phase == 1 and est.kernel_source == "joint" and est.kernel.shape == (13, 13)
    assert est.kernel.min() >= 0 and est.kernel.sum() == pytest.approx(1.0)
    assert np.abs(est.kernel - psf.numpy()).sum() < 0.06
    assert est.response.min() >= 0
    assert est.response.sum(axis=1) / truth["r"].sum(axis=1) == pytest.approx([1, 1, 1], rel=0.02)
    assert est.offsets == pytest.approx(OFFSETS, abs=0.002)
    assert np.linalg.norm(est.response - truth["r"]) / np.linalg.norm(truth["r"]) < 0.15
    x = truth["x"]
    z_pred = torch.einsum("bc,chw->bhw", torch.from_numpy(est.response), x)
    z_pred = z_pred + torch.from_numpy(est.offsets)[:, None, None]
    assert float((z_pred - truth["z"]).norm() / truth["z"].norm()) < 1e-3
    assert est.residual_db < -60 and len(est.residual_db_per_band) == 3
    assert est.history_db[-1] <= est.history_db[0]  # the alternation improved on the Gaussian start


def test_joint_estimate_with_noise_and_a_given_response_shape(truth: dict) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    psf = _psf("disc")
    y = degrade(truth["x"], psf, 4, 1)
    y = y + 0.003 * torch.randn(y.shape, generator=g, dtype=torch.float64)
    z = truth["z"] + 0.003 * torch.randn(truth["z"].shape, generator=g, dtype=torch.float64)
    est = estimate_scene(y, z, 4)
    assert est.phase == 1
    assert np.abs(est.kernel - psf.numpy()).sum() < 0.25
    assert est.residual_db < -40
    # a given response shape: only a gain (and an offset) per band is fitted
    given = estimate_scene(y, z, 4, response=truth["r_shape"], response_source="nikon")
    assert given.response_gain == pytest.approx(list(GAINS), rel=0.02)
    assert given.offsets == pytest.approx(OFFSETS, abs=0.003)


def test_too_few_pixels_to_estimate_is_a_clear_error(truth: dict) -> None:
    x = truth["x"][:, :32, :32]
    y = degrade(x, _psf("box"), 4, 1)  # 8x8 = 64 LR pixels for 31 bands + a 13x13 PSF
    with pytest.raises(InputError, match="too few to estimate a response of 31 bands"):
        estimate_degradation(y, truth["z"][:, :32, :32], 4, 1, kernel_size=13)


def test_the_regression_base_takes_an_estimated_psf_of_any_shape() -> None:
    """fit-scene gives the network's base its estimated PSF (ModelConfig.blur_kernel): the base's S(Z) is then
    exactly the degradation by that kernel, and the config round-trips through a checkpoint's dict."""
    from csakd.models import DTSNet, preset_config
    from csakd.models.config import ModelConfig

    k = _psf("box")[3:10, 3:10].contiguous()
    k = k / k.sum()
    cfg = preset_config("lite", bands=8, msi_bands=3, scale=4, residual_phase=2, blur_size=7, blur_kernel=k.tolist())
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    net = DTSNet(cfg)
    assert net.detail_base is not None
    z = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(net.detail_base.degrade(z)[0].double(), degrade(z[0].double(), k, 4, 2), atol=1e-6)
    with pytest.raises(InputError, match="blur_kernel"):
        preset_config("lite", bands=8, msi_bands=3, scale=4, blur_size=9, blur_kernel=k.tolist())
