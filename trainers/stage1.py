from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerZePTStage1(nnUNetTrainer):
    """Placeholder while the package skeleton is set up."""
