"""The generic lesion curriculum (LesionCurriculum): one lesion pasted into one sample of a batch.

A lesion is a randomly rotated, stretched ellipsoid with a lobulated or infiltrative outline,
clipped to healthy host tissue.  Its voxels are moved from the organ's local mean toward the
lesion's HU (the organ's own noise stays, so the lesion is not smoother than CT), through a soft
edge whose width is the margin.  Optionally the surrounding tissue is pushed outward first (mass
effect), labels included.  Every length is in mm and every intensity in HU, turned into voxels and
normalised values with the grid's spacing and nnU-Net's CT normalisation, and all work is done in
the lesion's bounding box, so the cost follows the lesion, not the patch.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from nnunetv2_zept.training.background_tissue import hu_from_normalised, normalised_from_hu
from nnunetv2_zept.training.lesion_fields import PeriodicTextures, smooth_noise
from nnunetv2_zept.training.lesion_recipes import LesionCurriculum, ellipsoid_volume

# a rim around a core needs twice the grid's smallest lesion: a voxel of rim on each side of a core
MIN_SIZE_FACTOR = {"rim": 2.0}
MARGIN_VOXELS = 0.05    # soft weight above which a voxel outside the lesion's label counts as its margin


def _uniform(pair: Sequence[float], g: Optional[torch.Generator]) -> float:
    return pair[0] + torch.rand(1, generator=g).item() * (pair[1] - pair[0])


def _choice(table: Sequence[Tuple[str, float]], g: Optional[torch.Generator]) -> str:
    weights = torch.tensor([w for _, w in table], dtype=torch.float64)
    return table[int(torch.multinomial(weights, 1, generator=g))][0]


def _rotation(g: Optional[torch.Generator]) -> torch.Tensor:
    """A uniformly random 3D rotation matrix (from a random unit quaternion)."""
    w, x, y, z = F.normalize(torch.randn(4, generator=g, dtype=torch.float64), dim=0).tolist()
    return torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]], dtype=torch.float32)


def _box(centre: Sequence[int], half_vox: Sequence[int], shape: Sequence[int]) -> Tuple[slice, ...]:
    return tuple(slice(max(0, c - h), min(n, c + h + 1)) for c, h, n in zip(centre, half_vox, shape))


def _offsets_mm(box: Sequence[slice], centre: Sequence[float], spacing: Sequence[float], device) -> List[torch.Tensor]:
    """Per axis, the mm offset of the box's voxel centres from `centre` (voxel coordinates), shaped to broadcast."""
    out = []
    for axis, (sl, c, sp) in enumerate(zip(box, centre, spacing)):
        view = [1] * len(box)
        view[axis] = sl.stop - sl.start
        out.append(((torch.arange(sl.start, sl.stop, device=device, dtype=torch.float32) - c) * sp).reshape(view))
    return out


def push_tissue(volume: torch.Tensor, centre: Sequence[float], spacing: Sequence[float], radius_mm: float,
                push_mm: float, mode: str) -> None:
    """Mass effect, in place: volume [C, *s]; the tissue around `centre` (voxel coordinates) moves
    outward, by `push_mm` at `radius_mm` from it, decaying as 1/r^2 beyond and fading out before 3 radii.

    Backward map: the voxel at distance r takes the content found at distance r - push * phi(r / R),
    phi(t) = t inside the lesion and 1/t^2 outside; the map is monotonic for push < R, so no tissue
    folds over.  mode: "bilinear" for images, "nearest" for labels.
    """
    reach = 3.0 * radius_mm
    half = [int(math.ceil(reach / sp)) + 1 for sp in spacing]
    box = _box([int(round(c)) for c in centre], half, volume.shape[1:])
    v = _offsets_mm(box, centre, spacing, volume.device)
    r = torch.sqrt(sum(x * x for x in v)).clamp_min(1e-6)
    t = r / radius_mm
    phi = torch.where(t <= 1.0, t, 1.0 / (t * t))
    fade = ((reach - r) / (reach - 2.0 * radius_mm)).clamp(0.0, 1.0)
    fade = fade * fade * (3.0 - 2.0 * fade)                    # smoothstep: 1 within 2 radii, 0 at 3
    scale = (r - push_mm * phi * fade) / r
    grid = []
    for axis in reversed(range(len(box))):                     # grid_sample wants (x, y, z) = last axis first
        sl, c, sp = box[axis], centre[axis], spacing[axis]
        src = c + v[axis] * scale / sp - sl.start               # source voxel index inside the box
        n = sl.stop - sl.start
        grid.append((2.0 * src / max(n - 1, 1) - 1.0).expand(r.shape))
    grid = torch.stack(grid, -1)[None]
    crop = volume[(slice(None),) + box]
    out = F.grid_sample(crop[None].float(), grid, mode=mode, padding_mode="border", align_corners=True)[0]
    volume[(slice(None),) + box] = out.to(volume.dtype)


class CurriculumPainter:
    """Pastes one LesionCurriculum lesion into one sample (see synthetic_lesions.LesionSynthesiser)."""

    def __init__(self, recipe: LesionCurriculum, spacing: Sequence[float], intensity_properties: Dict):
        self.recipe = recipe
        self.spacing = tuple(float(s) for s in spacing)
        self.intensity_properties = intensity_properties
        self.textures = PeriodicTextures(self.spacing, recipe.texture_scales_mm)
        self.voxel_mm3 = math.prod(self.spacing)
        # an organ smaller than this cannot hold the grid's smallest lesion within max_organ_fraction
        smallest = ellipsoid_volume([recipe.min_voxels_across * sp for sp in self.spacing])
        self.min_host_voxels = max(1, math.ceil(smallest / (recipe.max_organ_fraction * self.voxel_mm3)))

    # ------------------------------------------------------------------ size and shape
    def lesion_axes_mm(self, kind: str, n_healthy: int, g=None) -> Optional[List[float]]:
        """Semi-axes (mm) of a lesion of `kind` in an organ with `n_healthy` free voxels, or None if the
        organ cannot hold one."""
        r = self.recipe
        floor = [MIN_SIZE_FACTOR.get(kind, 1.0) * r.min_voxels_across * sp for sp in self.spacing]
        cap_mm3 = r.max_organ_fraction * n_healthy * self.voxel_mm3
        lo = max(r.diameter_mm[0], math.prod(floor) ** (1.0 / 3.0))
        hi = min(r.diameter_mm[1], (6.0 * cap_mm3 / math.pi) ** (1.0 / 3.0))
        if hi < lo or ellipsoid_volume([max(lo, f) for f in floor]) > cap_mm3:
            return None
        d = math.exp(_uniform((math.log(lo), math.log(hi)), g))
        stretch = [_uniform(r.stretch, g) for _ in self.spacing]
        norm = math.prod(stretch) ** (1.0 / len(stretch))       # stretching keeps the volume
        return [max(d * s / norm, f) / 2.0 for s, f in zip(stretch, floor)]

    def _kind(self, n_healthy: int, g) -> Tuple[str, List[float]]:
        kind = _choice(self.recipe.kinds, g)
        axes = self.lesion_axes_mm(kind, n_healthy, g)
        if axes is None and kind in MIN_SIZE_FACTOR:
            # too small an organ for this kind: the others need less room
            table = [(k, w) for k, w in self.recipe.kinds if k not in MIN_SIZE_FACTOR]
            if table and sum(w for _, w in table) > 0:
                kind = _choice(table, g)
                axes = self.lesion_axes_mm(kind, n_healthy, g)
        return kind, axes

    def _outline(self, full_shape, centre, axes, margin: str, device, g):
        """(box around the lesion, normalised radius rho on it (1 at the outline), ramp width of the edge in mm)."""
        r = self.recipe
        lob = _uniform(r.lobulation, g)
        irr = _uniform(r.infiltrative_irregularity, g) if margin == "infiltrative" else 0.0
        edge = max(_uniform(getattr(r, f"{margin}_edge_mm"), g), 0.5 * min(self.spacing))  # partial volume
        # the outline factors lie in (1 - lob, 1 + lob) and (1 - irr, 1 + irr): the box covers the farthest outline
        reach_mm = (max(axes) + edge) / ((1.0 - lob) * (1.0 - irr))
        box = _box(centre, [int(math.ceil(reach_mm / sp)) + 1 for sp in self.spacing], full_shape)
        v = _offsets_mm(box, centre, self.spacing, device)
        rot = _rotation(g)
        rho2 = 0.0
        for j, a in enumerate(axes):
            u = sum(float(rot[i, j]) * v[i] for i in range(len(v)))
            rho2 = rho2 + (u / a) ** 2
        shape = tuple(sl.stop - sl.start for sl in box)
        # lobulated (a few smooth bumps), and for infiltrative margins also finer, stronger irregularity
        rho = torch.sqrt(rho2) * (1.0 + lob * torch.tanh(smooth_noise(shape, 4, g, device)))
        if irr > 0:
            rho = rho * (1.0 + irr * torch.tanh(smooth_noise(shape, 8, g, device)))
        return box, rho, edge

    # ------------------------------------------------------------------ appearance
    def _target_hu(self, kind: str, rho: torch.Tensor, lesion: torch.Tensor, organ_mean: float,
                   r_eff: float, g) -> torch.Tensor:
        """The lesion's HU before texture, on the box: a scalar tensor or a map (rim and core, calcifications)."""
        r = self.recipe
        aerated = organ_mean < r.aerated_organ_hu
        ref = r.soft_tissue_hu if aerated else organ_mean
        soft = lambda shift: max(ref + _uniform(shift, g), r.fluid_hu)   # noqa: E731
        if kind == "rim":
            rim, core = soft(r.rim_hu), soft(r.necrotic_core_hu)
            # the rim is at least a voxel wide; the core's edge is blurred over half a voxel
            width = max(_uniform(r.rim_fraction, g), min(self.spacing) / r_eff)
            blur = 0.5 * min(self.spacing) / r_eff
            core_weight = ((1.0 - width - rho) / blur + 0.5).clamp(0.0, 1.0)
            target = rim + core_weight * (core - rim)
        else:
            shift = {"hypo": r.hypo_hu, "iso": r.iso_hu, "hyper": r.hyper_hu, "calcified": r.calcified_base_hu}[kind]
            target = torch.full_like(rho, soft(shift))
        if aerated:
            # a lesion in the lung fills its air spaces partly (ground glass) or fully (solid)
            target = organ_mean + _uniform(r.aerated_fill, g) * (target - organ_mean)
        if kind == "calcified":
            # calcified foci: the highest values of a smooth field, covering the drawn share of the lesion
            field = smooth_noise(rho.shape, 3, g, rho.device)
            threshold = torch.quantile(field[lesion], 1.0 - _uniform(r.calcified_fraction, g))
            foci = lesion & (field >= threshold)
            target = torch.where(foci, torch.full_like(target, _uniform(r.calcification_hu, g)), target)
        return target

    def _texture_hu(self, kind: str, g) -> float:
        r = self.recipe
        heterogeneous = kind == "iso" or torch.rand(1, generator=g).item() < r.heterogeneous_probability
        return _uniform(r.heterogeneous_hu if heterogeneous else r.texture_hu, g)

    # ------------------------------------------------------------------ one lesion
    def paste(self, image: torch.Tensor, targets: List[torch.Tensor], organ: int, hosted: Sequence[int],
              generator: Optional[torch.Generator] = None, carry: Optional[torch.Tensor] = None
              ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """image [C_in, *s] (channel 0: CT, normalised), targets [C, *s_k] of one sample (both changed
        in place) -> (lesion mask, margin mask), bool [*s], or None if the organ cannot hold a lesion.
        carry: masks [K, *s] that move with the labels (mass effect)."""
        g, r = generator, self.recipe
        full = targets[0]
        hosted = list(hosted)
        healthy = (full[organ] > 0) & ~(full[hosted] > 0).any(0)
        n_healthy = int(healthy.sum())
        kind, axes = self._kind(n_healthy, g)
        if axes is None:
            return None
        idx = torch.nonzero(healthy)
        centre = [int(x) for x in idx[int(torch.randint(len(idx), (1,), generator=g))]]
        r_eff = math.prod(axes) ** (1.0 / len(axes))
        if torch.rand(1, generator=g).item() < r.mass_effect_probability:
            push = _uniform(r.mass_effect_push, g) * r_eff
            push_tissue(image, centre, self.spacing, r_eff, push, "bilinear")
            for t in targets + ([] if carry is None else [carry]):
                scale = [n_k / n for n_k, n in zip(t.shape[1:], full.shape[1:])]
                centre_k = [(c + 0.5) * s - 0.5 for c, s in zip(centre, scale)]
                push_tissue(t, centre_k, [sp / s for sp, s in zip(self.spacing, scale)], r_eff, push, "nearest")
            full = targets[0]
            healthy = (full[organ] > 0) & ~(full[hosted] > 0).any(0)
        box, rho, edge_mm = self._outline(full.shape[1:], centre, axes, _choice(r.margins, g), image.device, g)
        free = healthy[box]
        cap = int(r.max_organ_fraction * n_healthy)
        inside = rho[free]
        if int((inside <= 1.0).sum()) > cap:
            # an irregular outline can outgrow the drawn size: shrink it to the organ cap
            rho = rho / torch.kthvalue(inside, max(cap, 1)).values
        # soft weight: 1 inside, 0 outside, a linear ramp of `edge_mm` across the outline; only healthy host tissue
        weight = ((0.5 - (rho - 1.0) * r_eff / edge_mm).clamp(0.0, 1.0)) * free.float()
        lesion = weight >= 0.5
        if not lesion.any():
            return None
        hu = hu_from_normalised(image[0][box].float(), self.intensity_properties)
        organ_mean = float(hu[lesion].mean())
        target = self._target_hu(kind, rho, lesion, organ_mean, r_eff, g)
        texture = self._texture_hu(kind, g) * self.textures.window(full.shape[1:], box, image.device, g)
        shifted = normalised_from_hu(hu + weight * (target - organ_mean + texture), self.intensity_properties)
        image[0][box] = torch.where(weight > 0, shifted.to(image.dtype), image[0][box])
        lesion_full = torch.zeros_like(healthy)
        margin_full = torch.zeros_like(healthy)
        lesion_full[box] = lesion
        margin_full[box] = (weight > MARGIN_VOXELS) & ~lesion
        return lesion_full, margin_full
