"""The loss of each ZePT training stage, as one function each, shared by the trainers and the tests."""
from typing import Dict, Optional, Sequence

import torch

from nnunetv2_zept.losses.segmentation import masked_bce_dice, masked_deep_supervision_loss
from nnunetv2_zept.roles import ClassRoles
from nnunetv2_zept.training.background_tissue import tissue_pseudo_labels
from nnunetv2_zept.training.healthy_organ_targets import healthy_organ_targets
from nnunetv2_zept.training.partial_labels import validity_mask


def stage1_loss(outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], keys: Sequence[str],
                data: torch.Tensor, aux: Dict, roles: ClassRoles, background_names: Sequence[str],
                intensity_properties: Dict, healthy_mode: str = "negative",
                background_weight: float = 0.1, parts: Optional[Dict[str, torch.Tensor]] = None,
                organ_weights: Optional[Sequence[torch.Tensor]] = None,
                tissue_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Organ channels on healthy-organ targets over the deep-supervision pyramid, plus the
    background tissue queries on HU pseudo-labels of the voxels no annotated class covers.

    outputs/targets: nnU-Net's pyramids ([B, C, *spatial] each, full resolution first).
    background_weight: at 1.0 the tissue term stalled organ learning (liver Dice 0.0 after 30 steps
    on the tiny benchmark problem, 0.86 after 10 steps at 0.1; benchmarks/stage1_learning_speed.py).
    parts: if given, receives each term (detached, unweighted) under "organ" and "background_tissue".
    organ_weights ([B, C, *spatial] per pyramid level) and tissue_weight ([B, *spatial]): per-voxel
    weights, 0 where a pasted synthetic lesion teaches a channel nothing (training/synthetic_lesions.py).
    """
    valid = validity_mask(keys, roles, roles.organs)
    healthy = [healthy_organ_targets(t, roles, healthy_mode) for t in targets]
    weights = None if healthy[0][1] is None else [w for _, w in healthy]
    if organ_weights is not None:
        weights = list(organ_weights) if weights is None else [w * o for w, o in zip(weights, organ_weights)]
    loss = masked_deep_supervision_loss(outputs, [t for t, _ in healthy], valid, weights)
    _record(parts, "organ", loss)
    logits = aux.get("background_logits")
    if logits is not None and len(background_names):
        # background only where the case annotates every organ: elsewhere an unannotated organ could hide
        fully = valid.sum(1) == len(roles.organs)
        unexplained = ~(targets[0].float().amax(1) > 0)
        labels = tissue_pseudo_labels(data, unexplained, intensity_properties, background_names)
        tissue = masked_bce_dice(logits, labels, fully.float()[:, None].expand(-1, labels.shape[1]),
                                 None if tissue_weight is None else tissue_weight[:, None].expand_as(labels))
        _record(parts, "background_tissue", tissue)
        loss = loss + background_weight * tissue
    return loss


def stage2_loss(outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], keys: Sequence[str],
                aux: Dict, roles: ClassRoles, alignment_weight: float = 1.0,
                relation: Optional[torch.Tensor] = None,
                parts: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """Seen tumour channels (masked BCE + Dice over the pyramid) plus the query-knowledge alignment.
    Zero-shot tumour channels get no mask loss: only the alignment shapes their queries.
    parts: if given, receives each term (detached, unweighted) under "tumour_mask" and "alignment"."""
    from nnunetv2_zept.losses.alignment import alignment_loss

    valid = validity_mask(keys, roles, roles.seen_tumours)
    loss = masked_deep_supervision_loss(outputs, targets, valid)
    _record(parts, "tumour_mask", loss)
    if alignment_weight > 0 and "align_query" in aux:
        align = alignment_loss(aux["align_query"], aux["align_text"], aux["logit_scale"], relation=relation)
        _record(parts, "alignment", align)
        loss = loss + alignment_weight * align
    return loss


def _record(parts: Optional[Dict[str, torch.Tensor]], name: str, value: torch.Tensor) -> None:
    # the trainers print each term per epoch: the total alone hides which term moves
    if parts is not None:
        parts[name] = value.detach().float()
