"""The DTS networks: shapes, presets' counts, fusion variants, attention forms, reference checkpoints."""

from __future__ import annotations

import re

import pytest
import torch

from csakd.errors import CheckpointError, InputError
from csakd.models import (
    CLRB,
    DTSNet,
    ModelConfig,
    count_macs,
    count_params,
    create_model,
    infer_reference_config,
    load_reference_model,
    preset_config,
)
from csakd.models.config import FUSIONS
from csakd.models.fusion import ChannelCrossAttention
from tests.conftest import shared_path

TINY = {"bands": 12, "msi_bands": 3, "nf": 8, "gc": 4}


def pair(bands: int = 12, msi: int = 3, h: int = 6, scale: int = 4, batch: int = 2):
    return torch.randn(batch, bands, h, h), torch.randn(batch, msi, h * scale, h * scale)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("attention", ["reference", "paper", "normalized"])
def test_every_fusion_runs_forward_and_backward(fusion: str, attention: str) -> None:
    model = create_model("student", fusion=fusion, attention=attention, **TINY)
    lr, msi = pair()
    out, feat = model(lr, msi)
    assert out.shape == (2, 12, 24, 24)
    assert feat.shape == (2, 8, 24, 24)
    (out.square().mean() + feat.mean()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads), "every parameter the network holds takes part in the forward pass"


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_any_scale_and_band_count(scale: int) -> None:
    model = create_model("teacher", bands=7, msi_bands=5, scale=scale, nf=8, gc=4, blocks=(1, 1, 1, 1))
    out, _ = model(*pair(bands=7, msi=5, h=3, scale=scale))
    assert out.shape == (2, 7, 3 * scale, 3 * scale)


def test_paper_counts_at_172_bands() -> None:
    teacher = preset_config("teacher", paper=True)
    student = preset_config("student", paper=True)
    assert count_params(DTSNet(teacher)) == pytest.approx(26.8e6, rel=0.03)
    assert count_params(DTSNet(student)) == pytest.approx(7.44e6, rel=0.03)
    assert count_macs(student, 256) == pytest.approx(144.77e9, rel=0.10)
    assert count_macs(teacher, 256) == pytest.approx(941.77e9, rel=0.10)
    with_hr = preset_config("student", paper=True, apply_joint_hr_blocks=True)
    assert count_params(DTSNet(with_hr)) == pytest.approx(8.75e6, rel=0.03)
    assert count_macs(with_hr, 256) == pytest.approx(229.9e9, rel=0.10)


def test_student_hsi_stream_is_grouped_like_the_paper() -> None:
    cfg = preset_config("student")
    assert cfg.resolved_hsi_groups() == 43
    model = DTSNet(cfg)
    assert model.hsi.blocks[0].blocks[0].convs[0].weight.shape == (43, 2, 3, 3)
    assert model.joint_lr.blocks[0].blocks[0].convs[0].groups == 1
    # other widths: the largest divisor of gcd(nf, gc) not above nf / 2
    assert ModelConfig(nf=32, gc=16, hsi_groups=0).resolved_hsi_groups() == 16
    assert ModelConfig(nf=30, gc=12, hsi_groups=0).resolved_hsi_groups() == 6


def test_macs_scale_with_pixels() -> None:
    cfg = preset_config("student", **TINY)
    assert count_macs(cfg, 64) == pytest.approx(4 * count_macs(cfg, 32), rel=0.01)


def test_clrb_is_identity_when_last_conv_is_zero() -> None:
    block = CLRB(8, 4)
    torch.nn.init.zeros_(block.convs[-1].weight)
    torch.nn.init.zeros_(block.convs[-1].bias)
    x = torch.randn(1, 8, 5, 5)
    assert torch.equal(block(x), x)


def test_clrb_dense_widths() -> None:
    block = CLRB(86, 43)
    assert [c.in_channels for c in block.convs] == [86, 129, 172, 215, 258]
    assert [c.out_channels for c in block.convs] == [43, 43, 43, 43, 86]


def test_reference_attention_ignores_queries_and_keys() -> None:
    att = ChannelCrossAttention(8, dim=8, heads=2, kind="reference")
    maps = [torch.randn(1, 8, 5, 5) for _ in range(4)]
    before = att(*maps)
    with torch.no_grad():
        att.query.weight.normal_()
        att.key.weight.normal_()
    assert torch.allclose(att(*maps), before, atol=1e-5)
    # the independent-index product, written out: out_i = sum_j A_ij * sum_k V_k
    q, k, v = (att._split(conv(x)) for conv, x in zip((att.query, att.key, att.value), maps[:3], strict=True))
    a = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1)
    literal = torch.einsum("bhij,bhkn->bhin", a, v).reshape(1, 8, 5, 5)
    assert torch.allclose(att(*maps), att.out(literal) + maps[3], atol=1e-5)


@pytest.mark.parametrize("kind", ["paper", "normalized"])
def test_real_attention_depends_on_queries(kind: str) -> None:
    att = ChannelCrossAttention(8, dim=8, heads=2, kind=kind)
    maps = [torch.randn(1, 8, 5, 5) for _ in range(4)]
    before = att(*maps)
    with torch.no_grad():
        att.query.weight.normal_()
    assert not torch.allclose(att(*maps), before, atol=1e-3)


def test_normalized_attention_is_invariant_to_query_scale() -> None:
    att = ChannelCrossAttention(8, dim=8, heads=2, kind="normalized")
    maps = [torch.randn(1, 8, 5, 5) for _ in range(4)]
    before = att(*maps)
    with torch.no_grad():
        att.query.weight.mul_(7.0)
        att.query.bias.mul_(7.0)
    assert torch.allclose(att(*maps), before, atol=1e-5)


def test_bicubic_residual_starts_from_the_upsampled_lr() -> None:
    model = create_model("student", residual="bicubic", **TINY)
    for p in model.head[2].parameters():
        torch.nn.init.zeros_(p)
    lr, msi = pair()
    out, _ = model(lr, msi)
    # at HR pixels in phase with the decimation (index 0 of every 4) the base equals the LR pixels
    assert torch.allclose(out[..., ::4, ::4], lr, atol=1e-5)


def test_bad_inputs_name_the_problem() -> None:
    model = create_model("student", **TINY)
    with pytest.raises(InputError, match="lr_hsi has 11 bands but this model expects 12"):
        model(torch.randn(1, 11, 6, 6), torch.randn(1, 3, 24, 24))
    with pytest.raises(InputError, match="hr_msi is 25x24 but lr_hsi is 6x6"):
        model(torch.randn(1, 12, 6, 6), torch.randn(1, 3, 25, 24))
    with pytest.raises(InputError, match="hr_msi has 4 bands"):
        model(torch.randn(1, 12, 6, 6), torch.randn(1, 4, 24, 24))
    with pytest.raises(InputError, match="fusion='bogus'"):
        ModelConfig(fusion="bogus")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown model preset"):
        create_model("giant")


# --- reference checkpoints -------------------------------------------------------------------------

def reference_state_dict(student: bool, nf: int = 86, gc: int = 43, bands: int = 172, msi: int = 4):
    """A state dict with the reference implementation's names and shapes (random values)."""
    sd: dict[str, torch.Tensor] = {}
    blocks = {"hm": 1, "mh": 4, "h": 4, "m": 1} if student else {"hm": 6, "mh": 6, "h": 4, "m": 4}
    inputs = {"hm": bands + msi, "mh": bands + msi, "h": bands, "m": msi}
    for s, n in blocks.items():
        sd[f"decoder.{s}conv1.weight"] = torch.randn(nf, inputs[s], 3, 3) * 0.01
        sd[f"decoder.{s}conv1.bias"] = torch.randn(nf) * 0.01
        groups = 43 if (student and s == "h") else 1
        for i in range(n):
            for b in (1, 2, 3):
                for c in range(1, 6):
                    cin, cout = nf + (c - 1) * gc, (nf if c == 5 else gc)
                    sd[f"decoder.{s}feat.{i}.MFB{b}.conv{c}.weight"] = torch.randn(cout, cin // groups, 3, 3) * 0.01
                    sd[f"decoder.{s}feat.{i}.MFB{b}.conv{c}.bias"] = torch.randn(cout) * 0.01
    for name in ("query", "key", "value"):
        sd[f"decoder.fuse_att.{name}_conv.weight"] = torch.randn(64, nf, 1, 1) * 0.05
        sd[f"decoder.fuse_att.{name}_conv.bias"] = torch.randn(64) * 0.05
    sd["decoder.fuse_att.output_conv.weight"] = torch.randn(nf, 64, 1, 1) * 0.05
    sd["decoder.fuse_att.output_conv.bias"] = torch.randn(nf) * 0.05
    sd["decoder.fuse_att.attention_weights.weight"] = torch.randn(4, 4 * nf, 1, 1) * 0.05
    sd["decoder.fuse_att.attention_weights.bias"] = torch.randn(4) * 0.05
    sd["decoder.fuse.weight"] = torch.randn(bands, nf, 3, 3) * 0.01
    sd["decoder.fuse.bias"] = torch.randn(bands) * 0.01
    sd["decoder.last.weight"] = torch.randn(bands, bands, 3, 3) * 0.01
    return sd


def documented_shapes(section: str) -> dict[str, tuple[int, ...]]:
    """Names and shapes from ../shared/docs/reference-state-dict.txt, the {i} ranges expanded."""
    text = shared_path("docs", "reference-state-dict.txt").read_text()
    part = text.split(f"## {section}")[1].split("##")[0]
    shapes: dict[str, tuple[int, ...]] = {}
    for line in part.strip().splitlines()[1:]:
        m = re.match(r"(\S+) \[([\d, ]+)\](?:\s+\(i = (\d+)\.\.(\d+)\))?", line.strip())
        assert m, line
        shape = tuple(int(x) for x in m[2].split(","))
        if m[3] is None:
            shapes[m[1]] = shape
        else:
            for i in range(int(m[3]), int(m[4]) + 1):
                shapes[m[1].replace("{i}", str(i))] = shape
    return shapes


@pytest.mark.parametrize("section,student", [("teacher", False), ("student", True)])
def test_fixture_matches_the_documented_reference_names(section: str, student: bool) -> None:
    built = {k: tuple(v.shape) for k, v in reference_state_dict(student).items()}
    assert built == documented_shapes(section)


@pytest.mark.parametrize("student", [False, True])
@pytest.mark.parametrize("prefix", ["", "_orig_mod."])
def test_reference_checkpoint_loads(student: bool, prefix: str, tmp_path) -> None:
    sd = {prefix + k: v for k, v in reference_state_dict(student).items()}
    path = tmp_path / "ref.pth"
    torch.save(sd, path)
    model = load_reference_model(path, scale=4)
    cfg = model.config
    assert (cfg.bands, cfg.msi_bands, cfg.attention, cfg.residual) == (172, 4, "reference", "none")
    assert cfg.blocks == ((1, 4, 4, 1) if student else (6, 6, 4, 4))
    assert cfg.apply_joint_hr_blocks is (not student)
    # the weights arrived where they belong
    assert torch.equal(model.hsi.head.weight, sd[prefix + "decoder.hconv1.weight"])
    conv = model.joint_lr.blocks[2].blocks[1].convs[3]
    assert torch.equal(conv.bias, sd[prefix + "decoder.mhfeat.2.MFB2.conv4.bias"])
    assert torch.equal(model.head[2].weight, sd[prefix + "decoder.last.weight"])
    assert torch.equal(model.fusion.gate.weight, sd[prefix + "decoder.fuse_att.attention_weights.weight"])
    expected_params = 7.45e6 if student else 26.8e6
    assert count_params(model) == pytest.approx(expected_params, rel=0.01)


def test_reference_student_runs_on_small_images() -> None:
    sd = reference_state_dict(True)
    model = load_reference_model(sd)
    with torch.no_grad():
        out, _ = model(torch.rand(1, 172, 4, 4) * 2 - 1, torch.rand(1, 4, 16, 16) * 2 - 1)
    assert out.shape == (1, 172, 16, 16) and torch.isfinite(out).all()


def test_reference_checkpoint_with_wrong_shapes_is_refused() -> None:
    sd = reference_state_dict(False)
    sd["decoder.mhfeat.0.MFB1.conv2.weight"] = torch.randn(43, 100, 3, 3)
    with pytest.raises(CheckpointError, match="of another shape"):
        load_reference_model(sd)
    with pytest.raises(CheckpointError, match="not a CSAKD reference checkpoint"):
        infer_reference_config({"foo": torch.zeros(1)})
