"""Binary-mask operations every part shares (network, evaluation, tumour score)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

Box = Tuple[slice, ...]


def bounding_box(mask: np.ndarray, pad: Sequence[int] = (0, 0, 0)) -> Optional[Box]:
    """Slices of the smallest box holding all True voxels, grown by `pad` voxels per axis and
    clipped to the array; None for an empty mask."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        lo = max(int(hits[0]) - int(pad[axis]), 0)
        hi = min(int(hits[-1]) + 1 + int(pad[axis]), mask.shape[axis])
        box.append(slice(lo, hi))
    return tuple(box)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill cavities: background components (face-connected) that do not touch the array border.

    One labelling pass instead of `ndimage.binary_fill_holes`, whose iterative dilation gets
    slow on large organ crops, and only inside the mask's bounding box: a background component
    that reaches the box's border reaches the array's border through the all-background outside of
    the box, so the cavities inside the box are all the cavities.  Works on 2D and 3D arrays."""
    box = bounding_box(mask, (0,) * mask.ndim)
    if box is None:
        return mask.copy()
    out = mask.copy()
    out[box] = _fill_holes_in_box(mask[box])
    return out


def _fill_holes_in_box(mask: np.ndarray) -> np.ndarray:
    background, n = ndimage.label(~mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))
    if n == 0:
        return mask.copy()
    touching = np.zeros(n + 1, dtype=bool)
    for axis in range(mask.ndim):
        for index in (0, -1):
            touching[np.take(background, index, axis=axis)] = True
    holes = ~touching[background]          # label 0 (the mask itself) maps to touching[0]
    holes[background == 0] = False
    return mask | holes
