"""The real data sources of ``data/``: one registry entry per folder, and the images it holds.

A :class:`Source` names the sensor, the band order of its files, the GSD, licence and labels; its
``items()`` lists every image as an :class:`Item` with the labels attached (boxes, mask paths). The
numbers come from ``data/README.md`` and the files' own metadata; the sensor's band wavelengths come
from :mod:`vhrfm.sensors`. Adding a source is one entry in :data:`SOURCES`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from vhrfm.config import data_dir
from vhrfm.errors import VHRFMInputError
from vhrfm.sensors import get_sensor


@dataclass(frozen=True)
class Item:
    """One image file of a source, with what a sample needs to know about it."""

    source: str
    path: str                   # relative to data/
    product: str                # "ms", "pan", "rgb": files of one product share bands and radiometry
    bands: tuple[str, ...]      # sensor band names, in file order
    gsd: float                  # metres per pixel
    group: str                  # images of the same ground share a group (kept in one split per block)
    published_split: str | None = None
    boxes: np.ndarray | None = field(default=None, compare=False, repr=False)  # N x 4 xyxy pixels
    box_labels: tuple[str, ...] = ()
    mask: str | None = None     # label raster (relative to data/), same grid as the image
    ignore: str | None = None   # raster whose non-zero pixels are ignored (e.g. clouds)
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Source:
    id: str
    area: str                   # pretrain | wildfire | megafauna
    title: str
    sensor: str
    licence: str
    attribution: str
    origin: str                 # repository @ commit, path
    labels: str                 # what labels exist, in words
    non_commercial: bool
    list_items: Callable[[Path], list[Item]] = field(repr=False, compare=False)

    @property
    def folder(self) -> Path:
        return data_dir() / self.area / self.id

    def items(self) -> list[Item]:
        if not self.folder.is_dir():
            raise VHRFMInputError(
                "data source folder missing: run `dvc pull` (make data)", expected=str(self.folder), found="nothing"
            )
        return _cached_items(self.id, str(self.folder))


@lru_cache(maxsize=None)
def _cached_items(source_id: str, folder: str) -> list[Item]:
    return SOURCES[source_id].list_items(Path(folder))


def _rel(p: Path) -> str:
    return p.relative_to(data_dir()).as_posix()


# ----------------------------------------------------------------------------------------------- pretrain


def _pleiades_aircraft(folder: Path) -> list[Item]:
    ann = pd.read_csv(folder / "annotations.csv")
    boxes: dict[str, list] = {}
    for image_id, geom, cls in zip(ann.image_id, ann.geometry, ann["class"]):
        pts = np.asarray(ast.literal_eval(geom), dtype=float)
        boxes.setdefault(image_id, []).append((pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max(), cls))
    out = []
    for p in sorted((folder / "images").glob("*.jpg")):
        b = boxes.get(p.name, [])
        out.append(Item(
            source="airbus_pleiades_aircraft", path=_rel(p), product="rgb", bands=("red", "green", "blue"), gsd=0.5,
            group=p.stem, boxes=np.array([x[:4] for x in b], dtype=np.float32).reshape(-1, 4),
            box_labels=tuple(x[4] for x in b),
        ))
    return out


def _spacenet(folder: Path) -> list[Item]:
    out = []
    for i in (1, 2, 3):  # ms<i> and pan<i> cover the same ground
        out.append(Item("spacenet_rotterdam_wv2", _rel(folder / f"ms{i}.tif"), "ms", ("blue", "green", "red", "nir1"), 1.0, f"rotterdam{i}"))
        out.append(Item("spacenet_rotterdam_wv2", _rel(folder / f"pan{i}.tif"), "pan", ("pan",), 0.5, f"rotterdam{i}"))
    out.append(Item("spacenet_rotterdam_wv2", _rel(folder / "sample_geotiff.tif"), "pan", ("pan",), 0.5, "atlanta"))
    return out


def _wv2_8band(folder: Path) -> list[Item]:
    ms = ("coastal", "blue", "green", "yellow", "red", "red_edge", "nir1", "nir2")
    return [
        Item("worldview2_8band_pansharpening", _rel(folder / "ms_8band.tif"), "ms", ms, 2.0, "wv2pair"),
        Item("worldview2_8band_pansharpening", _rel(folder / "pan.tif"), "pan", ("pan",), 0.5, "wv2pair"),
    ]


def _kahramanmaras(folder: Path) -> list[Item]:
    # img1 / img2 are two views; pre and post of the same view cover the same ground
    return [
        Item("pleiades_pan_kahramanmaras", _rel(p), "pan", ("pan",), 0.5, f"kahramanmaras_{p.stem.split('_')[-1]}",
             extra={"epoch": p.stem.split("_")[0]})
        for p in sorted(folder.glob("*.tif"))
    ]


def _stereo(folder: Path) -> list[Item]:
    out = []
    for p in sorted(folder.glob("*.tif")):
        site = "gizeh" if "gizeh" in p.name else "ventoux"
        # Ventoux is resampled to 0.5 m (file name); Gizeh is in sensor geometry at the native ~0.7 m PAN sampling
        out.append(Item("pleiades_pan_stereo", _rel(p), "pan", ("pan",), 0.5 if site == "ventoux" else 0.7, site))
    return out


# ----------------------------------------------------------------------------------------------- wildfire


def _cems(folder: Path) -> list[Item]:
    out = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        out.append(Item(
            "cems_emsr382_sentinel2", _rel(d / "image_post_s2_truecolor_rgb.tif"), "rgb", ("b04", "b03", "b02"), 10.0,
            d.name, mask=_rel(d / "mask_burned_DEL.tif"), ignore=_rel(d / "cloud_mask_CM.tif"),
            extra={"severity": _rel(d / "mask_severity_GRA.tif"), "epoch": "post"},
        ))
    return out


def _xbd(folder: Path) -> list[Item]:
    return [Item("xbd_santa_rosa_demo", _rel(p), "rgb", ("red", "green", "blue"), 0.42, p.stem, extra={"epoch": "post"})
            for p in sorted(folder.glob("*.png"))]


# ----------------------------------------------------------------------------------------------- megafauna


def _boxes_by_image(df: pd.DataFrame, key: str) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    out = {}
    for img, g in df.groupby(key):
        out[img] = (g[["x_min", "y_min", "x_max", "y_max"]].to_numpy(np.float32), tuple(g["label"]))
    return out


def _beluga(folder: Path) -> list[Item]:
    lab = pd.read_csv(folder / "labels.csv")
    gsd = dict(zip(lab.image, lab.gsd_m))
    boxes = _boxes_by_image(lab, "image")
    out = []
    for p in sorted((folder / "images").glob("*.tif")):
        key = f"images/{p.name}"
        b, labels = boxes.get(key, (np.zeros((0, 4), np.float32), ()))
        out.append(Item("beluga_seeker_wv3", _rel(p), "pan", ("pan",), float(gsd.get(key, 0.3 if "P3DS" in p.name else 0.5)),
                        p.stem, boxes=b, box_labels=labels))
    return out


SEAL_GSD_M = 0.025  # not stated by the source; estimated from animal sizes (data/README.md): ~2-3 cm
SEAL_DEGRADE = 12   # area-average (anti-aliased) decimation of the drone tiles: 0.025 m x 12 = 0.3 m, WorldView-3 PAN


def _seals(folder: Path) -> list[Item]:
    lab = pd.read_csv(folder / "labels.csv")
    boxes = _boxes_by_image(lab, "image")
    meta = lab.drop_duplicates("image").set_index("image")
    out = []
    for img in sorted(meta.index):
        b, labels = boxes[img]
        split = {"valid": "val"}.get(meta.at[img, "split"], meta.at[img, "split"])
        out.append(Item("seals_aerial_drone", _rel(folder / img), "rgb", ("red", "green", "blue"), SEAL_GSD_M,
                        str(meta.at[img, "parent_photo"]), published_split=split, boxes=b, box_labels=labels,
                        extra={"species": meta.at[img, "species"]}))
    return out


def _source(*args, **kw) -> Source:
    return Source(*args, **kw)


SOURCES: dict[str, Source] = {s.id: s for s in [
    _source("airbus_pleiades_aircraft", "pretrain", "Airbus Pleiades airports (aircraft sample)", "pleiades",
            "CC BY-NC-SA 4.0", "Airbus DS", "miko7879/pytorch-remote-sensing @ ccc28ba, data/train + data/valid",
            "aircraft boxes (Airplane / Truncated_Airplane)", True, _pleiades_aircraft),
    _source("spacenet_rotterdam_wv2", "pretrain", "SpaceNet Rotterdam (WV-2) and Atlanta PAN crops", "worldview2",
            "CC BY-SA 4.0 (imagery), Apache-2.0 (repo)", "SpaceNet / Maxar", "CosmiQ/solaris @ 5315390, solaris/data",
            "none", False, _spacenet),
    _source("worldview2_8band_pansharpening", "pretrain", "WorldView-2 8-band pansharpening pair", "worldview2",
            "MIT (repository)", "codegaj/py_pansharpening", "codegaj/py_pansharpening @ a1bf9ec, images/imgWV2.mat",
            "none", False, _wv2_8band),
    _source("pleiades_pan_kahramanmaras", "pretrain", "Pleiades PAN, Kahramanmaras earthquake pre/post", "pleiades",
            "Etalab Open Licence 2.0", "CNES", "CNES/picanteo @ 71b9978, docs/tutorials/data", "none", False, _kahramanmaras),
    _source("pleiades_pan_stereo", "pretrain", "Pleiades PAN stereo pairs (Gizeh, Ventoux)", "pleiades",
            "Apache-2.0", "CNES", "CNES/shareloc @ df45fae, tests/data/image", "none", False, _stereo),
    _source("cems_emsr382_sentinel2", "wildfire", "Copernicus EMS EMSR382 Gran Canaria fire (Sentinel-2 render)",
            "sentinel2", "Copernicus data terms (free, open, attribution)",
            "Contains modified Copernicus Sentinel data (2019); (c) European Union, Copernicus EMS (EMSR382); Colomba et al. CIKM 2022",
            "MatteoM95/CEMS-Wildfire-Dataset @ d635dea, assets/sample/EMSR382/AOI01", "burned-area mask, severity, cloud mask",
            False, _cems),
    _source("xbd_santa_rosa_demo", "wildfire", "xBD Santa Rosa (Tubbs fire) post-fire GeoEye-1 scene", "geoeye1",
            "CC BY-NC-SA 4.0", "xBD, Gupta et al. CVPRW 2019 (Maxar)", "DIUx-xView/xView2_baseline @ 821d9f8",
            "none", True, _xbd),
    _source("beluga_seeker_wv3", "megafauna", "Beluga-seeker WorldView-3 chips", "worldview3",
            "GPL-3.0 (repository); imagery (c) Maxar, shared for research", "Zheng et al., IGARSS 2025",
            "VoyagerXvoyagerx/beluga-seeker @ a1f01d4", "whale boxes (certain / uncertain)", True, _beluga),
    _source("seals_aerial_drone", "megafauna", "Drone photographs of harbor and elephant seals", "aerial_rgb",
            "MIT", "pancakereport/seal-computer-vision (aqc.70111)", "pancakereport/seal-computer-vision @ 86ca4d9, Data/",
            "seal boxes by class, published train / valid / test", False, _seals),
]}


def get_source(source_id: str) -> Source:
    if source_id not in SOURCES:
        raise VHRFMInputError("unknown data source", expected=sorted(SOURCES), found=source_id)
    return SOURCES[source_id]


def sensor_of(item: Item):
    return get_sensor(SOURCES[item.source].sensor)
