"""The typed configuration of a DTS fusion network (teacher, student or any variant)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from csakd.errors import InputError

FusionKind = Literal["none", "sigmoid", "cross_attention", "csa", "concat_gating"]
AttentionKind = Literal["reference", "paper", "normalized"]
ResidualKind = Literal["none", "bicubic", "regression"]
HeadKind = Literal["paper", "compact"]

FUSIONS: tuple[str, ...] = ("none", "sigmoid", "cross_attention", "csa", "concat_gating")
ATTENTIONS: tuple[str, ...] = ("reference", "paper", "normalized")
RESIDUALS: tuple[str, ...] = ("none", "bicubic", "regression")
HEADS: tuple[str, ...] = ("paper", "compact")


@dataclass
class ModelConfig:
    """Everything that defines a Dual Two-Streamed (DTS) fusion network.

    Attributes:
        bands: HSI bands ``C`` (input LR-HSI and output HR-HSI).
        msi_bands: HR-MSI bands ``c``.
        scale: integer ratio of the HR and LR grids.
        nf: feature width of every stream (the paper: 86).
        gc: growth width of the dense convolutions in a CLRB (the paper: 43).
        blocks: CLRA block counts of the streams (joint HR, joint LR, HSI, MSI);
            teacher (6, 6, 4, 4), student (1, 4, 4, 1).
        hsi_groups: convolution groups inside the HSI stream's CLRA blocks; 0 picks the largest divisor
            of ``gcd(nf, gc)`` not above ``nf / 2`` (43 for the paper's widths), as the paper's student does.
        apply_joint_hr_blocks: whether the joint-HR stream runs its CLRA blocks. The reference student builds
            its one joint-HR block but never calls it; the paper's 7.44M parameters / 144.8 GMACs are that
            network, so the student preset sets this to False and the block is not built at all.
        fusion: how the four streams are combined (``csa`` is the paper's cross self-attention).
        attention: the form of the channel attention inside ``cross_attention`` and ``csa``:
            ``reference`` (the authors' code: each head returns the sum of its value channels, whatever Q
            and K are), ``paper`` (softmax of Q K^T / sqrt(d) with dot products over all pixels) or
            ``normalized`` (Q and K L2-normalised over the pixels, learned per-head temperature).
        heads, attn_dim: attention heads and total Q/K/V width (4 heads of 16 in the paper).
        residual: ``bicubic`` adds the head's output to a bicubic upsampling of the LR-HSI (in phase with
            the decimation at ``residual_phase``); ``regression`` to that upsampling plus the HR-MSI's
            detail mapped to the HSI bands by a per-image least-squares regression
            (:mod:`csakd.models.detail`); ``none`` is the paper's network.
        residual_phase: the decimation phase the bicubic base is aligned with (LR pixel i sits at HR pixel
            ``scale * i + residual_phase``).
        blur_size, blur_sigma: the Gaussian blur (taps, HR pixels) the ``regression`` base assumes for the
            LR-HSI's degradation: the training degradation's (``csakd train`` sets them).
        blur_kernel: a PSF of any shape (``blur_size`` x ``blur_size`` rows, summing to 1) that replaces the
            Gaussian in the ``regression`` base (``csakd fit-scene`` sets its estimated PSF); None: the Gaussian.
        detail_radius: the radius (LR pixels) of the ``regression`` base's local windows.
        detail_eps: the ridge added to each window's MSI covariance in the ``regression`` base, on the
            network's [-1, 1] scale; None: :data:`csakd.models.detail.LOCAL_EPS` (4e-7, right for noise-free
            data). ``csakd fit-scene`` sets it from the HR-MSI's estimated noise variance, so windows whose
            MSI varies no more than its noise inject no detail.
        output_mean, output_analysis, output_synthesis: an oblique projection of the network's output onto
            a spectral subspace of ``k`` dimensions: ``out = mean + synthesis^T (analysis (out - mean))``,
            ``mean`` (C values, on the network's [-1, 1] scale), ``analysis`` and ``synthesis`` (k rows of C);
            all three or none (None: no projection, today's networks). ``csakd fit-scene`` sets the LR-HSI's
            noise-whitened principal subspace (:mod:`csakd.fit.base`), which removes the noise outside it.
        residual_scale: the head's output is multiplied by this before it is added to the base. Adam moves
            every weight by about the learning rate per step whatever the gradient's size, so the first
            steps change a zero-started head's output by much more than a good base's error; a smaller
            scale makes those changes proportionally smaller.
        feedback: the joint streams also read the base's disagreement with the LR-HSI, ``r = Y - S(base)`` on
            the LR grid (the joint-LR stream) and its in-phase bicubic upsampling ``U(r)`` (the joint-HR stream),
            both times :data:`csakd.models.dts.FEEDBACK_GAIN`: the part of the base's error that the
            observation reveals, which the network would otherwise have to infer (``regression`` residual only).
        head: ``paper`` (3x3 conv nf -> C, LeakyReLU, 3x3 conv C -> C: at 172 bands the last convolution
            alone is 17.4 GMACs of a 256x256 image) or ``compact`` (3x3 conv nf -> nf, LeakyReLU, 1x1 conv
            nf -> C: the spectral correction is a combination of nf feature maps; for small CPU models).
        name: the preset this config came from (informational).
    """

    bands: int = 172
    msi_bands: int = 4
    scale: int = 4
    nf: int = 86
    gc: int = 43
    blocks: tuple[int, int, int, int] = (6, 6, 4, 4)
    hsi_groups: int = 1
    apply_joint_hr_blocks: bool = True
    fusion: FusionKind = "csa"
    attention: AttentionKind = "normalized"
    heads: int = 4
    attn_dim: int = 64
    residual: ResidualKind = "regression"
    residual_phase: int = 0
    blur_size: int = 9
    blur_sigma: float = 2.0
    blur_kernel: tuple[tuple[float, ...], ...] | None = None
    detail_radius: int = 2
    detail_eps: float | None = None
    output_mean: tuple[float, ...] | None = None
    output_analysis: tuple[tuple[float, ...], ...] | None = None
    output_synthesis: tuple[tuple[float, ...], ...] | None = None
    residual_scale: float = 1.0
    feedback: bool = False
    head: HeadKind = "paper"
    name: str = field(default="custom")

    def __post_init__(self) -> None:
        self.blocks = tuple(int(b) for b in self.blocks)  # type: ignore[assignment]
        if self.blur_kernel is not None:
            try:
                self.blur_kernel = tuple(tuple(float(v) for v in row) for row in self.blur_kernel)
            except (TypeError, ValueError) as exc:
                raise InputError(f"blur_kernel: expected rows of numbers ({exc})") from exc
        try:
            if self.output_mean is not None:
                self.output_mean = tuple(float(v) for v in self.output_mean)
            for key in ("output_analysis", "output_synthesis"):
                if getattr(self, key) is not None:
                    setattr(self, key, tuple(tuple(float(v) for v in row) for row in getattr(self, key)))
        except (TypeError, ValueError) as exc:
            raise InputError(f"output subspace: expected numbers ({exc})") from exc
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first inconsistent setting."""
        for key in ("bands", "msi_bands", "scale", "nf", "gc", "heads", "attn_dim"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"model setting {key}={value!r}: expected a positive integer")
        if len(self.blocks) != 4 or any(b < 0 for b in self.blocks):
            raise InputError(
                f"blocks={self.blocks!r}: expected four non-negative counts (joint HR, joint LR, HSI, MSI)"
            )
        if self.fusion not in FUSIONS:
            raise InputError(f"fusion={self.fusion!r}: expected one of {', '.join(FUSIONS)}")
        if self.attention not in ATTENTIONS:
            raise InputError(f"attention={self.attention!r}: expected one of {', '.join(ATTENTIONS)}")
        if self.residual not in RESIDUALS:
            raise InputError(f"residual={self.residual!r}: expected one of {', '.join(RESIDUALS)}")
        if self.head not in HEADS:
            raise InputError(f"head={self.head!r}: expected one of {', '.join(HEADS)}")
        if self.attn_dim % self.heads:
            raise InputError(f"attn_dim={self.attn_dim} is not divisible by heads={self.heads}")
        if not isinstance(self.blur_size, int) or isinstance(self.blur_size, bool) or self.blur_size < 1 \
                or self.blur_size % 2 == 0:
            raise InputError(f"blur_size={self.blur_size!r}: expected a positive odd number of taps")
        if isinstance(self.blur_sigma, bool) or not isinstance(self.blur_sigma, (int, float)) \
                or not math.isfinite(self.blur_sigma) or self.blur_sigma <= 0:
            raise InputError(f"blur_sigma={self.blur_sigma!r}: expected a positive number of HR pixels")
        if self.blur_kernel is not None:
            k = self.blur_kernel
            if len(k) != self.blur_size or any(len(row) != self.blur_size for row in k):
                raise InputError(f"blur_kernel: expected {self.blur_size}x{self.blur_size} values (blur_size)")
            if not all(math.isfinite(v) for row in k for v in row) or not sum(v for row in k for v in row) > 0:
                raise InputError("blur_kernel: expected finite values with a positive sum")
        if not isinstance(self.detail_radius, int) or isinstance(self.detail_radius, bool) or self.detail_radius < 1:
            raise InputError(f"detail_radius={self.detail_radius!r}: expected a positive number of LR pixels (a "
                             "window of one pixel has no variance to regress on)")
        if self.detail_eps is not None and (isinstance(self.detail_eps, bool)
                                            or not isinstance(self.detail_eps, (int, float))
                                            or not math.isfinite(self.detail_eps) or self.detail_eps <= 0):
            raise InputError(f"detail_eps={self.detail_eps!r}: expected a positive number (or None)")
        self._validate_subspace()
        if isinstance(self.residual_scale, bool) or not isinstance(self.residual_scale, (int, float)) \
                or not math.isfinite(self.residual_scale) or self.residual_scale <= 0:
            raise InputError(f"residual_scale={self.residual_scale!r}: expected a positive number")
        if not isinstance(self.feedback, bool):
            raise InputError(f"feedback={self.feedback!r}: expected true or false")
        if self.feedback and self.residual != "regression":
            raise InputError(f"feedback needs the regression residual base (its blur gives S), got residual="
                             f"{self.residual!r}")
        if not 0 <= self.residual_phase < self.scale:
            raise InputError(f"residual_phase={self.residual_phase}: expected 0..{self.scale - 1}")
        groups = self.resolved_hsi_groups()
        if self.nf % groups or self.gc % groups:
            raise InputError(
                f"hsi_groups={groups} must divide nf={self.nf} and gc={self.gc} (use 0 to pick it automatically)"
            )

    def _validate_subspace(self) -> None:
        given = [self.output_mean is not None, self.output_analysis is not None, self.output_synthesis is not None]
        if not any(given):
            return
        if not all(given):
            raise InputError("output_mean, output_analysis and output_synthesis: give all three or none")
        assert self.output_mean is not None and self.output_analysis is not None and self.output_synthesis is not None
        if len(self.output_mean) != self.bands:
            raise InputError(f"output_mean: expected {self.bands} values (bands), got {len(self.output_mean)}")
        k = len(self.output_analysis)
        if not 1 <= k <= self.bands or len(self.output_synthesis) != k:
            raise InputError(f"output_analysis and output_synthesis: expected the same number of rows, 1 to "
                             f"{self.bands}, got {k} and {len(self.output_synthesis)}")
        rows = [*self.output_analysis, *self.output_synthesis]
        if any(len(row) != self.bands for row in rows):
            raise InputError(f"output_analysis and output_synthesis: expected rows of {self.bands} values (bands)")
        if not all(math.isfinite(v) for row in [*rows, self.output_mean] for v in row):
            raise InputError("output subspace: expected finite values")

    def resolved_hsi_groups(self) -> int:
        """The HSI stream's group count, with 0 resolved to the largest divisor of gcd(nf, gc) <= nf/2."""
        if self.hsi_groups > 0:
            return self.hsi_groups
        common = math.gcd(self.nf, self.gc)
        return max(d for d in range(1, common + 1) if common % d == 0 and d <= max(1, self.nf // 2))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["blocks"] = list(self.blocks)
        if self.blur_kernel is not None:
            data["blur_kernel"] = [list(row) for row in self.blur_kernel]
        for key in ("output_analysis", "output_synthesis"):
            if getattr(self, key) is not None:
                data[key] = [list(row) for row in getattr(self, key)]
        if self.output_mean is not None:
            data["output_mean"] = list(self.output_mean)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown model settings {unknown}: expected some of {sorted(known)}")
        values = dict(data)
        if "blocks" in values:
            values["blocks"] = tuple(values["blocks"])
        return cls(**values)
