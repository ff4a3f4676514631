"""Test-only trainers; nothing else belongs here.

This folder is put first in `nnUNet_extTrainer` by the tests that use it; nnU-Net imports every
module in it, so it holds only this one.

* `nnUNetTrainerPlainTiny` is nnU-Net's own trainer (network, loss, schedule) for one epoch of
  two iterations (the stock trainers run 250 per epoch): the plain nnU-Net training that
  tests/test_model_selection.py runs with and without the plugin.
* `nnUNetTrainerZePTPredictTest` (the prediction tests, tests/test_predict_*.py) trains the same
  way, with nnU-Net's planned PlainConvUNet wrapped so that the network honours the ZePT network
  contract for the anomaly map: with `network.return_anomaly_map = True` the eval forward appends
  one last channel, the anomaly logit.

The wrapper keeps the U-Net's `encoder` and `decoder` as its own attributes, so its state_dict
has exactly PlainConvUNet's keys: the same checkpoint also loads into a plain nnU-Net network
(the tests use that to make a "plain nnU-Net model" without training twice).
"""
import torch
from torch import nn

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class AnomalyContractUNet(nn.Module):
    """PlainConvUNet plus a parameter-free anomaly map.

    forward(x: [B, C_in, *patch]) -> [B, R, *patch] logits (R regions), or, in eval mode with
    `return_anomaly_map`, [B, R + 1, *patch] whose last channel is the anomaly logit
    -max_r(logit_r): sigmoid(anomaly) = 1 - max_r sigmoid(logit_r), i.e. "no class explains
    this voxel".  The closed form lets the tests check that the extra channel survives the
    sliding window, blending and export unchanged.
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        self.return_anomaly_map = False

    def forward(self, x):
        out = self.decoder(self.encoder(x))
        if self.training or not self.return_anomaly_map or isinstance(out, (list, tuple)):
            return out
        anomaly = (-out.max(dim=1, keepdim=True).values).clamp(-30, 30)
        return torch.cat((out, anomaly), dim=1)


class nnUNetTrainerPlainTiny(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
        self.num_epochs = 1


class nnUNetTrainerZePTPredictTest(nnUNetTrainerPlainTiny):
    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        unet = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                        num_output_channels, enable_deep_supervision)
        return AnomalyContractUNet(unet)
