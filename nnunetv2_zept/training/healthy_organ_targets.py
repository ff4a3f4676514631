"""Stage 1 organ targets that leave tumours unexplained by the fundamental queries.

An nnU-Net organ region includes the tumours inside it (MSD convention).  If the organ query
learned that, a tumour would have high organ affinity and never be prompted.  So in Stage 1 the
voxels of a tumour are negatives for its host organ (docs/architecture.md, decision D4), or, with the
paper-style switch, excluded from that organ's loss.
"""
from typing import Optional, Tuple

import torch

from nnunetv2_zept.roles import ClassRoles

HEALTHY_MODES = ("negative", "ignore")


def healthy_organ_targets(target: torch.Tensor, roles: ClassRoles, mode: str = "negative"
                          ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """target [B, C, *spatial] region targets -> (new target, per-voxel weight or None).

    mode "negative": tumour voxels become 0 in their host organ channels.
    mode "ignore":   host organ channels keep their target but get weight 0 on tumour voxels.
    """
    if mode not in HEALTHY_MODES:
        raise ValueError(f"healthy-organ mode {mode!r}: choose one of {HEALTHY_MODES}")
    target = target.float()
    new = target.clone()
    weight = torch.ones_like(target) if mode == "ignore" else None
    for organ in roles.organs:
        hosted = roles.host_union_of(organ)
        if not hosted:
            continue
        tumour_here = target[:, hosted].amax(1) > 0                  # [B, *spatial]
        (new if mode == "negative" else weight)[:, organ].masked_fill_(tumour_here, 0.0)
    return new, weight
