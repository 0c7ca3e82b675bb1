"""fit-scene's denoised base (csakd.fit.base): the noise estimate, the noise-whitened subspace, the ModelConfig
fields that carry them (defaults keep today's networks) and their use in a network, a checkpoint and fit-scene.
Tiny sizes, one CPU thread."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from csakd.checkpoint import load_checkpoint, model_payload, save_payload
from csakd.data import Cube, write_cube
from csakd.degradation.estimate import degrade
from csakd.errors import InputError
from csakd.fit import FitOptions, fit_scene
from csakd.fit.base import base_settings, hsi_subspace, noise_sigma
from csakd.inference.tiled import fuse_tiled_arrays
from csakd.models import DTSNet, ModelConfig
from csakd.models.detail import LOCAL_EPS
from csakd.normalization import Normalization

TINY = {"nf": 8, "gc": 4, "blocks": (0, 1, 1, 1), "heads": 2, "attn_dim": 8, "head": "compact"}


def _smooth(bands: int, side: int, rank: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth cube (bands, side, side) of ``rank`` positive endmembers mixed by smooth abundances, and the
    endmembers (bands, rank)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linspace(0, 1, side, dtype=torch.float64)
    maps = []
    for r in range(rank):
        fx, fy, ph = 1 + r, 2 + (r % 3), float(torch.rand(1, generator=g)) * 6.0
        maps.append(0.5 + 0.4 * torch.sin(2 * np.pi * fx * u[:, None] + ph) * torch.cos(2 * np.pi * fy * u[None]))
    abund = torch.stack(maps)
    ends = 0.2 + 0.8 * torch.rand(bands, rank, generator=g, dtype=torch.float64)
    cube = torch.einsum("br,rhw->bhw", ends, abund) / rank
    return cube, ends


def test_noise_sigma_recovers_white_noise_on_a_smooth_image() -> None:
    cube, _ = _smooth(3, 96, 2)
    g = torch.Generator().manual_seed(1)
    for sigma in (0.002, 0.01):
        noisy = cube + sigma * torch.randn(cube.shape, generator=g, dtype=torch.float64)
        est = noise_sigma(noisy)
        assert est.shape == (3,)
        assert np.all(np.abs(est / sigma - 1) < 0.2), est
    assert np.all(noise_sigma(cube) < 1e-3)
    assert np.all(noise_sigma(cube[:, :2, :2]) == 0)  # too small for the filter: no noise measured


def test_the_subspace_keeps_the_signal_and_removes_noise_outside_it() -> None:
    cube, _ = _smooth(20, 48, 3)
    g = torch.Generator().manual_seed(2)
    sigma = 0.003
    noisy = cube + sigma * torch.randn(cube.shape, generator=g, dtype=torch.float64)
    sub = hsi_subspace(noisy, noise_sigma(noisy))
    assert sub is not None and sub["dimension"] == 3
    assert sub["analysis"].shape == (3, 20) and sub["synthesis"].shape == (3, 20)

    def project(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(20, -1) - sub["mean"][:, None]
        return (sub["synthesis"].T @ (sub["analysis"] @ flat) + sub["mean"][:, None]).reshape(x.shape)

    # the noise-free cube is (nearly) unchanged, the noisy one moves towards it
    assert float((project(cube) - cube).square().mean().sqrt()) < 0.2 * sigma
    before = float((noisy - cube).square().mean().sqrt())
    after = float((project(noisy) - cube).square().mean().sqrt())
    assert after < 0.6 * before
    # no noise measured, or every direction above the noise: no projection
    assert hsi_subspace(cube, np.zeros(20)) is None
    assert hsi_subspace(noisy[:3], noise_sigma(noisy[:3])) is None


def test_model_config_subspace_fields_default_to_none_and_round_trip() -> None:
    cfg = ModelConfig(bands=5, msi_bands=3, scale=2, **TINY)
    for key in ("detail_eps", "output_mean", "output_analysis", "output_synthesis"):
        assert getattr(cfg, key) is None
    assert DTSNet(cfg).projection is None
    eye = [[1.0 if i == j else 0.0 for j in range(5)] for i in range(2)]
    full = replace(cfg, detail_eps=1e-4, output_mean=[0.0] * 5, output_analysis=eye, output_synthesis=eye)
    again = ModelConfig.from_dict(full.to_dict())
    assert again == full and isinstance(again.output_analysis, tuple)
    with pytest.raises(InputError, match="all three or none"):
        replace(cfg, output_mean=[0.0] * 5)
    with pytest.raises(InputError, match="5 values"):
        replace(cfg, output_mean=[0.0] * 4, output_analysis=eye, output_synthesis=eye)
    with pytest.raises(InputError, match="rows of 5"):
        replace(cfg, output_mean=[0.0] * 5, output_analysis=[[1.0] * 4], output_synthesis=[[1.0] * 4])
    with pytest.raises(InputError, match="detail_eps"):
        replace(cfg, detail_eps=-1.0)


def test_default_eps_is_todays_and_the_projection_confines_the_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(bands=6, msi_bands=3, scale=2, **TINY)
    lr, msi = torch.rand(1, 6, 12, 12) * 2 - 1, torch.rand(1, 3, 24, 24) * 2 - 1
    net = DTSNet(cfg).eval()
    same = DTSNet(replace(cfg, detail_eps=LOCAL_EPS)).eval()
    same.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.equal(net(lr, msi)[0], same(lr, msi)[0])
    # a 2-D orthonormal subspace: the output's centred spectra lie in it
    q, _ = torch.linalg.qr(torch.randn(6, 2, dtype=torch.float64))
    mean = torch.rand(6, dtype=torch.float64) - 0.5
    sub_cfg = replace(cfg, output_mean=mean.tolist(), output_analysis=q.T.tolist(), output_synthesis=q.T.tolist())
    proj = DTSNet(sub_cfg).eval()
    proj.load_state_dict(net.state_dict())  # the projection adds no weights: the state dict is the same
    assert set(proj.state_dict()) == set(net.state_dict())
    with torch.no_grad():
        out = proj(lr, msi)[0].double()
    centred = out[0].reshape(6, -1) - mean[:, None]
    assert float((centred - q @ (q.T @ centred)).abs().max()) < 1e-5
    # through a checkpoint and a tiled fusion, unchanged
    path = tmp_path / "m.pt"
    save_payload(path, model_payload(proj, role="student", normalization=Normalization("fixed", 1.0, 1.0)))
    loaded = load_checkpoint(path)
    assert loaded.model.config == sub_cfg
    y, z = (lr[0].numpy() + 1) / 2, (msi[0].numpy() + 1) / 2
    whole = fuse_tiled_arrays(loaded, y, z, tile=0, device="cpu")
    tiled = fuse_tiled_arrays(loaded, y, z, tile=16, device="cpu")
    assert whole is not None and tiled is not None
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    np.testing.assert_allclose(whole, (out[0].numpy() + 1) / 2, atol=1e-5)


def _noisy_pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cube, _ = _smooth(12, 64, 3, seed)
    g = torch.Generator().manual_seed(seed + 10)
    response = torch.rand(3, 12, generator=g, dtype=torch.float64)
    response = response / response.sum(dim=1, keepdim=True)
    msi = torch.einsum("cb,bhw->chw", response, cube)
    lr = degrade(cube, torch.full((3, 3), 1 / 9, dtype=torch.float64), 2, 0)
    lr = lr + 0.004 * torch.randn(lr.shape, generator=g, dtype=torch.float64)
    msi = msi + 0.004 * torch.randn(msi.shape, generator=g, dtype=torch.float64)
    return cube, lr, msi


def test_base_settings_on_a_noisy_pair() -> None:
    _, lr, msi = _noisy_pair()
    s = base_settings(lr, msi)
    assert s.report["kind"] == "denoised" and s.report["subspace_dimension"] == 3
    # the ridge is the MSI's noise variance on the network's [-1, 1] scale
    assert 0.5 * 4 * 0.004**2 < s.overrides["detail_eps"] < 2 * 4 * 0.004**2
    cfg = ModelConfig(bands=12, msi_bands=3, scale=2, **TINY, **s.overrides)
    assert len(cfg.output_analysis or ()) == 3
    # noise-free: the ridge stays today's
    clean = base_settings(lr * 0 + lr.mean(), msi * 0 + msi.mean())
    assert clean.overrides == {"detail_eps": LOCAL_EPS} and clean.report["subspace_dimension"] is None


def test_fit_scene_builds_the_denoised_base_by_default_and_plain_on_request(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    truth, lr, msi = _noisy_pair(1)
    write_cube(tmp_path / "lr.npz", Cube(lr.float().numpy()))
    write_cube(tmp_path / "msi.npy", Cube(msi.float().numpy()))
    errors = {}
    for base in ("denoised", "plain"):
        opts = FitOptions(base=base, steps=1, minutes=None, baselines=(), figures=False, device="cpu", threads=1,
                          holdout=0.0, model_overrides=dict(nf=8, gc=4, blocks=(0, 1, 1, 1)), overwrite=True)
        res = fit_scene(tmp_path / "lr.npz", tmp_path / "msi.npy", tmp_path / f"{base}.npy", tmp_path / base, opts)
        assert res.report["settings"]["base"]["kind"] == base
        cfg = load_checkpoint(res.report["outputs"]["base_checkpoint"]).model.config
        assert (cfg.output_analysis is not None) == (base == "denoised")
        assert (cfg.detail_eps is not None) == (base == "denoised")
        out = np.load(tmp_path / f"{base}.npy") / float(lr.max())
        errors[base] = float(np.sqrt(np.mean((out - truth.numpy() / float(lr.max())) ** 2)))
    assert errors["denoised"] < errors["plain"]
    with pytest.raises(InputError, match="base"):
        FitOptions(base="other").validate()
