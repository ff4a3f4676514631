"""Shorter schedules, in nnU-Net's naming style.  A Stage 2 variant starts from the Stage 1
variant with the same suffix when one was trained, else from nnUNetTrainerZePTStage1."""
from nnunetv2_zept.training.lesion_recipes import HypodenseLesionRecipe
from nnunetv2_zept.trainers.stage1 import nnUNetTrainerZePTStage1
from nnunetv2_zept.trainers.stage2 import nnUNetTrainerZePTStage2


class nnUNetTrainerZePTStage1_100epochs(nnUNetTrainerZePTStage1):
    DEFAULT_EPOCHS = 100


class nnUNetTrainerZePTStage1_250epochs(nnUNetTrainerZePTStage1):
    DEFAULT_EPOCHS = 250


class nnUNetTrainerZePTStage2_100epochs(nnUNetTrainerZePTStage2):
    DEFAULT_EPOCHS = 100


class nnUNetTrainerZePTStage2_250epochs(nnUNetTrainerZePTStage2):
    DEFAULT_EPOCHS = 250


class nnUNetTrainerZePTStage1_ignoreTumourVoxels(nnUNetTrainerZePTStage1):
    """Paper-style Stage 1 targets: tumour voxels are excluded from their host organ's loss
    instead of being negatives for it (ablation of DESIGN.md section 10 item 4)."""

    HEALTHY_ORGAN_MODE = "ignore"


class nnUNetTrainerZePTStage1_noSyntheticLesions(nnUNetTrainerZePTStage1):
    """Stage 1 without the generic synthetic lesions: only annotated tumours teach the organ queries
    to leave abnormal tissue unexplained (ablation; the behaviour before 2026-11-29)."""

    SYNTHETIC_LESIONS = None


class nnUNetTrainerZePTStage1_hypodenseLesions(nnUNetTrainerZePTStage1):
    """Stage 1 with the earlier synthetic lesions (the default before this curriculum): hypo-attenuating blobs
    25-120 HU below the organ (not below water), fluid to soft tissue in aerated organs, every
    pasted voxel a negative for every organ and tissue channel (ablation of the generic curriculum)."""

    SYNTHETIC_LESIONS = HypodenseLesionRecipe()
