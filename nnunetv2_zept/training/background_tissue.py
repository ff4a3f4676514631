"""Pseudo-labels for the background tissue queries (air, fat, soft tissue, bone).

Without a query for non-organ body tissue, grouping forces fat, muscle and bone into organ
groups and the anomaly map ranks fat above tumours (docs/architecture.md, decision D1).  Voxels that no
annotated class covers are split into tissue classes by Hounsfield units, recovered from
nnU-Net's CT normalisation: x_norm = (clip(HU, p0.5, p99.5) - mean) / std.
"""
from typing import Dict, Sequence

import torch

# (name, lower HU bound inclusive); a voxel belongs to the last class whose bound it reaches.
# Values clipped by nnU-Net's percentile window land in the nearest class, which is what we want.
TISSUE_HU_BOUNDS = (("air", -float("inf")), ("fat", -400.0), ("soft_tissue", -20.0), ("bone", 250.0))


def hu_from_normalised(x: torch.Tensor, intensity_properties: Dict) -> torch.Tensor:
    """Invert nnU-Net's CTNormalization (approximately: clipped values stay clipped)."""
    return x * float(intensity_properties["std"]) + float(intensity_properties["mean"])


def normalised_from_hu(hu: torch.Tensor, intensity_properties: Dict) -> torch.Tensor:
    """nnU-Net's CTNormalization: clip to the percentile window, then (HU - mean) / std."""
    hu = hu.clamp(float(intensity_properties["percentile_00_5"]), float(intensity_properties["percentile_99_5"]))
    return (hu - float(intensity_properties["mean"])) / max(float(intensity_properties["std"]), 1e-8)


def tissue_pseudo_labels(image: torch.Tensor, unexplained: torch.Tensor, intensity_properties: Dict,
                         tissue_names: Sequence[str]) -> torch.Tensor:
    """image [B, 1, *spatial] (normalised CT), unexplained [B, *spatial] bool (no annotated class)
    -> [B, K, *spatial] float one-hot pseudo-labels, K = len(tissue_names).

    tissue_names: the per-tissue names of TISSUE_HU_BOUNDS (per-tissue mode), or a single name
    (catch-all mode: every unexplained voxel is background).
    """
    k = len(tissue_names)
    out = torch.zeros((image.shape[0], k) + tuple(image.shape[2:]), device=image.device)
    if k == 1:
        out[:, 0] = unexplained.float()
        return out
    bounds = dict(TISSUE_HU_BOUNDS)
    unknown = [n for n in tissue_names if n not in bounds]
    if unknown:
        raise ValueError(f"background tissue {unknown} has no HU range; known: {list(bounds)}")
    hu = hu_from_normalised(image[:, 0].float(), intensity_properties)
    ordered = sorted(range(k), key=lambda i: bounds[tissue_names[i]])
    cls = torch.full_like(hu, ordered[0], dtype=torch.long)
    for i in ordered[1:]:
        cls.masked_fill_(hu >= bounds[tissue_names[i]], i)
    # nnU-Net clips at percentiles of the *annotated* voxels: with organs only annotated the lower
    # bound can lie above fat (even above 0 HU), so everything darker collapses onto it.  A voxel at
    # the lower clip is darker than the organs: fat (or air, which the clip makes indistinguishable).
    lo = intensity_properties.get("percentile_00_5")
    hi = intensity_properties.get("percentile_99_5")
    names = list(tissue_names)
    if lo is not None and "fat" in names and float(lo) > bounds["fat"]:
        cls.masked_fill_(hu <= float(lo) + 1e-3, names.index("fat"))
    if hi is not None and "bone" in names and float(hi) < bounds["bone"]:
        cls.masked_fill_(hu >= float(hi) - 1e-3, names.index("bone"))
    out.scatter_(1, cls.unsqueeze(1), 1.0)
    return out * unexplained.unsqueeze(1).float()
