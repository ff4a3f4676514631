"""Binary-mask operations in millimetres on 3D arrays in nnU-Net's array order (z, y, x).

Everything that needs a distance transform works inside the bounding box of the masks
involved (plus the margin it needs), because a full-size CT (512 x 512 x 600) would need
several GB for one unrestricted SciPy distance transform.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

from nnunetv2_zept.binary_masks import Box, bounding_box, fill_holes  # noqa: F401  (part of this module's interface)

# 26-connectivity, as in ZePT's component post-processing
STRUCTURE_26 = ndimage.generate_binary_structure(3, 3)
STRUCTURE_6 = ndimage.generate_binary_structure(3, 1)
_SLAB_VOXELS = 1 << 22     # voxels per distance-transform slab (plus halo): ~0.35 GB of SciPy temporaries


def margin_in_voxels(margin_mm: float, spacing: Sequence[float]) -> Tuple[int, ...]:
    return tuple(int(math.ceil(margin_mm / float(s))) + 1 for s in spacing)


def within_mm(sources: np.ndarray, spacing: Sequence[float], radius_mm: float,
              slab_voxels: int = _SLAB_VOXELS) -> np.ndarray:
    """Voxels whose Euclidean distance (mm, at `spacing`) to the nearest True voxel of `sources`
    is <= radius_mm; exact.

    Only a thresholded distance is needed, so the distance transform runs slab by slab along
    the first axis with a halo of ceil(radius / spacing[0]) + 1 slices: a source within the
    radius is always inside the halo.  SciPy's transform needs ~80 bytes per voxel, which for
    a whole organ crop of a full-size CT would be GBs; per slab it is bounded."""
    out = np.zeros(sources.shape, dtype=bool)
    if not sources.any():
        return out
    tol = float(radius_mm) + 1e-6          # a distance equal to the radius is within it
    n = sources.shape[0]
    halo = int(math.ceil(radius_mm / float(spacing[0]))) + 1
    plane = max(int(np.prod(sources.shape[1:])), 1)
    step = max(slab_voxels // plane, 1)
    for z0 in range(0, n, step):
        z1 = min(z0 + step, n)
        a, b = max(z0 - halo, 0), min(z1 + halo, n)
        sub = sources[a:b]
        if not sub.any():
            continue
        dist = ndimage.distance_transform_edt(~sub, sampling=spacing)
        out[z0:z1] = dist[z0 - a:z1 - a] <= tol
    return out


def dilate_mm(mask: np.ndarray, spacing: Sequence[float], margin_mm: float) -> np.ndarray:
    """Voxels within `margin_mm` (Euclidean, physical) of the mask; the mask itself included."""
    out = np.zeros(mask.shape, dtype=bool)
    box = bounding_box(mask, margin_in_voxels(margin_mm, spacing))
    if box is None:
        return out
    if margin_mm <= 0:
        out[box] = mask[box]
        return out
    out[box] = within_mm(mask[box], spacing, margin_mm)
    return out


def border_voxels(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with at least one face neighbour outside the mask (or outside the array)."""
    return mask & ~ndimage.binary_erosion(mask, structure=STRUCTURE_6, border_value=0)


def fill_holes_per_slice(mask: np.ndarray, slab: int = 32) -> np.ndarray:
    """Fill holes in every slice along the first axis (axial for CT in nnU-Net's array order).

    In-plane components of the background that do not touch the slice border are holes.  One
    labelling per slab of slices (a structure without through-plane neighbours)."""
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    out = mask.copy()
    for z0 in range(0, mask.shape[0], slab):
        part = mask[z0:z0 + slab]
        background, n = ndimage.label(~part, structure=in_plane)
        if n == 0:
            continue
        touching = np.zeros(n + 1, dtype=bool)
        for axis in (1, 2):
            for index in (0, -1):
                touching[np.take(background, index, axis=axis)] = True
        touching[0] = True
        out[z0:z0 + slab] |= ~touching[background]
    return out


def body_mask_from_ct(image: np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    """Body of a CT volume (array order z, y, x): voxels above `threshold_hu`, largest
    26-connected component (drops the table and clothing), holes filled slice by slice so that
    lungs and bowel gas belong to the body."""
    above = image > threshold_hu
    labels, n = ndimage.label(above, structure=STRUCTURE_26)
    del above
    if n == 0:
        return np.zeros(image.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    del labels
    return fill_holes_per_slice(body)
