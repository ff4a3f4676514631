"""Settings every trainer of the plugin shares, the ZePT stages and the plain baselines alike, so
that a comparison between them differs only in the method."""
import os
import random

import numpy as np
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

ENV_EPOCHS = "NNUNETV2_ZEPT_EPOCHS"
ENV_ITERATIONS = "NNUNETV2_ZEPT_ITERATIONS"
ENV_VAL_ITERATIONS = "NNUNETV2_ZEPT_VAL_ITERATIONS"
ENV_SAVE_EVERY = "NNUNETV2_ZEPT_SAVE_EVERY"
ENV_SEED = "NNUNETV2_ZEPT_SEED"


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


def _env_seed() -> "int | None":
    value = os.environ.get(ENV_SEED, "")
    if value == "":
        return None
    try:
        seed = int(value)
    except ValueError:
        raise ValueError(f"{ENV_SEED}={value!r} is not an integer; set a seed such as 0, or unset it") from None
    if not 0 <= seed < 2 ** 31:
        raise ValueError(f"{ENV_SEED}={value!r} must lie in [0, 2**31)")
    return seed


class PluginTrainerSettings(nnUNetTrainer):
    """Training length from the environment, no mirroring, no torch.compile, optional seed.

    NNUNETV2_ZEPT_SEED=N seeds Python, NumPy and torch before the network is built, and the data
    augmentation workers, so that a seed reproduces its run on the same machine with nnUNet_n_proc_DA
    0 or 1 (several workers deliver batches in the order they finish, which no seed fixes).
    nnU-Net itself does not seed its trainings.
    """

    DEFAULT_EPOCHS = 1000

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = _env_int(ENV_EPOCHS, self.DEFAULT_EPOCHS)
        self.num_iterations_per_epoch = _env_int(ENV_ITERATIONS, self.num_iterations_per_epoch)
        self.num_val_iterations_per_epoch = _env_int(ENV_VAL_ITERATIONS, self.num_val_iterations_per_epoch)
        self.save_every = _env_int(ENV_SAVE_EVERY, self.save_every)
        self.seed = _env_seed()
        if self.seed is not None:
            # every DDP rank draws other patches; torch gets the same seed on every rank (same initial weights)
            random.seed(self.seed + self.local_rank)
            np.random.seed(self.seed + self.local_rank)
            torch.manual_seed(self.seed)
            self.print_to_log_file(f"{ENV_SEED}={self.seed}: Python, NumPy and torch seeded")

    def get_dataloaders(self):
        train, val = super().get_dataloaders()
        if self.seed is not None:
            for i, gen in enumerate((train, val)):
                if getattr(gen, "seeds", None) is not None and hasattr(gen, "_finish"):
                    # nnU-Net starts its augmentation workers unseeded: restart them with seeds
                    gen._finish()
                    gen.seeds = [self.seed * 1000 + 100 * i + 10 * self.local_rank + w for w in range(len(gen.seeds))]
                    next(gen)
        return train, val

    def _do_i_compile(self):
        # Gumbel sampling and data-dependent attention masks break graph capture (and the baseline
        # must be run the same way to be comparable)
        return False

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        # left and right organs are distinct classes: no mirroring in training or at test time
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None
