"""fit-scene's report as plain text for the console."""

from __future__ import annotations

from typing import Any

__all__ = ["summary_lines"]


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short plain-text summary of a report: estimates, consistency and Wald metrics, time."""
    est = report["estimates"]
    m = report["metrics"]
    model_db = est.get("model_residual_db", {})
    lines = [
        f"estimates: x{est['scale']}, phase {est['phase']}, PSF {est['blur']['kind']} {est['blur']['kernel_size']}x"
        f"{est['blur']['kernel_size']} (Gaussian sigma {est['blur']['sigma_hr_pixels']:.2f} HR px); the model "
        f"S(Z) = R Y + o leaves {model_db.get('all_bands', float('nan')):.1f} dB of the degraded MSI's variance "
        "(per MSI band " + ", ".join(f"{v:.1f}" for v in model_db.get("per_msi_band", [])) + " dB)",
        _base_line(report.get("settings", {}).get("base")),
        f"{'spectral consistency':<22}{'PSNR dB':>9}{'SAM deg':>9}{'ERGAS':>8}{'RMSE (LR-HSI units)':>21}",
    ]
    for name, v in m["spectral_consistency"].items():
        lines.append(f"  {name:<20}{v['psnr']:>9.2f}{v['sam']:>9.3f}{v['ergas']:>8.3f}{v['rmse']:>21.4g}")
    lines.append(f"{'spatial consistency':<22}{'PSNR dB':>9}{'RMSE (HR-MSI units)':>21}{'CC':>8}{'SSIM':>10}")
    for name, v in m["spatial_consistency"].items():
        lines.append(f"  {name:<20}{v['psnr']:>9.2f}{v['rmse']:>21.4g}{v['cc']:>8.4f}{v['ssim']:>10.4f}")
    wald = m["wald_validation"]
    region = "heldout" if "heldout" in wald else "whole"
    lines.append(f"{'Wald (' + region + ')':<22}{'PSNR dB':>9}{'SAM deg':>9}{'ERGAS':>8}{'RMSE (LR-HSI units)':>21}")
    for name, v in wald[region].items():
        lines.append(f"  {name:<20}{v['psnr']:>9.2f}{v['sam']:>9.3f}{v['ergas']:>8.3f}{v['rmse']:>21.4g}")
    held = m.get("heldout_consistency")
    if held:
        lines.append(f"{'held-out consistency':<22}{'score dB':>9}{'spec dB':>9}{'spat dB':>9}")
        for name, v in held.items():
            lines.append(f"  {name:<20}{v['score']:>9.3f}{v['spectral_psnr']:>9.2f}{v['spatial_psnr']:>9.2f}")
    lines += report.get("decision", {}).get("lines", [])
    t = report["timings_seconds"]
    tr = report["training"]
    lines.append(f"time: {t['total']:.0f} s in all, training {t['train']:.0f} s ({tr['steps']} steps)")
    return lines



def _base_line(base: dict[str, Any] | None) -> str:
    if not base or base.get("kind") != "denoised":
        return "base: plain (the regression base of csakd train, with the estimated PSF)"
    dim = base.get("subspace_dimension")
    return (f"base: denoised (detail ridge {base['detail_eps']:.3g} from the HR-MSI's noise sigma "
            + ", ".join(f"{v:.3g}" for v in base.get("msi_noise_sigma", [])) + "; output in "
            + (f"the LR-HSI's {dim}-dimensional noise-whitened subspace)" if dim else "all the LR-HSI's directions)"))
