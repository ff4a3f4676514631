"""The ZePT backbone is nnU-Net's planned U-Net: same features, every stage tapped, stock DS shapes."""
import copy

import pytest
import torch

from nnunetv2_zept.architectures import build_zept_network, default_zept_config
from nnunetv2_zept.architectures.backbone_taps import (build_planned_unet, decoder_level_shapes, run_backbone,
                                                       stage_strides, take_encoder_decoder)
from nnunetv2_zept.experiments.example_plans import example_roles, make_plans, managers

PLANS = {
    # name: (patch, spacing, arch, base features)
    "iso_plain_4stages": ((32, 32, 32), (1.0, 1.0, 1.0), "plain", 32),
    "aniso_plain_2d_first_stage": ((16, 64, 64), (5.0, 0.8, 0.8), "plain", 16),
    "iso_resenc": ((32, 32, 32), (1.5, 1.5, 1.5), "resenc", 16),
    "2d_plain_7stages": ((256, 256), (0.8, 0.8), "plain", 8),
}


def _managers(name):
    patch, spacing, arch, base = PLANS[name]
    cfg = "2d" if len(patch) == 2 else "3d_fullres"
    return managers(make_plans(patch, spacing, arch, configuration=cfg, base_features=base), cfg)


def test_plans_cover_the_required_topologies():
    _, cm = _managers("aniso_plain_2d_first_stage")
    kw = cm.network_arch_init_kwargs
    assert kw["kernel_sizes"][0][0] == 1 and kw["strides"][1][0] == 1, "first stage must be 2D (in-plane only)"
    assert "ResidualEncoderUNet" in _managers("iso_resenc")[1].network_arch_class_name
    assert _managers("2d_plain_7stages")[1].network_arch_init_kwargs["n_stages"] == 7
    assert _managers("iso_plain_4stages")[1].network_arch_init_kwargs["n_stages"] == 4


@pytest.mark.parametrize("name", list(PLANS))
def test_taps_match_the_stock_decoder(name):
    pm, cm = _managers(name)
    torch.manual_seed(0)
    stock = build_planned_unet(cm, 1, 3, deep_supervision=True).eval()
    x = torch.randn(1, 1, *cm.patch_size)
    with torch.no_grad():
        ref = stock(x)                                   # fine -> coarse
        enc, dec = take_encoder_decoder(copy.deepcopy(stock))
        assert not hasattr(dec, "seg_layers")
        taps = run_backbone(enc, dec, x)
    n = len(cm.network_arch_init_kwargs["features_per_stage"])
    assert len(taps.skips) == n and len(taps.decoder_outs) == n - 1 == len(ref)
    shapes = decoder_level_shapes(enc, cm.patch_size)
    strides = stage_strides(enc)
    for k, f in enumerate(taps.decoder_outs):
        skip = taps.skips[-(k + 2)]
        assert f.shape[1:] == skip.shape[1:], "decoder stage k has the shape and channels of skip -(k+2)"
        assert tuple(f.shape[2:]) == shapes[k]
        assert tuple(f.shape[2:]) == tuple(p // s for p, s in zip(cm.patch_size, strides[-(k + 2)]))
        # the stock seg layer applied to our tap reproduces nnU-Net's own deep-supervision output
        torch.testing.assert_close(stock.decoder.seg_layers[k](f), ref[::-1][k], rtol=1e-5, atol=1e-5)
    assert tuple(taps.decoder_outs[-1].shape[2:]) == tuple(cm.patch_size)


@pytest.mark.parametrize("name", list(PLANS))
def test_zept_deep_supervision_shapes_equal_stock(name):
    pm, cm = _managers(name)
    roles = example_roles()
    stock = build_planned_unet(cm, 1, roles.num_channels, deep_supervision=True).train()
    net = build_zept_network(pm, cm, 1, roles.num_channels, True, default_zept_config(roles, 32)).train()
    assert not any("seg_layers" in n for n, _ in net.named_modules())
    assert 1 <= len(net.tapped) <= 4
    x = torch.randn(1, 1, *cm.patch_size)
    with torch.no_grad():
        ref = stock(x)
        outs = net(x)
    assert isinstance(outs, list) and [o.shape for o in outs] == [r.shape for r in ref]
    net.decoder.deep_supervision = False                   # what nnU-Net's set_deep_supervision_enabled does
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert torch.is_tensor(out) and out.shape == ref[0].shape and torch.isfinite(out).all()


def test_encoder_and_decoder_keep_nnunet_module_names():
    pm, cm = _managers("iso_plain_4stages")
    stock = build_planned_unet(cm, 1, 5, deep_supervision=True)
    net = build_zept_network(pm, cm, 1, 5, True, default_zept_config(example_roles(), 32))
    stock_keys = {k for k in stock.state_dict() if ".seg_layers." not in k}
    zept_keys = set(net.state_dict())
    assert stock_keys <= zept_keys, "nnU-Net weights of the same plan must load into the ZePT backbone"
