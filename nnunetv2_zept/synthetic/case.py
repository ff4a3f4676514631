"""One synthetic CT case: anatomy -> tissue HU -> tumours -> partial-volume blur and noise."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .anatomy import ORGAN_IDS, ORGANS, Anatomy, build_anatomy
from .appearance import draw_tissue_hu, finish, render_tissue
from .fields import Grid
from .tumours import Lesion, TumourInserter, get_tumour_type


@dataclass
class SyntheticCase:
    """Arrays are [z, y, x] (SimpleITK array order); `image` is int16 HU, `label` uint8 ids."""

    image: np.ndarray
    label: np.ndarray
    grid: Grid
    seed: int
    lesions: List[Lesion]
    params: Dict[str, object]
    organ_before_tumours: np.ndarray = field(repr=False, default=None)   # uint8 organ ids
    tissue: np.ndarray = field(repr=False, default=None)                 # uint8 anatomy.Tissue codes
    body: np.ndarray = field(repr=False, default=None)                   # bool, inside the skin

    def to_sitk(self):
        """(image, label) SimpleITK images with spacing, origin and an identity (LPS) direction."""
        import SimpleITK as sitk
        out = []
        for arr in (self.image, self.label):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(tuple(float(v) for v in self.grid.spacing_xyz))
            img.SetOrigin(tuple(float(v) for v in self.grid.origin_xyz))
            img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
            out.append(img)
        return tuple(out)


def default_label_ids(tumour_types: Sequence[str]) -> Dict[str, int]:
    """Organs 1..8 in `ORGANS` order, then the given tumour types in order (consecutive ids, as
    nnU-Net requires)."""
    ids = dict(ORGAN_IDS)
    for k, name in enumerate(tumour_types):
        get_tumour_type(name)
        ids[name] = len(ORGANS) + 1 + k
    return ids


def make_case(seed: int, shape_xyz: Tuple[int, int, int], spacing_xyz: Tuple[float, float, float],
              tumours: Sequence[str] = (), label_ids: Optional[Dict[str, int]] = None,
              noise_hu: float = 15.0, min_lesion_diameter_mm: float = 5.0,
              deform_mm: float = 6.0, z_centre_mm: float = 0.0) -> SyntheticCase:
    """Generate one case from its seed.

    `tumours`: tumour type names present in this case (each gets its own number of lesions);
    empty for a tumour-free case.  `z_centre_mm`: height of the volume centre above the first
    lumbar vertebra (raise it to include more lung, lower it for more pelvis).  `label_ids` maps organ and tumour names to label ids
    (default: `default_label_ids(tumours)`).  The same arguments always give identical arrays.
    """
    if noise_hu < 0:
        raise ValueError(f"noise_hu = {noise_hu}: must be >= 0 (typical CT: 10-25 HU)")
    if len(shape_xyz) != 3 or min(shape_xyz) < 8:
        raise ValueError(f"shape = {tuple(shape_xyz)}: need three sizes (x, y, z) of at least 8 voxels")
    if len(spacing_xyz) != 3 or min(spacing_xyz) <= 0:
        raise ValueError(f"spacing = {tuple(spacing_xyz)}: need three positive spacings (x, y, z) in mm")
    label_ids = label_ids or default_label_ids(tumours)
    for t in tumours:
        if t not in label_ids:
            raise ValueError(f"tumour type {t!r} has no label id in label_ids {label_ids}")
    rng = np.random.default_rng(seed)
    grid = Grid(tuple(int(v) for v in shape_xyz), tuple(float(v) for v in spacing_xyz), float(z_centre_mm))
    anatomy: Anatomy = build_anatomy(grid, rng, deform_mm=deform_mm)
    tissue_hu = draw_tissue_hu(rng)
    hu = render_tissue(anatomy, tissue_hu, rng)
    label = anatomy.organ.copy()
    inserter = TumourInserter(anatomy, hu, label, label_ids, rng, min_diameter_mm=min_lesion_diameter_mm)
    lesions: List[Lesion] = []
    for name in tumours:
        ttype = get_tumour_type(name)
        got: List[Lesion] = []
        for _attempt in range(4):
            got = inserter.insert(ttype)
            if got:
                break
        if not got:
            raise RuntimeError(f"could not place a {name} lesion in case seed {seed} (host organ "
                               f"{ttype.hosts} too small on this grid?); use a larger shape or finer spacing")
        lesions.extend(got)
    image = finish(hu, grid.spacing_xyz, noise_hu, rng)
    organ_ml = {o: round(float((anatomy.organ == ORGAN_IDS[o]).sum()) * grid.voxel_volume_ml, 2) for o in ORGANS}
    params = {"anatomy": anatomy.params, "tissue_hu": tissue_hu, "noise_hu": noise_hu,
              "organ_volume_ml": organ_ml, "min_lesion_diameter_mm": min_lesion_diameter_mm}
    return SyntheticCase(image=image, label=label, grid=grid, seed=int(seed), lesions=lesions, params=params,
                         organ_before_tumours=anatomy.organ, tissue=anatomy.tissue, body=anatomy.body)
