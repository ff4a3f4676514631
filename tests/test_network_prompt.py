"""Self-prompt: absolute calibrated anomaly, prompt masks without gradient and never fully blocked."""
import numpy as np
import torch

from nnunetv2_zept.architectures import build_zept_network, default_zept_config
from nnunetv2_zept.experiments.example_plans import example_roles, make_plans, managers
from nnunetv2_zept.architectures.self_prompt import (AnomalyCalibration, best_affinity_anomaly, dilate, erode,
                                                     fill_cavities, host_regions, level_radius, outer_shell,
                                                     prompt_mask)


def _phantom_logits(shape=(24, 24, 24)):
    """Fundamental logits of 3 queries: an 'organ' ball, 'tissue' elsewhere, and an unexplained lesion."""
    z, y, x = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    organ = ((z - 12) ** 2 + (y - 12) ** 2 + (x - 12) ** 2) < 64
    lesion = ((z - 12) ** 2 + (y - 10) ** 2 + (x - 14) ** 2) < 6
    logits = torch.full((1, 3, *shape), -6.0)
    logits[0, 0][organ & ~lesion] = 5.0
    logits[0, 1][~organ] = 4.0
    logits = logits + 0.3 * torch.randn_like(logits)
    return logits, organ, lesion


def test_calibrated_prompt_admits_the_lesion_and_blocks_the_rest_without_gradient():
    torch.manual_seed(0)
    logits, organ, lesion = _phantom_logits()
    logits.requires_grad_(True)
    cal = AnomalyCalibration(1, "calibrated")
    a = best_affinity_anomaly(logits)
    ell = cal(0, a)
    assert ell.requires_grad
    blocked = prompt_mask(ell, 0.5)
    assert blocked.dtype == torch.bool and not blocked.requires_grad and blocked.shape == (1, 24 ** 3)
    frac = blocked.float().mean().item()
    assert 0.0 < frac < 1.0
    visible = ~blocked.view(24, 24, 24)
    assert visible[lesion].float().mean() > 0.95 and visible[~lesion].float().mean() < 0.01


def test_no_fully_blocked_row_and_no_nan_on_flat_input():
    flat = torch.zeros(2, 4, 8, 8, 8)                       # every query equally (un)sure: max == min
    for mode in ("calibrated", "minmax"):
        cal = AnomalyCalibration(1, mode)
        ell = cal(0, best_affinity_anomaly(flat))
        assert torch.isfinite(ell).all()
        blocked = prompt_mask(ell, 0.5)
        assert not blocked.all(dim=1).any()
    confident = torch.full((2, 4, 8, 8, 8), 10.0)         # everything explained: all would be blocked
    blocked = prompt_mask(AnomalyCalibration(1)(0, best_affinity_anomaly(confident)), 0.5)
    assert not blocked.all(dim=1).any() and not blocked.any(), "a fully blocked sample is unblocked"
    # region restriction that excludes everything also ends unblocked rather than fully blocked
    logits, _, _ = _phantom_logits()
    blocked = prompt_mask(AnomalyCalibration(1)(0, best_affinity_anomaly(logits)), 0.5,
                          torch.zeros(1, 1, 24, 24, 24, dtype=torch.bool))
    assert not blocked.all(dim=1).any()


def test_calibrated_score_is_tile_invariant_minmax_is_not():
    torch.manual_seed(0)
    logits, _, _ = _phantom_logits()
    a = best_affinity_anomaly(logits)
    tile = (slice(None), slice(None), slice(0, 8), slice(0, 24), slice(0, 24))   # tile without the lesion
    cal = AnomalyCalibration(1, "calibrated")
    with torch.no_grad():
        cal.update(0, a * 3.0)                     # some learned scale, frozen afterwards
    torch.testing.assert_close(cal(0, a)[tile], cal(0, a[tile]))
    mm = AnomalyCalibration(1, "minmax")
    assert (mm(0, a)[tile] - mm(0, a[tile])).abs().max() > 1.0
    # a lesion-free tile gets no prompt with the calibrated score; min-max always admits its own maximum
    assert (torch.sigmoid(cal(0, a[tile])) >= 0.5).sum() == 0
    assert (torch.sigmoid(mm(0, a[tile])) >= 0.5).sum() > 0


def test_calibration_statistics_update_only_in_stage1_training():
    pm, cm = managers(make_plans((32, 32, 32), (1, 1, 1), base_features=8))
    roles = example_roles()
    net = build_zept_network(pm, cm, 1, roles.num_channels, True,
                             default_zept_config(roles, 16, hidden_dim=32, num_heads=4))
    x = torch.randn(1, 1, 32, 32, 32)
    before = net.calibration.anomaly_scale.clone()
    net.eval()
    with torch.no_grad():
        net(x)
    assert torch.equal(net.calibration.anomaly_scale, before) and net.calibration.num_updates.sum() == 0
    net.train()
    with torch.no_grad():
        net(x)
    assert net.calibration.num_updates.min() == 1 and not torch.equal(net.calibration.anomaly_scale, before)
    after1 = net.calibration.anomaly_scale.clone()
    net.set_stage(2)
    with torch.no_grad():
        net(x)
    assert torch.equal(net.calibration.anomaly_scale, after1), "frozen after Stage 1"


def _box_max_filter(m: torch.Tensor, radius) -> torch.Tensor:
    """The reference dilation: a full-size separable max filter of half-width radius[axis]."""
    box = m.float()
    for axis, r in enumerate(radius):
        if r:
            k, p = [1, 1, 1], [0, 0, 0]
            k[axis], p[axis] = 2 * r + 1, r
            box = torch.nn.functional.max_pool3d(box, kernel_size=k, stride=1, padding=p)
    return box > 0.5


def test_dilation_equals_a_box_max_filter_of_any_radius():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(2, 3, 20, 25, 30, generator=g) > 0.995
    for radius in [(1, 1, 1), (3, 2, 0), (13, 13, 4), (7, 0, 11), (40, 1, 2)]:
        assert torch.equal(dilate(m, radius), _box_max_filter(m, radius)), radius


def test_dilation_of_local_masks_works_in_their_box_and_equals_the_max_filter():
    """dilate() works only inside the box of the True voxels grown by the radius: masks in a corner,
    at a border, an empty channel and one voxel give what the full-size max filter gives."""
    m = torch.zeros(2, 3, 30, 26, 22, dtype=torch.bool)
    m[0, 0, 2:5, 3:6, 4:8] = True                  # near a corner
    m[0, 1, 20:29, 0:3, 10:12] = True              # at a border
    m[1, 0, 15, 13, 11] = True                     # one voxel, other sample
    for radius in [(1, 1, 1), (4, 2, 0), (9, 3, 5), (0, 0, 0), (40, 1, 2)]:
        assert torch.equal(dilate(m, radius), _box_max_filter(m, radius)), radius
    assert not dilate(torch.zeros(1, 2, 5, 5, 5, dtype=torch.bool), (2, 2, 2)).any()


def test_dilation_and_host_regions():
    m = torch.zeros(1, 1, 9, 9, 9, dtype=torch.bool)
    m[0, 0, 4, 4, 4] = True
    d = dilate(m, (1, 2, 0))
    assert d.sum() == 3 * 5 * 1 and d[0, 0, 3:6, 2:7, 4].all()
    assert level_radius(3, (1, 1, 1), (1, 2, 8)) == (3, 2, 1)
    assert level_radius(10, (0.8, 0.8, 2.5), (1, 1, 1)) == (13, 13, 4)
    assert level_radius(10, (6, 6, 6), (1, 2, 4)) == (2, 1, 1) and level_radius(0, (1, 1, 1), (1, 1, 1)) == (0, 0, 0)
    organ_logits = torch.full((1, 2, 9, 9, 9), -5.0)
    organ_logits[0, 1, 4, 4, 4] = 5.0
    reg = host_regions(organ_logits, [[0], [1], [0, 1]], (1, 1, 1))
    assert reg.shape == (1, 3, 9, 9, 9) and reg[0, 0].sum() == 0 and reg[0, 1].sum() == 27 and reg[0, 2].sum() == 27


def test_erosion_counts_the_tile_beyond_its_edge_as_inside_and_the_outer_shell_keeps_notches_out():
    from scipy import ndimage

    torch.manual_seed(3)
    for radius in [(1, 1, 1), (2, 1, 0), (3, 2, 1)]:
        m = torch.rand(2, 2, 11, 12, 13) > 0.3
        m[1, 1] = False
        pad = [(r, r) for r in radius]
        structure = np.ones([2 * r + 1 for r in radius], dtype=bool)
        for b in range(2):
            for c in range(2):
                padded = np.pad(m[b, c].numpy(), pad, constant_values=True)
                want = ndimage.binary_erosion(padded, structure)[tuple(slice(r, r + n) for r, n in
                                                                         zip(radius, m.shape[2:]))]
                want &= m[b, c].numpy()          # scipy's padding makes an all-False map erode to itself
                assert np.array_equal(erode(m, radius)[b, c].numpy(), want), (radius, b, c)
    # an organ with a notch and a cavity, grown by 2: the shell is the outer rim only
    organ = torch.zeros(1, 1, 20, 20, 20, dtype=torch.bool)
    organ[0, 0, 5:15, 5:15, 5:15] = True
    organ[0, 0, 5:8, 9:11, 5:15] = False                      # a notch, 2 voxels wide, from the top face
    organ[0, 0, 9:11, 9:11, 9:11] = False                     # a cavity
    grown = dilate(organ, (2, 2, 2))
    shell = outer_shell(grown, (2, 2, 2))
    assert not (shell & organ).any()
    assert not shell[0, 0, 5:8, 9:11, 5:15].any() and not shell[0, 0, 9:11, 9:11, 9:11].any()
    rim = grown & ~dilate(organ, (0, 0, 0))
    rim[0, 0, 5:8, 9:11, 5:15] = False
    rim[0, 0, 9:11, 9:11, 9:11] = False
    assert torch.equal(shell, rim)
    assert grown[0, 0, 3, 10, 10] and shell[0, 0, 3, 10, 10]   # above the notch, outside the organ: shell


def test_network_prompt_masks_are_detached_bool_and_never_fully_blocked():
    pm, cm = managers(make_plans((32, 32, 32), (1, 1, 1), base_features=8))
    roles = example_roles()
    net = build_zept_network(pm, cm, 1, roles.num_channels, True,
                             default_zept_config(roles, 16, hidden_dim=32, num_heads=4, min_level_downsampling=2)).train()
    net.set_stage(2)
    masks = net(torch.randn(2, 1, 32, 32, 32), with_aux=True).aux["prompt_masks"]
    assert len(masks) == len(net.tapped) == 2
    for m, k in zip(masks, net.tapped):
        n = 1
        for p, s in zip(cm.patch_size, net.dec_strides[k]):
            n *= p // s
        assert m.dtype == torch.bool and not m.requires_grad and m.shape == (2, n)
        assert not m.all(dim=1).any()


def test_zero_shot_channel_keeps_the_core_of_a_large_lesion_at_fine_spacing():
    """Stage 1 teaches organs to leave tumours out, so a large unseen lesion is a cavity in the
    predicted host organ.  The zero-shot channel must stay open over the whole cavity (filled
    holes), and the region's growth is in mm (here 0.8 mm voxels)."""
    pm, cm = managers(make_plans((48, 48, 48), (0.8, 0.8, 0.8), base_features=8))
    roles = example_roles()       # channels: liver, liver_tumour, kidney, kidney_cyst (zero-shot, in kidney), spleen
    net = build_zept_network(pm, cm, 1, roles.num_channels, False,
                             default_zept_config(roles, 16, hidden_dim=32, num_heads=4, min_level_downsampling=2))
    net.set_stage(2)
    net.eval()
    zz, yy, xx = torch.meshgrid(*[torch.arange(48, dtype=torch.float32)] * 3, indexing="ij")
    r = ((zz - 24) ** 2 + (yy - 24) ** 2 + (xx - 24) ** 2).sqrt()
    kidney = (r < 20) & (r >= 12)            # the organ prediction with a lesion of radius 12 voxels left out

    def organ_logits(module, args, out):
        out = out.clone()
        out[:] = -10.0
        out[:, 1] = torch.where(kidney, 10.0, -10.0)                # organ query order: liver, kidney, spleen
        return out

    net.fundamental_head.levels[net.full].register_forward_hook(organ_logits)
    with torch.no_grad():
        y = net(torch.randn(1, 1, 48, 48, 48))
    zero_shot = y[0, 3]
    assert (zero_shot[r < 12] > -30).all(), "the lesion core is cut out of the zero-shot channel"
    growth = level_radius(10.0, (0.8, 0.8, 0.8), (1, 1, 1))[0]          # 13 voxels
    assert (zero_shot[r < 20 + growth - 1] > -30).all()
    assert (zero_shot[r > 20 + growth * 3 ** 0.5 + 1] == -30).all()     # box growth, nothing beyond it
    # the cavity filling itself
    filled = fill_cavities(kidney[None, None])[0, 0]
    assert filled[r < 12].all() and not filled[r >= 20].any()
