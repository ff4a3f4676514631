"""Stage 1: backbone, fundamental (organ and background tissue) queries, grouping and organ head."""
from typing import List

import torch

from nnunetv2_zept.architectures.config import background_names
from nnunetv2_zept.losses.stage_losses import stage1_loss
from nnunetv2_zept.training.synthetic_lesions import LesionRecipe, add_synthetic_lesions, lesions_active
from nnunetv2_zept.trainers.zept_trainer_base import nnUNetTrainerZePTBase


class nnUNetTrainerZePTStage1(nnUNetTrainerZePTBase):
    """ZePT Stage 1 on nnU-Net's planned U-Net.

    Trains organ channels only, on healthy-organ targets (tumour voxels are negatives for their
    host organ, so tumours stay unexplained by the fundamental queries), plus the background
    tissue queries on HU pseudo-labels of voxels no annotated class covers.  Tumour channels of a
    Stage 1 model are the calibrated anomaly map; Stage 2 replaces them.
    Generic synthetic lesions are pasted into every organ that hosts a tumour type (seen or
    zero-shot), so that each organ query learns to leave abnormal tissue unexplained, not only the
    organs whose tumours happen to be annotated (nnunetv2_zept/training/synthetic_lesions.py).
    Partial labels: a (case, channel) pair that the case's source does not annotate has no loss.
    """

    STAGE = 1
    DEFAULT_EPOCHS = 1000
    # "negative" (project default) or "ignore" (paper-style: tumour voxels excluded from the organ loss)
    HEALTHY_ORGAN_MODE = "negative"
    SYNTHETIC_LESIONS = LesionRecipe()

    def trained_parameters(self, network) -> List[torch.nn.Parameter]:
        return list(network.stage1_parameters())

    def validated_channels(self) -> List[int]:
        return list(self.roles.organs)

    def training_batch(self, data, target):
        recipe = self.SYNTHETIC_LESIONS
        # the recipe is in HU: only a CT-normalised first channel can be mapped back to HU
        if (not lesions_active(recipe, self.current_epoch, self.num_epochs)
                or self.configuration_manager.normalization_schemes[0] != "CTNormalization"):
            return data, target
        data, target, _ = add_synthetic_lesions(data, target, self.roles, self.configuration_manager.spacing,
                                                self.plans_manager.foreground_intensity_properties_per_channel["0"], recipe)
        return data, target

    def compute_loss(self, output, aux, target, keys, data, parts=None) -> torch.Tensor:
        return stage1_loss(output, target, keys, data, aux, self.roles,
                           background_names(self.zept_config["switches"]),
                           self.plans_manager.foreground_intensity_properties_per_channel["0"],
                           self.HEALTHY_ORGAN_MODE, parts=parts)
