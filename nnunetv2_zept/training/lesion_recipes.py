"""What Stage 1 pastes into host organs: the generic lesion curriculum (default) and the earlier
hypo-attenuating recipe (variant), with the checks that run when a trainer starts.

Sizes are in mm and intensities in HU; the painters convert them with the configuration's spacing
and nnU-Net's CT normalisation.  Every setting carries its kind in the field metadata, and one
check per kind covers all of them:
  "probability"  a share in [0, 1]          "hu"     an absolute HU value inside the CT window
  "shift"        a HU difference (at most the window's width)   "positive"  a number above 0
Pairs (lo, hi) must also be ordered.  What needs the grid or the dataset (sizes against the spacing
and the host organs) is checked in `check_recipe`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import ClassVar, Optional, Sequence, Tuple

CT_WINDOW_HU = (-1024.0, 3071.0)            # what a CT image can hold (12-bit, rescale intercept -1024)
LESION_LABELS = ("host_only", "all_negative")
KINDS = ("hypo", "iso", "hyper", "rim", "calcified")
MARGINS = ("sharp", "soft", "infiltrative")


class LesionRecipeError(ValueError):
    """A synthetic lesion setting that cannot be realised; the message names it and its valid range."""


def _meta(kind: str) -> dict:
    return {"kind": kind}


P, HU, SHIFT, POS = _meta("probability"), _meta("hu"), _meta("shift"), _meta("positive")


@dataclass(frozen=True)
class LesionCurriculum:
    """Generic lesions from the tumour-synthesis literature (docs/training.md, "Synthetic lesions").

    Each pasted lesion draws, independently: its host organ (uniform over the hosts in the patch),
    an appearance kind, a margin, a size, a shape, a texture and whether it displaces its
    surroundings.  Nothing depends on a tumour type or an organ's name.
    """

    probability: float = field(default=0.5, metadata=P)             # per sample of a batch
    start_fraction: float = 0.0                                      # no lesions before this share of the epochs
    max_lesions: int = 3                                             # per pasted sample (1..max_lesions)
    # size: equivalent-sphere diameter, log-uniform; the lower end is raised to `min_voxels_across`
    # voxels of the grid along every axis, the upper end lowered to max_organ_fraction of the
    # healthy host organ in the patch
    diameter_mm: Tuple[float, float] = field(default=(3.0, 80.0), metadata=POS)
    min_voxels_across: float = field(default=2.5, metadata=POS)
    max_organ_fraction: float = field(default=0.5, metadata=P)
    stretch: Tuple[float, float] = field(default=(0.7, 1.3), metadata=POS)       # semi-axis factors
    kinds: Tuple[Tuple[str, float], ...] = (("hypo", 0.3), ("iso", 0.15), ("hyper", 0.2), ("rim", 0.2),
                                            ("calcified", 0.15))
    # appearance, relative to the host organ's local mean (in an aerated organ: to soft tissue)
    hypo_hu: Tuple[float, float] = field(default=(-150.0, -15.0), metadata=SHIFT)
    iso_hu: Tuple[float, float] = field(default=(-15.0, 15.0), metadata=SHIFT)
    hyper_hu: Tuple[float, float] = field(default=(20.0, 100.0), metadata=SHIFT)
    rim_hu: Tuple[float, float] = field(default=(20.0, 80.0), metadata=SHIFT)          # enhancing rim ...
    necrotic_core_hu: Tuple[float, float] = field(default=(-120.0, -40.0), metadata=SHIFT)  # ... around a necrotic core
    rim_fraction: Tuple[float, float] = field(default=(0.2, 0.45), metadata=P)        # rim width / radius
    calcified_base_hu: Tuple[float, float] = field(default=(-60.0, 20.0), metadata=SHIFT)  # non-calcified part
    calcification_hu: Tuple[float, float] = field(default=(300.0, 1000.0), metadata=HU)   # absolute
    calcified_fraction: Tuple[float, float] = field(default=(0.1, 0.7), metadata=P)
    fluid_hu: float = field(default=-20.0, metadata=HU)              # no soft lesion content darker than fluid
    # heterogeneity: std of a smooth texture (scales in mm) added inside the lesion
    texture_hu: Tuple[float, float] = field(default=(0.0, 12.0), metadata=SHIFT)
    heterogeneous_probability: float = field(default=0.35, metadata=P)
    heterogeneous_hu: Tuple[float, float] = field(default=(20.0, 50.0), metadata=SHIFT)  # always for "iso"
    texture_scales_mm: Tuple[float, ...] = field(default=(2.0, 4.0, 8.0, 16.0), metadata=POS)
    # margins: width of the transition from organ to lesion, and irregularity of the outline
    margins: Tuple[Tuple[str, float], ...] = (("sharp", 0.4), ("soft", 0.35), ("infiltrative", 0.25))
    sharp_edge_mm: Tuple[float, float] = field(default=(0.0, 1.0), metadata=SHIFT)
    soft_edge_mm: Tuple[float, float] = field(default=(1.0, 3.0), metadata=SHIFT)
    infiltrative_edge_mm: Tuple[float, float] = field(default=(3.0, 6.0), metadata=SHIFT)
    lobulation: Tuple[float, float] = field(default=(0.0, 0.2), metadata=P)              # smooth, ~4 lobes
    infiltrative_irregularity: Tuple[float, float] = field(default=(0.2, 0.4), metadata=P)   # finer, stronger
    # mass effect: tissue around the lesion pushed outward by this share of the radius at its edge
    mass_effect_probability: float = field(default=0.3, metadata=P)
    mass_effect_push: Tuple[float, float] = field(default=(0.1, 0.35), metadata=P)
    # aerated organs (the lung): lesions fill the air spaces partly (ground glass) or fully (solid)
    aerated_organ_hu: float = field(default=-300.0, metadata=HU)     # host mean below this = aerated
    soft_tissue_hu: float = field(default=40.0, metadata=HU)         # reference of lesions in aerated organs
    aerated_fill: Tuple[float, float] = field(default=(0.25, 1.0), metadata=P)
    # which channels learn from a pasted lesion: only its host ("not healthy <host>"), or every
    # organ and background tissue channel as a negative (the earlier handling; for ablations)
    lesion_labels: str = "host_only"


@dataclass(frozen=True)
class HypodenseLesionRecipe:
    """The earlier recipe (the default before the curriculum): hypo-attenuating only, tuned on one zero-shot type of
    the demo.  Kept for nnUNetTrainerZePTStage1_hypodenseLesions and its ablation."""

    probability: float = field(default=0.5, metadata=P)
    start_fraction: float = 0.0
    max_lesions: int = 2
    radius_mm: Tuple[float, float] = field(default=(4.0, 16.0), metadata=POS)    # mean semi-axis
    darker_hu: Tuple[float, float] = field(default=(25.0, 120.0), metadata=SHIFT)  # core below the organ's mean ...
    fluid_hu: float = field(default=-10.0, metadata=HU)                            # ... but not below water
    aerated_organ_hu: float = field(default=-300.0, metadata=HU)
    aerated_lesion_hu: Tuple[float, float] = field(default=(-10.0, 80.0), metadata=HU)
    texture_hu: float = field(default=12.0, metadata=SHIFT)
    rim_voxels: Tuple[float, float] = field(default=(0.3, 1.2), metadata=POS)
    max_organ_fraction: float = field(default=0.3, metadata=P)
    min_organ_voxels: int = 27
    # every organ and background tissue channel learns the pasted voxels as a negative
    lesion_labels: ClassVar[str] = "all_negative"


def _values(v) -> Sequence[float]:
    return v if isinstance(v, tuple) else (v,)


def _fail(recipe, name: str, value, valid: str) -> LesionRecipeError:
    return LesionRecipeError(
        f"synthetic lesions: {type(recipe).__name__}.{name} = {value!r} cannot be realised; valid: {valid}. "
        f"Fix: give the trainer's SYNTHETIC_LESIONS a recipe with {name} in that range")


def check_settings(recipe) -> None:
    """Checks that need neither the grid nor the dataset (each setting against its kind's range)."""
    width = CT_WINDOW_HU[1] - CT_WINDOW_HU[0]
    for f in fields(recipe):
        value = getattr(recipe, f.name)
        kind = f.metadata.get("kind")
        vals = _values(value)
        if kind is not None and not all(isinstance(x, (int, float)) and math.isfinite(x) for x in vals):
            raise _fail(recipe, f.name, value, "finite numbers")
        if kind == "probability" and not all(0.0 <= x <= 1.0 for x in vals):
            raise _fail(recipe, f.name, value, "[0, 1]")
        if kind == "hu" and not all(CT_WINDOW_HU[0] <= x <= CT_WINDOW_HU[1] for x in vals):
            raise _fail(recipe, f.name, value, f"HU inside the CT window [{CT_WINDOW_HU[0]:g}, {CT_WINDOW_HU[1]:g}]")
        if kind == "shift" and not all(abs(x) <= width for x in vals):
            raise _fail(recipe, f.name, value, f"HU differences within +-{width:g} (the CT window's width)")
        if kind == "positive" and not all(x > 0 for x in vals):
            raise _fail(recipe, f.name, value, "numbers above 0")
        if isinstance(value, tuple) and len(value) == 2 and kind is not None and value[0] > value[1]:
            raise _fail(recipe, f.name, value, "an ordered pair (low, high)")
    if not 0.0 <= recipe.start_fraction < 1.0:
        raise _fail(recipe, "start_fraction", recipe.start_fraction, "[0, 1)")
    if not (isinstance(recipe.max_lesions, int) and recipe.max_lesions >= 1):
        raise _fail(recipe, "max_lesions", recipe.max_lesions, "an integer >= 1")
    if recipe.lesion_labels not in LESION_LABELS:
        raise _fail(recipe, "lesion_labels", recipe.lesion_labels, f"one of {LESION_LABELS}")
    if isinstance(recipe, LesionCurriculum):
        for name in ("lobulation", "infiltrative_irregularity"):
            if getattr(recipe, name)[1] >= 1.0:
                raise _fail(recipe, name, getattr(recipe, name), "[0, 1) (a share of the radius)")
        for name, known in (("kinds", KINDS), ("margins", MARGINS)):
            table = getattr(recipe, name)
            if (not table or any(k not in known or not w >= 0 for k, w in table)
                    or sum(w for _, w in table) <= 0):
                raise _fail(recipe, name, table, f"(name, weight) pairs with names from {known}, "
                                                  f"weights >= 0 and a positive sum")


def smallest_lesion_mm(recipe, spacing: Sequence[float]) -> Tuple[float, ...]:
    """Per-axis diameter (mm) of the smallest lesion the recipe pastes on a grid of `spacing`."""
    if isinstance(recipe, HypodenseLesionRecipe):
        return tuple(max(2 * 0.75 * recipe.radius_mm[0], 1.5 * sp) for sp in spacing)
    return tuple(max(recipe.diameter_mm[0], recipe.min_voxels_across * sp) for sp in spacing)


def ellipsoid_volume(diameters_mm: Sequence[float]) -> float:
    return math.pi / 6.0 * math.prod(diameters_mm)


def check_recipe(recipe, spacing: Sequence[float], largest_host_voxels: Optional[int] = None) -> None:
    """Every check, at trainer start: the settings, then sizes against the grid and the host organs.

    largest_host_voxels: an upper bound on the voxels of a host organ in one training patch (the
    patch's voxels, or fewer when the dataset says its host organs are smaller); None skips that check.
    """
    check_settings(recipe)
    spacing = [float(s) for s in spacing]
    if isinstance(recipe, LesionCurriculum):
        grid_mm = recipe.min_voxels_across * math.prod(spacing) ** (1.0 / len(spacing))
        if recipe.diameter_mm[1] < grid_mm:
            raise _fail(recipe, "diameter_mm", recipe.diameter_mm,
                        f"an upper end of at least {grid_mm:.1f} mm, the smallest lesion this grid shows "
                        f"({recipe.min_voxels_across:g} voxels across at spacing {_fmt(spacing)} mm)")
    if largest_host_voxels is None:
        return
    hold_mm3 = recipe.max_organ_fraction * largest_host_voxels * math.prod(spacing)
    smallest = smallest_lesion_mm(recipe, spacing)
    if ellipsoid_volume(smallest) <= hold_mm3:
        return
    where = (f"max_organ_fraction = {recipe.max_organ_fraction:g} of the largest host organ in a training patch, "
             f"{largest_host_voxels} voxels at spacing {_fmt(spacing)} mm")
    if isinstance(recipe, LesionCurriculum):
        grid = [recipe.min_voxels_across * sp for sp in spacing]
        if ellipsoid_volume(grid) > hold_mm3:
            raise _fail(recipe, "max_organ_fraction", recipe.max_organ_fraction,
                        f"a share that holds the grid's smallest lesion ({_fmt(grid)} mm) within the largest "
                        f"host organ in a training patch ({largest_host_voxels} voxels at spacing {_fmt(spacing)} mm)")
        d_max = (6.0 * hold_mm3 / math.pi) ** (1.0 / 3.0)
        raise _fail(recipe, "diameter_mm", recipe.diameter_mm, f"a lower end of at most {d_max:.1f} mm ({where})")
    r_max = 0.5 * (6.0 * hold_mm3 / math.pi) ** (1.0 / 3.0) / 0.75
    raise _fail(recipe, "radius_mm", recipe.radius_mm, f"a lower end of at most {r_max:.1f} mm ({where})")


def _fmt(values: Sequence[float]) -> str:
    return "x".join(f"{float(v):.3g}" for v in values)
