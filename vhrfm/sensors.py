"""Sensor registry: spectral bands, ground sampling distance and bit depth.

Each supported sensor is a :class:`Sensor` holding its :class:`Band` s in the
order the vendor delivers them (PAN first where the sensor has one, then the
multispectral bands by wavelength, then SWIR).  Band edges are the vendor's
published band-pass limits (nominal edges, or FWHM where the vendor gives
FWHM); ``center_nm`` is their midpoint and ``width_nm`` their difference,
except for Sentinel-2, where ESA publishes centre wavelength and bandwidth
directly.  Every entry cites its source document in ``Sensor.reference``.

Look a sensor up with :func:`get_sensor` (case-, accent- and
punctuation-insensitive, ids or aliases) and add one with
:func:`register_sensor`.  Every failure raises
:class:`~vhrfm.errors.VHRFMInputError`.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

from vhrfm.errors import VHRFMInputError

__all__ = [
    "Band",
    "Sensor",
    "SENSORS",
    "SENTINEL2_NATIVE_GSD_M",
    "register_sensor",
    "get_sensor",
    "list_sensors",
    "true_colour_indices",
]

GROUPS = ("pan", "ms", "swir")
KINDS = ("satellite", "aerial")


@dataclass(frozen=True)
class Band:
    """One spectral band: canonical lower-case name, centre and full width in nm."""

    name: str
    center_nm: float
    width_nm: float
    group: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip().lower():
            raise VHRFMInputError("band name must be a non-empty lower-case string", found=repr(self.name))
        if self.group not in GROUPS:
            raise VHRFMInputError(f"band {self.name!r} has an unknown group", expected=list(GROUPS), found=self.group)
        if not float(self.center_nm) > 0:
            raise VHRFMInputError(f"band {self.name!r} centre wavelength must be positive", found=self.center_nm)
        if not float(self.width_nm) > 0:
            raise VHRFMInputError(f"band {self.name!r} width must be positive", found=self.width_nm)

    @property
    def lower_nm(self) -> float:
        """Lower band edge, nm."""
        return self.center_nm - self.width_nm / 2.0

    @property
    def upper_nm(self) -> float:
        """Upper band edge, nm."""
        return self.center_nm + self.width_nm / 2.0


def _normalise_band_name(name: object) -> str:
    if not isinstance(name, str):
        raise VHRFMInputError("band name must be a string", found=repr(name))
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _as_name_list(names: Sequence[str] | str) -> list[str]:
    # A bare string would otherwise be iterated character by character.
    return [names] if isinstance(names, str) else list(names)


@dataclass(frozen=True)
class Sensor:
    """A sensor: its bands (registry order), per-group GSD, bit depth and source."""

    id: str
    name: str
    bands: tuple[Band, ...]
    gsd_m: dict[str, float]
    bit_depth: int
    kind: str
    reference: str
    aliases: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", self.id):
            raise VHRFMInputError("sensor id must be lower-case letters, digits and '_'", found=repr(self.id))
        object.__setattr__(self, "bands", tuple(self.bands))
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "gsd_m", {str(k): float(v) for k, v in dict(self.gsd_m).items()})
        if not self.bands:
            raise VHRFMInputError(f"sensor {self.id!r} has no bands")
        for b in self.bands:
            if not isinstance(b, Band):
                raise VHRFMInputError(f"sensor {self.id!r} bands must be Band objects", found=type(b).__name__)
        names = [b.name for b in self.bands]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise VHRFMInputError(f"sensor {self.id!r} has duplicate band names", found=dupes)
        missing = sorted({b.group for b in self.bands} - set(self.gsd_m))
        if missing:
            raise VHRFMInputError(
                f"sensor {self.id!r} has bands in groups without a GSD",
                expected=f"gsd_m keys covering {missing}",
                found=sorted(self.gsd_m),
            )
        bad_gsd = {k: v for k, v in self.gsd_m.items() if not v > 0}
        if bad_gsd:
            raise VHRFMInputError(f"sensor {self.id!r} GSD must be positive", found=bad_gsd)
        if self.kind not in KINDS:
            raise VHRFMInputError(f"sensor {self.id!r} has an unknown kind", expected=list(KINDS), found=self.kind)
        if not isinstance(self.bit_depth, int) or self.bit_depth <= 0:
            raise VHRFMInputError(f"sensor {self.id!r} bit depth must be a positive int", found=self.bit_depth)

    def __hash__(self) -> int:  # gsd_m is a dict, so hash on the (unique) id
        return hash(self.id)

    def band(self, name: str) -> Band:
        """The band called ``name`` (case-insensitive; spaces/hyphens read as '_')."""
        key = _normalise_band_name(name)
        for b in self.bands:
            if b.name == key:
                return b
        raise VHRFMInputError(
            f"unknown band for sensor {self.id!r}",
            expected=[b.name for b in self.bands],
            found=name,
        )

    def band_names(self, group: str | None = None) -> list[str]:
        """Band names in registry order, optionally only those of ``group``."""
        if group is None:
            return [b.name for b in self.bands]
        if group not in GROUPS:
            raise VHRFMInputError("unknown band group", expected=list(GROUPS), found=group)
        return [b.name for b in self.bands if b.group == group]

    def select(self, names: Sequence[str]) -> list[Band]:
        """The bands called ``names``, in the order given."""
        return [self.band(n) for n in _as_name_list(names)]

    def _chosen(self, names: Sequence[str] | None) -> list[Band]:
        return list(self.bands) if names is None else self.select(names)

    def wavelengths(self, names: Sequence[str] | None = None) -> list[float]:
        """Centre wavelengths (nm) of ``names``, default all bands in registry order."""
        return [float(b.center_nm) for b in self._chosen(names)]

    def widths(self, names: Sequence[str] | None = None) -> list[float]:
        """Full band widths (nm) of ``names``, default all bands in registry order."""
        return [float(b.width_nm) for b in self._chosen(names)]

    def gsd(self, group: str = "ms") -> float:
        """Nominal GSD in metres of ``group`` (see the registry comments for nadir vs product)."""
        try:
            return self.gsd_m[group]
        except KeyError:
            raise VHRFMInputError(
                f"sensor {self.id!r} has no GSD for group {group!r}", expected=sorted(self.gsd_m), found=group
            ) from None

    def check_band_count(self, n: int, names: Sequence[str] | None = None) -> None:
        """Raise unless ``n`` equals the number of ``names`` (default: all bands)."""
        chosen = self._chosen(names)
        try:
            count = None if isinstance(n, bool) else operator.index(n)
        except TypeError:
            count = None
        if count != len(chosen):
            raise VHRFMInputError(
                f"band count does not match sensor {self.id!r} bands {[b.name for b in chosen]}",
                expected=len(chosen),
                found=n,
            )


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

SENSORS: dict[str, Sensor] = {}


def _key(name: str) -> str:
    """Lookup key: accents stripped, lower-case, letters and digits only."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]", "", plain.lower())


def _keys(sensor: Sensor) -> set[str]:
    return {k for k in (_key(s) for s in (sensor.id, sensor.name, *sensor.aliases)) if k}


def register_sensor(sensor: Sensor) -> None:
    """Add ``sensor`` to :data:`SENSORS`; error if its id, name or an alias is taken."""
    if not isinstance(sensor, Sensor):
        raise VHRFMInputError("register_sensor needs a Sensor", found=type(sensor).__name__)
    if sensor.id in SENSORS:
        raise VHRFMInputError("a sensor with this id is already registered", found=sensor.id)
    new = _keys(sensor)
    for other in SENSORS.values():
        clash = sorted(new & _keys(other))
        if clash:
            raise VHRFMInputError(
                f"sensor {sensor.id!r} name or alias already used by {other.id!r}", found=clash
            )
    SENSORS[sensor.id] = sensor


def get_sensor(name: str) -> Sensor:
    """The sensor whose id, name or alias matches ``name`` (case/accent/punctuation-insensitive)."""
    if isinstance(name, Sensor):
        return name
    if not isinstance(name, str):
        raise VHRFMInputError("sensor name must be a string", found=repr(name))
    if name in SENSORS:
        return SENSORS[name]
    key = _key(name)
    if key:
        for sensor in SENSORS.values():
            if key in _keys(sensor):
                return sensor
    raise VHRFMInputError("unknown sensor", expected=f"one of {list_sensors()} or an alias", found=name)


def list_sensors() -> list[str]:
    """Registered sensor ids, sorted."""
    return sorted(SENSORS)


_TRUE_COLOUR_TARGETS_NM = (650.0, 560.0, 480.0)  # red, green, blue
_TRUE_COLOUR_MAX_OFFSET_NM = 60.0


def true_colour_indices(wavelengths: Sequence[float]) -> list[int]:
    """Indices (R, G, B order) of the bands nearest 650, 560 and 480 nm.

    With three or more bands each within 60 nm of its target and all distinct,
    this is a true-colour composite.  Otherwise it falls back without failing:
    one band gives ``[0, 0, 0]``; anything else gives, per target, the nearest
    band (indices may repeat, e.g. a SWIR-only stack gives a grey composite of
    its shortest band).  Ties go to the earlier band.  Only an empty input raises.
    """
    wl = [float(w) for w in wavelengths]
    if not wl:
        raise VHRFMInputError("true_colour_indices needs at least one band", expected=">= 1 wavelength", found=0)
    if len(wl) == 1:
        return [0, 0, 0]
    return [min(range(len(wl)), key=lambda i, t=t: (abs(wl[i] - t), i)) for t in _TRUE_COLOUR_TARGETS_NM]


def _b(name: str, lower_nm: float, upper_nm: float, group: str = "ms") -> Band:
    """Band from its published lower and upper edge (nm)."""
    return Band(name, (lower_nm + upper_nm) / 2.0, float(upper_nm - lower_nm), group)


def _c(name: str, center_nm: float, width_nm: float, group: str = "ms") -> Band:
    """Band from its published centre and bandwidth (nm)."""
    return Band(name, float(center_nm), float(width_nm), group)


# WorldView-2 and WorldView-3 share the same VNIR band-pass edges.
_WV_VNIR = (
    _b("pan", 450, 800, "pan"),
    _b("coastal", 400, 450),
    _b("blue", 450, 510),
    _b("green", 510, 580),
    _b("yellow", 585, 625),
    _b("red", 630, 690),
    _b("red_edge", 705, 745),
    _b("nir1", 770, 895),
    _b("nir2", 860, 1040),
)

_BUILTIN: tuple[Sensor, ...] = (
    Sensor(
        id="pleiades",
        name="Pleiades 1A/1B",
        bands=(
            _b("pan", 470, 830, "pan"),
            _b("blue", 430, 550),
            _b("green", 500, 620),
            _b("red", 590, 710),
            _b("nir", 740, 940),
        ),
        # Product GSD (ortho products resampled); native at nadir is 0.7 m PAN / 2.8 m MS.
        gsd_m={"pan": 0.5, "ms": 2.0},
        bit_depth=12,
        kind="satellite",
        reference="Astrium/Airbus DS, Pleiades Imagery User Guide v2.0 (Oct. 2012), spectral bands table",
        aliases=("phr", "phr1a", "phr1b", "pleiades", "pleiades-1", "pleiades-1a", "pleiades-1b", "pleiades-hr"),
    ),
    Sensor(
        id="pleiades_neo",
        name="Pleiades Neo",
        bands=(
            _b("pan", 450, 800, "pan"),
            _b("deep_blue", 400, 450),
            _b("blue", 450, 520),
            _b("green", 530, 590),
            _b("red", 620, 690),
            _b("red_edge", 700, 750),
            _b("nir", 770, 880),
        ),
        # Native GSD at nadir (0.3 m PAN / 1.2 m MS); products are delivered at the same sampling.
        gsd_m={"pan": 0.3, "ms": 1.2},
        bit_depth=12,
        kind="satellite",
        reference="Airbus DS, Pleiades Neo technical sheet / Pleiades Neo Imagery User Guide (2021), spectral bands",
        aliases=("pneo", "pneo3", "pneo4", "pleiades neo 3", "pleiades neo 4", "pleiadesneo"),
    ),
    Sensor(
        id="spot6_7",
        name="SPOT-6/7",
        bands=(
            _b("pan", 450, 745, "pan"),
            _b("blue", 450, 520),
            _b("green", 530, 590),
            _b("red", 625, 695),
            _b("nir", 760, 890),
        ),
        # Product GSD (ortho products resampled to 1.5 m PAN / 6 m MS).
        gsd_m={"pan": 1.5, "ms": 6.0},
        bit_depth=12,
        kind="satellite",
        reference="Airbus DS, SPOT 6 & SPOT 7 Imagery User Guide (2013), spectral bands table",
        aliases=("spot6", "spot7", "spot-6", "spot-7", "spot 6/7", "spot6/7"),
    ),
    Sensor(
        id="worldview2",
        name="WorldView-2",
        bands=_WV_VNIR,
        # GSD at nadir (0.46 m PAN / 1.84 m MS); commercial products are resampled to 0.5 / 2.0 m.
        gsd_m={"pan": 0.46, "ms": 1.84},
        bit_depth=11,
        kind="satellite",
        reference="DigitalGlobe (Maxar), WorldView-2 data sheet; DigitalGlobe technical note 'The Benefits of the 8 Spectral Bands of WorldView-2'",
        aliases=("wv2", "wv02", "wv-2", "worldview-2", "world view 2"),
    ),
    Sensor(
        id="worldview3",
        name="WorldView-3",
        bands=_WV_VNIR
        + (
            _b("swir1", 1195, 1225, "swir"),
            _b("swir2", 1550, 1590, "swir"),
            _b("swir3", 1640, 1680, "swir"),
            _b("swir4", 1710, 1750, "swir"),
            _b("swir5", 2145, 2185, "swir"),
            _b("swir6", 2185, 2225, "swir"),
            _b("swir7", 2235, 2285, "swir"),
            _b("swir8", 2295, 2365, "swir"),
        ),
        # GSD at nadir (0.31 / 1.24 / 3.70 m); PAN/MS products resampled to 0.3 / 1.2 m,
        # SWIR is delivered commercially at 7.5 m.  PAN/MS are 11 bit; SWIR is 14 bit.
        gsd_m={"pan": 0.31, "ms": 1.24, "swir": 3.7},
        bit_depth=11,
        kind="satellite",
        reference="DigitalGlobe (Maxar), WorldView-3 data sheet (2014)",
        aliases=("wv3", "wv03", "wv-3", "worldview-3", "world view 3"),
    ),
    Sensor(
        id="geoeye1",
        name="GeoEye-1",
        bands=(
            _b("pan", 450, 800, "pan"),
            _b("blue", 450, 510),
            _b("green", 510, 580),
            _b("red", 655, 690),
            _b("nir", 780, 920),
        ),
        # GSD at nadir (0.41 m PAN / 1.65 m MS); commercial products resampled to 0.5 / 2.0 m.
        gsd_m={"pan": 0.41, "ms": 1.65},
        bit_depth=11,
        kind="satellite",
        reference="GeoEye / DigitalGlobe (Maxar), GeoEye-1 data sheet",
        aliases=("ge1", "ge01", "ge-1", "geoeye-1", "geoeye"),
    ),
    Sensor(
        id="quickbird",
        name="QuickBird",
        bands=(
            _b("pan", 405, 1053, "pan"),
            _b("blue", 430, 545),
            _b("green", 466, 620),
            _b("red", 590, 710),
            _b("nir", 715, 918),
        ),
        # GSD at nadir from the original 450 km orbit (0.61 / 2.44 m); 0.65 / 2.62 m after the
        # 2011 orbit raise to 482 km.
        gsd_m={"pan": 0.61, "ms": 2.44},
        bit_depth=11,
        kind="satellite",
        reference="DigitalGlobe, QuickBird data sheet; QuickBird Imagery Products - Product Guide rev. 4.7 (2007)",
        aliases=("qb", "qb2", "qb02", "quickbird-2", "quickbird2", "quick bird"),
    ),
    Sensor(
        id="rapideye",
        name="RapidEye",
        bands=(
            _b("blue", 440, 510),
            _b("green", 520, 590),
            _b("red", 630, 685),
            _b("red_edge", 690, 730),
            _b("nir", 760, 850),
        ),
        # Product GSD of the orthorectified (3A) product; native 6.5 m at nadir.
        gsd_m={"ms": 5.0},
        bit_depth=12,
        kind="satellite",
        reference="BlackBridge / Planet Labs, RapidEye Satellite Imagery Product Specifications (v6.1, 2016)",
        aliases=("re", "rapid eye", "rapideye-1", "reis"),
    ),
    Sensor(
        id="aerial_rgb",
        name="Aerial/drone RGB frame camera (generic)",
        bands=(
            _b("blue", 420, 510),
            _b("green", 500, 590),
            _b("red", 590, 670),
        ),
        # Nominal only: the real GSD depends on flying height and is set per dataset.
        gsd_m={"ms": 0.2},
        bit_depth=8,
        kind="aerial",
        reference=(
            "Generic Bayer colour-filter-array camera: nominal broad band-passes (approximate half-maximum "
            "of typical CMOS RGB responses, e.g. large-format aerial cameras and consumer drone cameras); "
            "not a single vendor specification"
        ),
        aliases=("rgb", "aerial rgb", "drone_rgb", "uav_rgb", "orthophoto_rgb"),
    ),
    Sensor(
        id="aerial_rgbn",
        name="Aerial/drone RGB+NIR frame camera (generic)",
        bands=(
            _b("blue", 420, 510),
            _b("green", 500, 590),
            _b("red", 590, 670),
            _b("nir", 760, 900),
        ),
        # Nominal only: the real GSD depends on flying height and is set per dataset.
        gsd_m={"ms": 0.2},
        bit_depth=8,
        kind="aerial",
        reference=(
            "Generic aerial 4-band (RGB + NIR) frame camera: nominal broad band-passes (RGB as aerial_rgb, "
            "NIR from a long-pass/band-pass NIR channel); not a single vendor specification"
        ),
        aliases=("rgbn", "rgbi", "rgbnir", "aerial rgbn", "drone_rgbn", "uav_rgbn", "orthophoto_rgbn"),
    ),
    Sensor(
        id="sentinel2",
        name="Sentinel-2 MSI",
        # S2A central wavelength / bandwidth (S2B differs by a few nm).  Registry order is the
        # L1C/L2A band order (B8A after B08).
        bands=(
            _c("b01", 442.7, 21),
            _c("b02", 492.4, 66),
            _c("b03", 559.8, 36),
            _c("b04", 664.6, 31),
            _c("b05", 704.1, 15),
            _c("b06", 740.5, 15),
            _c("b07", 782.8, 20),
            _c("b08", 832.8, 106),
            _c("b8a", 864.7, 21),
            _c("b09", 945.1, 20),
            _c("b10", 1373.5, 31),
            _c("b11", 1613.7, 91),
            _c("b12", 2202.4, 175),
        ),
        # All bands are group "ms"; gsd_m gives the finest (10 m) sampling.  Native per-band GSD
        # (10 / 20 / 60 m) is in SENTINEL2_NATIVE_GSD_M.
        gsd_m={"ms": 10.0},
        bit_depth=12,
        kind="satellite",
        reference=(
            "ESA, Sentinel-2 Spectral Response Functions (COPE-GSEG-EOPG-TN-15-0007) and Sentinel-2 User "
            "Handbook: S2A MSI central wavelength and bandwidth"
        ),
        aliases=("s2", "s2a", "s2b", "sentinel-2", "sentinel 2", "sentinel-2a", "sentinel-2b", "msi", "s2msi"),
    ),
)

#: Native Sentinel-2 MSI GSD per band, metres.
SENTINEL2_NATIVE_GSD_M: dict[str, float] = {
    "b01": 60.0, "b02": 10.0, "b03": 10.0, "b04": 10.0, "b05": 20.0, "b06": 20.0, "b07": 20.0,
    "b08": 10.0, "b8a": 20.0, "b09": 60.0, "b10": 60.0, "b11": 20.0, "b12": 20.0,
}

for _sensor in _BUILTIN:
    register_sensor(_sensor)
del _sensor
