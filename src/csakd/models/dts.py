"""The Dual Two-Streamed (DTS) fusion network.

Four streams read the two images: the HSI stream (LR grid, input LR-HSI), the MSI stream (HR grid, input
HR-MSI), the joint HR stream (LR-HSI upsampled bilinearly, concatenated with the HR-MSI) and the joint LR
stream (LR-HSI concatenated with the HR-MSI downsampled bicubically). LR-grid streams are upsampled to HR
by nearest neighbour; a fusion module combines the four; a head (3x3 conv nf -> C, LeakyReLU(0.2), 3x3 conv
C -> C without bias; or, ``head="compact"``, 3x3 conv nf -> nf and 1x1 conv nf -> C) gives the HR-HSI,
optionally as a residual over an in-phase bicubic upsampling of the LR-HSI (``residual="bicubic"``) or over
that upsampling plus the HR-MSI's detail, locally regressed onto the HSI bands (``residual="regression"``,
:mod:`csakd.models.detail`);
with a residual the head's last convolution starts at zero, so training starts from the base image.

With ``feedback`` (the presets' default with the ``regression`` base) the base is computed first and its
disagreement with the observation, ``r = Y - S(base)`` (S: the base's blur and decimation), joins the joint-LR
stream's input, its in-phase bicubic upsampling ``U(r)`` the joint-HR stream's; a zero-started 1x1 convolution
of ``U(r)`` adds to the head's output (a learned back-projection). Measured on fold 1 of
``benchmarks/cave_folds.py`` (10 CPU minutes, about 150 steps each, the two runs side by side): test gains over
the base +0.44 dB (student) with feedback against +0.02 dB without.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from csakd.degradation.spatial import upsample_in_phase
from csakd.errors import InputError
from csakd.models.blocks import NEGATIVE_SLOPE, Stream, conv3x3
from csakd.models.config import ModelConfig
from csakd.models.detail import DetailBase, SubspaceProjection, check_size
from csakd.models.fusion import ChannelCrossAttention, build_fusion, find_attention

#: ``feedback``'s residual is multiplied by this before the streams read it: the base's disagreement with the
#: LR-HSI is about 1e-3 on the network's [-1, 1] scale, the images about 1
FEEDBACK_GAIN = 64.0


class DTSNet(nn.Module):
    """The CSAKD fusion network (teacher or student, by its :class:`ModelConfig`).

    Inputs are on the network's scale ([-1, 1] for data in [0, 1]; see :mod:`csakd.normalization`).

    Shape:
        - lr_hsi: (B, C, h, w)
        - hr_msi: (B, c, h * scale, w * scale)
        - Output: ``(hr_hsi, features)``: (B, C, H, W) and the fused features (B, nf, H, W), the input of
          the head, used for feature distillation.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c, m, nf, gc = config.bands, config.msi_bands, config.nf, config.gc
        n_hr, n_lr, n_hsi, n_msi = config.blocks
        extra = c if config.feedback else 0
        self.joint_hr = Stream(c + m + extra, nf, gc, n_hr if config.apply_joint_hr_blocks else 0)
        self.joint_lr = Stream(c + m + extra, nf, gc, n_lr)
        self.hsi = Stream(c, nf, gc, n_hsi, groups=config.resolved_hsi_groups())
        self.msi = Stream(m, nf, gc, n_msi)
        self.fusion = build_fusion(config.fusion, nf, config.attn_dim, config.heads, config.attention)
        if config.head == "compact":
            self.head = nn.Sequential(
                conv3x3(nf, nf), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True), nn.Conv2d(nf, c, 1, bias=False)
            )
        else:
            self.head = nn.Sequential(
                conv3x3(nf, c), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True), conv3x3(c, c, bias=False)
            )
        self.detail_base = (
            DetailBase(m, config.scale, config.residual_phase, config.blur_size, config.blur_sigma,
                       config.detail_radius,
                       None if config.blur_kernel is None else torch.tensor(config.blur_kernel, dtype=torch.float64),
                       eps=config.detail_eps)
            if config.residual == "regression" else None
        )
        self.projection = (
            SubspaceProjection(torch.tensor(config.output_mean), torch.tensor(config.output_analysis),
                               torch.tensor(config.output_synthesis))
            if config.output_mean is not None and config.output_analysis is not None
            and config.output_synthesis is not None else None
        )
        self.feedback_head = nn.Conv2d(c, c, 1, bias=False) if config.feedback else None
        if self.feedback_head is not None:  # a learned back-projection: spectral mixing of U(r), from zero
            nn.init.zeros_(self.feedback_head.weight)
        if config.residual != "none":
            # start exactly at the base image: the network learns a correction to it
            last = self.head[2]
            assert isinstance(last, nn.Conv2d)
            nn.init.zeros_(last.weight)

    def check_inputs(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> None:
        """Raise :class:`InputError` when the two images do not fit this network."""
        cfg = self.config
        if lr_hsi.ndim != 4 or hr_msi.ndim != 4:
            raise InputError(
                f"expected 4-D (B, C, H, W) tensors, got lr_hsi {tuple(lr_hsi.shape)} and hr_msi {tuple(hr_msi.shape)}"
            )
        if lr_hsi.shape[1] != cfg.bands:
            raise InputError(f"lr_hsi has {lr_hsi.shape[1]} bands but this model expects {cfg.bands}")
        if hr_msi.shape[1] != cfg.msi_bands:
            raise InputError(f"hr_msi has {hr_msi.shape[1]} bands but this model expects {cfg.msi_bands}")
        if lr_hsi.shape[0] != hr_msi.shape[0]:
            raise InputError(f"batch sizes differ: lr_hsi {lr_hsi.shape[0]}, hr_msi {hr_msi.shape[0]}")
        h, w = lr_hsi.shape[-2:]
        if tuple(hr_msi.shape[-2:]) != (h * cfg.scale, w * cfg.scale):
            raise InputError(
                f"hr_msi is {hr_msi.shape[-2]}x{hr_msi.shape[-1]} but lr_hsi is {h}x{w}: at scale {cfg.scale} "
                f"the HR-MSI must be {h * cfg.scale}x{w * cfg.scale}"
            )
        if self.detail_base is not None:
            problem = check_size(int(hr_msi.shape[-2]), int(hr_msi.shape[-1]), cfg.scale, cfg.blur_size,
                                 cfg.detail_radius)
            if problem:
                raise InputError(problem)

    def streams(
        self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor,
        feedback: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The four streams' HR feature maps ``(F_h, F_m, F_lr, F_hr)``; ``feedback``, the base's scaled LR
        residual (B, C, h, w) and its upsampling (B, C, H, W), joins the joint streams' inputs
        (``config.feedback``)."""
        size = hr_msi.shape[-2:]
        lr_size = lr_hsi.shape[-2:]
        lr_up = F.interpolate(lr_hsi, size=size, mode="bilinear", align_corners=False)
        msi_down = F.interpolate(hr_msi, size=lr_size, mode="bicubic", align_corners=False, antialias=False)
        f_h = F.interpolate(self.hsi(lr_hsi), size=size, mode="nearest")
        f_m = self.msi(hr_msi)
        joint_lr, joint_hr = [lr_hsi, msi_down], [lr_up, hr_msi]
        if feedback is not None:
            joint_lr.append(feedback[0].to(lr_hsi.dtype))
            joint_hr.append(feedback[1].to(lr_hsi.dtype))
        f_lr = F.interpolate(self.joint_lr(torch.cat(joint_lr, dim=1)), size=size, mode="nearest")
        f_hr = self.joint_hr(torch.cat(joint_hr, dim=1))
        return f_h, f_m, f_lr, f_hr

    @property
    def attention_module(self) -> ChannelCrossAttention | None:
        """The channel cross attention of the fusion (``cross_attention``, ``csa``), else None.

        When it is not None the output depends on sums over every pixel of the image, so a tiled pass
        needs :meth:`fusion_statistics` over the whole scene first (see :mod:`csakd.inference.tiled`).
        """
        return find_attention(self.fusion)

    def fusion_statistics(
        self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor, weight: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The attention's pixel sums (:meth:`ChannelCrossAttention.statistics`) over the HR pixels selected
        by ``weight``; runs only the HSI and MSI streams (the inputs of Q and K).

        Shape:
            - lr_hsi: (B, C, h, w); hr_msi: (B, c, h * scale, w * scale)
            - weight: (B or 1, 1, h * scale, w * scale) or None (every pixel)
            - output: ``qk`` (B, heads, d, d) and, for ``normalized``, ``qq`` and ``kk`` (B, heads, d)

        Raises:
            InputError: the fusion has no attention, or the inputs do not fit the network.
        """
        attend = self._require_attention()
        self.check_inputs(lr_hsi, hr_msi)
        f_h = F.interpolate(self.hsi(lr_hsi), size=hr_msi.shape[-2:], mode="nearest")
        return attend.statistics(f_h, self.msi(hr_msi), weight)

    def attention_from_statistics(self, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The (B, heads, d, d) attention from :meth:`fusion_statistics` summed over a whole scene."""
        return self._require_attention().attention_from_statistics(stats)

    def _require_attention(self) -> ChannelCrossAttention:
        attend = self.attention_module
        if attend is None:
            raise InputError(
                f"fusion {self.config.fusion!r} has no attention: expected cross_attention or csa"
            )
        return attend

    def forward(
        self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor, attention: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hr_hsi, features)``; ``attention`` (B or 1, heads, d, d), when given, replaces the attention
        the fusion would compute from these pixels (e.g. one computed over a whole scene, for a tile)."""
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_inputs(lr_hsi, hr_msi)
        if self.config.feedback:
            return self._forward_feedback(lr_hsi, hr_msi, attention)
        if attention is None:
            features = self.fusion(*self.streams(lr_hsi, hr_msi))
        else:
            self._require_attention()
            features = self.fusion(*self.streams(lr_hsi, hr_msi), attention=attention)
        out = self.head(features)
        if self.config.residual_scale != 1.0:
            out = out * self.config.residual_scale
        if self.config.residual != "none":  # bicubic, and the first part of the regression base
            out = self._add_base(out, lr_hsi)
        if self.detail_base is not None:
            out = self.detail_base(out, lr_hsi, hr_msi)
        if self.projection is not None:
            out = self.projection(out)
        return out, features

    def base_image(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> torch.Tensor:
        """The residual base alone (what the untrained network gives, before any output projection), float32;
        without autograd unless an input requires it (the base has no parameters)."""
        needs_grad = torch.is_grad_enabled() and (lr_hsi.requires_grad or hr_msi.requires_grad)
        with torch.set_grad_enabled(needs_grad):
            image = upsample_in_phase(lr_hsi.float(), self.config.scale, self.config.residual_phase)
            if self.detail_base is not None:
                image = self.detail_base(image, lr_hsi, hr_msi)
        return image

    def _forward_feedback(
        self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor, attention: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with ``config.feedback``: the base first, then its LR residual into the streams."""
        assert self.detail_base is not None and self.feedback_head is not None
        base = self.base_image(lr_hsi, hr_msi)
        with torch.set_grad_enabled(base.requires_grad):
            residual = (lr_hsi.float() - self.detail_base.degrade_bands(base)) * FEEDBACK_GAIN
            upsampled = upsample_in_phase(residual, self.config.scale, self.config.residual_phase)
        streams = self.streams(lr_hsi, hr_msi, (residual, upsampled))
        features = self.fusion(*streams) if attention is None else self.fusion(*streams, attention=attention)
        out = self.head(features) + self.feedback_head(upsampled.to(features.dtype))
        if self.config.residual_scale != 1.0:
            out = out * self.config.residual_scale
        out = out.float() + base
        if self.projection is not None:
            out = self.projection(out)
        return out, features

    def _add_base(self, correction: torch.Tensor, lr_hsi: torch.Tensor) -> torch.Tensor:
        """``correction`` + the in-phase bicubic upsampling of the LR-HSI; under autocast the base (two
        matrix products) is kept in float32, so a bf16 pass loses no precision in the image itself."""
        device_type = lr_hsi.device.type
        if device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type, enabled=False):
                base = upsample_in_phase(lr_hsi.float(), self.config.scale, self.config.residual_phase)
            return correction.float() + base
        base = upsample_in_phase(lr_hsi, self.config.scale, self.config.residual_phase)
        if not torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            return correction.add_(base)  # inference: no third (C, H, W) tensor (whole scenes, tiles)
        return correction + base
