"""The nnU-Net trainer classes of the plugin, found by name by the stock nnU-Net commands."""
from nnunetv2_zept.trainers.baseline import nnUNetTrainerZePTBaseline
from nnunetv2_zept.trainers.stage1 import nnUNetTrainerZePTStage1
from nnunetv2_zept.trainers.stage2 import nnUNetTrainerZePTStage2
from nnunetv2_zept.trainers.variants import (
    nnUNetTrainerZePTStage1_100epochs,
    nnUNetTrainerZePTStage1_250epochs,
    nnUNetTrainerZePTStage1_hypodenseLesions,
    nnUNetTrainerZePTStage1_ignoreTumourVoxels,
    nnUNetTrainerZePTStage1_noSyntheticLesions,
    nnUNetTrainerZePTStage2_100epochs,
    nnUNetTrainerZePTStage2_250epochs,
)

__all__ = [
    "nnUNetTrainerZePTStage1",
    "nnUNetTrainerZePTStage2",
    "nnUNetTrainerZePTBaseline",
    "nnUNetTrainerZePTStage1_100epochs",
    "nnUNetTrainerZePTStage1_250epochs",
    "nnUNetTrainerZePTStage1_hypodenseLesions",
    "nnUNetTrainerZePTStage1_ignoreTumourVoxels",
    "nnUNetTrainerZePTStage1_noSyntheticLesions",
    "nnUNetTrainerZePTStage2_100epochs",
    "nnUNetTrainerZePTStage2_250epochs",
]
