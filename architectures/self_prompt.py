"""Self-prompting: anomaly from the fundamental queries' best affinity, calibrated, as attention masks.

Per level, the fundamental (organ + background tissue) queries' affinity logits s(n, x) are
already computed by the mask heads (they are also the deep-supervision logits, so they are
trained logits with a meaningful zero).  The anomaly is a(x) = -max_n s(n, x): high where no
query explains the voxel.

Calibration (docs/architecture.md, decision D2):
- "calibrated" (default): logit l = (a - offset) / scale with per-level buffers.  `scale` is a
  running standard deviation of `a` gathered while Stage 1 trains (EMA, frozen afterwards and
  in eval), `offset` defaults to 0 = the queries' own decision boundary (sigmoid(l) > 0.5 iff
  no query claims the voxel with probability > 0.5) and can be set by a calibration step.  The
  score sigmoid(l) is absolute: the same voxel gets the same score in every sliding-window tile
  and a tumour-free volume is not forced to contain anomalies.
- "minmax" (paper): per-sample min-max over the patch, then the logit of that value.

Prompts: voxels with score >= threshold (and, with organ restriction, inside the dilated
predicted region of the tumours' host organs) are visible to the advanced queries; the mask is
built without gradient, and a sample whose mask would block everything is fully unblocked.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

LOGIT_CLAMP = 30.0
_MINMAX_EPS = 1e-6


def best_affinity_anomaly(fundamental_logits: torch.Tensor) -> torch.Tensor:
    """[B, Qf, *s] -> a = -max over queries, [B, 1, *s] float32."""
    return -fundamental_logits.float().amax(dim=1, keepdim=True)


class AnomalyCalibration(nn.Module):
    """Turns the raw anomaly a [B, 1, *s] of level `level` into a logit l [B, 1, *s] (float32)."""

    def __init__(self, num_levels: int, mode: str = "calibrated", momentum: float = 0.02):
        super().__init__()
        if mode not in ("calibrated", "minmax"):
            raise ValueError(f"anomaly_calibration={mode!r}: use 'calibrated' or 'minmax'")
        self.mode = mode
        self.momentum = momentum
        self.register_buffer("anomaly_scale", torch.ones(num_levels))
        self.register_buffer("anomaly_offset", torch.zeros(num_levels))
        self.register_buffer("anomaly_mean", torch.zeros(num_levels))
        self.register_buffer("num_updates", torch.zeros(num_levels, dtype=torch.long))

    @torch.no_grad()
    def update(self, level: int, a: torch.Tensor) -> None:
        """Fold the statistics of one batch of a (any shape) into the running buffers."""
        a = a.detach().float()
        std, mean = a.std().clamp_min(1e-3), a.mean()
        if not (torch.isfinite(std) and torch.isfinite(mean)):
            return
        m = 1.0 if int(self.num_updates[level]) == 0 else self.momentum
        self.anomaly_scale[level].lerp_(std, m)
        self.anomaly_mean[level].lerp_(mean, m)
        self.num_updates[level] += 1

    def forward(self, level: int, a: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=a.device.type, enabled=False):
            a = a.float()
            if self.mode == "calibrated":
                logit = (a - self.anomaly_offset[level]) / self.anomaly_scale[level].clamp_min(1e-3)
            else:
                flat = a.flatten(1)
                lo = flat.amin(dim=1).view(-1, *[1] * (a.dim() - 1))
                hi = flat.amax(dim=1).view(-1, *[1] * (a.dim() - 1))
                p = ((a - lo) / (hi - lo).clamp_min(_MINMAX_EPS)).clamp(1e-6, 1 - 1e-6)
                logit = torch.log(p) - torch.log1p(-p)
            return logit.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)


def _segment_steps(r: int) -> List[int]:
    """Offsets d_i whose 3-point segments {-d_i, 0, d_i} sum to every integer in [-r, r]: 1, 2, 4, ...
    while the covered half-width stays below r, then the remainder (never more than the next power
    of two, so the sum stays contiguous).  A box of half-width r costs 3 * len(steps) comparisons
    per voxel instead of 2r + 1."""
    steps, covered = [], 0
    while covered < r:
        d = min(covered + 1, r - covered)
        steps.append(d)
        covered += d
    return steps


def spatial_box(mask: torch.Tensor, pad: Optional[Sequence[int]] = None) -> Optional[Tuple[slice, ...]]:
    """bool mask [B, C, *s] -> slices over *s of the smallest box holding every True voxel (of any
    sample and channel), grown by pad[axis] voxels and clipped to the mask; None for an empty mask."""
    box = []
    for axis in range(mask.dim() - 2):
        dim, r = axis + 2, int(pad[axis]) if pad is not None else 0
        hits = torch.nonzero(mask.any(dim=[d for d in range(mask.dim()) if d != dim]))
        if hits.numel() == 0:
            return None
        box.append(slice(max(int(hits[0]) - r, 0), min(int(hits[-1]) + 1 + r, mask.shape[dim])))
    return tuple(box)


def dilate(mask: torch.Tensor, radius: Sequence[int]) -> torch.Tensor:
    """Binary dilation of a bool mask [B, C, *s] by a box of half-width radius[axis]: separable, per
    axis a few 3-point ORs of shifted copies (see _segment_steps), only inside the box that holds
    every True voxel grown by the radius (nothing outside it can become True; organs fill a small
    part of a prediction tile)."""
    mask = mask.bool()
    box = spatial_box(mask, radius)
    if box is None:
        return mask.clone()
    if all(b.stop - b.start == n for b, n in zip(box, mask.shape[2:])):
        return _dilate_in_box(mask, radius)
    out = torch.zeros_like(mask)
    inner = (slice(None), slice(None)) + tuple(box)
    out[inner] = _dilate_in_box(mask[inner], radius)
    return out


def _dilate_in_box(mask: torch.Tensor, radius: Sequence[int]) -> torch.Tensor:
    x = mask
    for axis, r in enumerate(radius):
        dim = axis + 2
        for d in _segment_steps(int(r)):
            n = x.shape[dim]
            if d >= n:
                # every voxel along this axis sees every other one
                x = x.any(dim=dim, keepdim=True).expand_as(x).clone()
                continue
            y = x.clone()
            y.narrow(dim, d, n - d).logical_or_(x.narrow(dim, 0, n - d))
            y.narrow(dim, 0, n - d).logical_or_(x.narrow(dim, d, n - d))
            x = y
    return x


def erode(mask: torch.Tensor, radius: Sequence[int]) -> torch.Tensor:
    """Binary erosion of a bool mask [B, C, *s] by a box of half-width radius[axis]; voxels beyond the
    tensor's edge count as True, because a prediction tile's edge is not an organ's edge.  Computed
    as the complement of the complement's dilation, only inside the box that holds every True voxel
    grown by the radius (a False voxel stays False, so nothing outside it can be True)."""
    mask = mask.bool()
    box = spatial_box(mask, radius)
    if box is None:
        return mask.clone()
    out = torch.zeros_like(mask)
    inner = (slice(None), slice(None)) + tuple(box)
    out[inner] = ~_dilate_in_box(~mask[inner], radius)
    return out


def outer_shell(grown: torch.Tensor, radius: Sequence[int]) -> torch.Tensor:
    """bool [B, C, *s] host regions grown by `radius` -> the part of each beyond its closed outline:
    grown minus its erosion by the same radius (the erosion of a dilation is a closing: the organ
    with its notches and cavities up to that size, which is where a tumour inside the organ shows).
    What is left is the rim of other tissue around the organ."""
    return grown & ~erode(grown, radius)


def level_radius(growth_mm: float, spacing: Sequence[float], stride: Sequence[int]) -> Tuple[int, ...]:
    """Half-width per axis, in voxels of a level of cumulative `stride` on a grid of `spacing` mm,
    of a growth by `growth_mm` (at least one voxel per axis when growth_mm > 0)."""
    if growth_mm <= 0:
        return tuple(0 for _ in stride)
    return tuple(max(1, int(math.ceil(growth_mm / (float(sp) * s) - 1e-6))) for sp, s in zip(spacing, stride))


def fill_cavities(mask: torch.Tensor) -> torch.Tensor:
    """bool [B, C, *s] -> the same masks with their cavities filled (per sample and channel).

    Stage 1 teaches organ channels to leave tumours out, so a lesion inside an organ is a hole in
    the predicted organ; without filling, a region built from the organ prediction would cut the
    lesion's core out.  Connected-component labelling on the CPU (SciPy): the masks are small next
    to the network's feature maps, and no GPU kernel of the same exactness is at hand."""
    from nnunetv2_zept.binary_masks import fill_holes

    if not mask.any():
        return mask
    arr = mask.detach().cpu().numpy()
    out = arr.copy()
    for b in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            if arr[b, c].any():
                out[b, c] = fill_holes(arr[b, c])
    return torch.from_numpy(out).to(mask.device)


@torch.no_grad()
def host_regions(organ_logits: torch.Tensor, host_sets: List[List[int]], radius: Sequence[int]) -> torch.Tensor:
    """organ_logits [B, N_org, *s] -> bool [B, len(host_sets), *s]: for each host set the union of
    its organs' regions, an organ's region being its prediction (logit > 0) with its cavities
    filled, dilated by `radius` voxels per axis.

    host_sets index into the organ axis of organ_logits.  Each organ is filled and dilated once,
    however many sets share it (dilation distributes over unions), because these are the costliest
    per-voxel steps of prediction after the network's convolutions.
    """
    organs = sorted({o for hs in host_sets for o in hs})
    col = {o: j for j, o in enumerate(organs)}
    grown = dilate(fill_cavities(organ_logits.detach()[:, organs] > 0), radius)
    sets = []
    for hs in host_sets:
        region = grown[:, col[hs[0]]]
        for o in hs[1:]:
            region = region | grown[:, col[o]]
        sets.append(region)
    return torch.stack(sets, dim=1)


@torch.no_grad()
def prompt_mask(anomaly_logit: torch.Tensor, threshold: float, region: Optional[torch.Tensor] = None) -> torch.Tensor:
    """anomaly_logit [B, 1, *s], region bool [B, 1, *s] or None -> blocked bool [B, L] (True = blocked).

    A sample whose every voxel would be blocked is unblocked everywhere, so no attention row is
    ever fully blocked (and a flat or NaN-free constant input still yields a usable mask).
    """
    score = torch.sigmoid(anomaly_logit.detach().float())
    visible = score >= threshold
    if region is not None:
        visible = visible & region
    blocked = ~visible.flatten(1)
    full = blocked.all(dim=1, keepdim=True)
    return blocked & ~full
