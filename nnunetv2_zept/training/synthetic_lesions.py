"""Generic synthetic lesions pasted into host organs of Stage 1 training batches.

Stage 1 trains the organ queries on healthy-organ targets: a voxel of an annotated tumour is a
negative for its host organ, so tumours stay unexplained and the anomaly map fires there.  But an
organ query only learns that for the organs whose tumours are annotated.  The spleen query of a
model trained on liver and kidney tumours has never seen an abnormal spleen, and it claims a
near-water cyst inside the spleen as spleen (measured on the --longer demo: probability 0.65),
so a zero-shot splenic lesion is not anomalous at all.

This module gives every organ that hosts any tumour type, seen or zero-shot, the same lesson with
lesions that belong to no tumour type: a smooth, randomly deformed blob, darker than the organ's
parenchyma by a random amount but not below water, or, in an aerated organ (the lung), of fluid to
soft-tissue density; with a soft rim and a smooth internal texture, clipped to the organ.  Recipe
after the label-free tumour synthesis of Hu et al. 2023 (Hu et al., CVPR 2023:
hypo-attenuating blobs), re-implemented on the already normalised nnU-Net batch, with no
parameter specific to an organ or a tumour type (the held-out types must stay unseen).

Why hypo-attenuating only: a first version drew the lesion HU from -10 to 160 HU in either
direction; bright blobs inside the liver look like spleen or kidney tissue but are labelled "not
spleen, not kidney", and on the --longer demo the spleen and right kidney queries stopped learning
(validation Dice 0.06 and 0.01 after 600 steps, against 0.61 and 0.76 without lesions).

The pasted voxels are marked in one tumour channel that the organ hosts; Stage 1 never trains tumour
channels, so the mark only does two things: `healthy_organ_targets` makes the voxels negatives for
the organ, and the background tissue pseudo-labels skip them (they are explained by no query).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from nnunetv2_zept.roles import ClassRoles
from nnunetv2_zept.training.background_tissue import hu_from_normalised, normalised_from_hu


@dataclass(frozen=True)
class LesionRecipe:
    """What is pasted, and how often.  Sizes in mm, intensities in HU (before normalisation)."""

    probability: float = 0.5                        # per sample of a batch
    start_fraction: float = 0.0                     # no lesions before this share of the training's epochs
    max_lesions: int = 2                            # per pasted sample (1..max_lesions)
    radius_mm: Tuple[float, float] = (4.0, 16.0)    # mean semi-axis
    darker_hu: Tuple[float, float] = (25.0, 120.0)  # lesion core this much below the organ's mean ...
    fluid_hu: float = -10.0                         # ... but not below water
    aerated_organ_hu: float = -300.0                # an organ darker than this on average is aerated ...
    aerated_lesion_hu: Tuple[float, float] = (-10.0, 80.0)  # ... and its lesions are fluid or soft tissue
    texture_hu: float = 12.0                        # std of the smooth internal texture
    rim_voxels: Tuple[float, float] = (0.3, 1.2)    # width of the soft edge
    max_organ_fraction: float = 0.3                 # lesion volume at most this share of the organ in the patch
    min_organ_voxels: int = 27                      # organs smaller than this in the patch get none

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"synthetic lesion probability {self.probability} must lie in [0, 1]")
        if not 0.0 <= self.start_fraction < 1.0:
            raise ValueError(f"synthetic lesion start_fraction {self.start_fraction} must lie in [0, 1)")
        if self.max_lesions < 1 or self.radius_mm[0] <= 0 or self.radius_mm[1] < self.radius_mm[0]:
            raise ValueError(f"synthetic lesion recipe {self}: need max_lesions >= 1 and 0 < radius_mm[0] <= radius_mm[1]")


def lesion_hosts(roles: ClassRoles) -> Dict[int, int]:
    """{organ channel: tumour channel that marks a lesion in it} for every organ hosting a tumour type."""
    hosts = {}
    for organ in roles.organs:
        hosted = roles.host_union_of(organ)
        if hosted:
            hosts[organ] = min(hosted)
    return hosts


def _smooth_noise(shape: Sequence[int], cells: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Low-frequency noise of unit scale on `shape` (trilinear upsampling of a coarse random grid)."""
    coarse = torch.randn((1, 1) + tuple(max(2, min(cells, s)) for s in shape), generator=generator)
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return F.interpolate(coarse, size=tuple(shape), mode=mode, align_corners=True)[0, 0]


def lesion_shape(organ: torch.Tensor, spacing: Sequence[float], recipe: LesionRecipe,
                 generator: Optional[torch.Generator] = None) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """organ bool [*s] -> (hard mask bool [*s], soft weight float [*s] in [0, 1]), both inside the organ,
    or None when the organ is too small to hold a lesion."""
    n_organ = int(organ.sum())
    if n_organ < recipe.min_organ_voxels:
        return None
    idx = torch.nonzero(organ)
    centre = idx[int(torch.randint(len(idx), (1,), generator=generator))].float()
    u = torch.rand(1, generator=generator).item()
    r_mm = recipe.radius_mm[0] + u * (recipe.radius_mm[1] - recipe.radius_mm[0])
    # the volume cap keeps small organs (and small organs' slivers at the patch border) mostly healthy
    vox_volume = float(torch.tensor(list(spacing)).prod())
    r_cap = (recipe.max_organ_fraction * n_organ * vox_volume * 3.0 / (4.0 * torch.pi)) ** (1.0 / 3.0)
    r_mm = min(r_mm, r_cap)
    axes = [max(r_mm * (0.75 + 0.5 * torch.rand(1, generator=generator).item()) / sp, 0.75) for sp in spacing]
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in organ.shape], indexing="ij")
    f = sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, axes))
    f = f + 0.35 * _smooth_noise(organ.shape, 4, generator)         # irregular, lobulated margin
    hard = (f < 1.0) & organ
    if not hard.any():
        hard = torch.zeros_like(organ)
        hard[tuple(centre.long())] = True
    rim = recipe.rim_voxels[0] + torch.rand(1, generator=generator).item() * (recipe.rim_voxels[1] - recipe.rim_voxels[0])
    # f grows about 2/r per voxel at the margin: a rim of `rim` voxels spans 2*rim/r in f
    width = 2.0 * rim / max(min(axes), 1.0)
    soft = ((1.0 - f) / max(width, 1e-3) + 0.5).clamp(0.0, 1.0) * organ.float()
    soft = torch.maximum(soft, hard.float() * 0.5)
    return hard, soft


def paste_lesion(image: torch.Tensor, hard: torch.Tensor, soft: torch.Tensor, intensity_properties: Dict,
                 recipe: LesionRecipe, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """image [*s] (CT-normalised with `intensity_properties`, nnU-Net's foreground statistics of the
    channel) -> image with the lesion: organ voxels moved toward the lesion's HU.

    The organ's own noise stays (the shift is added), so the lesion is not smoother than CT.
    """
    hu = hu_from_normalised(image, intensity_properties)
    organ_mean = float(hu[hard].mean())
    if organ_mean < recipe.aerated_organ_hu:
        lo, hi = recipe.aerated_lesion_hu
        target = lo + torch.rand(1, generator=generator).item() * (hi - lo)
    else:
        lo, hi = recipe.darker_hu
        target = max(organ_mean - (lo + torch.rand(1, generator=generator).item() * (hi - lo)), recipe.fluid_hu)
    texture = recipe.texture_hu * _smooth_noise(image.shape, 6, generator).to(image.device)
    shifted = hu + soft * (target - organ_mean + texture)
    return torch.where(soft > 0, normalised_from_hu(shifted, intensity_properties).to(image.dtype), image)


def _resize_mask(mask: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    if tuple(mask.shape) == tuple(shape):
        return mask
    return F.interpolate(mask[None, None].float(), size=tuple(shape), mode="nearest")[0, 0] > 0.5


def lesions_active(recipe: Optional[LesionRecipe], epoch: int, num_epochs: int) -> bool:
    """Whether a training at `epoch` of `num_epochs` pastes lesions (after the recipe's warm-up)."""
    return recipe is not None and recipe.probability > 0 and epoch >= recipe.start_fraction * num_epochs


@torch.no_grad()
def add_synthetic_lesions(data: torch.Tensor, targets: List[torch.Tensor], roles: ClassRoles, spacing: Sequence[float],
                          intensity_properties: Dict, recipe: LesionRecipe, generator: Optional[torch.Generator] = None
                          ) -> Tuple[torch.Tensor, List[torch.Tensor], int]:
    """Paste lesions into a training batch.

    data [B, C_in, *s] (channel 0 is the CT, normalised with `intensity_properties`), targets: nnU-Net's region-target pyramid
    ([B, C, *s_k], full resolution first).  Returns (data, targets, number of lesions pasted); the
    inputs are not modified in place.
    """
    hosts = lesion_hosts(roles)
    if not hosts or recipe.probability <= 0:
        return data, targets, 0
    data = data.clone()
    targets = [t.clone() for t in targets]
    full = targets[0]
    pasted = 0
    for b in range(data.shape[0]):
        if torch.rand(1, generator=generator).item() >= recipe.probability:
            continue
        present = [o for o in hosts if int((full[b, o] > 0).sum()) >= recipe.min_organ_voxels]
        if not present:
            continue
        n = 1 + int(torch.randint(recipe.max_lesions, (1,), generator=generator))
        for _ in range(n):
            organ = present[int(torch.randint(len(present), (1,), generator=generator))]
            # only healthy organ voxels: a lesion pasted over an annotated tumour would relabel it
            healthy = (full[b, organ] > 0) & ~(full[b, roles.host_union_of(organ)] > 0).any(0)
            shape = lesion_shape(healthy.cpu(), spacing, recipe, generator)
            if shape is None:
                continue
            hard, soft = (m.to(data.device) for m in shape)
            data[b, 0] = paste_lesion(data[b, 0], hard, soft, intensity_properties, recipe, generator)
            marker = hosts[organ]
            for t in targets:
                m = _resize_mask(hard, t.shape[2:]) & (t[b, organ] > 0)
                t[b, marker][m] = 1
            pasted += 1
    return data, targets, pasted
