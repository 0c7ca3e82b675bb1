"""``feedback``: the network reads its base's disagreement with the LR-HSI, ``r = Y - S(base)``.

Checked against an independent computation (the degradation's own blur and decimation), the start at the base,
the classical back-projection step it can represent, tiling and the receptive-field bound, and bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csakd.degradation import Degradation, DegradationConfig
from csakd.degradation.spatial import upsample_in_phase
from csakd.errors import InputError
from csakd.inference.tiled import fuse_tiled, plan_tiles, receptive_field
from csakd.models import DTSNet, ModelConfig, create_model
from csakd.models.dts import FEEDBACK_GAIN
from tests.test_tiled import _needed_overlap, smooth_pair

pytestmark = pytest.mark.usefixtures("one_thread")

BANDS, MSI_BANDS, SCALE = 6, 3, 4


def feedback_model(*, feedback: bool = True, blocks=(0, 1, 1, 1), **kw) -> DTSNet:
    return create_model("lite", bands=BANDS, msi_bands=MSI_BANDS, scale=SCALE, nf=8, gc=4, blocks=blocks,
                        residual="regression", feedback=feedback, **kw).eval()


def gaussian_degradation() -> Degradation:
    """The blur and decimation the networks' base assumes (9 taps, sigma 2, phase 0, reflect padding)."""
    from csakd.degradation import SpectralResponse

    response = SpectralResponse.from_matrix(np.full((MSI_BANDS, BANDS), 1.0 / BANDS))
    return Degradation(DegradationConfig(scale=SCALE, blur_size=9, blur_sigma=2.0), response)


def test_an_untrained_feedback_network_is_its_base() -> None:
    lr, msi = smooth_pair(BANDS, MSI_BANDS, 10, 9, SCALE)
    torch.manual_seed(0)
    with_feedback, without = feedback_model(), feedback_model(feedback=False)
    with torch.no_grad():
        out = with_feedback(lr, msi)[0]
        base = without(lr, msi)[0]
    assert torch.allclose(out, base, atol=1e-6)
    assert torch.allclose(with_feedback.base_image(lr, msi), base, atol=1e-6)
    assert sum(p.numel() for p in with_feedback.parameters()) > sum(p.numel() for p in without.parameters())


def test_the_streams_read_the_lr_residual_of_the_base() -> None:
    lr, msi = smooth_pair(BANDS, MSI_BANDS, 10, 9, SCALE)
    model = feedback_model()
    seen: dict[str, torch.Tensor] = {}
    model.joint_lr.register_forward_pre_hook(lambda _m, args: seen.__setitem__("lr", args[0]))
    model.joint_hr.register_forward_pre_hook(lambda _m, args: seen.__setitem__("hr", args[0]))
    with torch.no_grad():
        base = model(lr, msi)[0]  # untrained: the output is the base
    expected = lr - gaussian_degradation().degrade_spatial(base)  # independent blur and decimation
    got_lr = seen["lr"][:, -BANDS:] / FEEDBACK_GAIN
    got_hr = seen["hr"][:, -BANDS:] / FEEDBACK_GAIN
    assert float(expected.abs().max()) > 1e-3, "the base must disagree with the LR-HSI for the test to bite"
    assert torch.allclose(got_lr, expected, atol=1e-5)
    assert torch.allclose(got_hr, upsample_in_phase(expected, SCALE, 0), atol=1e-5)


def test_the_feedback_head_can_be_a_back_projection_step() -> None:
    # head at zero, the feedback convolution the identity / gain: out = base + U(Y - S(base)), one classical
    # iterative back-projection step, which brings the output closer to the LR observation
    lr, msi = smooth_pair(BANDS, MSI_BANDS, 12, 12, SCALE, seed=3)
    model = feedback_model()
    assert model.feedback_head is not None
    with torch.no_grad():
        model.feedback_head.weight.copy_(torch.eye(BANDS).reshape(BANDS, BANDS, 1, 1) / FEEDBACK_GAIN)
        out = model(lr, msi)[0]
    base = model.base_image(lr, msi)
    deg = gaussian_degradation()
    expected = base + upsample_in_phase(lr - deg.degrade_spatial(base), SCALE, 0)
    assert torch.allclose(out, expected, atol=1e-5)
    before = float((lr - deg.degrade_spatial(base)).pow(2).mean())
    after = float((lr - deg.degrade_spatial(out)).pow(2).mean())
    assert after < 0.7 * before


def _randomised(model: DTSNet, std: float = 0.1) -> DTSNet:
    with torch.no_grad():
        for p in [*model.head.parameters(), *model.feedback_head.parameters()]:  # type: ignore[union-attr]
            p.normal_(0.0, std)
    return model


def test_tiled_fusion_equals_the_whole_pass_with_feedback() -> None:
    model = _randomised(feedback_model(blocks=(0, 1, 0, 0), fusion="csa"))
    lr, msi = smooth_pair(BANDS, MSI_BANDS, 80, 76, SCALE)
    rf = receptive_field(model.config)
    plan = plan_tiles(320, 304, tile=64, overlap=rf, scale=SCALE)
    assert plan.rows.window < 320 and plan.cols.window < 304, "windows must be smaller than the image"
    with torch.no_grad():
        whole = model(lr, msi)[0][0].numpy()
    tiled = fuse_tiled(model, lr, msi, tile=64)
    assert tiled is not None
    assert np.abs(tiled - whole).max() <= 1e-4


@pytest.mark.parametrize("settings", [{"blocks": (0, 1, 0, 0)},
                                      {"blocks": (2, 0, 0, 0), "apply_joint_hr_blocks": True}])
def test_the_receptive_field_bounds_the_reach_of_feedback(settings: dict) -> None:
    model = _randomised(feedback_model(fusion="csa", attn_dim=16, **settings)).double()
    plain = feedback_model(feedback=False, fusion="csa", **settings)
    rf = receptive_field(model.config)
    assert rf > receptive_field(plain.config), "feedback reads the base around its LR samples: a wider reach"
    needed = _needed_overlap(model, 2 * rf // SCALE + 4, tol=1e-9)
    assert needed <= rf, f"receptive_field {rf}, measured {needed}"


def test_feedback_needs_the_regression_base() -> None:
    with pytest.raises(InputError, match="feedback needs the regression residual base"):
        ModelConfig(residual="bicubic", feedback=True)
    with pytest.raises(InputError, match="feedback=1: expected true or false"):
        ModelConfig(feedback=1)  # type: ignore[arg-type]


def test_a_few_steps_learn_from_the_feedback() -> None:
    # on one smooth pair, 40 Adam steps on the pixel loss bring the feedback network below its base
    g = torch.Generator().manual_seed(5)
    truth = torch.nn.functional.avg_pool2d(torch.rand(1, BANDS, 12 * SCALE + 8, 12 * SCALE + 8, generator=g), 9,
                                           stride=1) * 2 - 1
    deg = gaussian_degradation()
    lr = deg.degrade_spatial(truth)
    msi = torch.einsum("mc,bchw->bmhw", torch.full((MSI_BANDS, BANDS), 1.0 / BANDS), truth)
    torch.manual_seed(0)
    model = feedback_model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    base_error = float((model.base_image(lr, msi) - truth).abs().mean())
    for _ in range(40):
        opt.zero_grad()
        loss = (model(lr, msi)[0] - truth).abs().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        error = float((model(lr, msi)[0] - truth).abs().mean())
    assert error < 0.9 * base_error


def test_macs_count_the_feedback_layers() -> None:
    from csakd.models import count_macs

    cfg = feedback_model().config
    plain = feedback_model(feedback=False).config
    c, nf = BANDS, cfg.nf
    expected = 64 * 64 * (9 * c * nf + c * c) + 16 * 16 * 9 * c * nf  # joint-HR, 1x1, joint-LR
    assert count_macs(cfg, 64) - count_macs(plain, 64) == expected
