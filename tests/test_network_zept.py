"""Contract of the ZePT network (docs/architecture.md): outputs, aux outputs, stages, state."""
import json

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_zept.architectures import build_zept_network, default_zept_config, query_class_names
from nnunetv2_zept.experiments.example_plans import example_roles, make_plans, managers
from nnunetv2_zept.roles import ZePTConfigError

PATCH = (32, 32, 32)
TEXT_DIM = 24
SMALL = dict(hidden_dim=32, num_heads=4, tumour_ffn_hidden=64, align_dim=16, adapter_channels=4,
             min_level_downsampling=2)


def _net(ds=True, **switches):
    torch.manual_seed(0)
    pm, cm = managers(make_plans(PATCH, (1, 1, 1), base_features=8))
    roles = example_roles()
    cfg = default_zept_config(roles, TEXT_DIM, **{**SMALL, **switches})
    net = build_zept_network(pm, cm, 1, roles.num_channels, ds, cfg)
    net.set_text_embeddings(torch.randn(len(net.query_class_names), TEXT_DIM))
    return net, pm, cm, cfg


def _stage_loss(outs, aux, stage):
    """A loss on the stage's outputs, as the trainers build it (all channels + the stage's aux terms)."""
    loss = sum(o.sigmoid().mean() * (0.5 ** i) for i, o in enumerate(outs))
    if "background_logits" in aux:
        loss = loss + aux["background_logits"].sigmoid().mean()
    if stage == 2 and "align_query" in aux:
        sim = aux["logit_scale"] * aux["align_query"] @ aux["align_text"].T          # [B, Q, Q]
        target = torch.arange(sim.shape[1]).expand(sim.shape[0], -1)
        loss = loss + F.cross_entropy(sim.transpose(1, 2), target)
    return loss


def test_query_order_and_config():
    net, _, _, cfg = _net()
    roles = example_roles()
    expected = ["liver", "kidney", "spleen", "air", "fat", "soft_tissue", "bone", "liver_tumour", "kidney_cyst"]
    assert query_class_names(cfg) == net.query_class_names == cfg["query_classes"] == expected
    assert query_class_names(default_zept_config(roles, 8, background_queries="one"))[3] == "background_tissue"
    assert len(query_class_names(default_zept_config(roles, 8, background_queries="none"))) == 5
    json.dumps(net.zept_config)
    with pytest.raises(ZePTConfigError, match="unknown keys"):
        default_zept_config(roles, 8, grupping=False)
    with pytest.raises(ZePTConfigError, match="anomaly_calibration"):
        default_zept_config(roles, 8, anomaly_calibration="zscore")
    pm, cm = managers(make_plans(PATCH, (1, 1, 1), base_features=8))
    with pytest.raises(ZePTConfigError, match="output channels"):
        build_zept_network(pm, cm, 1, 7, True, cfg)
    with pytest.raises(ValueError, match="text embeddings"):
        net.set_text_embeddings(torch.zeros(3, TEXT_DIM))


def test_eval_returns_one_finite_tensor_and_anomaly_channel():
    net, _, _, _ = _net(ds=False)
    net.eval()
    x = torch.randn(2, 1, *PATCH) * 100
    for stage in (1, 2):
        net.set_stage(stage)
        with torch.no_grad():
            y = net(x)
        assert torch.is_tensor(y) and y.shape == (2, 5, *PATCH) and y.dtype == torch.float32
        assert torch.isfinite(y).all() and y.abs().max() <= 30
        net.return_anomaly_map = True
        with torch.no_grad():
            ya = net(x)
        net.return_anomaly_map = False
        assert ya.shape == (2, 6, *PATCH) and torch.equal(ya[:, :5], y) and torch.isfinite(ya).all()
    with torch.no_grad():                               # constant input: no NaN anywhere
        assert torch.isfinite(net(torch.zeros(1, 1, *PATCH))).all()


@pytest.mark.parametrize("switches", [{}, {"self_prompt": False}, {"organ_restriction": False}])
def test_prediction_output_equals_the_full_resolution_output_of_the_all_levels_pass(switches):
    """Prediction (no deep supervision) skips the tumour heads and organ regions of levels it does
    not return; the full-resolution output must stay exactly what the all-levels pass gives."""
    net, _, _, _ = _net(ds=True, **switches)
    net.eval()
    with torch.no_grad():                       # calibrated scale from one batch, as after Stage 1
        net.calibration.anomaly_scale.fill_(0.7)
    x = torch.randn(2, 1, *PATCH) * 100
    for stage in (1, 2):
        net.set_stage(stage)
        for anomaly_map in (False, True):
            net.return_anomaly_map = anomaly_map
            net.decoder.deep_supervision = True
            with torch.no_grad():
                every_level = net(x)[0]
            net.decoder.deep_supervision = False
            with torch.no_grad():
                prediction = net(x)
            assert torch.equal(prediction[:, :every_level.shape[1]], every_level)
            assert prediction.shape[1] == every_level.shape[1] + int(anomaly_map)
            organ_region = (every_level[:, [0, 2, 4]] > 0).any(dim=1)
            assert organ_region.any() and not organ_region.all()   # the regions are neither empty nor everything


def test_training_outputs_and_aux_outputs():
    net, _, cm, _ = _net()
    x = torch.randn(2, 1, *PATCH)
    net.train()
    # plain forward: what nnU-Net expects (the deep-supervision list), nothing else
    outs = net(x)
    assert isinstance(outs, list) and len(outs) == 3 and outs[0].shape == (2, 5, *PATCH)
    # Stage 1 trains organs and background tissue: its aux holds the tissue logits, no alignment or prompts
    outs, aux = net(x, with_aux=True)
    assert isinstance(outs, list) and len(outs) == 3 and outs[0].shape == (2, 5, *PATCH)
    assert aux["background_logits"].shape == (2, 4, *PATCH) and "align_query" not in aux
    assert aux["anomaly"].shape == (2, 1, *PATCH) and aux["anomaly"].min() > 0 and aux["anomaly"].max() < 1
    assert aux["prompt_masks"] == []
    # ... and does not compute its untrained tumour channels
    assert all((o[:, [1, 3]] == -30).all() for o in outs)
    # Stage 2 trains the tumour queries and the alignment
    net.set_stage(2)
    outs, aux = net(x, with_aux=True)
    assert aux["align_query"].shape == (2, 9, SMALL["align_dim"]) and aux["align_text"].shape == (9, SMALL["align_dim"])
    torch.testing.assert_close(aux["align_query"].norm(dim=-1), torch.ones(2, 9))
    torch.testing.assert_close(aux["align_text"].norm(dim=-1), torch.ones(9))
    assert aux["logit_scale"].ndim == 0 and 1.0 < aux["logit_scale"].detach().item() <= 100.0
    assert "background_logits" not in aux
    assert len(aux["prompt_masks"]) == len(net.tapped) and all(m.dtype == torch.bool for m in aux["prompt_masks"])
    # eval (validation, prediction): a Stage 1 model's tumour channels are the anomaly logit restricted
    # to the dilated host organ (-30 outside it), identical for both tumour types where their regions agree
    net.set_stage(1)
    net.eval()
    with torch.no_grad():
        outs, aux = net(x, with_aux=True)
    t = outs[0][:, [1, 3]]
    assert (t > -30).any()
    assert ((t == -30) | (t - torch.logit(aux["anomaly"].clamp(1e-6, 1 - 1e-6)).clamp(-30, 30)).abs().lt(1e-3)).all()


def test_stage2_training_builds_no_graph_through_the_frozen_stage1_part():
    net, _, _, _ = _net()
    for p in net.stage1_parameters():
        p.requires_grad_(False)
    net.set_stage(2)
    net.train()
    outs, aux = net(torch.randn(1, 1, *PATCH), with_aux=True)
    _stage_loss(outs, aux, 2).backward()
    assert all(p.grad is None for p in net.stage1_parameters())
    assert all(p.grad is not None for p in net.stage2_parameters())
    # with Stage 1 trainable (e.g. a user fine-tuning everything) the graph reaches it again
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    outs, aux = net(torch.randn(1, 1, *PATCH), with_aux=True)
    _stage_loss(outs, aux, 2).backward()
    assert net.encoder.stages[0][0].convs[0].conv.weight.grad is not None


@pytest.mark.parametrize("stage", [1, 2])
def test_stage_parameter_sets_are_disjoint_cover_all_and_all_get_gradients(stage):
    net, _, _, _ = _net()
    s1, s2 = list(net.stage1_parameters()), list(net.stage2_parameters())
    ids1, ids2 = {id(p) for p in s1}, {id(p) for p in s2}
    assert not ids1 & ids2 and ids1 | ids2 == {id(p) for p in net.parameters()}
    assert len(s1) == len(ids1) and len(s2) == len(ids2)
    train = ids1 if stage == 1 else ids2
    for p in net.parameters():
        p.requires_grad_(id(p) in train)
    net.set_stage(stage)
    net.train()
    _stage_loss(*net(torch.randn(2, 1, *PATCH), with_aux=True), stage).backward()
    names = {id(p): n for n, p in net.named_parameters()}
    missing = [names[i] for i in train if next(p for p in net.parameters() if id(p) == i).grad is None]
    assert not missing, f"trainable parameters without gradient (DDP would fail): {missing}"


@pytest.mark.parametrize("switches", [
    dict(grouping=False, background_queries="one"),
    dict(self_prompt=False, anomaly_injection=False),
    dict(alignment=False, background_queries="none"),
    dict(disentangled=False),
    dict(anomaly_calibration="minmax", organ_restriction=False, tumour_decoder_order="coarse_to_fine"),
])
def test_ablation_switches_run_and_keep_gradient_coverage(switches):
    net, _, _, _ = _net(**switches)
    for stage, params in ((1, net.stage1_parameters), (2, net.stage2_parameters)):
        train = {id(p) for p in params()}
        for p in net.parameters():
            p.requires_grad_(id(p) in train)
            p.grad = None
        net.set_stage(stage)
        net.train()
        outs, aux = net(torch.randn(1, 1, *PATCH), with_aux=True)
        assert all(torch.isfinite(o).all() for o in outs)
        _stage_loss(outs, aux, stage).backward()
        assert all(p.grad is not None for p in net.parameters() if id(p) in train), (switches, stage)
        if not switches.get("alignment", True):
            assert "align_query" not in aux
        if switches.get("background_queries") == "none":
            assert "background_logits" not in aux


def test_channel_masked_out_of_the_loss_gets_exactly_zero_gradient():
    net, _, _, _ = _net()
    net.set_stage(2)
    net.train()
    outs = net(torch.randn(2, 1, *PATCH) * 1e3)        # extreme input: saturated logits must not leak NaN
    keep = [0, 1, 2, 4]                                  # channel 3 (zero-shot kidney_cyst) is not annotated
    loss = sum(F.binary_cross_entropy_with_logits(o[:, keep], torch.ones_like(o[:, keep])) for o in outs)
    grads = torch.autograd.grad(loss, outs + [p for p in net.stage2_parameters()], allow_unused=True)
    for g in grads[:len(outs)]:
        assert torch.equal(g[:, 3], torch.zeros_like(g[:, 3])) and g[:, keep].abs().sum() > 0
    assert all(g is None or torch.isfinite(g).all() for g in grads[len(outs):])


def test_state_dict_round_trip_rebuilds_identical_network():
    net, pm, cm, _ = _net(ds=False)
    net.train()
    with torch.no_grad():
        net(torch.randn(1, 1, *PATCH))                   # moves the calibration statistics
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    net.set_stage(2)
    cfg = json.loads(json.dumps(net.zept_config))        # as stored in plans.json
    clone = build_zept_network(pm, cm, 1, 5, False, cfg)
    assert clone.stage.item() == 1
    clone.load_state_dict(net.state_dict(), strict=True)
    assert clone.stage.item() == 2 and torch.equal(clone.text_embeddings, net.text_embeddings)
    assert torch.equal(clone.calibration.anomaly_scale, net.calibration.anomaly_scale)
    net.eval(), clone.eval()
    x = torch.randn(1, 1, *PATCH)
    net.return_anomaly_map = clone.return_anomaly_map = True
    with torch.no_grad():
        assert torch.equal(net(x), clone(x))


def test_autocast_keeps_outputs_finite_and_float32():
    net, _, _, _ = _net()
    net.set_stage(2)
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs, aux = net(torch.randn(1, 1, *PATCH), with_aux=True)
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in outs)
    assert aux["align_query"].dtype == torch.float32 and aux["anomaly"].dtype == torch.float32


def _synthetic_batch(g, n=2):
    """Bright ball = liver, dark ball = kidney, mid ball = spleen in noise; targets in region order."""
    x = torch.randn(n, 1, *PATCH, generator=g) * 0.3
    y = torch.zeros(n, 5, *PATCH)
    zz, yy, xx = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in PATCH], indexing="ij")
    for b in range(n):
        for ch, val in ((0, 2.0), (2, -2.0), (4, 1.0)):
            c = torch.randint(8, 24, (3,), generator=g).float()
            ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < 36
            x[b, 0][ball] += val
            y[b, ch][ball] = 1.0
    return x, y


def test_trains_on_a_tiny_synthetic_problem():
    net, _, _, _ = _net()
    net.set_stage(1)
    for p in net.stage2_parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(net.stage1_parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    organs = [0, 2, 4]
    losses = []
    net.train()
    for _ in range(30):
        x, y = _synthetic_batch(g)
        outs = net(x)
        loss = 0.0
        for i, o in enumerate(outs):
            t = F.interpolate(y, size=o.shape[2:], mode="nearest") if i else y
            p = o[:, organs].sigmoid()
            dice = 1 - (2 * (p * t[:, organs]).sum((2, 3, 4)) + 1) / (p.sum((2, 3, 4)) + t[:, organs].sum((2, 3, 4)) + 1)
            loss = loss + (0.5 ** i) * (F.binary_cross_entropy_with_logits(o[:, organs], t[:, organs]) + dice.mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, f"loss did not fall clearly: {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("zero_shot_adapter", [False, True])
def test_adapter_term_reaches_zero_shot_channels_only_when_switched_on(zero_shot_adapter):
    net, _, _, _ = _net(ds=False, zero_shot_adapter=zero_shot_adapter, organ_restriction=False)
    net.set_stage(2)
    net.eval()
    out = net(torch.randn(1, 1, *PATCH))
    adapter = list(net.adapter.parameters()) + list(net.adapter_head.parameters())
    seen, zero_shot = 1, 3                                # liver_tumour, kidney_cyst (example roles)
    g_seen = torch.autograd.grad(out[:, seen].sum(), adapter, allow_unused=True, retain_graph=True)
    g_zs = torch.autograd.grad(out[:, zero_shot].sum(), adapter, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in g_seen)
    reaches = any(g is not None and g.abs().sum() > 0 for g in g_zs)
    assert reaches == zero_shot_adapter


def test_adapter_map_folded_into_the_head_gives_the_head_of_the_adapter_output():
    """The adapter's closing 1x1 conv is folded into the head's query projection (one full-resolution
    pass less in prediction): same logits and the same gradients as heading the adapter's output."""
    from nnunetv2_zept.architectures.heads import MaskFeatureAdapter, QueryLevelHead

    torch.manual_seed(0)
    adapter, head = MaskFeatureAdapter(torch.nn.Conv3d, 8, 6), QueryLevelHead(32, 6)
    with torch.no_grad():
        adapter.net[2].bias.normal_()           # a non-zero bias, so that the folded bias term is checked
    q, f = torch.randn(2, 4, 32), torch.randn(2, 8, 5, 6, 7)
    params = list(adapter.parameters()) + list(head.parameters())
    direct = head(q, adapter(f))
    folded = head(q, adapter.hidden(f), adapter.output_map())
    assert folded.shape == direct.shape == (2, 4, 5, 6, 7)
    torch.testing.assert_close(folded, direct, rtol=1e-4, atol=1e-4)
    g_direct = torch.autograd.grad(direct.square().sum(), params)
    g_folded = torch.autograd.grad(folded.square().sum(), params)
    for a, b in zip(g_direct, g_folded):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def _liver_only_in(net, box):
    """Replace the fundamental head's organ rows by a liver in `box` (full-resolution slices; +8 inside,
    -8 elsewhere, every other organ absent) at every level: a trained model's small host region."""
    head = net.fundamental_head.forward

    def forward(level, queries, features):
        out = head(level, queries, features).clone()
        step = [p // s for p, s in zip(PATCH, features.shape[2:])]
        organs = torch.full_like(out[:, :net.n_org], -8.0)
        organs[(slice(None), 0, *(slice(b.start // k, -(-b.stop // k)) for b, k in zip(box, step)))] = 8.0
        out[:, :net.n_org] = organs
        return out
    net.fundamental_head.forward = forward


def test_seen_restriction_holds_seen_channels_to_their_host_and_leaves_the_rest_alone():
    """Prediction with seen_restriction (the default): the seen channel is the unrestricted Stage 2
    output inside its host organ, lowered by tumour_shell_margin in the grown rim around it and -30
    outside, the adapter's convolution runs over that region's box only, and organ and zero-shot
    channels do not change."""
    net, _, _, _ = _net(ds=False, organ_growth_mm=1.0, tumour_growth_mm=1.0)   # grows the liver by one voxel
    _liver_only_in(net, (slice(8, 16), slice(8, 20), slice(10, 18)))
    net.set_stage(2)
    net.eval()
    x = torch.randn(1, 1, *PATCH) * 100
    calls = []
    hook = net.adapter.net[0].register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape[2:])))
    with torch.no_grad():
        on = net(x)
        net.switches["seen_restriction"] = False
        off = net(x)
        net.switches["seen_restriction"] = True
    hook.remove()
    assert calls == [(12, 16, 12), PATCH]                 # the liver's region 7:17 x 7:21 x 9:19, one voxel of reach
    seen, others = 1, [0, 2, 3, 4]                        # liver_tumour; liver, kidney, kidney_cyst, spleen
    torch.testing.assert_close(on[:, others], off[:, others], rtol=1e-5, atol=1e-5)
    inside = torch.zeros_like(on[:, seen], dtype=torch.bool)
    inside[:, 7:17, 7:21, 9:19] = True
    liver = torch.zeros_like(inside)
    liver[:, 8:16, 8:20, 10:18] = True                    # a box: its closed outline is itself
    rim = inside & ~liver
    assert (on[:, seen][~inside] == -30).all()
    torch.testing.assert_close(on[:, seen][liver], off[:, seen][liver], rtol=1e-5, atol=1e-5)
    margin = net.switches["tumour_shell_margin"]
    assert margin > 0
    torch.testing.assert_close(on[:, seen][rim], (off[:, seen][rim] - margin).clamp_min(-30), rtol=1e-5, atol=1e-5)
    assert (off[:, seen][~inside] > -30).any()            # the restriction changed something


def test_adapter_runs_only_over_the_box_of_the_restricted_regions_with_the_whole_tile_values():
    net, _, _, _ = _net(ds=False)
    net.set_stage(2)
    net.eval()
    torch.manual_seed(1)
    b, c = 1, net.dec_channels[-1]
    features = torch.randn(b, c, *PATCH)
    adv = torch.randn(b, net.n_tum, net.switches["hidden_dim"])
    t = torch.randn(b, net.n_tum, *PATCH)
    liver_tumour = 0
    region = torch.zeros(b, 1, *PATCH, dtype=torch.bool)
    region[..., 3:9, 10:14, 25:32] = True                 # reaches the tile's border on the last axis
    region[..., 12, 20, 4] = True
    calls = []
    hook = net.adapter.net[0].register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape[2:])))
    with torch.no_grad():
        whole = net._add_adapter_term(t.clone(), adv, features, {liver_tumour: region}, [])
        boxed = net._add_adapter_term(t.clone(), adv, features, {liver_tumour: region}, [0, 1])
        empty = net._add_adapter_term(t.clone(), adv, features, {liver_tumour: torch.zeros_like(region)}, [0, 1])
    hook.remove()
    # the conv ran over the whole tile, then over the box 3:13 x 10:21 x 4:32 grown by one voxel, clipped to the tile
    assert calls == [PATCH, (12, 13, 29)]
    inside = region[:, 0]
    torch.testing.assert_close(boxed[:, liver_tumour][inside], whole[:, liver_tumour][inside], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(whole[:, liver_tumour][inside], t[:, liver_tumour][inside])   # the term is there
    torch.testing.assert_close(boxed[:, 1], t[:, 1])       # the zero-shot channel gets no adapter term
    assert torch.equal(empty, t)                           # no host organ in the tile: no adapter at all


def test_tumour_outputs_and_prompts_grow_the_host_organs_by_their_own_margins():
    net, _, _, _ = _net(ds=False, organ_growth_mm=3.0, tumour_growth_mm=1.0)
    _liver_only_in(net, (slice(8, 16), slice(8, 20), slice(10, 18)))
    net.set_stage(2)
    net.eval()
    net.return_anomaly_map = True
    with torch.no_grad():
        out = net(torch.randn(1, 1, *PATCH) * 100)

    def grown(r):
        m = torch.zeros(1, *PATCH, dtype=torch.bool)
        m[:, 8 - r:16 + r, 8 - r:20 + r, 10 - r:18 + r] = True
        return m
    assert torch.equal(out[:, 1] > -30, grown(1))           # liver_tumour: the liver grown by 1 mm
    assert torch.equal(out[:, 5] > -30, grown(3))           # the anomaly map: every host grown by 3 mm


def test_host_residual_takes_out_the_fit_on_the_host_logit_inside_the_region_only_per_sample():
    from nnunetv2_zept.architectures.heads import host_residual

    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 6, 7, 8, generator=g) * 5
    noise = torch.randn(h.shape, generator=g)
    q = 2.0 * h + noise - 4.0                              # a query term that follows its organ
    region = torch.zeros_like(h, dtype=torch.bool)
    region[0, 1:5, 2:6, 1:7] = True
    region[1] = True
    region[2, 3, 3, 3] = True                              # one voxel: nothing to fit
    r = host_residual(q, h, region)
    for b in (0, 1):
        m = region[b]
        hc, rc = h[b][m] - h[b][m].mean(), r[b][m] - r[b][m].mean()
        assert abs(float((hc * rc).mean())) < 1e-3 * float(hc.std() * rc.std())       # no correlation left
        torch.testing.assert_close(r[b][m].mean(), q[b][m].mean(), rtol=1e-4, atol=1e-4)  # its mean kept
        beta = float(((q[b][m] - q[b][m].mean()) * hc).sum() / (hc * hc).sum())
        assert 1.9 < beta < 2.1
        torch.testing.assert_close(r[b], q[b] - beta * (h[b] - h[b][m].mean()), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(r[2], q[2])
    # a query term that ranks a lesion above its organ keeps that ranking
    lesion = torch.zeros_like(region[1])
    lesion[2:4, 2:4, 2:4] = True
    q2 = 0.5 * h[1] + 3.0 * lesion
    r2 = host_residual(q2[None], h[1][None], region[1][None])[0]
    assert r2[lesion].min() > r2[~lesion].max() - 1.0


def _kidney_ramp_in(net, box):
    """Replace the fundamental head's organ rows by a kidney in `box` whose logit rises along the last
    axis (2 to 10 at full resolution), every other organ absent (-8); returns the full-resolution
    kidney logit."""
    head = net.fundamental_head.forward
    ramp = torch.full(PATCH, -8.0)
    n = box[-1].stop - box[-1].start
    ramp[box] = torch.linspace(2.0, 10.0, n)

    def forward(level, queries, features):
        out = head(level, queries, features).clone()
        organs = torch.full_like(out[:, :net.n_org], -8.0)
        organs[:, 1] = F.interpolate(ramp[None, None], size=tuple(features.shape[2:]), mode="nearest")[:, 0]
        out[:, :net.n_org] = organs
        return out
    net.fundamental_head.forward = forward
    return ramp


def test_zero_shot_host_residual_changes_only_the_zero_shot_channel_and_only_in_prediction():
    net, _, _, _ = _net(ds=False, organ_growth_mm=1.0, tumour_growth_mm=1.0, tumour_shell_margin=0.0)
    kidney = _kidney_ramp_in(net, (slice(8, 20), slice(6, 18), slice(10, 22)))
    net.set_stage(2)
    x = torch.randn(1, 1, *PATCH) * 100
    net.return_anomaly_map = True
    net.eval()
    with torch.no_grad():
        net.switches["zero_shot_host_residual"] = False
        off = net(x)
        net.switches["zero_shot_host_residual"] = True
        on = net(x)
        net.train()
        torch.manual_seed(1)                              # the same dropout draws in both training passes
        trained_on = net(x)
        net.switches["zero_shot_host_residual"] = False
        torch.manual_seed(1)
        trained_off = net(x)
    zero_shot, others = 3, [0, 1, 2, 4, 5]                # kidney_cyst (host: kidney); the rest and the anomaly map
    torch.testing.assert_close(on[:, others], off[:, others])
    torch.testing.assert_close(trained_on, trained_off)
    region = off[0, zero_shot] > -30
    assert region.sum() > 1000 and torch.equal(region, on[0, zero_shot] > -30)
    q_on = (on[0, zero_shot] - on[0, -1])[region]           # channel minus anomaly: the query term
    q_off = (off[0, zero_shot] - off[0, -1])[region]
    h = kidney[region]
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])   # noqa: E731
    assert abs(corr(q_on, h)) < 1e-3 < abs(corr(q_off, h))
    torch.testing.assert_close(q_on.mean(), q_off.mean(), rtol=1e-3, atol=1e-3)


def test_a_model_predicts_with_the_switches_it_stored_and_the_defaults_for_switches_added_after_it():
    """The network is rebuilt from the `zept` block that training wrote into plans.json: a model trained
    while zero_shot_host_residual was off by default stored `false` and keeps it; a model trained
    before the switch existed stored no key and predicts with today's default (on), like the shipped
    reference models."""
    from nnunetv2_zept.trainers import nnUNetTrainerZePTStage2, nnUNetTrainerZePTStage2_noHostResidualQuery

    pm, cm = managers(make_plans(PATCH, (1, 1, 1), base_features=8))
    roles = example_roles()
    cfg = default_zept_config(roles, TEXT_DIM, **SMALL)
    assert cfg["switches"]["zero_shot_host_residual"] is True
    older = json.loads(json.dumps(cfg))
    del older["switches"]["zero_shot_host_residual"]
    stored_off = default_zept_config(roles, TEXT_DIM, **{**SMALL, **nnUNetTrainerZePTStage2_noHostResidualQuery.SWITCHES})
    assert nnUNetTrainerZePTStage2.SWITCHES.get("zero_shot_host_residual", True) is True
    built = {name: build_zept_network(pm, cm, 1, roles.num_channels, False, json.loads(json.dumps(c))).switches
             for name, c in (("default", cfg), ("older", older), ("stored_off", stored_off))}
    assert built["default"]["zero_shot_host_residual"] is True
    assert built["older"]["zero_shot_host_residual"] is True
    assert built["stored_off"]["zero_shot_host_residual"] is False
