"""The nnU-Net trainer classes of the plugin, found by name by the stock nnU-Net commands."""
from nnunetv2_zept.trainers.stage1 import nnUNetTrainerZePTStage1
from nnunetv2_zept.trainers.stage2 import nnUNetTrainerZePTStage2

__all__ = ["nnUNetTrainerZePTStage1", "nnUNetTrainerZePTStage2"]
