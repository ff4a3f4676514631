"""nnU-Net's planned U-Net as the ZePT backbone: build it from the plans and tap every stage.

`build_planned_unet` builds the network exactly as nnU-Net's trainer does
(`get_network_from_plans` with allow_init=True), so PlainConvUNet, ResidualEncoderUNet, any
number of stages, anisotropic (2D first stage) and 2d plans work unchanged.  ZePT keeps its
`encoder` and `decoder` modules under the same names (so nnU-Net weights and tooling still
recognise them) and drops the decoder's `seg_layers`: the segmentation comes from the query
heads, and nnU-Net's `-pretrained_weights` skips keys named `*seg_layers*` anyway.

`run_backbone` replaces `UNetDecoder.forward` with the same loop (transposed conv -> concat
skip -> stage) that keeps the output of every decoder stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import nn


@dataclass
class BackboneTaps:
    """Feature maps of one forward pass.

    skips:        encoder stage outputs, fine -> coarse; skips[s] is [B, C_s, *shape_s], the last is
                  the bottleneck.
    decoder_outs: decoder stage outputs, coarse -> fine; decoder_outs[k] has the shape and channels
                  of skips[-(k + 2)], the last one is at full resolution (the mask features).
    """
    skips: List[torch.Tensor]
    decoder_outs: List[torch.Tensor]


def build_planned_unet(configuration_manager, num_input_channels: int, num_output_channels: int,
                       deep_supervision: bool) -> nn.Module:
    """The stock nnU-Net network of the plan (same call as nnUNetTrainer.build_network_architecture)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    return get_network_from_plans(
        configuration_manager.network_arch_class_name, configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import, num_input_channels, num_output_channels,
        allow_init=True, deep_supervision=deep_supervision)


def take_encoder_decoder(unet: nn.Module) -> Tuple[nn.Module, nn.Module]:
    """(encoder, decoder) of a planned U-Net, with the decoder's segmentation layers removed."""
    enc, dec = getattr(unet, "encoder", None), getattr(unet, "decoder", None)
    needed = ("stages", "transpconvs")
    if enc is None or dec is None or not all(hasattr(dec, n) for n in needed) or not hasattr(enc, "output_channels"):
        raise TypeError(
            f"{type(unet).__name__} is not a U-Net with an nnU-Net encoder and UNetDecoder (needs .encoder with "
            f"output_channels/strides and .decoder with stages/transpconvs). ZePT supports the plans' "
            f"PlainConvUNet and ResidualEncoderUNet; re-plan with one of them.")
    if hasattr(dec, "seg_layers"):
        del dec.seg_layers
    return enc, dec


def run_backbone(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor) -> BackboneTaps:
    """Encoder + decoder of the planned U-Net, keeping every decoder stage output."""
    skips = encoder(x)
    lres = skips[-1]
    outs = []
    for s in range(len(decoder.stages)):
        y = decoder.transpconvs[s](lres)
        y = torch.cat((y, skips[-(s + 2)]), 1)
        y = decoder.stages[s](y)
        outs.append(y)
        lres = y
    return BackboneTaps(list(skips), outs)


def stage_strides(encoder: nn.Module) -> List[Tuple[int, ...]]:
    """Cumulative stride of every encoder stage (fine -> coarse), one int per spatial axis."""
    conv_dim = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[encoder.conv_op]
    cum = np.ones(conv_dim, dtype=int)
    out = []
    for s in encoder.strides:
        s = np.array([s] * conv_dim if isinstance(s, int) else s, dtype=int)
        cum = cum * s
        out.append(tuple(int(v) for v in cum))
    return out


def decoder_level_shapes(encoder: nn.Module, patch_size: Sequence[int]) -> List[Tuple[int, ...]]:
    """Spatial shape of every decoder stage output (coarse -> fine) for an input of `patch_size`."""
    strides = stage_strides(encoder)
    shapes = [tuple(int(p) // c for p, c in zip(patch_size, st)) for st in strides]
    return shapes[:-1][::-1]
