"""Partial-label segmentation loss: BCE + soft Dice on sigmoid outputs, masked per (case, channel).

nnU-Net's ignore label works per voxel; it cannot say "this case's source does not annotate this
class".  Here every (case, channel) pair carries a validity flag and, optionally, a per-voxel
weight (healthy-organ targets with the ignore switch).  An invalid pair contributes exactly zero
loss and zero gradient.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F


def masked_bce_dice(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                    voxel_weight: Optional[torch.Tensor] = None, smooth: float = 1.0) -> torch.Tensor:
    """BCE averaged over the valid (case, channel) pairs + soft Dice averaged over the valid pairs
    whose reference has the class.

    logits, target: [B, C, *spatial]; valid: [B, C] (bool or 0/1); voxel_weight: [B, C, *spatial] or None.
    Dice is per (case, channel), as in ZePT (`1 - 2 sum(p y) / (sum p + sum y + smooth)`).  On a pair
    without reference voxels that Dice loss is 1 whatever the prediction: no gradient, only a floor
    under the loss.  Tumours are absent from most pairs, so averaging it in pinned the Stage 2 mask
    loss near 1 and shrank the Dice gradient of the pairs that do have a tumour; such pairs are
    taught by BCE alone (false positives), the others by both terms.
    Computed in float32: the sums over a 3D patch overflow float16.
    """
    b, c = logits.shape[:2]
    valid = valid.detach().to(dtype=torch.float32).reshape(b, c)
    # only channels that some case trains: the others contribute exactly zero, and in Stage 2 they are
    # most channels (organs, zero-shot tumours); selecting them also keeps their gradient exactly zero
    cols = torch.nonzero(valid.cpu().amax(0) > 0).flatten()
    if cols.numel() == 0:
        # keep the graph connected so every parameter still receives a (zero) gradient
        return logits.float().sum() * 0.0
    valid = valid.to(logits.device)
    if cols.numel() < c:
        cols = cols.to(logits.device)
        logits, target, valid = logits.index_select(1, cols), target.index_select(1, cols), valid[:, cols]
        if voxel_weight is not None:
            voxel_weight = voxel_weight.index_select(1, cols)
    logits = logits.float()
    target = target.float()
    n_valid = valid.sum()
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if voxel_weight is None:
        bce = bce.flatten(2).mean(-1)                                                        # [B, C']
        y = target
    else:
        w = voxel_weight.float()
        bce = (bce * w).flatten(2).sum(-1) / w.flatten(2).sum(-1).clamp_min(1.0)
        p = p * w
        y = target * w
    inter = (p * y).flatten(2).sum(-1)
    y_sum = y.flatten(2).sum(-1)
    dice = 1.0 - 2.0 * inter / (p.flatten(2).sum(-1) + y_sum + smooth)                  # [B, C']
    has_reference = valid * (y_sum > 0).float()
    dice_term = (dice * has_reference).sum() / has_reference.sum().clamp_min(1.0)
    return (bce * valid).sum() / n_valid + dice_term


def deep_supervision_weights(num_outputs: int) -> List[float]:
    """nnU-Net's weights (1/2^k, normalised) except that the coarsest output keeps a tiny weight
    instead of 0, so that no parameter goes unused (nnU-Net's DDP has no find_unused_parameters)."""
    w = [1.0 / (2 ** i) for i in range(num_outputs)]
    if num_outputs > 1:
        w[-1] = 1e-6
    s = sum(w)
    return [x / s for x in w]


def masked_deep_supervision_loss(outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                                 valid: torch.Tensor, voxel_weights: Optional[Sequence[torch.Tensor]] = None
                                 ) -> torch.Tensor:
    """`masked_bce_dice` over nnU-Net's deep-supervision pyramid (full resolution first)."""
    weights = deep_supervision_weights(len(outputs))
    total = 0.0
    for i, (o, t) in enumerate(zip(outputs, targets)):
        vw = None if voxel_weights is None else voxel_weights[i]
        total = total + weights[i] * masked_bce_dice(o, t, valid, vw)
    return total
