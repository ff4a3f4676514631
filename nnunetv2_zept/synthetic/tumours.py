"""Tumour types and their insertion into a phantom.

Geometry follows the published recipes summarised in docs (ellipsoids with 0.75-1.25 semi-axis
jitter, smooth random deformation, centres kept off the organ surface, union clipped to the
host organ, soft edge by Gaussian blur of the mask); appearance is set per type: sign and size
of the HU change, texture, margin sharpness, necrotic core with enhancing rim, exophytic growth.
All sizes are in millimetres, so a type looks the same at any voxel spacing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from .anatomy import ORGAN_IDS, Anatomy, Tissue
from .fields import smooth_field
from .shapes import ellipsoid, rotation, tube


@dataclass(frozen=True)
class TumourType:
    """Appearance and geometry of one tumour type.  HU values are portal-venous CT.

    appearance:
      "shift"        host HU + delta x texture (delta < 0: hypodense, > 0: hyperdense)
      "absolute"     HU set to `hu` (+ texture), e.g. cysts and lung nodules
      "rim"          necrotic core at `hu`, enhancing rim of host + `rim_delta`
      "heterogeneous" enhancing solid part at `hu` with necrotic patches at `necrosis_hu`
    """

    name: str
    hosts: Tuple[str, ...]
    description: str
    appearance: str
    count: Tuple[int, int]                     # lesions per affected case (inclusive)
    diameter_mm: Tuple[float, float]
    delta_hu: Tuple[float, float] = (0.0, 0.0)            # "shift"
    hu: Tuple[float, float] = (0.0, 0.0)                  # "absolute" / core / solid part
    texture_hu: float = 5.0                               # internal heterogeneity (HU std)
    texture_mm: float = 3.0
    margin_sigma_mm: Tuple[float, float] = (1.0, 2.0)     # soft edge (0 = sharp)
    lobulation: float = 0.08                              # surface deformation amplitude
    elongation: Tuple[float, float] = (0.75, 1.25)        # semi-axis jitter
    rim_mm: Tuple[float, float] = (0.0, 0.0)              # "rim": enhancing rim thickness
    rim_delta_hu: Tuple[float, float] = (0.0, 0.0)
    necrosis_hu: Tuple[float, float] = (0.0, 0.0)         # "heterogeneous"
    necrosis_fraction: Tuple[float, float] = (0.0, 0.0)
    exophytic_probability: float = 0.0                    # may bulge out of the host organ
    central: bool = False                                 # placed near the organ's centre
    spicules: Tuple[int, int] = (0, 0)                    # thin radiating strands (lung)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


TUMOUR_TYPES: Dict[str, TumourType] = {t.name: t for t in [
    TumourType("liver_tumour", ("liver",),
               "hypodense liver lesion (HCC-like): darker than liver, mildly heterogeneous, soft margin",
               "shift", count=(1, 3), diameter_mm=(10, 45), delta_hu=(-90, -40), texture_hu=6,
               texture_mm=4, margin_sigma_mm=(1.0, 2.0), lobulation=0.08),
    TumourType("kidney_tumour", ("kidney_right", "kidney_left"),
               "heterogeneous enhancing renal mass (RCC-like) with necrotic patches, may be exophytic",
               "heterogeneous", count=(1, 1), diameter_mm=(20, 50), hu=(95, 140), texture_hu=15,
               texture_mm=4, margin_sigma_mm=(0.7, 1.2), lobulation=0.07, necrosis_hu=(15, 35),
               necrosis_fraction=(0.1, 0.35), exophytic_probability=0.5),
    TumourType("pancreas_tumour", ("pancreas",),
               "ill-defined hypodense pancreatic mass (PDAC-like), infiltrative margin",
               "shift", count=(1, 1), diameter_mm=(15, 35), delta_hu=(-55, -30), texture_hu=6,
               texture_mm=4, margin_sigma_mm=(3.0, 4.0), lobulation=0.18, central=True),
    TumourType("lung_nodule", ("lung",),
               "solid lung nodule: soft-tissue density in aerated lung, lobulated or spiculated",
               "absolute", count=(1, 4), diameter_mm=(5, 25), hu=(15, 50), texture_hu=8,
               texture_mm=2, margin_sigma_mm=(0.3, 0.8), lobulation=0.12, spicules=(0, 6)),
    TumourType("spleen_cyst", ("spleen",),
               "splenic cyst: round, near-water density, sharp margin, homogeneous",
               "absolute", count=(1, 2), diameter_mm=(10, 40), hu=(0, 20), texture_hu=2,
               margin_sigma_mm=(0.0, 0.3), lobulation=0.02, elongation=(0.9, 1.1)),
    TumourType("liver_metastasis", ("liver",),
               "liver metastases: multiple, necrotic hypodense core with an enhancing rim (target sign)",
               "rim", count=(2, 5), diameter_mm=(10, 35), hu=(15, 40), texture_hu=5,
               margin_sigma_mm=(0.7, 1.2), lobulation=0.06, rim_mm=(2.0, 4.0), rim_delta_hu=(15, 40)),
    TumourType("kidney_cyst", ("kidney_right", "kidney_left"),
               "simple renal cyst: round, water density, sharp margin, often exophytic",
               "absolute", count=(1, 2), diameter_mm=(10, 40), hu=(0, 15), texture_hu=2,
               margin_sigma_mm=(0.0, 0.3), lobulation=0.02, elongation=(0.9, 1.1), exophytic_probability=0.5),
    TumourType("liver_hemangioma", ("liver",),
               "hyperdense liver lesion (haemangioma-like): brighter than liver, near blood-pool density",
               "shift", count=(1, 2), diameter_mm=(10, 40), delta_hu=(30, 60), texture_hu=8,
               texture_mm=3, margin_sigma_mm=(0.5, 1.0), lobulation=0.05),
]}

DEFAULT_SEEN: Tuple[str, ...] = ("liver_tumour", "kidney_tumour")
DEFAULT_ZERO_SHOT: Tuple[str, ...] = ("pancreas_tumour", "lung_nodule", "spleen_cyst", "liver_metastasis")


def get_tumour_type(name: str) -> TumourType:
    if name not in TUMOUR_TYPES:
        raise ValueError(f"unknown tumour type {name!r}; choose from {sorted(TUMOUR_TYPES)}")
    return TUMOUR_TYPES[name]


@dataclass
class Lesion:
    """One inserted lesion (recorded in cases.json)."""

    type: str
    host: str
    centre_mm: List[float]
    semi_axes_mm: List[float]
    params: Dict[str, float] = field(default_factory=dict)
    voxels: int = 0
    volume_ml: float = 0.0
    exophytic: bool = False


def _u(rng, lo_hi) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)


def _crop(centre_idx, half_vox, shape):
    return tuple(slice(max(0, int(c - h)), min(n, int(c + h) + 1)) for c, h, n in zip(centre_idx, half_vox, shape))


class TumourInserter:
    """Paints lesions of given types into the HU volume and the label map of one case.

    `hu` is the noise-free HU volume (modified in place), `label` the integer label map
    (organ ids; tumour voxels get `label_ids[type]`)."""

    def __init__(self, anatomy: Anatomy, hu: np.ndarray, label: np.ndarray, label_ids: Dict[str, int],
                 rng: np.random.Generator, min_diameter_mm: float = 5.0):
        self.a = anatomy
        self.hu = hu
        self.label = label
        self.label_ids = label_ids
        self.rng = rng
        self.min_diameter_mm = min_diameter_mm
        self.spacing_zyx = np.array(anatomy.grid.spacing_xyz[::-1], dtype=np.float64)
        self.axes = anatomy.grid.axes_mm()      # x, y, z
        self.placed: List[Tuple[np.ndarray, float]] = []
        self._host_dist: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}

    def _distance_inside(self, host: str) -> Tuple[np.ndarray, np.ndarray]:
        """(offset, crop): mm from each host voxel to the host surface (0 outside), computed on
        the host's bounding box of the tumour-free organ."""
        if host not in self._host_dist:
            m = self.a.organ_mask(host)
            idx = np.argwhere(m)
            if len(idx) == 0:
                self._host_dist[host] = (np.zeros(3, dtype=int), np.zeros((1, 1, 1), dtype=np.float32))
            else:
                lo = np.maximum(idx.min(axis=0) - 1, 0)
                hi = idx.max(axis=0) + 2
                crop = m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
                d = ndimage.distance_transform_edt(crop, sampling=self.spacing_zyx).astype(np.float32)
                self._host_dist[host] = (lo, d)
        return self._host_dist[host]

    def _pick_centre(self, host: str, radius_mm: float, central: bool, strict: bool) -> Optional[np.ndarray]:
        offset, dist = self._distance_inside(host)
        dmax = float(dist.max())
        if dmax <= 0:
            return None
        if central:
            need = 0.7 * dmax
        elif strict:                  # lung nodules stay inside the lung
            need = min(radius_mm + 1.0, 0.9 * dmax)
        else:                         # keep centres off the surface, allow partial overlap with it
            need = min(max(0.6 * radius_mm, 3.0), 0.8 * dmax)
        cand = np.argwhere(dist >= need)
        if len(cand) == 0:
            cand = np.argwhere(dist >= 0.5 * dmax)
        cand = cand + offset
        for _ in range(30):
            c = cand[int(self.rng.integers(len(cand)))]
            c_mm = c * self.spacing_zyx
            if all(np.linalg.norm(c_mm - q) > 0.9 * (radius_mm + r) for q, r in self.placed):
                return c
        return cand[int(self.rng.integers(len(cand)))]

    def insert(self, ttype: TumourType, host: Optional[str] = None) -> List[Lesion]:
        """Insert 1 case's worth of lesions of `ttype` (count drawn from the type)."""
        rng = self.rng
        if host is None:
            host = ttype.hosts[int(rng.integers(len(ttype.hosts)))]
        n = int(rng.integers(ttype.count[0], ttype.count[1] + 1))
        lesions = []
        for _ in range(n):
            les = self._insert_one(ttype, host)
            if les is not None:
                lesions.append(les)
        return lesions

    def _insert_one(self, t: TumourType, host: str) -> Optional[Lesion]:
        rng = self.rng
        diameter = max(_u(rng, t.diameter_mm), self.min_diameter_mm)
        radius = diameter / 2.0
        semi = np.array([radius * _u(rng, t.elongation) for _ in range(3)])
        centre_idx = self._pick_centre(host, radius, t.central, strict=(host == "lung"))
        if centre_idx is None:
            return None
        self.placed.append((centre_idx * self.spacing_zyx, radius))
        sigma_mm = _u(rng, t.margin_sigma_mm)
        reach = semi.max() * (1.0 + 3 * t.lobulation) * (2.2 if t.spicules[1] else 1.0) + 3 * sigma_mm + 4.0
        sl = _crop(centre_idx, np.ceil(reach / self.spacing_zyx), self.hu.shape)
        x_ax, y_ax, z_ax = self.axes
        zz, yy, xx = np.meshgrid(z_ax[sl[0]], y_ax[sl[1]], x_ax[sl[2]], indexing="ij")
        sub_axes = (x_ax[sl[2]], y_ax[sl[1]], z_ax[sl[0]])
        c_mm = (float(x_ax[centre_idx[2]]), float(y_ax[centre_idx[1]]), float(z_ax[centre_idx[0]]))
        rot = rotation(*rng.uniform(-180, 180, size=3))
        r = ellipsoid(xx, yy, zz, c_mm, semi, rot)
        if t.lobulation > 0:
            r = r + np.float32(t.lobulation) * smooth_field(rng, sub_axes, max(radius * 0.7, 3.0))
        lesion = r < 1.0
        n_spic = int(rng.integers(t.spicules[0], t.spicules[1] + 1)) if t.spicules[1] else 0
        for _k in range(n_spic):
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            end = np.array(c_mm) + d * radius * _u(rng, (1.4, 2.1))
            sp, _ = tube(xx, yy, zz, [c_mm, tuple(end)], [1.2, 0.6])
            lesion |= sp < 1.0

        host_id = ORGAN_IDS[host]
        host_sub = self.a.organ[sl] == host_id
        exophytic = bool(rng.random() < t.exophytic_probability)
        if exophytic:
            # may grow into the fat around the organ, never into another organ or bone
            allowed = host_sub | ((self.a.organ[sl] == 0) & np.isin(
                self.a.tissue[sl], (Tissue.VISCERAL_FAT, Tissue.SINUS_FAT)))
        else:
            allowed = host_sub
        lab_mask = lesion & allowed
        if not lab_mask.any():
            self.placed.pop()
            return None

        # ---- appearance ----
        params: Dict[str, float] = {"margin_sigma_mm": round(sigma_mm, 2)}
        sig_vox = sigma_mm / self.spacing_zyx
        soft = ndimage.gaussian_filter(lab_mask.astype(np.float32), sig_vox) if sigma_mm > 0 else lab_mask.astype(np.float32)
        tex = smooth_field(rng, sub_axes, t.texture_mm)
        base = self.hu[sl]
        if t.appearance == "shift":
            delta = _u(rng, t.delta_hu)
            params["delta_hu"] = round(delta, 1)
            # only host tissue changes: the edge blur must not darken the fat around the organ
            weight = soft * host_sub
            new = base + weight * (np.float32(delta) + np.float32(t.texture_hu) * tex)
        elif t.appearance == "absolute":
            level = _u(rng, t.hu)
            params["hu"] = round(level, 1)
            target = np.float32(level) + np.float32(t.texture_hu) * tex
            new = base * (1 - soft) + soft * target
        elif t.appearance == "rim":
            core_hu = _u(rng, t.hu)
            rim = _u(rng, t.rim_mm)
            rim_delta = _u(rng, t.rim_delta_hu)
            host_mean = float(np.median(base[host_sub])) if host_sub.any() else 90.0
            params.update(core_hu=round(core_hu, 1), rim_mm=round(rim, 2), rim_delta_hu=round(rim_delta, 1))
            inner = ndimage.distance_transform_edt(lab_mask, sampling=self.spacing_zyx) > rim
            core = ndimage.gaussian_filter(inner.astype(np.float32), np.maximum(sig_vox, 0.5))
            target = (np.float32(host_mean + rim_delta) * (1 - core) + np.float32(core_hu) * core
                      + np.float32(t.texture_hu) * tex)
            new = base * (1 - soft) + soft * target
        elif t.appearance == "heterogeneous":
            solid = _u(rng, t.hu)
            nec_hu = _u(rng, t.necrosis_hu)
            frac = _u(rng, t.necrosis_fraction)
            params.update(solid_hu=round(solid, 1), necrosis_hu=round(nec_hu, 1), necrosis_fraction=round(frac, 3))
            patch = smooth_field(rng, sub_axes, max(radius * 0.35, 3.0))
            thr = np.quantile(patch[lab_mask], 1.0 - frac) if frac > 0 else np.inf
            necrosis = ndimage.gaussian_filter((patch > thr).astype(np.float32), 0.7)
            target = (np.float32(solid) * (1 - necrosis) + np.float32(nec_hu) * necrosis
                      + np.float32(t.texture_hu) * tex)
            new = base * (1 - soft) + soft * target
        else:
            raise ValueError(f"tumour type {t.name}: unknown appearance {t.appearance!r}")
        self.hu[sl] = new.astype(np.float32)
        self.label[sl][lab_mask] = self.label_ids[t.name]
        nvox = int(lab_mask.sum())
        return Lesion(type=t.name, host=host, centre_mm=[round(v, 1) for v in c_mm],
                      semi_axes_mm=[round(float(v), 1) for v in semi], params=params, voxels=nvox,
                      volume_ml=round(nvox * self.a.grid.voxel_volume_ml, 3), exophytic=exophytic)
