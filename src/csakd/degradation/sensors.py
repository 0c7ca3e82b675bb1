"""Named sensors' response curves: the cameras of colour-science and the satellites of pyrsr (an optional
package: ``pip install csakd[sensors]``). :meth:`csakd.degradation.srf.SpectralResponse.from_sensor` resamples
them to the HSI's wavelengths."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csakd.errors import InputError


@dataclass(frozen=True)
class SensorCurves:
    """A sensor's response curves as published: ``curves[:, k]`` is band ``k`` sampled at ``wavelengths``."""

    wavelengths: np.ndarray  # (n,) nm
    curves: np.ndarray  # (n, c)
    band_names: tuple[str, ...]
    source: str  # the spec that names the sensor again (stored with the response)
    what: str  # how messages name it


def colour_names() -> list[str]:
    import colour

    return [str(k) for k in colour.MSDS_CAMERA_SENSITIVITIES]


def colour_camera(name: str) -> SensorCurves | None:
    """The curves of a colour-science camera (``colour.MSDS_CAMERA_SENSITIVITIES``, case-insensitive), or None."""
    import colour

    lookup = {str(k).lower(): str(k) for k in colour.MSDS_CAMERA_SENSITIVITIES}
    key = lookup.get(name.lower())
    if key is None:
        return None
    msds = colour.MSDS_CAMERA_SENSITIVITIES[key]
    curve_wl = np.asarray(msds.wavelengths, dtype=np.float64)
    values = np.asarray(msds.values, dtype=np.float64)
    names = tuple(str(label) for label in msds.labels)
    return SensorCurves(curve_wl, values, names, source=f"colour:{key}", what=f"camera {key!r}")


def _pyrsr_data_dir() -> Path | None:
    try:
        import pyrsr
    except ImportError:
        return None
    return Path(pyrsr.__file__).resolve().parent / "data"


def pyrsr_satellites() -> list[str] | None:
    data = _pyrsr_data_dir()
    if data is None:
        return None
    if not data.is_dir():
        return []
    return sorted(p.name for p in data.iterdir() if p.is_dir())


def _natural_key(s: str) -> tuple[int, str]:
    m = re.match(r"(\d+)(.*)", s)
    return (int(m.group(1)), m.group(2)) if m else (10**6, s)


def _band_token(token: str) -> str:
    """'B02' / 'band_2' / '2' / 'B8A' -> pyrsr's '2' / '8A'."""
    t = token.strip().upper()
    t = re.sub(r"^(BAND_?|B)", "", t)
    t = t.lstrip("0") or "0"
    return t


def _band_label(b: str) -> str:
    """pyrsr's '2' / '8A' / '10' -> 'B02' / 'B8A' / 'B10' (Sentinel-2 style)."""
    return f"B{b}" if len(b) >= 2 else f"B0{b}"


def pyrsr_sensor(spec: str) -> SensorCurves:
    """The curves of a pyrsr satellite's sensor, ``SATELLITE[/SENSOR][:BANDS]``."""
    data = _pyrsr_data_dir()
    if data is None:
        raise InputError(
            f"sensor {spec!r} needs the optional package pyrsr: "
            "pip install csakd[sensors] (or pip install pyrsr)"
        )
    sats = pyrsr_satellites() or []
    target, _, band_part = spec.partition(":")
    sat_name, _, sensor_name = target.partition("/")
    sat_lookup = {s.lower(): s for s in sats}
    sat = sat_lookup.get(sat_name.strip().lower())
    if sat is None:
        raise InputError(f"unknown pyrsr satellite {sat_name.strip()!r}; known: {', '.join(sats)}")
    sensors = sorted(p.name for p in (data / sat).iterdir() if p.is_dir())
    if sensor_name.strip():
        sensor = {s.lower(): s for s in sensors}.get(sensor_name.strip().lower())
        if sensor is None:
            raise InputError(f"pyrsr satellite {sat} has no sensor {sensor_name.strip()!r}; known: {sensors}")
    elif len(sensors) == 1:
        sensor = sensors[0]
    else:
        raise InputError(
            f"pyrsr satellite {sat} carries several sensors {sensors}: name one, e.g. '{sat}/{sensors[0]}'"
        )
    available = sorted(
        (p.name[len("band_") :] for p in (data / sat / sensor).iterdir() if p.name.startswith("band_")),
        key=_natural_key,
    )
    if band_part.strip():
        wanted = [_band_token(t) for t in band_part.split(",") if t.strip()]
        unknown = [t for t in wanted if t not in available]
        if unknown:
            missing = ", ".join(_band_label(b) for b in unknown)
            labels = ", ".join(_band_label(b) for b in available)
            raise InputError(f"{sat}/{sensor} has no band(s) {missing}; available: {labels}")
    else:
        from pyrsr.sensorspecs import get_LayerBandsAssignment

        try:
            wanted = list(get_LayerBandsAssignment(sat, sensor, no_thermal=True, no_pan=True))
        except ValueError:
            wanted = available
    from pyrsr import RelativeSpectralResponse

    rsr = RelativeSpectralResponse(sat, sensor, LayerBandsAssignment=wanted)
    curve_wl = np.asarray(rsr.rsrs_wvl, dtype=np.float64)  # nm (pyrsr converts micrometre files)
    curves = np.stack([np.asarray(rsr.rsrs_norm01[b], dtype=np.float64) for b in rsr.bands], axis=1)
    names = tuple(_band_label(b) for b in rsr.bands)
    canonical = f"pyrsr:{sat}/{sensor}:{','.join(names)}"
    return SensorCurves(curve_wl, curves, names, source=canonical, what=f"sensor {canonical!r}")
