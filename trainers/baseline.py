"""Plain nnU-Net on the same region dataset, the references the ZePT results are compared with."""
import torch

from nnunetv2_zept.training.lr_schedule import ADAMW_LR, ADAMW_WEIGHT_DECAY, adamw_warmup_cosine
from nnunetv2_zept.trainers.common_settings import PluginTrainerSettings


class nnUNetTrainerZePTBaseline(PluginTrainerSettings):
    """nnU-Net's own network, loss, optimiser (SGD, momentum 0.99, poly schedule) and augmentation,
    with the ZePT trainers' run settings: training length and seed from the environment
    (NNUNETV2_ZEPT_EPOCHS / _ITERATIONS / _VAL_ITERATIONS / _SAVE_EVERY / _SEED), no mirroring (left
    and right organs are distinct classes) and no torch.compile.

    nnU-Net's SGD schedule is made for 1000 x 250 steps; at a short budget it learns far less per step
    than ZePT's AdamW, so a comparison with it measures the optimiser as well as the method.  Use
    nnUNetTrainerZePTBaselineAdamW for the like-for-like comparison."""


class nnUNetTrainerZePTBaselineAdamW(nnUNetTrainerZePTBaseline):
    """The like-for-like baseline: nnU-Net's network, loss and augmentation, trained with exactly
    ZePT's optimiser and schedule (AdamW, lr 1e-3, weight decay 1e-4, linear warm-up over 5% of the
    epochs then cosine decay to 0).  Given the same epochs, iterations and batch as ZePT's two stages
    together, it differs from ZePT only in the method."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr, self.weight_decay = ADAMW_LR, ADAMW_WEIGHT_DECAY

    def configure_optimizers(self):
        return adamw_warmup_cosine(self.network.parameters(), self.num_epochs, self.initial_lr, self.weight_decay)
