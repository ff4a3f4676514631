"""Synthetic lesions pasted into host organs of Stage 1 training batches.

Stage 1 trains the organ queries on healthy-organ targets: a voxel of an annotated tumour is a
negative for its host organ, so tumours stay unexplained and the anomaly map fires there.  But an
organ query only learns that for the organs whose tumours are annotated.  The spleen query of a
model trained on liver and kidney tumours has never seen an abnormal spleen, and it claims a
near-water cyst inside the spleen as spleen (measured on the --longer demo: probability 0.65),
so a zero-shot splenic lesion is not anomalous at all.

So every organ that hosts any tumour type, seen or zero-shot, gets lesions that belong to no
tumour type: the generic curriculum (`LesionCurriculum`, lesion_curriculum.py) by default, the
earlier hypo-attenuating recipe (`HypodenseLesionRecipe`, lesion_hypodense.py) as a variant.

Labels.  A pasted lesion is marked in one tumour channel that its organ hosts; Stage 1 never trains
tumour channels, so the mark makes the voxels negatives for the host organ (healthy_organ_targets)
and keeps them out of the background tissue pseudo-labels.  What the other channels learn there
is the recipe's `lesion_labels`:
  "host_only" (curriculum default): the lesion's voxels are left out of every other organ channel's
      loss and of the background tissue loss, and its soft margin (partly lesion, partly organ) out
      of every organ channel's loss.  A lesion then teaches "this is not healthy <host>" and
      nothing about the other organs.
  "all_negative" (earlier handling): every organ and tissue channel learns the voxels as a negative.
      A bright blob in the liver is then a hard negative for the spleen and kidney queries exactly
      where they rely on brightness; docs/training.md gives the measurement.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from nnunetv2_zept.roles import ClassRoles
from nnunetv2_zept.training.lesion_recipes import HypodenseLesionRecipe, LesionCurriculum, check_recipe


def lesion_hosts(roles: ClassRoles) -> Dict[int, int]:
    """{organ channel: tumour channel that marks a lesion in it} for every organ hosting a tumour type."""
    hosts = {}
    for organ in roles.organs:
        hosted = roles.host_union_of(organ)
        if hosted:
            hosts[organ] = min(hosted)
    return hosts


def lesions_active(recipe, epoch: int, num_epochs: int) -> bool:
    """Whether a training at `epoch` of `num_epochs` pastes lesions (after the recipe's warm-up)."""
    return recipe is not None and recipe.probability > 0 and epoch >= recipe.start_fraction * num_epochs


@dataclass
class PastedLesions:
    """What one batch got.  organ_weights: per deep-supervision level, [B, C, *s_k] float, 0 where a
    channel's loss skips a voxel; tissue_weight: [B, *s] float, 0 where the background tissue loss
    skips one.  Both None when nothing is skipped (no lesion, or lesion_labels "all_negative")."""

    count: int = 0
    organ_weights: Optional[List[torch.Tensor]] = None
    tissue_weight: Optional[torch.Tensor] = None


def _resize_mask(masks: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """masks bool [B, K, *s] -> [B, K, *shape], picking the voxels nnU-Net's deep-supervision
    downsampling picks (interpolate "nearest-exact": source = floor((i + 0.5) * n / n_k)), by indexing."""
    out = masks
    for axis, (n, n_k) in enumerate(zip(masks.shape[2:], shape)):
        if n != n_k:
            idx = ((torch.arange(n_k, device=masks.device) + 0.5) * (n / n_k)).floor().long().clamp_max(n - 1)
            out = out.index_select(2 + axis, idx)
    return out


def _painter(recipe, spacing: Sequence[float], intensity_properties: Dict):
    if isinstance(recipe, LesionCurriculum):
        from nnunetv2_zept.training.lesion_curriculum import CurriculumPainter
        return CurriculumPainter(recipe, spacing, intensity_properties)
    if isinstance(recipe, HypodenseLesionRecipe):
        from nnunetv2_zept.training.lesion_hypodense import HypodensePainter
        return HypodensePainter(recipe, spacing, intensity_properties)
    raise TypeError(f"synthetic lesions: {type(recipe).__name__} is not a lesion recipe; use LesionCurriculum "
                    f"or HypodenseLesionRecipe")


class LesionSynthesiser:
    """Pastes a recipe's lesions into training batches.  Made once per trainer: it checks the recipe
    against the grid and the host organs (LesionRecipeError names the setting and its valid range)
    and keeps what can be precomputed (textures)."""

    def __init__(self, recipe, roles: ClassRoles, spacing: Sequence[float], intensity_properties: Dict,
                 largest_host_voxels: Optional[int] = None):
        check_recipe(recipe, spacing, largest_host_voxels)
        self.recipe = recipe
        self.roles = roles
        self.hosts = lesion_hosts(roles)
        self.painter = _painter(recipe, spacing, intensity_properties)

    def __call__(self, data: torch.Tensor, targets: List[torch.Tensor], generator: Optional[torch.Generator] = None
                 ) -> Tuple[torch.Tensor, List[torch.Tensor], PastedLesions]:
        """data [B, C_in, *s] (channel 0: CT, normalised), targets: nnU-Net's region-target pyramid
        ([B, C, *s_k], full resolution first).  The inputs are not modified in place."""
        recipe, pasted = self.recipe, PastedLesions()
        if not self.hosts or recipe.probability <= 0:
            return data, targets, pasted
        host_list = list(self.hosts)
        # per sample: one lesion mask per host organ, then the margins of all lesions (full resolution;
        # a later lesion's mass effect moves them like the labels)
        masks = None
        for b in range(data.shape[0]):
            if torch.rand(1, generator=generator).item() >= recipe.probability:
                continue
            sizes = (targets[0][b, host_list] > 0).flatten(1).sum(1).tolist()
            present = [o for o, n in zip(host_list, sizes) if n >= self.painter.min_host_voxels]
            if not present:
                continue
            for _ in range(1 + int(torch.randint(recipe.max_lesions, (1,), generator=generator))):
                organ = present[int(torch.randint(len(present), (1,), generator=generator))]
                if masks is None:
                    # copies only for batches that get a lesion (a quarter of them get none)
                    data, targets = data.clone(), [t.clone() for t in targets]
                    masks = torch.zeros((data.shape[0], len(host_list) + 1) + tuple(data.shape[2:]),
                                        dtype=torch.bool, device=data.device)
                out = self.painter.paste(data[b], [t[b] for t in targets], organ, self.roles.host_union_of(organ),
                                         generator, masks[b])
                if out is None:
                    continue
                lesion, margin = out
                # marked at once: the next lesion of this sample must see these voxels as taken
                targets[0][b, self.hosts[organ]][lesion & (targets[0][b, organ] > 0)] = 1
                masks[b, host_list.index(organ)] |= lesion
                if margin is not None:
                    masks[b, -1] |= margin
                pasted.count += 1
        if pasted.count:
            self._label(targets, pasted, masks, host_list)
        return data, targets, pasted

    def _label(self, targets: List[torch.Tensor], pasted: PastedLesions, masks: torch.Tensor,
               host_list: List[int]) -> None:
        """Marks the lesions in the coarser targets and builds the loss weights of `lesion_labels`."""
        host_only = self.recipe.lesion_labels == "host_only"
        if host_only:
            pasted.organ_weights = []
            pasted.tissue_weight = (~masks.any(1)).float()
        for k, t in enumerate(targets):
            m = masks if k == 0 else _resize_mask(masks, t.shape[2:])
            if k > 0:
                for i, organ in enumerate(host_list):
                    t[:, self.hosts[organ]][m[:, i] & (t[:, organ] > 0)] = 1
            if host_only:
                lesions, margins = m[:, :-1].any(1), m[:, -1]
                w = torch.ones(t.shape, device=t.device)
                for o in self.roles.organs:
                    # another organ's lesion, or any lesion's margin: this channel learns nothing there
                    skip = lesions & ~m[:, host_list.index(o)] if o in self.hosts else lesions
                    w[:, o].masked_fill_(skip | margins, 0.0)
                pasted.organ_weights.append(w)


@torch.no_grad()
def add_synthetic_lesions(data: torch.Tensor, targets: List[torch.Tensor], roles: ClassRoles, spacing: Sequence[float],
                          intensity_properties: Dict, recipe, generator: Optional[torch.Generator] = None
                          ) -> Tuple[torch.Tensor, List[torch.Tensor], PastedLesions]:
    """One-off form of LesionSynthesiser (checks the recipe and builds its textures on every call)."""
    return LesionSynthesiser(recipe, roles, spacing, intensity_properties)(data, targets, generator)


def largest_host_voxels(preprocessed_config_folder: Optional[str], label_manager, host_channels: Sequence[int],
                        patch_size: Sequence[int]) -> int:
    """An upper bound on the voxels of a host organ inside one training patch.

    A patch holds at most its own voxels.  nnU-Net's preprocessor stores, per case and class, all
    foreground locations of a class with fewer than 10,000 voxels (and a sample of larger ones), so
    the stored count is exact for small organs: if every host organ of every case is that small,
    the largest of them bounds what a lesion can occupy.  (Only small organs make for small files,
    and the first large one ends the search.)
    """
    import math
    from batchgenerators.utilities.file_and_folder_operations import load_pickle

    bound = int(math.prod(patch_size))
    if not preprocessed_config_folder or not os.path.isdir(preprocessed_config_folder):
        return bound
    regions = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    keys = [tuple(regions[c]) if isinstance(regions[c], (list, tuple)) else regions[c] for c in host_channels]
    cases = sorted(f for f in os.listdir(preprocessed_config_folder) if f.endswith(".pkl"))
    largest = 0
    for f in cases:
        locs = load_pickle(os.path.join(preprocessed_config_folder, f)).get("class_locations", {})
        for k in keys:
            v = locs.get(k)
            if v is None and isinstance(k, tuple) and len(k) == 1:
                v = locs.get(k[0])
            n = 0 if v is None else len(v)
            if n >= 10000:          # sampled: the organ may be as large as the patch
                return bound
            largest = max(largest, n)
    return min(bound, largest) if cases and largest > 0 else bound
