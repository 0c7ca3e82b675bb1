"""Named presets and a small registry: ``create_model("student", bands=31, msi_bands=3)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from csakd.errors import InputError
from csakd.models.config import ModelConfig
from csakd.models.dts import DTSNet

_PRESETS: dict[str, Callable[[], ModelConfig]] = {}


def register_preset(name: str) -> Callable[[Callable[[], ModelConfig]], Callable[[], ModelConfig]]:
    def wrap(factory: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        _PRESETS[name] = factory
        return factory

    return wrap


@register_preset("teacher")
def _teacher() -> ModelConfig:
    """The paper's teacher: blocks (6, 6, 4, 4), every convolution ungrouped (26.8M parameters at 172 bands)."""
    return ModelConfig(blocks=(6, 6, 4, 4), hsi_groups=1, apply_joint_hr_blocks=True, name="teacher")


@register_preset("student")
def _student() -> ModelConfig:
    """The paper's student "1441": blocks (1, 4, 4, 1), grouped HSI stream, joint-HR blocks not applied.

    As in the paper's counts (7.44M parameters, 144.8 GMACs at 172 bands, 256x256): the reference code
    builds the joint-HR stream's block but never calls it, so it is not built here; set
    ``apply_joint_hr_blocks=True`` for the 8.75M-parameter network that applies it.
    """
    return ModelConfig(blocks=(1, 4, 4, 1), hsi_groups=0, apply_joint_hr_blocks=False, name="student")


@register_preset("lite")
def _lite() -> ModelConfig:
    """A small student for CPUs: widths 32/16, blocks (0, 2, 2, 1), grouped HSI stream, compact head.

    At 172 bands and 256x256: 0.74M parameters and 18.8 GMACs without ``feedback``, 0.87M / 24.2 with it (the
    default; the paper's student: 7.44M / 144.8, 7.75M / 156.1 with feedback); the
    compact head (3x3 nf -> nf, 1x1 nf -> C) replaces a C x C 3x3 convolution that alone costs 17.4 GMACs.
    """
    return ModelConfig(
        nf=32, gc=16, blocks=(0, 2, 2, 1), hsi_groups=0, apply_joint_hr_blocks=False, head="compact", name="lite"
    )


@register_preset("lite-teacher")
def _lite_teacher() -> ModelConfig:
    """A teacher for ``lite`` on CPUs: the same widths (32/16: feature distillation needs equal widths), blocks
    (1, 2, 2, 1) with the joint-HR block applied, ungrouped, compact head (about 1.7 times lite's cost; with
    blocks 1, 3, 3, 2 it took 2.5 times and, in the same 8 CPU minutes, both networks gained less)."""
    return ModelConfig(
        nf=32, gc=16, blocks=(1, 2, 2, 1), hsi_groups=1, apply_joint_hr_blocks=True, head="compact",
        name="lite-teacher",
    )


def list_models() -> list[str]:
    """Names of the registered presets."""
    return sorted(_PRESETS)


def preset_config(name: str, *, paper: bool = False, **overrides: Any) -> ModelConfig:
    """The config of preset ``name`` with ``overrides`` applied.

    ``paper=True`` gives the paper's network exactly (the reference's attention, no global residual);
    otherwise the presets use csakd's defaults (normalised attention, the ``regression`` residual base: in-phase
    bicubic upsampling plus the HR-MSI's locally regressed detail, :mod:`csakd.models.detail`; and, with that
    base, ``feedback``: the joint streams read the base's disagreement with the LR-HSI, unless
    ``feedback=False`` is given).
    """
    if name not in _PRESETS:
        raise InputError(f"unknown model preset {name!r}: expected one of {', '.join(list_models())}")
    config = _PRESETS[name]()
    if paper:
        config = replace(config, attention="reference", residual="none")
    if overrides:
        unknown = sorted(set(overrides) - set(config.to_dict()))
        if unknown:
            raise InputError(f"unknown model settings {unknown}")
        if "blocks" in overrides:
            overrides["blocks"] = tuple(overrides["blocks"])
        config = replace(config, **overrides)
    if "feedback" not in overrides:
        config = replace(config, feedback=not paper and config.residual == "regression")
    config.validate()
    return config


def create_model(name: str | ModelConfig, *, paper: bool = False, **overrides: Any) -> DTSNet:
    """Build a :class:`DTSNet` from a preset name (plus overrides) or a full :class:`ModelConfig`."""
    if isinstance(name, ModelConfig):
        return DTSNet(replace(name, **overrides) if overrides else name)
    return DTSNet(preset_config(name, paper=paper, **overrides))
