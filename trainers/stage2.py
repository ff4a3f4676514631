from nnunetv2_zept.trainers.stage1 import nnUNetTrainerZePTStage1


class nnUNetTrainerZePTStage2(nnUNetTrainerZePTStage1):
    """Placeholder while the package skeleton is set up."""
