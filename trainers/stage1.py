"""Stage 1: backbone, fundamental (organ and background tissue) queries, grouping and organ head."""
from typing import List

import torch

from nnunetv2_zept.architectures.config import background_names
from nnunetv2_zept.losses.segmentation import masked_bce_dice, masked_deep_supervision_loss
from nnunetv2_zept.training.background_tissue import tissue_pseudo_labels
from nnunetv2_zept.training.healthy_organ_targets import healthy_organ_targets
from nnunetv2_zept.training.partial_labels import validity_mask
from nnunetv2_zept.trainers.zept_trainer_base import nnUNetTrainerZePTBase, unwrap


class nnUNetTrainerZePTStage1(nnUNetTrainerZePTBase):
    """ZePT Stage 1 on nnU-Net's planned U-Net.

    Trains organ channels only, on healthy-organ targets (tumour voxels are negatives for their
    host organ, so tumours stay unexplained by the fundamental queries), plus the background
    tissue queries on HU pseudo-labels of voxels no annotated class covers.  Tumour channels of a
    Stage 1 model are the calibrated anomaly map; Stage 2 replaces them.
    Partial labels: a (case, channel) pair that the case's source does not annotate has no loss.
    """

    STAGE = 1
    DEFAULT_EPOCHS = 1000
    INITIAL_LR = 1e-3
    # "negative" (project default) or "ignore" (paper-style: tumour voxels excluded from the organ loss)
    HEALTHY_ORGAN_MODE = "negative"

    def trained_parameters(self, network) -> List[torch.nn.Parameter]:
        return list(network.stage1_parameters())

    def validated_channels(self) -> List[int]:
        return list(self.roles.organs)

    def compute_loss(self, output, target, keys, data) -> torch.Tensor:
        valid = validity_mask(keys, self.roles, self.roles.organs).to(output[0].device)
        targets, weights = [], []
        for t in target:
            ht, w = healthy_organ_targets(t, self.roles, self.HEALTHY_ORGAN_MODE)
            targets.append(ht)
            weights.append(w)
        seg = masked_deep_supervision_loss(output, targets, valid,
                                           None if weights[0] is None else weights)
        return seg + self._background_tissue_loss(target[0], keys, data)

    def _background_tissue_loss(self, target, keys, data) -> torch.Tensor:
        net = unwrap(self.network)
        aux = getattr(net, "aux_outputs", None) or {}
        logits = aux.get("background_logits")
        if logits is None:
            return torch.zeros((), device=data.device)
        # a voxel is "unexplained" background only where the case annotates every organ and none covers it
        annotated_all = validity_mask(keys, self.roles, self.roles.organs).to(data.device)
        fully = (annotated_all[:, self.roles.organs].sum(1) == len(self.roles.organs))
        covered = target.float().amax(1) > 0
        unexplained = ~covered
        props = self.plans_manager.foreground_intensity_properties_per_channel["0"]
        labels = tissue_pseudo_labels(data, unexplained, props, background_names(self.zept_config["switches"]))
        valid = fully.float()[:, None].expand(-1, labels.shape[1])
        return masked_bce_dice(logits, labels, valid)
