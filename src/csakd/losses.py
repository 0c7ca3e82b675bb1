"""Training losses of CSAKD, on the network's [-1, 1] scale.

Notation: ``X`` the true HR-HSI, ``T`` / ``S`` the teacher's / student's output, ``F_T`` / ``F_S``
their fused features (the input of the head). All images are (B, C, H, W).

- Teacher: ``SmoothL1(T, X) + 0.1 SAM(T, X) + 0.1 BEBA(T, X)``.
- Student: ``SmoothL1(S, X) + 0.1 SmoothL1(S, T) + 0.1 BCEWithLogits(F_S, sigmoid(F_T))
  + 0.1 BEBA(S, X) + 0.1 SAM(S, X)``, with ``T`` and ``F_T`` detached.

Every weight is a field of :class:`LossWeights`; a weight of 0 skips its term.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from csakd.errors import InputError
from csakd.metrics import check_tensor_pair

__all__ = [
    "LossWeights",
    "beba_loss",
    "feature_distillation_loss",
    "pixel_loss",
    "response_distillation_loss",
    "sam_loss",
    "student_loss",
    "teacher_loss",
]


def sam_loss(pred: torch.Tensor, target: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """Spectral-angle loss: ``1 - mean over pixels of cos(angle(pred, target))``.

    Per pixel, ``cos = <p, t> / max(|p| |t|, eps)`` over the C bands; the mean runs over every pixel
    of every image. 0 when every predicted spectrum is a positive multiple of the true one; at most 2.

    Shape:
        - pred, target: (B, C, H, W) or (C, H, W)
        - output: () scalar
    """
    check_tensor_pair(pred, target)
    dot = (pred * target).sum(dim=-3)
    norms = pred.norm(dim=-3) * target.norm(dim=-3)
    return 1.0 - (dot / norms.clamp_min(eps)).mean()


def beba_loss(pred: torch.Tensor, target: torch.Tensor, *, energy_offset: float = 0.1) -> torch.Tensor:
    """Band-energy-balance-aware loss.

    With ``d = pred - target`` per element, the reference code's term
    ``e(d) = 0.5 d^2 - 0.5 + relu(|d| - 1)`` less its constant -0.5, which changes no gradient and made the
    loss negative at a good prediction: ``e(d) = 0.5 d^2 + relu(|d| - 1)`` (the relu acts only where
    ``|d| > 1``). For each image and band b: ``mean over pixels of e`` divided by the band's energy
    ``E_b = mean over pixels of target_b^2 + energy_offset``; then the mean over bands and images.
    Low-energy bands are thus weighted up. At a perfect prediction the loss is 0 (its minimum).

    Shape:
        - pred, target: (B, C, H, W) or (C, H, W)
        - output: () scalar
    """
    check_tensor_pair(pred, target)
    d = pred - target
    e = 0.5 * d.square() + F.relu(d.abs() - 1.0)
    per_band = e.mean(dim=(-2, -1))
    energy = target.square().mean(dim=(-2, -1)) + energy_offset
    return (per_band / energy).mean()


def feature_distillation_loss(f_student: torch.Tensor, f_teacher: torch.Tensor) -> torch.Tensor:
    """``BCEWithLogits(F_S, sigmoid(F_T))``, mean over elements; the teacher's features are detached.

    Each feature is read as the logit of a Bernoulli probability; the loss is the cross-entropy of
    the student's against the teacher's (minimal, not 0, when ``F_S == F_T``).

    Shape:
        - f_student, f_teacher: (B, nf, H, W) (any equal shapes)
        - output: () scalar
    """
    if not isinstance(f_student, torch.Tensor) or not isinstance(f_teacher, torch.Tensor):
        raise InputError("f_student and f_teacher must be torch.Tensors")
    if f_student.shape != f_teacher.shape:
        raise InputError(
            f"student and teacher features must have the same shape, got {tuple(f_student.shape)} "
            f"and {tuple(f_teacher.shape)} (the fused features of both networks need the same width nf)"
        )
    return F.binary_cross_entropy_with_logits(f_student, torch.sigmoid(f_teacher.detach()))


PIXEL_LOSSES = ("smooth_l1", "l1")


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1") -> torch.Tensor:
    """The per-element distance, mean over elements: ``smooth_l1`` (beta 1, the paper's) or ``l1``.

    On a residual over a good base the errors are ~0.01 on the [-1, 1] scale, where SmoothL1 is a squared error
    whose steps follow the few largest errors; L1 follows their signs (csakd's default recipe, measured in the
    README's training section).
    """
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    raise InputError(f"pixel loss {kind!r}: expected one of {', '.join(PIXEL_LOSSES)}")


def response_distillation_loss(s: torch.Tensor, t: torch.Tensor, kind: str = "smooth_l1") -> torch.Tensor:
    """``SmoothL1(S, T)`` (beta 1, mean over elements; or ``kind`` of :func:`pixel_loss`), ``T`` detached.

    The student loss keeps SmoothL1 here whatever its pixel term: near ``S = T`` it is a squared error that
    pulls little, where L1 would pull every element by a constant amount towards a teacher that at first is no
    better than the student (measured: with L1 the co-trained student stayed at its base).

    Shape:
        - s, t: (B, C, H, W) or (C, H, W)
        - output: () scalar
    """
    check_tensor_pair(s, t, ("student output", "teacher output"))
    return pixel_loss(s, t.detach(), kind)


@dataclass
class LossWeights:
    """Weights of the loss terms (the paper's values by default); 0 skips a term.

    Attributes:
        pixel: SmoothL1(output, X).
        sam: :func:`sam_loss`.
        beba: :func:`beba_loss`.
        response_kd: the student's SmoothL1(S, T) (:func:`response_distillation_loss`).
        feature_kd: the student's BCEWithLogits(F_S, sigmoid(F_T)) (:func:`feature_distillation_loss`).
    """

    pixel: float = 1.0
    sam: float = 0.1
    beba: float = 0.1
    response_kd: float = 0.1
    feature_kd: float = 0.1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"loss weight {name} must be a finite number, got {value!r}")
            if value < 0:
                raise InputError(f"loss weight {name} must be >= 0 (0 skips the term), got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-able dict of the weights."""
        return asdict(self)


def _total(out: torch.Tensor, weighted: list[torch.Tensor]) -> torch.Tensor:
    if not weighted:  # every weight 0: a zero that still back-propagates
        return out.sum() * 0.0
    total = weighted[0]
    for term in weighted[1:]:
        total = total + term
    return total


def teacher_loss(
    out: torch.Tensor, target: torch.Tensor, w: LossWeights | None = None, *, pixel: str = "smooth_l1"
) -> dict[str, torch.Tensor]:
    """The teacher's loss ``w.pixel SmoothL1(T, X) + w.sam SAM(T, X) + w.beba BEBA(T, X)``.

    ``pixel`` chooses the pixel term's distance (:func:`pixel_loss`: ``smooth_l1``, the paper's, or ``l1``).

    Returns:
        ``{"loss": weighted total, "l_pix", "l_sam", "l_beba": the unweighted terms}``; a term whose
        weight is 0 is not computed and its key is absent. Tensors keep their graph.

    Shape:
        - out, target: (B, C, H, W)
        - every value: () scalar
    """
    w = LossWeights() if w is None else w
    check_tensor_pair(out, target, ("teacher output", "target"))
    parts: dict[str, torch.Tensor] = {}
    weighted: list[torch.Tensor] = []
    if w.pixel:
        parts["l_pix"] = pixel_loss(out, target, pixel)
        weighted.append(w.pixel * parts["l_pix"])
    if w.sam:
        parts["l_sam"] = sam_loss(out, target)
        weighted.append(w.sam * parts["l_sam"])
    if w.beba:
        parts["l_beba"] = beba_loss(out, target)
        weighted.append(w.beba * parts["l_beba"])
    return {"loss": _total(out, weighted), **parts}


def student_loss(
    out: torch.Tensor,
    feat: torch.Tensor,
    target: torch.Tensor,
    t_out: torch.Tensor | None,
    t_feat: torch.Tensor | None,
    w: LossWeights | None = None,
    *,
    pixel: str = "smooth_l1",
) -> dict[str, torch.Tensor]:
    """The student's loss: the teacher's terms on S plus the distillation terms (``pixel``: as for the teacher;
    the response distillation stays SmoothL1, see :func:`response_distillation_loss`).

    ``w.pixel SmoothL1(S, X) + w.response_kd SmoothL1(S, T) + w.feature_kd BCEWithLogits(F_S,
    sigmoid(F_T)) + w.beba BEBA(S, X) + w.sam SAM(S, X)``, ``T`` and ``F_T`` detached. Without a
    teacher (``t_out`` / ``t_feat`` None) the corresponding term is skipped.

    Returns:
        ``{"loss", "l_pix", "l_sam", "l_beba", "l_kd_resp", "l_kd_feat"}`` (unweighted terms; keys of
        skipped terms absent).

    Shape:
        - out, target, t_out: (B, C, H, W)
        - feat, t_feat: (B, nf, H, W)
        - every value: () scalar
    """
    w = LossWeights() if w is None else w
    result = teacher_loss(out, target, w, pixel=pixel)
    weighted = [result["loss"]] if len(result) > 1 else []
    if t_out is not None and w.response_kd:
        result["l_kd_resp"] = response_distillation_loss(out, t_out)
        weighted.append(w.response_kd * result["l_kd_resp"])
    if t_feat is not None and w.feature_kd:
        result["l_kd_feat"] = feature_distillation_loss(feat, t_feat)
        weighted.append(w.feature_kd * result["l_kd_feat"])
    result["loss"] = _total(out, weighted)
    return result
