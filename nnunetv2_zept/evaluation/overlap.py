"""Dice similarity coefficient and normalised surface distance (NSD) of two binary masks.

Conventions (the same as `nnUNetv2_evaluate_folder` for DSC):
* both masks empty            -> NaN (left out of means; nothing to find, nothing found)
* exactly one of them empty   -> 0.0
NSD follows the same rule.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from nnunetv2_zept.evaluation.mask_ops import border_voxels, bounding_box, within_mm


def dice(reference: np.ndarray, prediction: np.ndarray, ignore: Optional[np.ndarray] = None) -> float:
    """2|R∩P| / (|R|+|P|); voxels in `ignore` count for neither mask."""
    if ignore is not None:
        reference = reference & ~ignore
        prediction = prediction & ~ignore
    r = int(np.count_nonzero(reference))
    p = int(np.count_nonzero(prediction))
    if r + p == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(reference & prediction)) / (r + p)


def normalised_surface_distance(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                                tolerance_mm: float) -> float:
    """Fraction of the two surfaces that lies within `tolerance_mm` of the other surface.

    Surfaces are the border voxels of each mask (face connectivity); distances are Euclidean
    in millimetres between voxel centres at the given `spacing` (array order, e.g. z, y, x),
    so anisotropic voxels are handled exactly.  Every border voxel counts once (unweighted,
    as MONAI's `compute_surface_dice`); DeepMind's `surface-distance` package weights surface
    elements by area instead, which can differ slightly at coarse anisotropic spacing.

        NSD = (#{a in dR : d(a, dP) <= tol} + #{b in dP : d(b, dR) <= tol}) / (|dR| + |dP|)
    """
    r_any, p_any = bool(reference.any()), bool(prediction.any())
    if not r_any and not p_any:
        return float("nan")
    if not r_any or not p_any:
        return 0.0
    # the nearest surface voxel of either mask is inside the joint box, so cropping is exact;
    # one voxel of padding keeps border detection right at the box edge
    box = bounding_box(reference | prediction, pad=(1, 1, 1))
    ref, pred = reference[box], prediction[box]
    surf_r, surf_p = border_voxels(ref), border_voxels(pred)
    within = (int(np.count_nonzero(within_mm(surf_p, spacing, tolerance_mm)[surf_r]))
              + int(np.count_nonzero(within_mm(surf_r, spacing, tolerance_mm)[surf_p])))
    return within / float(np.count_nonzero(surf_r) + np.count_nonzero(surf_p))
