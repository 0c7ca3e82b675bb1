"""Tests of csakd.losses: independent numpy computations, gradchecks, hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csakd.errors import InputError
from csakd.losses import (
    LossWeights,
    beba_loss,
    feature_distillation_loss,
    response_distillation_loss,
    sam_loss,
    student_loss,
    teacher_loss,
)


def _images(
    seed: int = 0, shape: tuple[int, ...] = (2, 4, 5, 6), spread: float = 1.0
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    pred = target + spread * torch.randn(shape, generator=g, dtype=torch.float64)
    return pred, target


def _smooth_l1(d: np.ndarray) -> float:
    a = np.abs(d)
    return float(np.where(a < 1, 0.5 * d**2, a - 0.5).mean())


def _np_sam_loss(p: np.ndarray, t: np.ndarray) -> float:
    cos = (p * t).sum(1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1))
    return float(1 - cos.mean())


def _np_beba(p: np.ndarray, t: np.ndarray) -> float:
    d = p - t
    e = 0.5 * d**2 + np.maximum(np.abs(d) - 1, 0)  # the reference's term less its constant -0.5
    return float((e.mean(axis=(2, 3)) / ((t**2).mean(axis=(2, 3)) + 0.1)).mean())


class TestSAMLoss:
    def test_matches_numpy(self) -> None:
        pred, target = _images()
        assert sam_loss(pred, target).item() == pytest.approx(
            _np_sam_loss(pred.numpy(), target.numpy()), abs=1e-12
        )

    def test_zero_for_scaled_spectra_and_two_for_opposite(self) -> None:
        _, target = _images(1)
        assert sam_loss(target * 3.0, target).item() == pytest.approx(0.0, abs=1e-12)
        assert sam_loss(-target, target).item() == pytest.approx(2.0, abs=1e-12)

    def test_gradcheck(self) -> None:
        pred, target = _images(2, (1, 3, 2, 3))
        assert torch.autograd.gradcheck(lambda p: sam_loss(p, target), (pred.requires_grad_(),))


class TestBEBALoss:
    def test_matches_numpy(self) -> None:
        pred, target = _images(3)
        assert beba_loss(pred, target).item() == pytest.approx(
            _np_beba(pred.numpy(), target.numpy()), abs=1e-12
        )

    def test_zero_at_perfect_prediction(self) -> None:
        _, target = _images(4)
        torch.testing.assert_close(beba_loss(target, target), torch.zeros((), dtype=target.dtype))
        assert beba_loss(target + 0.01, target).item() > 0
        pred = target.clone().requires_grad_()
        beba_loss(pred, target).backward()
        assert pred.grad is not None and pred.grad.abs().max().item() == 0.0

    def test_relu_branch_only_beyond_one(self) -> None:
        target = torch.zeros(1, 1, 1, 4, dtype=torch.float64)
        d = torch.tensor([0.5, -0.9, 1.5, -2.0], dtype=torch.float64).view(1, 1, 1, 4)
        pred = (target + d).requires_grad_()
        beba_loss(pred, target).backward()
        # d/dd of e = d + sign(d) [|d| > 1]; the mean over 4 pixels and the energy 0.1 scale it by 1/(4 * 0.1)
        expected = torch.tensor([0.5, -0.9, 1.5 + 1.0, -2.0 - 1.0], dtype=torch.float64) / 0.4
        assert pred.grad is not None
        torch.testing.assert_close(pred.grad.view(-1), expected)

    def test_low_energy_bands_weigh_more(self) -> None:
        target = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
        target[:, 1] = 0.9  # band 1 bright, band 0 dark
        err = torch.zeros_like(target)
        dark = beba_loss(target + err.index_fill(1, torch.tensor([0]), 0.3), target)
        bright = beba_loss(target + err.index_fill(1, torch.tensor([1]), 0.3), target)
        assert dark.item() > bright.item()

    def test_gradcheck(self) -> None:
        pred, target = _images(5, (1, 3, 2, 3), spread=1.5)  # covers both branches
        assert (pred - target).abs().gt(1).any() and (pred - target).abs().lt(1).any()
        assert torch.autograd.gradcheck(lambda p: beba_loss(p, target), (pred.requires_grad_(),))


class TestDistillation:
    def test_feature_kd_matches_numpy_and_detaches_teacher(self) -> None:
        fs, ft = _images(6, (2, 3, 4, 4), spread=2.0)
        fs.requires_grad_()
        ft.requires_grad_()
        loss = feature_distillation_loss(fs, ft)
        x, y = fs.detach().numpy(), 1 / (1 + np.exp(-ft.detach().numpy()))
        ref = np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))
        assert loss.item() == pytest.approx(ref, abs=1e-12)
        loss.backward()
        assert ft.grad is None and fs.grad is not None
        # minimal when the student's features equal the teacher's (gradient sigmoid(F_S) - sigmoid(F_T) = 0)
        same = ft.detach().clone().requires_grad_()
        feature_distillation_loss(same, ft).backward()
        assert same.grad is not None and same.grad.abs().max().item() < 1e-15

    def test_response_kd_matches_numpy_and_detaches_teacher(self) -> None:
        s, t = _images(7, spread=1.5)
        t.requires_grad_()
        loss = response_distillation_loss(s, t)
        assert loss.item() == pytest.approx(_smooth_l1(s.numpy() - t.detach().numpy()), abs=1e-12)
        assert not loss.requires_grad  # nothing to train: s has no grad and T is detached

    def test_gradcheck(self) -> None:
        fs, ft = _images(8, (1, 2, 2, 2), spread=2.0)
        assert torch.autograd.gradcheck(lambda f: feature_distillation_loss(f, ft), (fs.requires_grad_(),))
        s, t = _images(9, (1, 2, 2, 2), spread=0.7)
        assert torch.autograd.gradcheck(lambda x: response_distillation_loss(x, t), (s.requires_grad_(),))

    def test_shape_errors(self) -> None:
        with pytest.raises(InputError, match=r"same shape, got \(1, 8, 4, 4\) and \(1, 6, 4, 4\)"):
            feature_distillation_loss(torch.rand(1, 8, 4, 4), torch.rand(1, 6, 4, 4))
        with pytest.raises(InputError, match="student output and teacher output must have the same shape"):
            response_distillation_loss(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))


class TestCombinedLosses:
    def test_teacher_loss_is_the_weighted_sum(self) -> None:
        out, target = _images(10)
        r = teacher_loss(out, target, LossWeights())
        p, t = out.numpy(), target.numpy()
        parts = {"l_pix": _smooth_l1(p - t), "l_sam": _np_sam_loss(p, t), "l_beba": _np_beba(p, t)}
        assert set(r) == {"loss", *parts}
        for k, v in parts.items():
            assert r[k].item() == pytest.approx(v, abs=1e-12)
        assert r["loss"].item() == pytest.approx(
            parts["l_pix"] + 0.1 * parts["l_sam"] + 0.1 * parts["l_beba"]
        )

    def test_student_loss_is_the_weighted_sum(self) -> None:
        out, target = _images(11)
        t_out, _ = _images(12)
        feat, t_feat = _images(13, (2, 8, 5, 6), spread=2.0)
        w = LossWeights(pixel=1.0, sam=0.2, beba=0.3, response_kd=0.4, feature_kd=0.5)
        r = student_loss(out, feat, target, t_out, t_feat, w)
        assert set(r) == {"loss", "l_pix", "l_sam", "l_beba", "l_kd_resp", "l_kd_feat"}
        torch.testing.assert_close(r["l_kd_resp"], response_distillation_loss(out, t_out))
        torch.testing.assert_close(r["l_kd_feat"], feature_distillation_loss(feat, t_feat))
        expected = (
            r["l_pix"] + 0.2 * r["l_sam"] + 0.3 * r["l_beba"] + 0.4 * r["l_kd_resp"] + 0.5 * r["l_kd_feat"]
        )
        torch.testing.assert_close(r["loss"], expected)

    def test_student_without_teacher_skips_distillation(self) -> None:
        out, target = _images(14)
        feat = torch.rand(2, 8, 5, 6, dtype=torch.float64)
        r = student_loss(out, feat, target, None, None, LossWeights())
        assert set(r) == {"loss", "l_pix", "l_sam", "l_beba"}
        torch.testing.assert_close(r["loss"], teacher_loss(out, target)["loss"])

    def test_zero_weight_skips_term(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import csakd.losses as losses

        def boom(*args: object, **kwargs: object) -> torch.Tensor:
            raise AssertionError("a term with weight 0 was computed")

        monkeypatch.setattr(losses, "beba_loss", boom)
        monkeypatch.setattr(losses, "feature_distillation_loss", boom)
        out, target = _images(15)
        feat, t_feat = _images(16, (2, 8, 5, 6))
        w = LossWeights(beba=0.0, feature_kd=0.0)
        r = losses.student_loss(out, feat, target, target, t_feat, w)
        assert set(r) == {"loss", "l_pix", "l_sam", "l_kd_resp"}

    def test_all_zero_weights_still_backpropagate(self) -> None:
        out, target = _images(17)
        out.requires_grad_()
        w = LossWeights(pixel=0.0, sam=0.0, beba=0.0, response_kd=0.0, feature_kd=0.0)
        r = teacher_loss(out, target, w)
        assert set(r) == {"loss"} and r["loss"].item() == 0.0
        r["loss"].backward()
        assert out.grad is not None

    def test_perfect_teacher_has_only_the_beba_constant(self) -> None:
        _, target = _images(18)
        r = teacher_loss(target, target)
        assert r["l_pix"].item() == 0.0 and r["l_sam"].item() == pytest.approx(0.0, abs=1e-12)
        torch.testing.assert_close(r["loss"], 0.1 * beba_loss(target, target))

    def test_gradcheck_student_loss(self) -> None:
        out, target = _images(19, (1, 3, 2, 2))
        t_out, _ = _images(20, (1, 3, 2, 2), spread=0.5)
        feat, t_feat = _images(21, (1, 4, 2, 2))

        def total(o: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
            return student_loss(o, f, target, t_out, t_feat, LossWeights())["loss"]

        assert torch.autograd.gradcheck(total, (out.requires_grad_(), feat.requires_grad_()))

    @pytest.mark.parametrize(
        ("kwargs", "match"), [({"sam": -0.1}, "sam must be >= 0"), ({"pixel": float("nan")}, "finite")]
    )
    def test_weight_errors(self, kwargs: dict[str, float], match: str) -> None:
        with pytest.raises(InputError, match=match):
            LossWeights(**kwargs)

    def test_shape_mismatch(self) -> None:
        with pytest.raises(InputError, match=r"teacher output and target must have the same shape"):
            teacher_loss(torch.rand(1, 3, 4, 4), torch.rand(1, 4, 4, 4))
