"""Procedural abdominal anatomy: body wall, spine, ribs, lung bases, abdominal organs, vessels
and bowel, painted into a tissue map (what the voxel is made of, for the HU model) and an organ
label map (what the voxel is annotated as).

Patient coordinates are LPS millimetres (x to the patient's Left, y to Posterior, z to
Superior), z = 0 at the first lumbar vertebra, x = y = 0 on the body axis.  So the right
kidney lies at negative x, the spine at positive y, the lung bases at the top of the volume.
Every organ gets a random size, position, rotation and a smooth random surface deformation on
top of a smooth deformation of the whole body; organs that touch in real abdomens (liver and
right kidney, spleen and left kidney, stomach and spleen, pancreatic tail and splenic hilum,
liver and IVC) overlap in their primitives, and the painting order decides the boundary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Dict, Optional, Tuple

import numpy as np

from .fields import Grid, smooth_field
from .shapes import ellipsoid, rotation, tube

ORGANS: Tuple[str, ...] = ("liver", "spleen", "kidney_right", "kidney_left", "pancreas", "stomach",
                           "aorta", "lung")
ORGAN_IDS: Dict[str, int] = {name: i + 1 for i, name in enumerate(ORGANS)}


class Tissue(IntEnum):
    """What a voxel is made of; `appearance.py` maps each to a HU distribution."""

    AIR = 0
    SKIN = 1
    SUBCUT_FAT = 2
    MUSCLE = 3
    VISCERAL_FAT = 4
    BONE_CORTEX = 5
    BONE_MARROW = 6
    DISC = 7
    CSF = 8
    LUNG = 9
    LUNG_VESSEL = 10
    LIVER = 11
    HEPATIC_VESSEL = 12
    PORTAL_VEIN = 13
    SPLEEN = 14
    KIDNEY_CORTEX = 15
    KIDNEY_MEDULLA = 16
    SINUS_FAT = 17
    PANCREAS = 18
    STOMACH_WALL = 19
    STOMACH_FLUID = 20
    GAS = 21
    AORTA = 22
    IVC = 23
    HEART_BLOOD = 24
    MYOCARDIUM = 25
    BOWEL_WALL = 26
    BOWEL_FLUID = 27
    STOOL = 28
    RIB = 29


@dataclass
class Anatomy:
    """A painted phantom.  Arrays are [z, y, x]."""

    grid: Grid
    tissue: np.ndarray                 # uint8 Tissue codes
    organ: np.ndarray                  # uint8 organ ids (ORGAN_IDS), 0 = not an organ
    body: np.ndarray                   # bool, inside the skin
    params: Dict[str, object] = field(default_factory=dict)

    def organ_mask(self, name: str) -> np.ndarray:
        return self.organ == ORGAN_IDS[name]


class _Painter:
    """Holds the deformed coordinates and paints shapes into the maps, cropping to each shape's
    bounding box so large grids stay fast."""

    def __init__(self, grid: Grid, rng: np.random.Generator, deform_mm: float):
        self.grid = grid
        self.rng = rng
        x, y, z = grid.axes_mm()
        self.axes = (x, y, z)
        zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
        if deform_mm > 0:
            # one smooth displacement of the whole body: organs move together, as in real variation
            xx = xx + np.float32(deform_mm) * smooth_field(rng, self.axes, 90.0)
            yy = yy + np.float32(deform_mm) * smooth_field(rng, self.axes, 90.0)
            zz = zz + np.float32(deform_mm) * smooth_field(rng, self.axes, 90.0)
        self.x, self.y, self.z = xx.astype(np.float32), yy.astype(np.float32), zz.astype(np.float32)
        shp = grid.shape_zyx
        self.tissue = np.full(shp, Tissue.AIR, dtype=np.uint8)
        self.organ = np.zeros(shp, dtype=np.uint8)

    def crop(self, lo, hi) -> Optional[Tuple[slice, slice, slice]]:
        """Index slices [z, y, x] covering the world box lo..hi (x, y, z mm); None if empty.
        The deformation moves points by a few mm, so callers pass a generous margin."""
        sl = []
        for axis_mm, a, b in zip(self.axes, lo, hi):
            i0 = int(np.searchsorted(axis_mm, a, side="left"))
            i1 = int(np.searchsorted(axis_mm, b, side="right"))
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
        return (sl[2], sl[1], sl[0])

    def coords(self, sl):
        return self.x[sl], self.y[sl], self.z[sl]

    def surface_noise(self, sl, correlation_mm: float, amplitude: float) -> np.ndarray:
        axes = tuple(a[s] for a, s in zip(self.axes, (sl[2], sl[1], sl[0])))
        return np.float32(amplitude) * smooth_field(self.rng, axes, correlation_mm)

    def paint(self, sl, mask: np.ndarray, tissue: int, organ: Optional[int] = None) -> None:
        if sl is None or not mask.any():
            return
        self.tissue[sl][mask] = tissue
        if organ is not None:
            self.organ[sl][mask] = organ


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def build_anatomy(grid: Grid, rng: np.random.Generator, deform_mm: float = 6.0,
                  size_factor: Optional[float] = None) -> Anatomy:
    """Paint one random abdomen on `grid`.  `size_factor` scales the body and all organs
    (default: random in 0.92-1.08); `deform_mm` is the amplitude of the smooth whole-body
    deformation."""
    p = _Painter(grid, rng, deform_mm)
    s = size_factor if size_factor is not None else _u(rng, 0.92, 1.08)
    params: Dict[str, object] = {"size_factor": round(s, 4), "deform_mm": deform_mm}
    full = (slice(None),) * 3
    X, Y, Z = p.x, p.y, p.z

    # ---------------- body outline and wall ----------------
    a = _u(rng, 140, 160) * s            # half width
    b = _u(rng, 100, 116) * s            # half antero-posterior depth
    yc = 0.0
    params["body_half_width_mm"], params["body_half_depth_mm"] = round(a, 1), round(b, 1)
    yy = Y - np.float32(yc)
    rho = np.sqrt((X / a) ** 2 + (yy / b) ** 2) + 1e-6
    # distance from the skin along the ray from the body axis (mm, > 0 inside)
    depth = (1.0 - rho) * np.sqrt(X ** 2 + yy ** 2) / rho
    theta = np.arctan2(yy, X)
    anteriority = (1.0 - np.sin(theta)) / 2.0   # 0 posterior midline, 1 anterior midline
    fat = (_u(rng, 10, 28) * s * (0.7 + 0.6 * anteriority)
           + p.surface_noise(full, 60.0, 3.0))
    wall = _u(rng, 8, 13) + p.surface_noise(full, 50.0, 1.5)
    body = depth > 0
    p.paint(full, body, Tissue.SKIN)
    p.paint(full, depth > 2.0, Tissue.SUBCUT_FAT)
    p.paint(full, depth > 2.0 + fat, Tissue.MUSCLE)
    cavity = depth > 2.0 + fat + wall
    p.paint(full, cavity, Tissue.VISCERAL_FAT)
    params["subcutaneous_fat_mm"] = round(float(np.median(fat)), 1)

    # ---------------- ribs (obliquely cut arcs in the wall, above the costal margin) ----------
    rib_depth = 2.0 + fat + wall
    rib_band = body & (depth > rib_depth - 7.0) & (depth < rib_depth + 3.0)
    pitch, height = 30.0 * s, 11.0 * s
    z_rib = Z + np.float32(70.0 * s) * anteriority + np.float32(_u(rng, 0, pitch))
    costal_margin = np.float32(-25.0 * s) + np.float32(105.0 * s) * anteriority
    ribs = rib_band & (np.mod(z_rib, pitch) < height) & (Z > costal_margin)
    p.paint(full, ribs, Tissue.RIB)
    # inside the rib cage: the thoracic cavity above the costal margin
    del rib_band

    # ---------------- spine and back muscles ----------------
    vb_y = 22.0 * s
    sl = p.crop((-90 * s, -20 * s, -1e4), (90 * s, 125 * s, 1e4))
    x, y, z = p.coords(sl)
    vert_phase = _u(rng, 0, 36)
    in_disc = np.mod(z + np.float32(vert_phase), np.float32(36.0 * s)) < np.float32(8.0 * s)
    for side in (-1, 1):
        p.paint(sl, ellipsoid(x, y, z, (side * 36 * s, 72 * s, 0), (30 * s, 24 * s, 1e6)) < 1, Tissue.MUSCLE)
        # psoas: absent above the kidneys' hila, growing towards the pelvis
        pr = np.clip(-z * 0.12 + 6.0, 0, 30) * s
        pso = np.sqrt((x - side * (36 * s + pr * 0.3)) ** 2 + (y - 18 * s) ** 2) < pr
        p.paint(sl, pso & (z < 20), Tissue.MUSCLE)
    vb = ellipsoid(x, y, z, (0, vb_y, 0), (22 * s, 18 * s, 1e6))
    arch = np.sqrt(x ** 2 + (y - 52 * s) ** 2)
    p.paint(sl, (arch < 16 * s) | ((np.abs(x) < 4 * s) & (y > 52 * s) & (y < 85 * s)), Tissue.BONE_CORTEX)
    # transverse processes: short bars at mid-vertebral levels only
    mid_vertebra = np.abs(np.mod(z + np.float32(vert_phase), np.float32(36.0 * s)) - np.float32(22.0 * s)) < 6.0 * s
    p.paint(sl, (np.abs(x) < 34 * s) & (np.abs(y - 44 * s) < 3.5 * s) & mid_vertebra & (z < 60), Tissue.BONE_CORTEX)
    p.paint(sl, vb < 1, Tissue.BONE_CORTEX)
    p.paint(sl, (vb < 0.88) & ~in_disc, Tissue.BONE_MARROW)
    p.paint(sl, (vb < 1) & in_disc, Tissue.DISC)
    p.paint(sl, arch < 9 * s, Tissue.CSF)

    # the space organs may occupy: inside the wall, outside spine, back muscles and ribs
    free = cavity & np.isin(p.tissue, (Tissue.VISCERAL_FAT,))

    def paint_organ(sl, mask, tissue, organ=None):
        p.paint(sl, mask & free[sl], tissue, organ)

    # ---------------- diaphragm, lungs, heart ----------------
    dome_r = _u(rng, 85, 105) * s
    dome_l = dome_r - _u(rng, 8, 20) * s
    zd = np.maximum(dome_r - 55 * ((X + 65 * s) / (105 * s)) ** 2 - 30 * ((Y - 10 * s) / (110 * s)) ** 2,
                    dome_l - 55 * ((X - 65 * s) / (100 * s)) ** 2 - 30 * ((Y - 10 * s) / (110 * s)) ** 2)
    zd = zd + p.surface_noise(full, 70.0, 4.0)
    params["diaphragm_dome_mm"] = {"right": round(dome_r, 1), "left": round(dome_l, 1)}
    thorax = free & (Z > zd - 4.0)                      # 4 mm of diaphragm, then the chest
    heart = ellipsoid(X, Y, Z, (25 * s, -40 * s, dome_l + 55 * s), (75 * s, 55 * s, 60 * s))
    lung = thorax & (Z > zd) & (heart > 1.0) & ~((np.abs(X - 5 * s) < 30 * s) & (Y > -25 * s) & (Y < 30 * s))
    p.paint(full, thorax, Tissue.MUSCLE)                # diaphragm crura / mediastinal soft tissue
    p.paint(full, lung, Tissue.LUNG, ORGAN_IDS["lung"])
    p.paint(full, thorax & (heart < 1.0), Tissue.MYOCARDIUM)
    p.paint(full, thorax & (heart < 0.85), Tissue.HEART_BLOOD)
    # pulmonary vessels: thresholded smooth noise gives branching bright spots
    # (two smooth fields near zero at once: a tangle of curves, i.e. branching vessels)
    lv1, lv2 = smooth_field(rng, p.axes, 12.0), smooth_field(rng, p.axes, 12.0)
    p.paint(full, lung & (np.abs(lv1) < 0.12) & (np.abs(lv2) < 0.12), Tissue.LUNG_VESSEL)
    del lv1, lv2
    abdomen = free & (Z < zd - 4.0)
    free = abdomen                                      # organs below the diaphragm

    # ---------------- liver (with IVC, portal vein and hepatic vessels) ----------------
    lc = (-62 * s + _u(rng, -8, 8), 8 * s + _u(rng, -8, 8), dome_r - 50 * s + _u(rng, -8, 8))
    ls = tuple(v * s * _u(rng, 0.9, 1.1) for v in (88, 95, 90))
    sl = p.crop((-200, -160, lc[2] - 130), (120, 140, lc[2] + 130))
    x, y, z = p.coords(sl)
    right_lobe = ellipsoid(x, y, z, lc, ls, rotation(0, _u(rng, -10, 10), _u(rng, -10, 10)))
    left_lobe = ellipsoid(x, y, z, (22 * s + _u(rng, -8, 8), -48 * s, lc[2] + 22 * s),
                          (62 * s * _u(rng, 0.8, 1.15), 36 * s, 38 * s), rotation(0, 0, _u(rng, -15, 5)))
    liver_r = np.minimum(right_lobe, left_lobe) + p.surface_noise(sl, 45.0, 0.06)
    liver = liver_r < 1
    paint_organ(sl, liver, Tissue.LIVER, ORGAN_IDS["liver"])
    params["liver_centre_mm"] = [round(v, 1) for v in lc]

    # ---------------- kidneys (cortex, medulla, sinus fat) ----------------
    for side, name in ((-1, "kidney_right"), (1, "kidney_left")):
        kz = (-12 * s if side < 0 else 3 * s) + _u(rng, -10, 10)
        kc = (side * 72 * s + _u(rng, -6, 6), 32 * s + _u(rng, -5, 5), kz)
        ks = (25 * s * _u(rng, 0.9, 1.1), 29 * s * _u(rng, 0.9, 1.1), 52 * s * _u(rng, 0.9, 1.1))
        rot = rotation(_u(rng, -12, 0), side * _u(rng, 8, 20), side * _u(rng, 20, 40))
        sl = p.crop((kc[0] - 80, kc[1] - 80, kc[2] - 90), (kc[0] + 80, kc[1] + 80, kc[2] + 90))
        x, y, z = p.coords(sl)
        r = ellipsoid(x, y, z, kc, ks, rot) + p.surface_noise(sl, 30.0, 0.04)
        # renal sinus: a notch opening antero-medially (the hilum)
        sc = (kc[0] - side * 16 * s, kc[1] - 8 * s, kc[2])
        sinus = ellipsoid(x, y, z, sc, (11 * s, 12 * s, 24 * s), rot) + p.surface_noise(sl, 12.0, 0.08)
        kidney = (r < 1) & (sinus > 1)
        medulla_r = 0.72 + p.surface_noise(sl, 9.0, 0.1)
        paint_organ(sl, kidney, Tissue.KIDNEY_CORTEX, ORGAN_IDS[name])
        paint_organ(sl, kidney & (r < medulla_r), Tissue.KIDNEY_MEDULLA, ORGAN_IDS[name])
        paint_organ(sl, (r < 1.05) & (sinus < 1), Tissue.SINUS_FAT)
        params[f"{name}_centre_mm"] = [round(v, 1) for v in kc]
        # renal vein towards the IVC / aorta
        sl2 = p.crop((-60 * s if side > 0 else kc[0] - 20, -60, kc[2] - 30), (kc[0] + 20 if side > 0 else 0, 90, kc[2] + 30))
        x, y, z = p.coords(sl2)
        vein_pts = [sc, (-28 * s, -6 * s, kc[2] + 5)] if side < 0 else \
            [sc, (30 * s, -24 * s, kc[2] + 5), (-28 * s, -12 * s, kc[2] + 5)]
        rv, _ = tube(x, y, z, vein_pts, [5 * s] * len(vein_pts))
        paint_organ(sl2, (rv < 1) & (p.organ[sl2] == 0), Tissue.IVC)

    # ---------------- spleen ----------------
    spc = (98 * s + _u(rng, -6, 6), 34 * s + _u(rng, -6, 6), dome_l - 40 * s + _u(rng, -8, 8))
    sps = (26 * s * _u(rng, 0.85, 1.15), 58 * s * _u(rng, 0.85, 1.15), 52 * s * _u(rng, 0.85, 1.15))
    sl = p.crop((spc[0] - 90, spc[1] - 90, spc[2] - 90), (spc[0] + 90, spc[1] + 90, spc[2] + 90))
    x, y, z = p.coords(sl)
    r = ellipsoid(x, y, z, spc, sps, rotation(_u(rng, -15, 15), 0, _u(rng, -50, -30))) + p.surface_noise(sl, 30.0, 0.07)
    kidneys = (p.organ[sl] == ORGAN_IDS["kidney_left"]) | (p.organ[sl] == ORGAN_IDS["kidney_right"])
    paint_organ(sl, (r < 1) & ~kidneys, Tissue.SPLEEN, ORGAN_IDS["spleen"])
    params["spleen_centre_mm"] = [round(v, 1) for v in spc]

    # ---------------- stomach (wall, fluid, gas cap) ----------------
    st_pts = [(60 * s, -12 * s, dome_l - 15 * s), (48 * s, -50 * s, dome_l - 45 * s),
              (10 * s, -70 * s, dome_l - 70 * s), (-24 * s, -58 * s, dome_l - 72 * s)]
    st_pts = [(px + _u(rng, -6, 6), py + _u(rng, -6, 6), pz + _u(rng, -6, 6)) for px, py, pz in st_pts]
    fill = _u(rng, 0.75, 1.15)
    st_rad = [34 * s * fill, 30 * s * fill, 22 * s * fill, 12 * s]
    sl = p.crop((-80, -140, dome_l - 130), (130, 80, dome_l + 40))
    x, y, z = p.coords(sl)
    r, _ = tube(x, y, z, st_pts, st_rad)
    r = r + p.surface_noise(sl, 35.0, 0.05)
    # the stomach pushes the thin left hepatic lobe forward: it wins over liver left of the midline
    stomach = (r < 1) & free[sl] & ((p.organ[sl] == 0) | ((p.organ[sl] == ORGAN_IDS["liver"]) & (x > 5 * s)))
    paint_organ(sl, stomach, Tissue.STOMACH_WALL, ORGAN_IDS["stomach"])
    lumen = stomach & (r < 0.82)
    if lumen.any():
        gas_fraction = _u(rng, 0.0, 0.5)
        level = np.quantile(y[lumen], gas_fraction) if gas_fraction > 0.02 else -1e9
        paint_organ(sl, lumen, Tissue.STOMACH_FLUID, ORGAN_IDS["stomach"])
        paint_organ(sl, lumen & (y < level), Tissue.GAS, ORGAN_IDS["stomach"])
        params["stomach_gas_fraction"] = round(gas_fraction, 3)

    # ---------------- pancreas ----------------
    pz = _u(rng, -22, -5) * s
    pa_pts = [(-38 * s, -28 * s, pz - 18 * s), (-16 * s, -42 * s, pz), (15 * s, -38 * s, pz + 10 * s),
              (50 * s, -18 * s, pz + 22 * s), (spc[0] - 18 * s, spc[1] - 20 * s, spc[2] - 20 * s)]
    pa_pts = [(px + _u(rng, -5, 5), py + _u(rng, -5, 5), pzz + _u(rng, -5, 5)) for px, py, pzz in pa_pts]
    pa_rad = [r_ * s * _u(rng, 0.85, 1.15) for r_ in (19, 14, 12, 11, 9)]
    sl = p.crop((-90, -90, pz - 70), (spc[0] + 30, spc[1] + 30, spc[2] + 40))
    x, y, z = p.coords(sl)
    r, _ = tube(x, y, z, pa_pts, pa_rad)
    r = r + p.surface_noise(sl, 20.0, 0.1)
    pancreas = (r < 1) & ~np.isin(p.organ[sl], [ORGAN_IDS[o] for o in ("spleen", "liver", "kidney_left", "kidney_right")])
    # the pancreas displaces the stomach's posterior wall, not the other way round
    p.organ[sl][pancreas & (p.organ[sl] == ORGAN_IDS["stomach"])] = 0
    p.tissue[sl][pancreas & (p.tissue[sl] >= Tissue.STOMACH_WALL) & (p.tissue[sl] <= Tissue.GAS)] = Tissue.VISCERAL_FAT
    paint_organ(sl, pancreas, Tissue.PANCREAS, ORGAN_IDS["pancreas"])
    params["pancreas_head_mm"] = [round(v, 1) for v in pa_pts[0]]

    # ---------------- vessels: aorta, IVC, portal and splenic veins ----------------
    zlo, zhi = float(p.axes[2][0]) - 50, float(p.axes[2][-1]) + 50
    ao_r = _u(rng, 10, 13) * s
    ax_, ay_ = 12 * s + _u(rng, -4, 4), vb_y - 18 * s - ao_r - 1.5
    sl = p.crop((ax_ - 40, ay_ - 40, zlo), (ax_ + 40, ay_ + 40, zhi))
    x, y, z = p.coords(sl)
    aorta, _ = tube(x, y, z, [(ax_, ay_, zlo), (ax_ - 3, ay_ + 4, 0.0), (ax_ - 6, ay_ + 10, zhi)], [ao_r] * 3)
    not_bone = ~np.isin(p.tissue[sl], (Tissue.BONE_CORTEX, Tissue.BONE_MARROW, Tissue.DISC, Tissue.CSF))
    p.paint(sl, (aorta < 1) & cavity[sl] & not_bone, Tissue.AORTA, ORGAN_IDS["aorta"])
    ivc_x = -28 * s
    sl = p.crop((ivc_x - 40, -50, zlo), (ivc_x + 40, 40, zhi))
    x, y, z = p.coords(sl)
    ivc, _ = tube(x, y, z, [(ivc_x, -6 * s, zlo), (ivc_x - 4, -8 * s, 0.0), (ivc_x - 8, -2 * s, zhi)], [11 * s] * 3)
    not_bone = ~np.isin(p.tissue[sl], (Tissue.BONE_CORTEX, Tissue.BONE_MARROW, Tissue.DISC, Tissue.CSF))
    ivc_mask = (ivc < 1) & cavity[sl] & not_bone & (p.organ[sl] != ORGAN_IDS["aorta"])
    p.organ[sl][ivc_mask] = 0               # the IVC is excluded from the liver, as in CT atlases
    p.paint(sl, ivc_mask, Tissue.IVC)
    hilum = (lc[0] + 25 * s, lc[1] - 18 * s, lc[2] - 25 * s)
    confluence = (-8 * s, -28 * s, pz + 2)
    pv_pts = [confluence, hilum]
    sl = p.crop((-120, -100, pz - 60), (spc[0] + 20, spc[1] + 20, lc[2] + 40))
    x, y, z = p.coords(sl)
    pv, _ = tube(x, y, z, pv_pts, [7 * s, 7 * s])
    sv, _ = tube(x, y, z, [confluence, (20 * s, -26 * s, pz + 12 * s), (spc[0] - 22 * s, spc[1] - 12 * s, spc[2] - 15 * s)],
                 [4.5 * s] * 3)
    outside_liver = p.organ[sl] != ORGAN_IDS["liver"]
    vein = ((pv < 1) | (sv < 1)) & cavity[sl]
    p.organ[sl][vein & outside_liver & (p.organ[sl] != ORGAN_IDS["aorta"])] = 0
    p.tissue[sl][vein & (p.organ[sl] != ORGAN_IDS["aorta"])] = Tissue.PORTAL_VEIN
    # intrahepatic branches: random tubes from the hilum, kept inside the liver label
    liver_here = p.organ[sl] == ORGAN_IDS["liver"]
    n_branch = int(rng.integers(5, 9))
    for _k in range(n_branch):
        d = rng.normal(size=3)
        d[0] = -abs(d[0]) if rng.random() < 0.7 else abs(d[0])
        d /= np.linalg.norm(d)
        length = _u(rng, 40, 80) * s
        mid = np.array(hilum) + d * length * 0.5 + rng.normal(scale=8, size=3)
        end = np.array(hilum) + d * length
        br, _ = tube(x, y, z, [hilum, tuple(mid), tuple(end)], [4.5 * s, 3 * s, 1.8 * s])
        p.tissue[sl][(br < 1) & liver_here] = Tissue.HEPATIC_VESSEL

    # ---------------- bowel: colon frame and small-bowel loops (not annotated) ----------------
    flex = lc[2] - ls[2] * 0.75
    colon = [(-100 * s, -10 * s, -200.0), (-98 * s, -15 * s, flex - 10), (-70 * s, -70 * s, flex - 25),
             (0, -80 * s, flex - 40 + _u(rng, -15, 15)), (70 * s, -55 * s, flex - 10),
             (100 * s, 0 * s, spc[2] - 55 * s), (98 * s, 5 * s, -200.0)]
    colon = [(cx + _u(rng, -5, 5), cy + _u(rng, -5, 5), cz) for cx, cy, cz in colon]
    loops = []
    for _k in range(int(rng.integers(4, 8))):
        c0 = np.array([_u(rng, -70, 70) * s, _u(rng, -80, -10) * s, _u(rng, -130, flex - 35)])
        pts = [c0]
        for _j in range(4):
            pts.append(pts[-1] + rng.normal(scale=25 * s, size=3))
        loops.append([tuple(q) for q in pts])
    for pts, rad, is_colon in [(colon, 22 * s, True)] + [(lp, 11 * s, False) for lp in loops]:
        lo = np.min(pts, axis=0) - rad - 20
        hi = np.max(pts, axis=0) + rad + 20
        sl = p.crop(lo, hi)
        if sl is None:
            continue
        x, y, z = p.coords(sl)
        r, _ = tube(x, y, z, pts, [rad] * len(pts))
        r = r + p.surface_noise(sl, 25.0, 0.08)
        ok = (r < 1) & free[sl] & (p.organ[sl] == 0) & (p.tissue[sl] == Tissue.VISCERAL_FAT)
        p.paint(sl, ok, Tissue.BOWEL_WALL)
        inner = ok & (r < (0.7 if is_colon else 0.6))
        if is_colon:
            mottle = p.surface_noise(sl, 8.0, 1.0)
            p.paint(sl, inner & (mottle > -0.2), Tissue.GAS)
            p.paint(sl, inner & (mottle <= -0.2), Tissue.STOOL)
        else:
            p.paint(sl, inner, Tissue.BOWEL_FLUID)

    return Anatomy(grid=grid, tissue=p.tissue, organ=p.organ, body=body, params=params)
