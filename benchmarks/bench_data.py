"""Network helpers shared by the cost benchmarks."""
from __future__ import annotations


def build_variant_network(variant: str, plans_manager, configuration_manager, roles):
    """The network a benchmark times, as one stage trains it.

    variant: "plain" (nnU-Net's planned U-Net, everything trained), "zept_s1" or "zept_s2" (the
    ZePT network in that stage, with random text embeddings and only that stage's parameters
    requiring gradients).  Returns (network, trained parameters)."""
    import torch
    from nnunetv2_zept.architectures import build_zept_network, default_zept_config
    from nnunetv2_zept.architectures.backbone_taps import build_planned_unet

    if variant == "plain":
        net = build_planned_unet(configuration_manager, 1, roles.num_channels, True)
        return net, list(net.parameters())
    net = build_zept_network(plans_manager, configuration_manager, 1, roles.num_channels, True,
                             default_zept_config(roles, 384))
    net.set_stage(1 if variant == "zept_s1" else 2)
    net.set_text_embeddings(torch.randn(len(net.query_class_names), 384))
    trained = set(map(id, net.stage1_parameters() if variant == "zept_s1" else net.stage2_parameters()))
    for p in net.parameters():
        p.requires_grad_(id(p) in trained)
    return net, [p for p in net.parameters() if p.requires_grad]


def forward_with_aux(net, x):
    """(logits, aux) of a ZePT network (its aux outputs for the stage losses), (logits, {}) of a plain U-Net."""
    from nnunetv2_zept.architectures import ZePTNetwork

    if isinstance(net, ZePTNetwork):
        return tuple(net(x, with_aux=True))
    return net(x), {}
