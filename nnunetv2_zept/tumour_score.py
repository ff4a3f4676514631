"""Per-case tumour-presence score and lesion extraction, defined once for prediction and evaluation.

Inputs are arrays in nnU-Net's array order (z, y, x) as `nnUNetv2_predict --save_probabilities`
writes them: a tumour score map in [0, 1] (a tumour channel's sigmoid probability or an anomaly
map) and the predicted host-organ mask(s) (host channel probability >= 0.5; in ZePT region
datasets an organ region already contains the tumours inside it).

How the score is made (see docs/evaluation.md, "Tumour-presence score"):

1. Host region.  The union of the predicted host organs without its pieces smaller than
   `min_host_fraction` of its largest piece (stray voxels an organ channel puts far from the
   organ would otherwise be searched for lesions), with cavities filled (an unseen lesion
   the organ channel left out is still inside the organ), grown by `host_margin_mm` (default
   5 mm, Euclidean at the image spacing).  Tumour evidence outside it is ignored, which
   removes false positives in fat, bowel or bone far from the organ.  No predicted host organ
   means no region and a score of 0.
2. Organ-boundary band.  Voxels within `boundary_mm` (default 2 mm) of the host surface, on
   either side, are where partial volume and slightly misplaced organ borders make thin false
   "lesions".  Band voxels still connect a lesion, but only voxels outside the band ("core"
   voxels) count towards its volume.  A rim hugging the organ surface therefore never counts,
   while a lesion straddling the surface is not cut in two.
3. Minimum lesion volume.  A lesion at level t is a 26-connected component of
   {score >= t} inside the host region; it counts when its core volume is at least
   `min_lesion_volume_mm3` (default 50 mm^3, about a 4.6 mm sphere; at least one voxel).
4. The case score is the highest level t at which a counting lesion exists:
       S = max { t : some component of {p >= t} ∩ region has core volume >= V_min },
   0 when none exists at any level.  It reads "S is the highest probability reached throughout
   at least V_min of connected tissue", so one hot voxel cannot make a case positive, and it
   stays a continuous ranking score (no ties at 0 for cases below the lesion threshold).
   Found by bisection on the logit of t (the counting condition only gets easier as t falls),
   resolution 2^-10 in logit between logits -32 and 32: a zero-shot channel's probabilities are
   often far below 10^-4, and bisecting in probability would give all such cases the same
   score 0 (a tie) where their logits still rank them.  Below probability 1.3e-14 the score is
   0.  The detection threshold (0.5) is tested exactly, so
       S >= threshold  <=>  extract_lesions(...) returns at least one lesion.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage
from scipy.special import expit, logit

from nnunetv2_zept.evaluation.histogram_roc import LOGIT_RANGE
from nnunetv2_zept.evaluation.mask_ops import STRUCTURE_26, bounding_box, fill_holes, margin_in_voxels, within_mm


@dataclass(frozen=True)
class TumourScoreSettings:
    """Parameters of the tumour-presence score and of lesion extraction (all in mm / mm^3).

    The voxel minimums (min_lesion_voxels, min_margin_voxels, min_boundary_voxels) act only on grids
    coarser than the mm settings (at 1 mm: 50 mm^3 = 50 voxels, 5 mm, 2 mm); they were chosen on the
    development split of the sealed benchmark at 6 mm (benchmarks/score_rules.py, docs/benchmarks.md)."""

    min_lesion_volume_mm3: float = 50.0   # core volume a lesion needs to count ...
    min_lesion_voxels: int = 4            # ... and at least this many voxels, whatever the spacing
    host_margin_mm: float = 5.0           # growth of the predicted host organ ...
    min_margin_voxels: int = 1            # ... by at least this many voxels along every axis
    min_host_fraction: float = 0.1        # host pieces smaller than this share of the largest piece are dropped
    boundary_mm: float = 2.0              # half-width of the organ-surface band (0 switches it off) ...
    min_boundary_voxels: int = 1          # ... at least this many voxels wide where boundary_mm > 0
    threshold: float = 0.5                # lesion threshold (nnU-Net's region threshold)
    host_threshold: float = 0.5           # host-organ probability threshold
    level_resolution: float = 2.0 ** -10  # bisection resolution of the score, in logit

    def __post_init__(self):
        for name in ("min_lesion_volume_mm3", "host_margin_mm", "boundary_mm"):
            if not (getattr(self, name) >= 0):
                raise ValueError(f"TumourScoreSettings.{name} = {getattr(self, name)!r}: must be >= 0")
        if not (0.0 <= self.min_host_fraction <= 1.0):
            raise ValueError(f"TumourScoreSettings.min_host_fraction = {self.min_host_fraction!r}: must lie in [0, 1] "
                             f"(0 keeps every piece of the predicted host)")
        for name in ("threshold", "host_threshold"):
            if not (0.0 < getattr(self, name) < 1.0):
                raise ValueError(f"TumourScoreSettings.{name} = {getattr(self, name)!r}: must lie in (0, 1)")
        for name in ("min_lesion_voxels", "min_margin_voxels", "min_boundary_voxels"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"TumourScoreSettings.{name} = {getattr(self, name)!r}: must be a whole number >= 0")
        if not (0.0 < self.level_resolution < 0.5):
            raise ValueError(f"TumourScoreSettings.level_resolution = {self.level_resolution!r}: must lie in (0, 0.5)")

    def to_dict(self) -> dict:
        return asdict(self)

    def margin_mm(self, spacing: Sequence[float]) -> float:
        """The host margin on a grid of `spacing` mm: host_margin_mm, but at least min_margin_voxels
        voxels along every axis (a margin finer than the grid grows nothing)."""
        return max(float(self.host_margin_mm), self.min_margin_voxels * max(float(s) for s in spacing))

    def band_mm(self, spacing: Sequence[float]) -> float:
        """The organ-surface band's half-width on a grid of `spacing` mm: boundary_mm, but at least
        min_boundary_voxels voxels where the band is on (a band finer than the grid is empty)."""
        if self.boundary_mm <= 0:
            return 0.0
        return max(float(self.boundary_mm), self.min_boundary_voxels * max(float(s) for s in spacing))

    def min_core_voxels(self, spacing: Sequence[float]) -> int:
        """Core voxels a lesion needs on a grid of `spacing` mm (min_lesion_volume_mm3, at least
        min_lesion_voxels and one)."""
        voxel = float(np.prod(spacing))
        return max(1, self.min_lesion_voxels, int(math.ceil(self.min_lesion_volume_mm3 / voxel - 1e-9)))


@dataclass(frozen=True)
class ImageGeometry:
    """Voxel grid of an image.  `spacing` in array order (z, y, x) like nnU-Net's
    properties['spacing']; `origin` and `direction` (row-major 3x3) in SimpleITK's physical
    (x, y, z, LPS) convention."""

    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: Tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @classmethod
    def from_sitk(cls, image) -> "ImageGeometry":
        return cls(tuple(float(s) for s in image.GetSpacing()[::-1]), tuple(float(o) for o in image.GetOrigin()),
                   tuple(float(d) for d in image.GetDirection()))

    @classmethod
    def from_nnunet_properties(cls, properties: dict) -> "ImageGeometry":
        """From the properties dict nnU-Net's SimpleITK reader returns (and the predictor keeps)."""
        stuff = properties.get("sitk_stuff")
        if stuff is None:
            raise ValueError("nnU-Net properties without 'sitk_stuff': physical lesion centres need an image read "
                             "with SimpleITKIO (nnU-Net's default for .nii.gz/.nrrd/.mha); got keys "
                             f"{sorted(properties)}")
        return cls(tuple(float(s) for s in stuff["spacing"][::-1]), tuple(float(o) for o in stuff["origin"]),
                   tuple(float(d) for d in stuff["direction"]))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def index_to_physical(self, index_zyx: Sequence[float]) -> np.ndarray:
        """Physical (x, y, z) mm of a (possibly fractional) array index (z, y, x)."""
        idx_xyz = np.asarray(index_zyx, dtype=np.float64)[::-1]
        d = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        return np.asarray(self.origin, dtype=np.float64) + d @ (idx_xyz * np.asarray(self.spacing[::-1]))


@dataclass
class HostRegion:
    """The dilated host region inside `box` (slices of the full array)."""

    box: Tuple[slice, ...]
    host: np.ndarray     # bool, predicted host (cavities filled), cropped
    region: np.ndarray   # bool, host grown by host_margin_mm
    core: np.ndarray     # bool, region minus the organ-surface band

    def full(self, which: str, shape: Sequence[int]) -> np.ndarray:
        out = np.zeros(tuple(shape), dtype=bool)
        out[self.box] = getattr(self, which)
        return out


@dataclass
class Lesion:
    """One connected component of the thresholded tumour score that counts as a lesion."""

    rank: int                         # 1 = highest max_probability
    volume_ml: float
    core_volume_ml: float             # part outside the organ-surface band
    n_voxels: int
    centre_mm: Tuple[float, float, float]       # physical (x, y, z), SimpleITK/LPS convention
    centre_voxel: Tuple[float, float, float]    # array index (z, y, x), centroid
    max_probability: float
    mean_probability: float
    host: Optional[str]               # host organ holding most of it (nearest if none overlaps)
    bbox_voxel: Tuple[int, int, int, int, int, int] = field(default=(0, 0, 0, 0, 0, 0))  # z0,y0,x0,z1,y1,x1 (end excl.)

    def to_dict(self) -> dict:
        return asdict(self)


def host_mask_from_probabilities(host_probabilities: Sequence[np.ndarray], threshold: float = 0.5) -> np.ndarray:
    """Union of the host channels thresholded like nnU-Net's region export (p >= threshold)."""
    if len(host_probabilities) == 0:
        raise ValueError("a tumour needs at least one host-organ channel")
    mask = host_probabilities[0] >= threshold
    for p in host_probabilities[1:]:
        mask |= p >= threshold
    return mask


def drop_small_pieces(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """`mask` without the 26-connected pieces smaller than `min_fraction` x its largest piece."""
    box = bounding_box(mask) if min_fraction > 0 else None
    if box is None:
        return mask
    labels, n = ndimage.label(mask[box], structure=STRUCTURE_26)     # labelled inside the box only
    if n < 2:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= min_fraction * sizes.max()
    keep[0] = False
    out = np.zeros_like(mask, dtype=bool)
    out[box] = keep[labels]
    return out


def host_region(host_mask: np.ndarray, spacing: Sequence[float],
                settings: TumourScoreSettings = TumourScoreSettings()) -> Optional[HostRegion]:
    """Filled, dilated host region and its core (steps 1-2 of the score); None without host voxels."""
    if host_mask.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"need a 3D mask and 3 spacings, got shape {host_mask.shape} and spacing {tuple(spacing)}")
    margin = settings.margin_mm(spacing)
    band_mm = settings.band_mm(spacing)
    pad = margin_in_voxels(max(margin, band_mm), spacing)
    host_mask = drop_small_pieces(host_mask, settings.min_host_fraction)
    box = bounding_box(host_mask, pad)
    if box is None:
        return None
    host = fill_holes(host_mask[box].astype(bool, copy=False))
    region = host | within_mm(host, spacing, margin)
    if band_mm > 0:
        # inside voxels near the background and outside voxels near the host; the crop is padded,
        # so background exists on every side of the host
        band = (host & within_mm(~host, spacing, band_mm)) | (~host & within_mm(host, spacing, band_mm))
        core = region & ~band
    else:
        core = region.copy()
    return HostRegion(box, host, region, core)


def _has_lesion(prob: np.ndarray, hr: HostRegion, level: float, min_core: int) -> bool:
    above = hr.region & (prob >= level)
    if np.count_nonzero(above & hr.core) < min_core:
        return False
    labels, n = ndimage.label(above, structure=STRUCTURE_26)
    counts = np.bincount(labels[above & hr.core], minlength=n + 1)
    counts[0] = 0
    return int(counts.max()) >= min_core


def tumour_presence_score(tumour_probability: np.ndarray, host_mask: np.ndarray, spacing: Sequence[float],
                          settings: TumourScoreSettings = TumourScoreSettings(),
                          region: Optional[HostRegion] = None) -> float:
    """Per-case tumour-presence score S in [0, 1] (definition in the module docstring).

    tumour_probability: float array (z, y, x) in [0, 1]; host_mask: bool array, same shape,
    the predicted host organ(s) (see `host_mask_from_probabilities`); spacing: mm, array order.
    `region` may pass a precomputed `host_region(host_mask, spacing, settings)`.
    """
    if tumour_probability.shape != host_mask.shape:
        raise ValueError(f"tumour probability shape {tumour_probability.shape} != host mask shape {host_mask.shape}")
    hr = region if region is not None else host_region(host_mask, spacing, settings)
    if hr is None:
        return 0.0
    prob = tumour_probability[hr.box]
    min_core = settings.min_core_voxels(spacing)
    if not _has_lesion(prob, hr, -np.inf, min_core):
        return 0.0
    if _has_lesion(prob, hr, 1.0, min_core):
        return 1.0
    # bisection on the logit; the lesion threshold itself is tested so that S >= threshold
    # exactly when lesions are reported
    lo, hi = -LOGIT_RANGE, logit(settings.threshold)
    if _has_lesion(prob, hr, settings.threshold, min_core):
        lo, hi = hi, LOGIT_RANGE
    elif not _has_lesion(prob, hr, expit(lo), min_core):
        return 0.0
    view = hr
    while hi - lo > settings.level_resolution:
        # every lesion at a level >= lo lies inside {p >= lo}: label only its bounding box
        sub = bounding_box(view.region & (prob >= expit(lo)))
        if sub is not None:
            prob = prob[sub]
            view = HostRegion(sub, view.host[sub], view.region[sub], view.core[sub])
        mid = 0.5 * (lo + hi)
        if _has_lesion(prob, view, expit(mid), min_core):
            lo = mid
        else:
            hi = mid
    return settings.threshold if lo == logit(settings.threshold) else float(expit(lo))


def extract_lesions(tumour_probability: np.ndarray, host_masks: Mapping[str, np.ndarray],
                    geometry: Union[ImageGeometry, Sequence[float]],
                    settings: TumourScoreSettings = TumourScoreSettings(),
                    return_label_map: bool = False):
    """Lesions: 26-connected components of {p >= settings.threshold} in the host region whose
    core volume reaches `min_lesion_volume_mm3` (the same rule as the score).

    host_masks: host organ name -> predicted bool mask (z, y, x).  geometry: an ImageGeometry
    or just the spacing (then centres are relative to voxel 0 with identity direction).
    Returns a list of `Lesion` sorted by max probability (and, with return_label_map, also a
    uint16 array (z, y, x) in which lesion k has value k).
    """
    if not isinstance(geometry, ImageGeometry):
        geometry = ImageGeometry(tuple(float(s) for s in geometry))
    spacing = geometry.spacing
    if not host_masks:
        raise ValueError("extract_lesions needs at least one host-organ mask")
    names = list(host_masks)
    union = np.zeros(tumour_probability.shape, dtype=bool)
    for name in names:
        m = host_masks[name]
        if m.shape != tumour_probability.shape:
            raise ValueError(f"host mask {name!r} shape {m.shape} != tumour probability shape {tumour_probability.shape}")
        union |= m.astype(bool, copy=False)
    label_map = np.zeros(tumour_probability.shape, dtype=np.uint16) if return_label_map else None
    hr = host_region(union, spacing, settings)
    if hr is None:
        return ([], label_map) if return_label_map else []
    prob = tumour_probability[hr.box]
    above = hr.region & (prob >= settings.threshold)
    labels, n = ndimage.label(above, structure=STRUCTURE_26)
    core_counts = np.bincount(labels[above & hr.core], minlength=n + 1)
    min_core = settings.min_core_voxels(spacing)
    voxel_ml = geometry.voxel_volume_mm3 / 1000.0
    offset = np.array([s.start for s in hr.box])
    host_crops = {name: host_masks[name][hr.box].astype(bool, copy=False) for name in names}
    host_dist: Dict[str, np.ndarray] = {}
    found = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or core_counts[i] < min_core:
            continue
        comp = labels[sl] == i
        p = prob[sl][comp]
        idx = np.argwhere(comp) + np.array([s.start for s in sl])
        overlaps = [int(np.count_nonzero(host_crops[nm][sl] & comp)) for nm in names]
        if max(overlaps) > 0:
            host = names[int(np.argmax(overlaps))]
        else:   # lesion in the margin only: nearest host organ
            dists = []
            for nm in names:
                if nm not in host_dist:
                    host_dist[nm] = (ndimage.distance_transform_edt(~host_crops[nm], sampling=spacing)
                                     if host_crops[nm].any() else np.full(host_crops[nm].shape, np.inf))
                dists.append(float(host_dist[nm][sl][comp].min()))
            host = names[int(np.argmin(dists))]
        centre = idx.mean(axis=0) + offset
        lo = idx.min(axis=0) + offset
        hi = idx.max(axis=0) + offset + 1
        found.append((float(p.max()), i, Lesion(
            rank=0, volume_ml=float(comp.sum() * voxel_ml), core_volume_ml=float(core_counts[i] * voxel_ml),
            n_voxels=int(comp.sum()), centre_mm=tuple(float(c) for c in geometry.index_to_physical(centre)),
            centre_voxel=tuple(float(c) for c in centre), max_probability=float(p.max()),
            mean_probability=float(p.mean()), host=host,
            bbox_voxel=tuple(int(v) for v in (*lo, *hi)))))
    found.sort(key=lambda x: (-x[0], x[1]))
    lesions = []
    for rank, (_, i, lesion) in enumerate(found, start=1):
        lesion.rank = rank
        lesions.append(lesion)
        if label_map is not None:
            label_map[hr.box][labels == i] = rank
    return (lesions, label_map) if return_label_map else lesions
