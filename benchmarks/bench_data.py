"""Data-set helpers shared by the benchmarks: the synthetic data set with a knowledge text for
every class, so that the ZePT trainers can embed them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List


def add_missing_texts(dataset_json_path: Path) -> List[str]:
    """Give every class without a built-in knowledge text a `zept.texts` entry (tumours: the
    synthetic generator's description of the type; organs: a generic sentence).  Returns the
    names it added; a file needing nothing is left unchanged."""
    from nnunetv2_zept.knowledge.texts import MissingKnowledgeTextError, text_for_class
    from nnunetv2_zept.synthetic import TUMOUR_TYPES

    dj = json.loads(dataset_json_path.read_text())
    zept = dj.setdefault("zept", {})
    texts = zept.setdefault("texts", {})
    added = []
    for name in dj["labels"]:
        if name in ("background", "ignore"):
            continue
        try:
            text_for_class(name, texts)
        except MissingKnowledgeTextError:
            if name in TUMOUR_TYPES:
                hosts = ", ".join(TUMOUR_TYPES[name].hosts)
                texts[name] = f"A lesion in the {hosts} on contrast-enhanced CT: {TUMOUR_TYPES[name].description}."
            else:
                texts[name] = f"The {name.replace('_', ' ')}, an organ seen on contrast-enhanced abdominal CT."
            added.append(name)
    if added:
        dataset_json_path.write_text(json.dumps(dj, indent=2))
    return added


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
