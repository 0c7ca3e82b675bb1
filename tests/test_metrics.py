"""Tests of csakd.metrics against scikit-image, numpy by hand, and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from csakd.errors import InputError
from csakd.metrics import compute_metrics, ergas, metrics_to_rows, psnr, rmse, sam, ssim, summarize


def _pair(seed: int = 0, shape: tuple[int, ...] = (2, 5, 16, 13)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g) * 0.8 + 0.1
    pred = (target + 0.05 * torch.randn(shape, generator=g)).clamp(0, 1)
    return pred, target


class TestPSNR:
    def test_band_peak_matches_skimage(self) -> None:
        pred, target = _pair()
        got = psnr(pred, target)
        p, t = pred.double().numpy(), target.double().numpy()
        for b in range(2):
            per_band = [peak_signal_noise_ratio(t[b, c], p[b, c], data_range=t[b, c].max()) for c in range(5)]
            assert got[b].item() == pytest.approx(np.mean(per_band), abs=1e-9)
        assert got.shape == (2,) and got.dtype == torch.float64

    def test_fixed_peak_matches_skimage(self) -> None:
        pred, target = _pair(1)
        got = psnr(pred, target, peak=1.0)
        for b in range(2):
            ref = peak_signal_noise_ratio(
                target[b].double().numpy(), pred[b].double().numpy(), data_range=1.0
            )
            assert got[b].item() == pytest.approx(ref, abs=1e-9)
        # a peak of 2 adds 20 log10(2) dB
        torch.testing.assert_close(psnr(pred, target, peak=2.0), got + 20 * math.log10(2.0))

    def test_hand_value_and_identical_images(self) -> None:
        t = torch.full((1, 2, 4, 4), 0.5)
        # error 0.1 everywhere, peak 0.5 per band: 10 log10(0.25 / 0.01) = 13.979 dB
        assert psnr(t + 0.1, t).item() == pytest.approx(10 * math.log10(25.0), abs=1e-5)
        assert psnr(t, t).item() == math.inf
        assert psnr(t, t, peak=1.0).item() == math.inf

    def test_3d_input_is_one_image(self) -> None:
        pred, target = _pair()
        torch.testing.assert_close(psnr(pred[1], target[1]), psnr(pred, target)[1:])

    def test_errors(self) -> None:
        pred, target = _pair()
        with pytest.raises(InputError, match=r"same shape, got \(2, 5, 16, 13\) and \(2, 5, 16, 12\)"):
            psnr(pred, target[..., :12])
        with pytest.raises(InputError, match="peak must be 'band' or a positive number"):
            psnr(pred, target, peak="max")  # type: ignore[arg-type]
        with pytest.raises(InputError, match="peak must be"):
            psnr(pred, target, peak=0.0)
        with pytest.raises(InputError, match=r"\(B, C, H, W\) or \(C, H, W\)"):
            psnr(pred[0, 0], target[0, 0])


class TestSAM:
    def test_matches_numpy(self) -> None:
        pred, target = _pair(2)
        p = pred.double().numpy().transpose(0, 2, 3, 1).reshape(2, -1, 5)
        t = target.double().numpy().transpose(0, 2, 3, 1).reshape(2, -1, 5)
        cos = (p * t).sum(-1) / (np.linalg.norm(p, axis=-1) * np.linalg.norm(t, axis=-1))
        ref = np.degrees(np.arccos(np.clip(cos, -1, 1))).mean(axis=1)
        np.testing.assert_allclose(sam(pred, target).numpy(), ref, atol=1e-10)

    def test_scaled_spectrum_has_zero_angle(self) -> None:
        _, target = _pair(3)
        scale = torch.rand(2, 1, 16, 13) * 3 + 0.1  # a different positive factor per pixel
        assert sam(target * scale, target).abs().max().item() < 1e-5

    def test_orthogonal_and_opposite_spectra(self) -> None:
        a = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
        b = torch.tensor([0.0, 2.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
        assert sam(a, b).item() == pytest.approx(90.0)
        assert sam(-a, a).item() == pytest.approx(180.0)
        # 45 degrees in one pixel, 0 in the other three -> mean 11.25
        c = a.clone()
        c[0, 1, 0, 0] = 1.0
        assert sam(c, a).item() == pytest.approx(45.0 / 4)

    def test_zero_spectrum_is_guarded(self) -> None:
        t = torch.rand(1, 4, 3, 3) + 0.1
        p = t.clone()
        p[..., 0, 0] = 0.0
        out = sam(p, t)
        assert torch.isfinite(out).all()
        assert out.item() == pytest.approx(90.0 / 9, abs=1e-4)


class TestERGASandRMSE:
    def test_ergas_matches_numpy(self) -> None:
        pred, target = _pair(4)
        p, t = pred.double().numpy(), target.double().numpy()
        mse_b = ((p - t) ** 2).mean(axis=(2, 3))
        ref = 100 / 4 * np.sqrt((mse_b / t.mean(axis=(2, 3)) ** 2).mean(axis=1))
        np.testing.assert_allclose(ergas(pred, target, 4).numpy(), ref, rtol=1e-12)
        np.testing.assert_allclose(ergas(pred, target, 8).numpy(), ref / 2, rtol=1e-12)

    def test_ergas_hand_value(self) -> None:
        t = torch.full((1, 1, 4, 4), 0.5)
        # MSE 0.01, mean 0.5: 100/4 * sqrt(0.01 / 0.25) = 5
        assert ergas(t + 0.1, t, 4).item() == pytest.approx(5.0, abs=1e-5)
        assert ergas(t, t, 4).item() == 0.0
        with pytest.raises(InputError, match="resolution ratio scale"):
            ergas(t, t, 0)

    def test_rmse_matches_numpy_and_units(self) -> None:
        pred, target = _pair(5)
        ref = np.sqrt(((pred.double().numpy() - target.double().numpy()) ** 2).mean(axis=(1, 2, 3)))
        np.testing.assert_allclose(rmse(pred, target).numpy(), ref, rtol=1e-12)
        np.testing.assert_allclose(rmse(pred, target, units=1000.0).numpy(), ref * 1000, rtol=1e-12)
        with pytest.raises(InputError, match="units must be a positive number"):
            rmse(pred, target, units=-1.0)


class TestSSIM:
    @pytest.mark.parametrize("data_range", [1.0, 0.5])
    def test_matches_skimage(self, data_range: float) -> None:
        pred, target = _pair(6, (2, 3, 24, 19))
        got = ssim(pred, target, data_range=data_range)
        for b in range(2):
            ref = structural_similarity(
                pred[b].double().numpy(),
                target[b].double().numpy(),
                channel_axis=0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=data_range,
            )
            assert got[b].item() == pytest.approx(ref, abs=1e-9)

    def test_identical_and_symmetric(self) -> None:
        pred, target = _pair(7, (1, 2, 12, 12))
        assert ssim(target, target).item() == pytest.approx(1.0, abs=1e-12)
        torch.testing.assert_close(ssim(pred, target), ssim(target, pred))

    def test_too_small(self) -> None:
        with pytest.raises(InputError, match="at least 11x11 pixels, got 10x12"):
            ssim(torch.rand(1, 1, 10, 12), torch.rand(1, 1, 10, 12))


class TestComputeAndSummarize:
    def test_compute_metrics_keys_and_values(self) -> None:
        pred, target = _pair(8, (3, 4, 16, 16))
        m = compute_metrics(pred, target, scale=4, units=10.0)
        assert list(m) == ["psnr", "psnr_fixed", "sam", "ergas", "rmse", "ssim"]
        assert all(v.shape == (3,) for v in m.values())
        torch.testing.assert_close(m["psnr_fixed"], psnr(pred, target, peak=1.0))
        torch.testing.assert_close(m["rmse"], rmse(pred, target) * 10.0)

    def test_summarize_means_rows(self) -> None:
        pred, target = _pair(9, (3, 4, 16, 16))
        m = compute_metrics(pred, target, scale=4)
        rows = metrics_to_rows(m)
        assert len(rows) == 3 and isinstance(rows[0]["sam"], float)
        summary = summarize(rows)
        for k, v in m.items():
            assert summary[k] == pytest.approx(float(v.mean()), rel=1e-12)

    def test_summarize_inf_and_errors(self) -> None:
        assert summarize([{"psnr": math.inf}, {"psnr": 30.0}])["psnr"] == math.inf
        with pytest.raises(InputError, match="at least one image"):
            summarize([])
        with pytest.raises(InputError, match=r"image 1 has metrics \['psnr'\], expected \['psnr', 'sam'\]"):
            summarize([{"psnr": 1.0, "sam": 2.0}, {"psnr": 1.0}])
