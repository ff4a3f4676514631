"""The nnU-Net trainer classes of the plugin, found by name by the stock nnU-Net commands."""
from nnunetv2_zept.trainers import variants as _variants
from nnunetv2_zept.trainers.baseline import nnUNetTrainerZePTBaseline, nnUNetTrainerZePTBaselineAdamW
from nnunetv2_zept.trainers.stage1 import nnUNetTrainerZePTStage1
from nnunetv2_zept.trainers.stage2 import nnUNetTrainerZePTStage2

_VARIANTS = {name: cls for name, cls in vars(_variants).items()
             if name.startswith(("nnUNetTrainerZePTStage1_", "nnUNetTrainerZePTStage2_"))}
globals().update(_VARIANTS)

__all__ = ["nnUNetTrainerZePTStage1", "nnUNetTrainerZePTStage2", "nnUNetTrainerZePTBaseline",
           "nnUNetTrainerZePTBaselineAdamW"] + sorted(_VARIANTS)
