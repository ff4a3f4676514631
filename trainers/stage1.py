"""Stage 1: backbone, fundamental (organ and background tissue) queries, grouping and organ head."""
from typing import List

import torch

from nnunetv2_zept.architectures.config import background_names
from nnunetv2_zept.losses.stage_losses import stage1_loss
from nnunetv2_zept.training.lesion_recipes import LesionCurriculum, LesionRecipeError
from nnunetv2_zept.training.synthetic_lesions import (LesionSynthesiser, largest_host_voxels, lesion_hosts,
                                                       lesions_active)
from nnunetv2_zept.trainers.common_settings import TrainerStop
from nnunetv2_zept.trainers.zept_trainer_base import nnUNetTrainerZePTBase


class nnUNetTrainerZePTStage1(nnUNetTrainerZePTBase):
    """ZePT Stage 1 on nnU-Net's planned U-Net.

    Trains organ channels only, on healthy-organ targets (tumour voxels are negatives for their
    host organ, so tumours stay unexplained by the fundamental queries), plus the background
    tissue queries on HU pseudo-labels of voxels no annotated class covers.  Tumour channels of a
    Stage 1 model are the calibrated anomaly map; Stage 2 replaces them.
    Generic synthetic lesions are pasted into every organ that hosts a tumour type (seen or
    zero-shot), so that each organ query learns to leave abnormal tissue unexplained, not only the
    organs whose tumours happen to be annotated (nnunetv2_zept/training/synthetic_lesions.py); the
    recipe is checked against the grid, the CT window and the host organs when the trainer starts.
    Partial labels: a (case, channel) pair that the case's source does not annotate has no loss.
    """

    STAGE = 1
    DEFAULT_EPOCHS = 1000
    # "negative" (project default) or "ignore" (paper-style: tumour voxels excluded from the organ loss)
    HEALTHY_ORGAN_MODE = "negative"
    SYNTHETIC_LESIONS = LesionCurriculum()

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        try:
            self.lesion_synthesiser = self._make_lesion_synthesiser()
        except LesionRecipeError as e:
            raise TrainerStop(str(e)) from None
        self._pasted_lesions = None

    def _make_lesion_synthesiser(self):
        recipe = self.SYNTHETIC_LESIONS
        if recipe is None:
            return None
        scheme = self.configuration_manager.normalization_schemes[0]
        if scheme != "CTNormalization":
            # the recipe is in HU: only a CT-normalised first channel can be mapped back to HU
            self.print_to_log_file(f"Synthetic lesions are off: input channel 0 uses {scheme}, not CTNormalization, "
                                   f"so its values cannot be read as HU.")
            return None
        bound = largest_host_voxels(self.preprocessed_dataset_folder, self.label_manager,
                                    sorted(lesion_hosts(self.roles)), self.configuration_manager.patch_size)
        return LesionSynthesiser(recipe, self.roles, self.configuration_manager.spacing,
                                 self.plans_manager.foreground_intensity_properties_per_channel["0"], bound)

    def trained_parameters(self, network) -> List[torch.nn.Parameter]:
        return list(network.stage1_parameters())

    def validated_channels(self) -> List[int]:
        return list(self.roles.organs)

    def training_batch(self, data, target):
        self._pasted_lesions = None
        if self.lesion_synthesiser is None or not lesions_active(self.SYNTHETIC_LESIONS, self.current_epoch,
                                                                 self.num_epochs):
            return data, target
        with torch.no_grad():
            data, target, self._pasted_lesions = self.lesion_synthesiser(data, target)
        return data, target

    def compute_loss(self, output, aux, target, keys, data, parts=None) -> torch.Tensor:
        # nnU-Net's train_step hands the loss only (output, target): which voxels of this batch are
        # pasted lesions comes from training_batch of the same step, and is used once
        pasted, self._pasted_lesions = self._pasted_lesions, None
        return stage1_loss(output, target, keys, data, aux, self.roles,
                           background_names(self.zept_config["switches"]),
                           self.plans_manager.foreground_intensity_properties_per_channel["0"],
                           self.HEALTHY_ORGAN_MODE, parts=parts,
                           organ_weights=None if pasted is None else pasted.organ_weights,
                           tissue_weight=None if pasted is None else pasted.tissue_weight)
