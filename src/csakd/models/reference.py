"""Load checkpoints saved by the CSAKD reference implementation.

The reference saves bare state dicts whose names start with ``decoder.`` (and ``_orig_mod.`` after
``torch.compile``). This module renames them to csakd's modules and infers the network's config from the
tensor shapes, so holders of the authors' published weights can fuse with them. The reference network is
``attention="reference"`` and ``residual="none"``; the scale is not stored in its files (pass it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from csakd.errors import CheckpointError
from csakd.models.config import ModelConfig
from csakd.models.dts import DTSNet

log = logging.getLogger(__name__)

_STREAMS = {"hm": "joint_hr", "mh": "joint_lr", "h": "hsi", "m": "msi"}
_ATTENTION = {"query_conv": "query", "key_conv": "key", "value_conv": "value", "output_conv": "out"}


def _rename(key: str) -> str | None:
    """csakd's name for a reference key (without prefixes), or None for a key csakd does not know."""
    if m := re.fullmatch(r"(hm|mh|h|m)conv1\.(weight|bias)", key):
        return f"{_STREAMS[m[1]]}.head.{m[2]}"
    if m := re.fullmatch(r"(hm|mh|h|m)feat\.(\d+)\.MFB([123])\.conv([1-5])\.(weight|bias)", key):
        return f"{_STREAMS[m[1]]}.blocks.{m[2]}.blocks.{int(m[3]) - 1}.convs.{int(m[4]) - 1}.{m[5]}"
    if m := re.fullmatch(r"fuse_att\.(query_conv|key_conv|value_conv|output_conv)\.(weight|bias)", key):
        return f"fusion.attend.{_ATTENTION[m[1]]}.{m[2]}"
    if m := re.fullmatch(r"fuse_att\.attention_weights\.(weight|bias)", key):
        return f"fusion.gate.{m[1]}"
    if m := re.fullmatch(r"fuse\.(weight|bias)", key):
        return f"head.0.{m[1]}"
    if key == "last.weight":
        return "head.2.weight"
    return None


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``_orig_mod.`` (torch.compile) and ``decoder.`` / ``module.`` (DDP) prefixes."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key
        for prefix in ("module.", "_orig_mod.", "decoder.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = value
    return out


def is_reference_state_dict(state: Mapping[str, object]) -> bool:
    """Whether ``state`` looks like a reference checkpoint (its ``hconv1`` / ``mconv1`` names)."""
    keys = strip_prefixes({k: torch.empty(0) for k in state})
    return "hconv1.weight" in keys and "mconv1.weight" in keys


def infer_reference_config(state: Mapping[str, torch.Tensor], scale: int = 4) -> ModelConfig:
    """The :class:`ModelConfig` of a reference state dict, read off its tensor shapes."""
    sd = strip_prefixes(state)
    try:
        nf, bands = sd["hconv1.weight"].shape[:2]
        msi_bands = sd["mconv1.weight"].shape[1]
        gc = sd["hfeat.0.MFB1.conv1.weight"].shape[0] if "hfeat.0.MFB1.conv1.weight" in sd else nf // 2
    except KeyError as exc:
        raise CheckpointError(f"not a CSAKD reference checkpoint: tensor {exc} is missing") from exc

    def count(stream: str) -> int:
        idx = {int(m[1]) for k in sd if (m := re.match(rf"{stream}feat\.(\d+)\.", k))}
        return max(idx) + 1 if idx else 0

    blocks = (count("hm"), count("mh"), count("h"), count("m"))
    groups = 1
    if "hfeat.0.MFB1.conv1.weight" in sd:
        groups = int(nf // sd["hfeat.0.MFB1.conv1.weight"].shape[1])
    if "fuse_att.attention_weights.weight" in sd:
        fusion = "csa"
    elif "fuse_att.query_conv.weight" in sd:
        fusion = "cross_attention"
    else:
        fusion = "none"
    attn_dim = int(sd["fuse_att.query_conv.weight"].shape[0]) if "fuse_att.query_conv.weight" in sd else 64
    # The reference's student class (the one with a grouped HSI stream) never calls its joint-HR blocks.
    student_like = groups > 1
    return ModelConfig(
        bands=int(bands),
        msi_bands=int(msi_bands),
        scale=scale,
        nf=int(nf),
        gc=int(gc),
        blocks=blocks,
        hsi_groups=groups,
        apply_joint_hr_blocks=not student_like,
        fusion=fusion,  # type: ignore[arg-type]
        attention="reference",
        heads=4 if attn_dim % 4 == 0 else 1,
        attn_dim=attn_dim,
        residual="none",
        name="reference-student" if student_like else "reference-teacher",
    )


def convert_reference_state_dict(
    state: Mapping[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """Rename a reference state dict for :class:`DTSNet`; drops the student's never-called joint-HR blocks."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_prefixes(state).items():
        if not config.apply_joint_hr_blocks and key.startswith("hmfeat."):
            continue
        new = _rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(f"reference checkpoint has {len(unknown)} unexpected tensors, e.g. {unknown[:3]}")
    return out


def load_reference_model(
    source: str | Path | Mapping[str, torch.Tensor], *, scale: int = 4, config: ModelConfig | None = None
) -> DTSNet:
    """A :class:`DTSNet` holding the weights of a reference checkpoint (a path or a loaded state dict).

    Files are loaded with ``weights_only=True``: nothing in them is executed.
    """
    if isinstance(source, (str, Path)):
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot read {source} as a PyTorch state dict: {exc}") from exc
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
    else:
        state = source
    if not isinstance(state, Mapping):
        raise CheckpointError(f"expected a state dict (a mapping of names to tensors), got {type(state).__name__}")
    config = config or infer_reference_config(state, scale=scale)
    model = DTSNet(config)
    converted = convert_reference_state_dict(state, config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    wrong = [
        f"{k}: checkpoint {tuple(converted[k].shape)}, model {tuple(expected[k].shape)}"
        for k in converted
        if k in expected and converted[k].shape != expected[k].shape
    ]
    if missing or wrong:
        raise CheckpointError(
            f"reference checkpoint does not fit {config.name}: {len(missing)} missing tensors "
            f"{missing[:3]}, {len(wrong)} of another shape {wrong[:3]}"
        )
    model.load_state_dict(converted)
    log.info("loaded a reference %s (%d bands, %d MSI bands, x%d)", config.name, config.bands,
             config.msi_bands, config.scale)
    return model
