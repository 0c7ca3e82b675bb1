"""The ``regression`` residual base: bicubic upsampling plus the HR-MSI's detail, mapped to the HSI bands by a
local linear regression (a guided filter with the degraded MSI as the guide).

With ``Y`` the LR-HSI (C, h, w), ``Z`` the HR-MSI (c, H, W), ``U`` the in-phase bicubic upsampling
(:func:`~csakd.degradation.upsample_in_phase`) and ``S`` the spatial degradation the network assumes (a
Gaussian blur of ``blur_size`` taps and ``blur_sigma`` HR pixels with reflect padding, then every
``scale``-th pixel from ``residual_phase``), the base is

    ``base = U(Y) + A (Z - U(S(Z)))``,

``Z - U(S(Z))`` being the MSI's detail that upsampling cannot restore and ``A`` (C x c per LR pixel) the map
from MSI to HSI bands. ``A`` comes from least squares of ``Y`` on ``S(Z)`` (both centred) in every window of
``(2 radius + 1)^2`` LR pixels, ``A_k = cov_k(Y, S(Z)) (cov_k(S(Z)) + eps I)^-1`` (``eps`` = 4e-7 on the
network's [-1, 1] scale, 1e-7 on [0, 1] data), then averaged over the windows that contain each LR pixel and
held constant over its ``scale x scale`` HR cell: the guided filter of He, Sun and Tang (2010, 2013) with
``S(Z)`` as a c-band guide, applied to the detail only. Box means use reflect padding and cumulative sums in
float64 (local covariances cancel badly in float32); everything runs outside autocast and is built from
ONNX-exportable ops (the c x c solves are an unrolled Cholesky factorisation).

If the scene's bands are linear combinations of the MSI bands, the base is the scene itself. Measured on
the 10 CAVE scenes in ../shared (256x256 centre crops, x4, Nikon D700, 9x9 Gaussian of sigma 2;
``benchmarks/detail_base.py``): 47.11 dB and 1.52 degrees at radius 2 (radius 1: 47.12, 3: 46.94, 4: 46.81,
6: 46.63 dB), against 44.83 dB / 1.90 degrees for one regression over the whole image, which is GSA's
synthetic-pan detail (:func:`csakd.baselines.gsa`: 44.82 dB), and 31.39 dB for bicubic upsampling. In an
exploratory run eps = 1e-8 on [0, 1] data gave the same, 1e-6 0.2 dB less; upsampling ``A`` bicubically
instead of holding it per cell gained 0.03 dB for a (c C, H, W) tensor more.

The base at an HR pixel reads the inputs within :func:`detail_reach` HR pixels (nothing global), so tiled
fusion needs only the overlap.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from csakd.degradation.spatial import gaussian_kernel, upsample_in_phase

__all__ = [
    "DetailBase", "SubspaceProjection", "box_mean", "check_size", "cholesky_solve_entries", "detail_reach",
    "gaussian_taps", "moment_sigma", "solve_spd",
]

#: the ridge added to each window's MSI covariance, on the network's [-1, 1] scale
LOCAL_EPS = 4e-7


def gaussian_taps(size: int, sigma: float) -> torch.Tensor:
    """The 1-D factor (``size`` taps, summing to 1, float64) of :func:`~csakd.degradation.spatial.gaussian_kernel`
    (its rows sum to that factor, as the kernel is the factor's outer product with itself)."""
    return gaussian_kernel(size, sigma, dtype=torch.float64).sum(dim=0)


def detail_reach(scale: int, blur_size: int, radius: int) -> int:
    """How far (HR pixels) the base at one pixel reads the inputs, a bound: ``A`` at its LR cell reads the
    LR pixels within ``2 radius`` (two box means), ``U`` two LR pixels each way, each of those LR pixels
    ``S(Z)``'s blur (``blur_size // 2``) around its own position, up to ``scale - 1`` pixels off the cell."""
    return scale * (max(2, 2 * radius) + 1) + blur_size // 2


def cholesky_solve_entries(gram: list[list[torch.Tensor]], rhs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Solve ``G x = r`` for symmetric positive definite ``G`` by an unrolled Cholesky factorisation, on
    entries: ``gram[i][j]`` and ``rhs[i]`` are tensors that broadcast together (e.g. (B, 1, h, w) and
    (B, C, h, w): one n x n system per pixel, C right-hand sides), and so are the returned ``x[i]``.

    Element-wise ops only (no ``linalg``, no transposes), so it traces into a small ONNX graph; meant for
    the few MSI bands (n <= ~16).
    """
    n = len(rhs)
    low: list[list[torch.Tensor]] = [[] for _ in range(n)]  # low[i][j], j <= i
    for j in range(n):
        diag = gram[j][j]
        for k in range(j):
            diag = diag - low[j][k] * low[j][k]
        ljj = torch.sqrt(torch.clamp(diag, min=torch.finfo(diag.dtype).tiny))
        low[j].append(ljj)
        for i in range(j + 1, n):
            v = gram[i][j]
            for k in range(j):
                v = v - low[i][k] * low[j][k]
            low[i].append(v / ljj)
    ys: list[torch.Tensor] = []
    for i in range(n):  # L y = r
        v = rhs[i]
        for k in range(i):
            v = v - low[i][k] * ys[k]
        ys.append(v / low[i][i])
    xs = list(ys)
    for i in reversed(range(n)):  # L^T x = y
        v = ys[i]
        for k in range(i + 1, n):
            v = v - low[k][i] * xs[k]
        xs[i] = v / low[i][i]
    return xs


def solve_spd(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """:func:`cholesky_solve_entries` on batched matrices.

    Shape:
        - gram: (N, n, n); rhs: (N, n, k); output: (N, n, k)
    """
    n = gram.shape[-1]
    entries = [[gram[:, i, j, None] for j in range(n)] for i in range(n)]
    return torch.stack(cholesky_solve_entries(entries, [rhs[:, i] for i in range(n)]), dim=1)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The mean over ``(2 radius + 1)^2`` windows with reflect padding, from cumulative sums (keeps the dtype).

    Shape: (N, K, h, w) -> (N, K, h, w)
    """
    if radius == 0:
        return x
    k = 2 * radius + 1
    # a leading zero row and column, then c[i + k] - c[i] is the sum over the window of pixel i
    xp = F.pad(F.pad(x, (radius, radius, radius, radius), mode="reflect"), (1, 0, 1, 0))
    for dim in (2, 3):
        c = torch.cumsum(xp, dim=dim)
        xp = c.narrow(dim, k, c.shape[dim] - k) - c.narrow(dim, 0, c.shape[dim] - k)
    return xp / float(k * k)


class DetailBase(nn.Module):
    """The MSI detail ``A (Z - U(S(Z)))`` (see the module docstring), added to an image that holds the rest of
    the base, ``U(Y)`` (:class:`~csakd.models.dts.DTSNet` adds it, as for the ``bicubic`` base).

    Args:
        msi_bands: the HR-MSI's bands ``c``.
        scale, phase: the grid ratio and the decimation phase.
        blur_size, blur_sigma: the Gaussian the network assumes for ``S`` (the training degradation's).
        radius: the regression windows' radius in LR pixels.
        kernel: a PSF (blur_size x blur_size, any shape) that replaces the Gaussian for ``S``; None: the Gaussian.
        eps: the ridge added to each window's MSI covariance (the network's [-1, 1] scale); None: LOCAL_EPS.
    """

    column: torch.Tensor
    kernel2d: torch.Tensor
    row: torch.Tensor

    def __init__(self, msi_bands: int, scale: int, phase: int, blur_size: int, blur_sigma: float,
                 radius: int, kernel: torch.Tensor | None = None, eps: float | None = None) -> None:
        super().__init__()
        self.eps = LOCAL_EPS if eps is None else float(eps)
        self.scale, self.phase, self.blur_radius, self.radius = scale, phase, blur_size // 2, radius
        self.full_kernel = kernel is not None
        if kernel is not None:  # a true convolution: the kernel flipped for conv2d's correlation
            k = kernel.double() / kernel.double().sum()
            self.register_buffer("kernel2d", k.flip(0, 1).float().reshape(1, 1, blur_size, blur_size)
                                 .repeat(msi_bands, 1, 1, 1), persistent=False)
        taps = gaussian_taps(blur_size, blur_sigma).float()
        # depthwise kernels of fixed shape (an ONNX convolution needs its kernel's shape)
        self.register_buffer("column", taps.reshape(1, 1, -1, 1).repeat(msi_bands, 1, 1, 1), persistent=False)
        self.register_buffer("row", taps.reshape(1, 1, 1, -1).repeat(msi_bands, 1, 1, 1), persistent=False)

    def degrade(self, msi: torch.Tensor) -> torch.Tensor:
        """``S(Z)``: the blur (reflect padding) sampled at every ``scale``-th pixel from ``phase``, float32.

        Shape: (B, c, H, W) -> (B, c, H / scale, W / scale)
        """
        return self.degrade_bands(msi)

    def degrade_bands(self, image: torch.Tensor) -> torch.Tensor:
        """:meth:`degrade` for an image of any number of bands (e.g. the HSI base), float32.

        Shape: (B, C, H, W) -> (B, C, H / scale, W / scale)
        """
        b, c, hh, ww = image.shape
        flat = image.float().reshape(b * c, 1, hh, ww)
        r, s, p = self.blur_radius, self.scale, self.phase
        h, w = hh // s, ww // s
        xp = F.pad(flat, (r, r, r, r), mode="reflect")[:, :, p:, p:]
        if self.full_kernel:
            y = F.conv2d(xp, self.kernel2d[:1].float(), stride=s)
        else:
            y = F.conv2d(F.conv2d(xp, self.column[:1].float(), stride=(s, 1)), self.row[:1].float(), stride=(1, s))
        return y[:, :, :h, :w].reshape(b, c, h, w)

    def gain(self, lr_hsi: torch.Tensor, msi_lr: torch.Tensor) -> list[torch.Tensor]:
        """``A`` per LR pixel, averaged over its windows: one (B, C, h, w) float32 map per MSI band.

        Shape:
            - lr_hsi: (B, C, h, w); msi_lr: ``S(Z)``, (B, c, h, w)
        """
        z, y = msi_lr.double(), lr_hsi.double()
        c, rad = z.shape[1], self.radius
        mean_z, mean_y = box_mean(z, rad), box_mean(y, rad)
        pairs = [(i, j) for i in range(c) for j in range(i + 1)]
        zz = box_mean(torch.stack([z[:, i] * z[:, j] for i, j in pairs], dim=1), rad)
        cov: list[list[torch.Tensor]] = [[zz[:, :1]] * c for _ in range(c)]
        for n, (i, j) in enumerate(pairs):
            v = zz[:, n : n + 1] - mean_z[:, i : i + 1] * mean_z[:, j : j + 1]  # (B, 1, h, w)
            cov[i][j] = cov[j][i] = v + self.eps if i == j else v
        cross = [box_mean(z[:, j : j + 1] * y, rad) - mean_z[:, j : j + 1] * mean_y for j in range(c)]
        a = cholesky_solve_entries(cov, cross)  # c maps (B, C, h, w)
        bands = y.shape[1]
        smooth = box_mean(torch.cat(a, dim=1), rad).float()
        return [smooth[:, j * bands : (j + 1) * bands] for j in range(c)]

    def forward(self, image: torch.Tensor, lr_hsi: torch.Tensor, hr_msi: torch.Tensor) -> torch.Tensor:
        """``image + A (Z - U(S(Z)))`` in float32 (without autograd, outside tracing, in ``image``'s memory)."""
        device_type = lr_hsi.device.type
        autocast = device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type)
        with torch.autocast(device_type, enabled=False) if autocast else contextlib.nullcontext():
            lr, msi = lr_hsi.float(), hr_msi.float()
            s = self.scale
            b, c = msi.shape[:2]
            h, w = lr.shape[-2:]
            msi_lr = self.degrade(msi)
            detail = msi - upsample_in_phase(msi_lr, s, self.phase)
            gains = self.gain(lr, msi_lr)
            bands = lr.shape[1]
            out = image.float()
            if not torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
                # A is constant over each LR cell: on (B, C, h, s, w, s) views of the output, A_j (B, C, h, 1,
                # w, 1) times the detail D_j (B, 1, h, s, w, s), added in place (no output-sized temporary)
                view = out.view(b, bands, h, s, w, s)
                for j, g in enumerate(gains):
                    view.addcmul_(g.reshape(b, bands, h, 1, w, 1), detail[:, j].reshape(b, 1, h, s, w, s))
                return out
            # the same on the polyphase (pixel-unshuffled) layout, whose broadcasts run over contiguous (h, w)
            # planes: 25% faster in ONNX Runtime than the 6-D views, and one pixel shuffle at the end
            phases = F.pixel_unshuffle(detail, s).reshape(b, c, s * s, h, w)
            injected = gains[0][:, :, None] * phases[:, 0:1]
            for j in range(1, c):
                injected = injected + gains[j][:, :, None] * phases[:, j : j + 1]
            return out + F.pixel_shuffle(injected.reshape(b, bands * s * s, h, w), s)


class SubspaceProjection(nn.Module):
    """``mean + synthesis^T (analysis (x - mean))`` per pixel (two 1x1 convolutions): an oblique projection of
    the C bands onto a k-dimensional subspace (:class:`~csakd.models.config.ModelConfig`'s ``output_*``), in
    float32 outside autocast.

    Shape: (B, C, H, W) -> (B, C, H, W)
    """

    mean: torch.Tensor
    analysis: torch.Tensor
    synthesis: torch.Tensor

    def __init__(self, mean: torch.Tensor, analysis: torch.Tensor, synthesis: torch.Tensor) -> None:
        super().__init__()
        k, c = analysis.shape
        # not in the state dict: the config holds them, and checkpoints keep their keys
        self.register_buffer("mean", mean.float().reshape(1, c, 1, 1), persistent=False)
        self.register_buffer("analysis", analysis.float().reshape(k, c, 1, 1), persistent=False)
        self.register_buffer("synthesis", synthesis.float().t().reshape(c, k, 1, 1).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        autocast = device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type)
        with torch.autocast(device_type, enabled=False) if autocast else contextlib.nullcontext():
            centred = x.float() - self.mean
            return F.conv2d(F.conv2d(centred, self.analysis), self.synthesis) + self.mean


def check_size(height: int, width: int, scale: int, blur_size: int, radius: int) -> str | None:
    """Why an HR image of ``height x width`` is too small for the base's reflect padding, or None."""
    r = blur_size // 2
    if min(height, width) <= r:
        return (f"the regression base's {blur_size}-tap blur pads by reflection and needs an HR-MSI of more than "
                f"{r} pixels each way, got {height}x{width}")
    if min(height, width) // scale <= radius:
        return (f"the regression base's windows of {2 * radius + 1}x{2 * radius + 1} LR pixels pad by reflection "
                f"and need an LR-HSI of more than {radius} pixels each way, got {height // scale}x{width // scale}")
    return None


def moment_sigma(kernel: torch.Tensor) -> float:
    """The sigma (pixels) of the isotropic Gaussian with the same second moment as a 2-D PSF (summing to 1)."""
    k = kernel.double() / kernel.double().sum()
    kh, kw = k.shape
    u = torch.arange(kh, dtype=torch.float64) - (kh - 1) / 2
    v = torch.arange(kw, dtype=torch.float64) - (kw - 1) / 2
    second = float((k * (u[:, None] ** 2 + v[None, :] ** 2)).sum())
    return max(math.sqrt(second / 2.0), 1e-3)
