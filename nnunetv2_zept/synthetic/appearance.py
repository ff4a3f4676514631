"""Hounsfield units of a painted phantom, close to contrast-enhanced portal-venous CT:
per-case tissue means drawn from published ranges, smooth tissue texture, partial-volume blur
and correlated Gaussian noise."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

from .anatomy import Anatomy, Tissue
from .fields import smooth_field

# Tissue -> (low, high) of the per-case mean HU, and the amplitude (HU) of its smooth texture.
HU_RANGES: Dict[Tissue, Tuple[float, float, float]] = {
    Tissue.AIR: (-1000, -1000, 0),
    Tissue.SKIN: (20, 50, 5),
    Tissue.SUBCUT_FAT: (-115, -90, 8),
    Tissue.MUSCLE: (45, 65, 5),
    Tissue.VISCERAL_FAT: (-105, -85, 10),
    Tissue.BONE_CORTEX: (600, 900, 60),
    Tissue.BONE_MARROW: (180, 280, 40),
    Tissue.DISC: (70, 100, 8),
    Tissue.CSF: (5, 20, 3),
    Tissue.LUNG: (-870, -820, 25),
    Tissue.LUNG_VESSEL: (20, 80, 20),
    Tissue.LIVER: (80, 105, 5),
    Tissue.HEPATIC_VESSEL: (150, 180, 6),
    Tissue.PORTAL_VEIN: (160, 190, 6),
    Tissue.SPLEEN: (95, 120, 5),
    Tissue.KIDNEY_CORTEX: (165, 200, 8),
    Tissue.KIDNEY_MEDULLA: (110, 140, 8),
    Tissue.SINUS_FAT: (-90, -60, 12),
    Tissue.PANCREAS: (80, 110, 8),
    Tissue.STOMACH_WALL: (90, 120, 6),
    Tissue.STOMACH_FLUID: (0, 20, 3),
    Tissue.GAS: (-1000, -960, 10),
    Tissue.AORTA: (150, 200, 4),
    Tissue.IVC: (120, 160, 6),
    Tissue.HEART_BLOOD: (140, 190, 5),
    Tissue.MYOCARDIUM: (80, 110, 6),
    Tissue.BOWEL_WALL: (80, 120, 8),
    Tissue.BOWEL_FLUID: (5, 30, 5),
    Tissue.STOOL: (-250, 50, 90),
    Tissue.RIB: (350, 650, 80),
}


def draw_tissue_hu(rng: np.random.Generator) -> Dict[str, float]:
    """Per-case mean HU of every tissue (name -> HU), recorded in the case parameters."""
    return {t.name.lower(): float(round(rng.uniform(lo, hi), 1)) for t, (lo, hi, _amp) in HU_RANGES.items()}


def render_tissue(anatomy: Anatomy, tissue_hu: Dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Noise-free, unblurred HU volume [z, y, x] (float32) of the tissue map with texture."""
    axes = anatomy.grid.axes_mm()
    n = len(Tissue)
    mean = np.zeros(n, dtype=np.float32)
    amp = np.zeros(n, dtype=np.float32)
    for t, (_lo, _hi, a) in HU_RANGES.items():
        mean[int(t)] = tissue_hu[t.name.lower()]
        amp[int(t)] = a
    fine = smooth_field(rng, axes, 4.0)        # parenchymal mottling
    coarse = smooth_field(rng, axes, 40.0)     # slow enhancement inhomogeneity
    tex = np.float32(0.8) * fine + np.float32(0.6) * coarse
    hu = mean[anatomy.tissue] + amp[anatomy.tissue] * tex
    return hu.astype(np.float32)


def partial_volume_sigma_vox(spacing_xyz) -> Tuple[float, float, float]:
    """Gaussian sigma [z, y, x] in voxels: the scanner's in-plane point spread (about 0.5 mm), a
    slice profile of about 0.4 slice thickness, and the voxel's own averaging (0.3 voxel)."""
    sx, sy, sz = spacing_xyz
    in_plane = lambda s: float(np.sqrt((0.5 / s) ** 2 + 0.3 ** 2))
    return (float(np.hypot(0.4, 0.3)), in_plane(sy), in_plane(sx)) if sz > 0 else (0.0, 0.0, 0.0)


def finish(hu: np.ndarray, spacing_xyz, noise_hu: float, rng: np.random.Generator) -> np.ndarray:
    """Partial-volume blur, then in-plane correlated Gaussian noise whose std is exactly
    `noise_hu`; rounded to int16 HU and clipped to the scanner range."""
    out = ndimage.gaussian_filter(hu, partial_volume_sigma_vox(spacing_xyz), mode="nearest")
    if noise_hu > 0:
        white = rng.standard_normal(hu.shape, dtype=np.float32)
        sigma = (0.0, 0.6, 0.6)                    # CT noise is correlated within a slice
        noise = ndimage.gaussian_filter(white, sigma, mode="wrap")
        impulse = np.zeros((1, 9, 9), dtype=np.float64)
        impulse[0, 4, 4] = 1.0
        gain = float(np.sqrt((ndimage.gaussian_filter(impulse, sigma, mode="constant") ** 2).sum()))
        out += noise * np.float32(noise_hu / gain)
    return np.clip(np.rint(out), -1024, 3071).astype(np.int16)
