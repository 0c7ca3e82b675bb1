"""The five ways of combining the four streams' features at HR (all of width ``nf``).

``F_h`` (HSI stream, upsampled), ``F_m`` (MSI stream), ``F_lr`` (joint LR stream, upsampled) and
``F_hr`` (joint HR stream) go in; one ``(B, nf, H, W)`` feature map comes out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from csakd.errors import InputError
from csakd.models.config import AttentionKind


class ChannelCrossAttention(nn.Module):
    """Multi-head channel-to-channel cross attention, plus ``F_hr``: the ``attended`` features.

    ``Q = 1x1(F_h)``, ``K = 1x1(F_m)``, ``V = 1x1(F_lr)``, each ``dim`` channels split into ``heads``.
    Per head an ``(d x d)`` attention between channels (``d = dim / heads``) from dot products over all
    pixels, softmax over the key channels, then a 1x1 convolution back to ``nf`` and ``+ F_hr``.

    Forms (``kind``):
        - ``reference``: what the authors' code computes. Its product sums the attention weights and the
          values over independent indices, so each output channel of a head is
          ``(sum_j A_ij) * (sum_k V_k)``: the sum of the head's value channels (the rows of ``A`` sum to 1).
          Q and K only enter through rounding; this form exists so that published checkpoints reproduce.
        - ``paper``: ``softmax(Q K^T / sqrt(d)) V``, dot products summed over every pixel (logits grow
          with the image size).
        - ``normalized``: Q and K L2-normalised over the pixels (cosine similarities), times a learned
          per-head temperature (initialised to 1), softmax, ``@ V`` (Restormer-style transposed attention).

    Every form reduces over all pixels: a tiled pass must accumulate ``Q K^T`` (and the norms) over the
    whole scene to reproduce a whole-image pass. :meth:`statistics` gives those sums for any set of pixels
    (they add up over disjoint sets), :meth:`attention_from_statistics` turns the scene's sums into the
    ``(B, heads, d, d)`` attention, and ``forward(..., attention=A)`` uses a given attention instead of the
    one of its own pixels (then Q and K are not computed).

    Shape:
        - Inputs: four (B, nf, H, W) maps; optional ``attention`` (B or 1, heads, d, d)
        - Output: (B, nf, H, W)
    """

    def __init__(self, nf: int, dim: int = 64, heads: int = 4, kind: AttentionKind = "normalized") -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.kind = kind
        self.query = nn.Conv2d(nf, dim, 1)
        self.key = nn.Conv2d(nf, dim, 1)
        self.value = nn.Conv2d(nf, dim, 1)
        self.out = nn.Conv2d(dim, nf, 1)
        if kind == "normalized":
            self.temperature = nn.Parameter(torch.ones(heads, 1, 1))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return x.reshape(b, self.heads, self.head_dim, h * w)

    def attention(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The (B, heads, d, d) softmax attention between query and key channels."""
        if self.kind == "normalized":
            q = F.normalize(q, dim=-1)
            k = F.normalize(k, dim=-1)
            logits = (q @ k.transpose(-2, -1)) * self.temperature
        else:
            logits = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        return torch.softmax(logits.float(), dim=-1).to(q.dtype)

    def statistics(
        self, f_h: torch.Tensor, f_m: torch.Tensor, weight: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The pixel sums the attention is made of, over the pixels selected by ``weight``.

        With ``q`` and ``k`` a head's query and key channels (``Q = 1x1(F_h)``, ``K = 1x1(F_m)``) and ``w`` the
        pixel weight (1 everywhere when ``weight`` is None):

        - ``qk[b, n, i, j] = sum_p w_p q_i(p) k_j(p)`` (every form);
        - ``qq[b, n, i] = sum_p w_p q_i(p)^2`` and ``kk[b, n, j] = sum_p w_p k_j(p)^2`` (``normalized`` only).

        Sums over disjoint pixel sets add up to the sums over their union, so a tiled pass adds the
        statistics of each tile's core and calls :meth:`attention_from_statistics` once.

        Shape:
            - f_h, f_m: (B, nf, H, W)
            - weight: (B or 1, 1, H, W), e.g. 0/1 to select a tile's core
            - output: ``qk`` (B, heads, d, d); ``qq``, ``kk`` (B, heads, d)
        """
        q = self.query(f_h)
        k = self.key(f_m)
        if weight is not None:
            if weight.ndim != 4 or weight.shape[1] != 1 or weight.shape[-2:] != q.shape[-2:]:
                raise InputError(
                    f"weight must be (B, 1, {q.shape[-2]}, {q.shape[-1]}), got {tuple(weight.shape)}"
                )
            qw = self._split(q * weight.to(q.dtype))
        else:
            qw = self._split(q)
        qs, ks = self._split(q), self._split(k)
        stats = {"qk": qw @ ks.transpose(-2, -1)}
        if self.kind == "normalized":
            stats["qq"] = (qw * qs).sum(dim=-1)
            if weight is not None:
                stats["kk"] = (self._split(k * weight.to(k.dtype)) * ks).sum(dim=-1)
            else:
                stats["kk"] = (ks * ks).sum(dim=-1)
        return stats

    def attention_from_statistics(self, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The (B, heads, d, d) softmax attention from summed :meth:`statistics` (in their dtype).

        ``paper`` and ``reference``: ``softmax(qk / sqrt(d))``; ``normalized``:
        ``softmax(qk / (max(sqrt(qq_i), 1e-12) max(sqrt(kk_j), 1e-12)) * temperature)``, the same as
        L2-normalising Q and K over the pixels first (``F.normalize``'s epsilon), so that on one image
        ``attention_from_statistics(statistics(f_h, f_m))`` equals the attention ``forward`` uses.
        """
        qk = stats["qk"]
        if self.kind == "normalized":
            eps = 1e-12
            nq = stats["qq"].clamp_min(0).sqrt().clamp_min(eps)
            nk = stats["kk"].clamp_min(0).sqrt().clamp_min(eps)
            logits = qk / (nq[..., :, None] * nk[..., None, :]) * self.temperature.to(qk.dtype)
        else:
            logits = qk / math.sqrt(self.head_dim)
        return torch.softmax(logits, dim=-1)

    def forward(
        self,
        f_h: torch.Tensor,
        f_m: torch.Tensor,
        f_lr: torch.Tensor,
        f_hr: torch.Tensor,
        attention: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, _, h, w = f_h.shape
        v = self._split(self.value(f_lr))
        if attention is None:
            q = self._split(self.query(f_h))
            k = self._split(self.key(f_m))
            attn = self.attention(q, k)
        else:
            expected = (self.heads, self.head_dim, self.head_dim)
            if attention.ndim != 4 or tuple(attention.shape[1:]) != expected or attention.shape[0] not in (1, b):
                raise InputError(
                    f"attention must be (1 or {b}, {', '.join(map(str, expected))}), got {tuple(attention.shape)}"
                )
            attn = attention.to(v.dtype).expand(b, *expected)
        if self.kind == "reference":
            mixed = attn.sum(dim=-1, keepdim=True) * v.sum(dim=2, keepdim=True)
        else:
            mixed = attn @ v
        return self.out(mixed.reshape(b, self.heads * self.head_dim, h, w)) + f_hr


class SumFusion(nn.Module):
    """``none``: ``F_h + F_m + F_lr + F_hr``."""

    def forward(
        self, f_h: torch.Tensor, f_m: torch.Tensor, f_lr: torch.Tensor, f_hr: torch.Tensor
    ) -> torch.Tensor:
        return f_h + f_m + f_lr + f_hr


class SigmoidWeightFusion(nn.Module):
    """``sigmoid``: a learned (4, nf) weight through a sigmoid weights the four maps per channel, then a sum."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4, nf))

    def forward(
        self, f_h: torch.Tensor, f_m: torch.Tensor, f_lr: torch.Tensor, f_hr: torch.Tensor
    ) -> torch.Tensor:
        w = torch.sigmoid(self.weight)[:, None, :, None, None]
        return w[0] * f_h + w[1] * f_m + w[2] * f_lr + w[3] * f_hr


class CrossAttentionFusion(nn.Module):
    """``cross_attention``: the ``attended`` map of :class:`ChannelCrossAttention` alone."""

    def __init__(self, nf: int, dim: int, heads: int, kind: AttentionKind) -> None:
        super().__init__()
        self.attend = ChannelCrossAttention(nf, dim, heads, kind)

    def forward(
        self,
        f_h: torch.Tensor,
        f_m: torch.Tensor,
        f_lr: torch.Tensor,
        f_hr: torch.Tensor,
        attention: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.attend(f_h, f_m, f_lr, f_hr, attention)


class GatedFusion(nn.Module):
    """Concat gating: a 1x1 convolution (4 nf -> 4) on the concatenated maps; their sigmoids weight a sum.

    With ``attention`` given this is ``csa`` (the paper's Cross Self-Attention): the fourth map is
    ``attended`` (F_hr enters only through it); without, ``concat_gating``: the four maps as they are.
    """

    def __init__(self, nf: int, attention: ChannelCrossAttention | None = None) -> None:
        super().__init__()
        self.attend = attention
        self.gate = nn.Conv2d(4 * nf, 4, 1)

    def forward(
        self,
        f_h: torch.Tensor,
        f_m: torch.Tensor,
        f_lr: torch.Tensor,
        f_hr: torch.Tensor,
        attention: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if attention is not None and self.attend is None:
            raise InputError("concat_gating has no attention: an attention matrix cannot be given")
        fourth = self.attend(f_h, f_m, f_lr, f_hr, attention) if self.attend is not None else f_hr
        g = torch.sigmoid(self.gate(torch.cat([f_h, f_m, f_lr, fourth], dim=1)))
        return g[:, 0:1] * f_h + g[:, 1:2] * f_m + g[:, 2:3] * f_lr + g[:, 3:4] * fourth


def find_attention(fusion: nn.Module) -> ChannelCrossAttention | None:
    """The :class:`ChannelCrossAttention` inside a fusion module (``cross_attention``, ``csa``), else None."""
    attend = getattr(fusion, "attend", None)
    return attend if isinstance(attend, ChannelCrossAttention) else None


def build_fusion(kind: str, nf: int, dim: int, heads: int, attention: AttentionKind) -> nn.Module:
    """The fusion module named ``kind`` (one of none, sigmoid, cross_attention, csa, concat_gating)."""
    if kind == "none":
        return SumFusion()
    if kind == "sigmoid":
        return SigmoidWeightFusion(nf)
    if kind == "cross_attention":
        return CrossAttentionFusion(nf, dim, heads, attention)
    if kind == "csa":
        return GatedFusion(nf, ChannelCrossAttention(nf, dim, heads, attention))
    if kind == "concat_gating":
        return GatedFusion(nf, None)
    raise ValueError(f"unknown fusion {kind!r}")
