"""Settings every trainer of the plugin shares, the ZePT stages and the plain baseline alike, so
that a comparison between them differs only in the method."""
import os

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

ENV_EPOCHS = "NNUNETV2_ZEPT_EPOCHS"
ENV_ITERATIONS = "NNUNETV2_ZEPT_ITERATIONS"
ENV_VAL_ITERATIONS = "NNUNETV2_ZEPT_VAL_ITERATIONS"
ENV_SAVE_EVERY = "NNUNETV2_ZEPT_SAVE_EVERY"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        v = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer")
    if v < 1:
        raise ValueError(f"{name}={value!r} must be at least 1")
    return v


class PluginTrainerSettings(nnUNetTrainer):
    """Training length from the environment, no mirroring, no torch.compile."""

    DEFAULT_EPOCHS = 1000

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = _env_int(ENV_EPOCHS, self.DEFAULT_EPOCHS)
        self.num_iterations_per_epoch = _env_int(ENV_ITERATIONS, self.num_iterations_per_epoch)
        self.num_val_iterations_per_epoch = _env_int(ENV_VAL_ITERATIONS, self.num_val_iterations_per_epoch)
        self.save_every = _env_int(ENV_SAVE_EVERY, self.save_every)

    def _do_i_compile(self):
        # Gumbel sampling and data-dependent attention masks break graph capture (and the baseline
        # must be run the same way to be comparable)
        return False

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        # left and right organs are distinct classes: no mirroring in training or at test time
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None
