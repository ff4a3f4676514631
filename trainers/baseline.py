"""Plain nnU-Net on the same region dataset, as the reference the ZePT results are compared with."""
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_zept.trainers.zept_trainer_base import ENV_EPOCHS, ENV_ITERATIONS, ENV_VAL_ITERATIONS, _env_int


class nnUNetTrainerZePTBaseline(nnUNetTrainer):
    """nnU-Net's own network, loss and optimiser, with the ZePT trainers' training-length settings
    (NNUNETV2_ZEPT_EPOCHS / _ITERATIONS / _VAL_ITERATIONS) and without mirroring (left and right
    organs are distinct classes), so that a comparison differs only in the method."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = _env_int(ENV_EPOCHS, self.num_epochs)
        self.num_iterations_per_epoch = _env_int(ENV_ITERATIONS, self.num_iterations_per_epoch)
        self.num_val_iterations_per_epoch = _env_int(ENV_VAL_ITERATIONS, self.num_val_iterations_per_epoch)

    def _do_i_compile(self):
        return False

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None
