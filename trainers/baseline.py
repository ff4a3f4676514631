"""Plain nnU-Net on the same region dataset, as the reference the ZePT results are compared with."""
from nnunetv2_zept.trainers.common_settings import PluginTrainerSettings


class nnUNetTrainerZePTBaseline(PluginTrainerSettings):
    """nnU-Net's own network, loss and optimiser, with the ZePT trainers' training-length settings
    (NNUNETV2_ZEPT_EPOCHS / _ITERATIONS / _VAL_ITERATIONS / _SAVE_EVERY), no mirroring (left and
    right organs are distinct classes) and no torch.compile, so that a comparison differs only in
    the method."""
