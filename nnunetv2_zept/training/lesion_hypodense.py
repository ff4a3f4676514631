"""The earlier synthetic lesion recipe (HypodenseLesionRecipe): hypo-attenuating blobs in
parenchyma, fluid to soft tissue in aerated organs, after the label-free tumour synthesis of Hu et al.
2023 (Hu et al., CVPR 2023: hypo-attenuating blobs).  Kept unchanged for
nnUNetTrainerZePTStage1_hypodenseLesions; the default is the generic curriculum (lesion_curriculum.py).

Its shape and texture are computed on the whole patch, once per lesion; the curriculum works in the
lesion's bounding box instead.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

from nnunetv2_zept.training.background_tissue import hu_from_normalised, normalised_from_hu
from nnunetv2_zept.training.lesion_fields import smooth_noise
from nnunetv2_zept.training.lesion_recipes import HypodenseLesionRecipe


def lesion_shape(organ: torch.Tensor, spacing: Sequence[float], recipe: HypodenseLesionRecipe,
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
    f = f + 0.35 * smooth_noise(organ.shape, 4, generator)         # irregular, lobulated margin
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
                 recipe: HypodenseLesionRecipe, generator: Optional[torch.Generator] = None) -> torch.Tensor:
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
    texture = recipe.texture_hu * smooth_noise(image.shape, 6, generator, image.device)
    shifted = hu + soft * (target - organ_mean + texture)
    return torch.where(soft > 0, normalised_from_hu(shifted, intensity_properties).to(image.dtype), image)


class HypodensePainter:
    """Pastes one HypodenseLesionRecipe lesion into one sample (see synthetic_lesions.LesionSynthesiser)."""

    def __init__(self, recipe: HypodenseLesionRecipe, spacing: Sequence[float], intensity_properties: Dict):
        self.recipe = recipe
        self.spacing = tuple(spacing)
        self.intensity_properties = intensity_properties
        self.min_host_voxels = recipe.min_organ_voxels

    def paste(self, image: torch.Tensor, targets: List[torch.Tensor], organ: int, hosted: Sequence[int],
              generator: Optional[torch.Generator] = None, carry: Optional[torch.Tensor] = None
              ) -> Optional[Tuple[torch.Tensor, None]]:
        """image [C_in, *s], targets [C, *s_k] of one sample (changed in place) -> (lesion mask, None) or None.
        Nothing moves here, so `carry` is left as it is."""
        full = targets[0]
        # only healthy organ voxels: a lesion pasted over an annotated tumour would relabel it
        healthy = (full[organ] > 0) & ~(full[list(hosted)] > 0).any(0)
        shape = lesion_shape(healthy.cpu(), self.spacing, self.recipe, generator)
        if shape is None:
            return None
        hard, soft = (m.to(image.device) for m in shape)
        image[0] = paste_lesion(image[0], hard, soft, self.intensity_properties, self.recipe, generator)
        return hard, None
