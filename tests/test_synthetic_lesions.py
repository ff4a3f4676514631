"""Stage 1's synthetic lesions: where they go, what they change, how they are labelled, which
settings are refused at trainer start, and which trainer uses which recipe."""
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from nnunetv2_zept.losses.stage_losses import stage1_loss
from nnunetv2_zept.roles import ClassRoles
from nnunetv2_zept.training.background_tissue import hu_from_normalised, normalised_from_hu
from nnunetv2_zept.training.healthy_organ_targets import healthy_organ_targets
from nnunetv2_zept.training.lesion_curriculum import CurriculumPainter, push_tissue
from nnunetv2_zept.trainers.common_settings import TrainerStop
from nnunetv2_zept.training.lesion_recipes import (HypodenseLesionRecipe, LesionCurriculum, LesionRecipeError,
                                                   check_recipe)
from nnunetv2_zept.training.synthetic_lesions import (LesionSynthesiser, add_synthetic_lesions, lesion_hosts,
                                                      lesions_active)

# channels: 0 liver, 1 spleen, 2 aorta (hosts nothing), 3 liver tumour (seen), 4 splenic cyst (zero-shot)
ROLES = ClassRoles(names=["liver", "spleen", "aorta", "liver tumour", "splenic cyst"], organs=[0, 1, 2],
                   tumours=[3, 4], hosts={3: [0], 4: [1]}, zero_shot=[4])
# nnU-Net's foreground intensity properties of the CT channel
PROPS = {"mean": 50.0, "std": 100.0, "percentile_00_5": -1000.0, "percentile_99_5": 1000.0}
SPACING = (6.0, 6.0, 6.0)
LIVER_HU, SPLEEN_HU = 60.0, 100.0
# the curriculum with one appearance at a time: sharp margins, no texture, no mass effect
PLAIN = LesionCurriculum(probability=1.0, max_lesions=1, texture_hu=(0.0, 0.0), heterogeneous_hu=(0.0, 0.0),
                         margins=(("sharp", 1.0),), lobulation=(0.0, 0.0), mass_effect_probability=0.0)


def _batch(b=4, shape=(24, 20, 16), scale=1):
    """CT at 100 HU in the spleen, 60 HU in the liver, 200 HU aorta, -100 HU elsewhere; full + /2 targets.
    `scale` multiplies every extent (a finer grid over the same anatomy)."""
    shape = tuple(s * scale for s in shape)
    t = torch.zeros((b, 5) + shape)
    k = scale
    t[:, 0, 2 * k:12 * k, 2 * k:18 * k, 2 * k:14 * k] = 1
    t[:, 1, 14 * k:22 * k, 4 * k:14 * k, 4 * k:12 * k] = 1
    t[:, 2, 12 * k:14 * k, 8 * k:10 * k, :] = 1
    t[:, 3, 4 * k:7 * k, 4 * k:7 * k, 4 * k:7 * k] = 1          # an annotated liver tumour (inside the liver region)
    hu = torch.full((b, 1) + shape, -100.0)
    hu[:, 0][t[:, 0] > 0] = LIVER_HU
    hu[:, 0][t[:, 1] > 0] = SPLEEN_HU
    hu[:, 0][t[:, 2] > 0] = 200.0
    hu[:, 0][t[:, 3] > 0] = 20.0
    data = normalised_from_hu(hu, PROPS)
    half = torch.nn.functional.interpolate(t, scale_factor=0.5, mode="nearest")
    return data, [t, half]


def _paste(recipe, seed, b=4, spacing=SPACING, batch=None):
    data, targets = batch if batch is not None else _batch(b)
    new_data, new_targets, pasted = add_synthetic_lesions(data, targets, ROLES, spacing, PROPS, recipe,
                                                          torch.Generator().manual_seed(seed))
    return data, targets, new_data, new_targets, pasted


def _lesions(data, targets, new_data, new_targets):
    """(organ channel, organ HU, lesion HU values, lesion mask) of every pasted lesion (one per sample and organ)."""
    out = []
    for i in range(data.shape[0]):
        for organ, marker in ((0, 3), (1, 4)):
            m = (new_targets[0][i, marker] > 0) & ~(targets[0][i, marker] > 0)
            if m.any():
                out.append((organ, float(hu_from_normalised(data[i, 0][m], PROPS).mean()),
                            hu_from_normalised(new_data[i, 0][m], PROPS), m))
    return out


def test_hosts_are_organs_with_any_tumour_type_seen_or_zero_shot():
    assert lesion_hosts(ROLES) == {0: 3, 1: 4}


@pytest.mark.parametrize("recipe", [replace(LesionCurriculum(probability=1.0), mass_effect_probability=0.0),
                                    HypodenseLesionRecipe(probability=1.0)], ids=["curriculum", "hypodense"])
def test_lesions_stay_in_healthy_host_tissue_and_are_marked_at_every_scale(recipe):
    data, targets, new_data, new_targets, pasted = _paste(recipe, seed=0)
    assert pasted.count >= 4
    changed = (new_data - data).abs()[:, 0] > 1e-6
    organs = (targets[0][:, 0] > 0) | (targets[0][:, 1] > 0)
    assert changed.any()
    assert not (changed & ~organs).any(), "a lesion changed voxels outside its host organs"
    assert not (changed & (targets[0][:, 2] > 0)).any(), "the aorta hosts no tumour type and gets no lesion"
    assert not (changed & (targets[0][:, 3] > 0)).any(), "annotated tumour voxels are left alone"
    for old, new in zip(targets, new_targets):
        marked_liver = (new[:, 3] > 0) & ~(old[:, 3] > 0)
        marked_spleen = new[:, 4] > 0
        assert marked_liver.any() or marked_spleen.any()
        assert not (marked_liver & ~(old[:, 0] > 0)).any() and not (marked_spleen & ~(old[:, 1] > 0)).any()
        assert torch.equal(new[:, :3], old[:, :3]), "organ region targets keep the MSD convention"
    # the inputs are not modified in place
    assert torch.equal(targets[0], _batch()[1][0]) and torch.equal(data, _batch()[0])


def test_marked_voxels_become_organ_negatives_in_stage1_targets():
    _, _, _, new_targets, _ = _paste(LesionCurriculum(probability=1.0), seed=1)
    healthy, _ = healthy_organ_targets(new_targets[0], ROLES, "negative")
    lesion = new_targets[0][:, 4] > 0
    assert lesion.any() and not (healthy[:, 1][lesion] > 0).any()


# ------------------------------------------------------------------------------- appearance
@pytest.mark.parametrize("spacing,scale", [((6.0, 6.0, 6.0), 1), ((0.8, 0.8, 0.8), 3)], ids=["6mm", "0.8mm"])
def test_each_kind_shifts_the_organ_as_intended(spacing, scale):
    batch = _batch(b=6, scale=scale)
    seen = set()
    for kind in ("hypo", "iso", "hyper", "calcified"):
        recipe = replace(PLAIN, kinds=((kind, 1.0),))
        lesions = _lesions(*_paste(recipe, seed=3, spacing=spacing, batch=batch)[:4])
        assert len(lesions) >= 4, kind
        for organ, organ_hu, hu, _ in lesions:
            shift = float(hu.median()) - organ_hu
            if kind == "hypo":
                # darker by 15-150 HU, never below fluid; the label's edge voxels carry half the shift or more
                assert -150.0 - 1e-3 <= shift <= -7.5 and float(hu.min()) >= recipe.fluid_hu - 1e-3
            elif kind == "iso":
                assert abs(shift) <= 15.0 + 1e-3
            elif kind == "hyper":
                assert 10.0 <= shift <= 100.0 + 1e-3
            else:
                # calcified foci: at least the calcification range's low end (inside this test's CT window)
                assert float(hu.max()) >= recipe.calcification_hu[0] - 1e-3
                assert float(hu.max()) <= recipe.calcification_hu[1] + 1e-3
            seen.add((kind, organ))
    assert {o for _, o in seen} == {0, 1}, "both host organs got lesions"


def test_rim_enhancing_lesions_have_a_darker_necrotic_core():
    batch = _batch(b=6, scale=3)          # 0.8 mm: lesions many voxels across
    recipe = replace(PLAIN, kinds=(("rim", 1.0),), diameter_mm=(8.0, 20.0))
    lesions = _lesions(*_paste(recipe, seed=4, spacing=(0.8, 0.8, 0.8), batch=batch)[:4])
    assert len(lesions) >= 4
    for organ, organ_hu, hu, mask in lesions:
        depth = torch.tensor(ndimage.distance_transform_edt(mask.numpy()))[mask]
        rim = hu[depth <= 1.5]                               # the outermost voxels of the label
        core = hu[depth >= 0.8 * float(depth.max())]
        assert float(rim.max()) >= organ_hu + recipe.rim_hu[0] - 1e-3, "the rim enhances"
        assert float(core.mean()) <= organ_hu + recipe.necrotic_core_hu[1] + 1e-3, "the core is necrotic"
        assert float(core.mean()) < float(rim.mean()) - 20.0


def test_lesions_in_an_aerated_organ_are_denser_than_it():
    data, targets = _batch(b=8)
    hu = hu_from_normalised(data, PROPS)
    hu[:, 0][targets[0][:, 1] > 0] = -850.0           # make the spleen channel an aerated organ
    batch = (normalised_from_hu(hu, PROPS), targets)
    for kind in ("hypo", "iso", "hyper", "rim"):
        recipe = replace(PLAIN, kinds=((kind, 1.0),))
        lung = [x for x in _lesions(*_paste(recipe, seed=5, batch=batch)[:4]) if x[0] == 1]
        assert lung, kind
        for _, organ_hu, lesion_hu, _ in lung:
            # partly (ground glass, fill >= 0.25) to fully (soft tissue or fluid) filled air spaces
            assert float(lesion_hu.median()) >= organ_hu + 0.5 * 0.25 * (recipe.fluid_hu - organ_hu)
            assert float(lesion_hu.max()) <= recipe.soft_tissue_hu + recipe.hyper_hu[1] + 1e-3


def test_texture_and_infiltrative_margins():
    data, targets = _batch(b=6, scale=2)
    sp = (3.0, 3.0, 3.0)
    smooth = replace(PLAIN, kinds=(("hypo", 1.0),), diameter_mm=(15.0, 25.0))
    textured = replace(smooth, texture_hu=(30.0, 30.0), heterogeneous_hu=(30.0, 30.0))
    std = [float(h.std()) for kind in (smooth, textured)
           for _, _, h, _ in _lesions(*_paste(kind, seed=6, spacing=sp, batch=(data, targets))[:4])]
    # the same lesions (same seed) with and without texture
    plain_std, textured_std = np.array(std[:len(std) // 2]), np.array(std[len(std) // 2:])
    assert (textured_std > plain_std).all() and textured_std.mean() > plain_std.mean() + 5.0
    # infiltrative margins: a wide band of changed voxels outside the label, sharp ones almost none
    band = {}
    for margin in ("sharp", "infiltrative"):
        recipe = replace(smooth, margins=((margin, 1.0),))
        d, t, nd, nt, _ = _paste(recipe, seed=7, spacing=sp, batch=(data, targets))
        label = (nt[0][:, 3:] > t[0][:, 3:]).any(1)
        band[margin] = int((((nd - d).abs()[:, 0] > 1e-3) & ~label).sum()) / max(int(label.sum()), 1)
    assert band["infiltrative"] > 2 * band["sharp"] + 0.05


# ------------------------------------------------------------------------------- size
@pytest.mark.parametrize("spacing", [(0.8, 0.8, 0.8), (6.0, 6.0, 6.0), (0.8, 0.8, 5.0)], ids=["0.8mm", "6mm", "aniso"])
def test_sizes_span_the_grid_minimum_to_the_organ_cap(spacing):
    recipe = LesionCurriculum()
    painter = CurriculumPainter(recipe, spacing, PROPS)
    vox = float(np.prod(spacing))
    organ_voxels = int(4.0e5 / vox)                    # a 400 ml organ
    g = torch.Generator().manual_seed(0)
    vols, smallest = [], []
    for _ in range(400):
        axes = painter.lesion_axes_mm("hypo", organ_voxels, g)
        assert all(a >= recipe.min_voxels_across * sp / 2 - 1e-6 for a, sp in zip(axes, spacing)), "below the grid"
        vol = 4.0 / 3.0 * np.pi * np.prod(axes)
        assert vol <= recipe.max_organ_fraction * organ_voxels * vox * 1.001, "above the organ cap"
        vols.append(vol)
        smallest.append(min(a / sp for a, sp in zip(axes, spacing)))
    grid_min_vol = np.pi / 6.0 * np.prod([max(recipe.diameter_mm[0], recipe.min_voxels_across * sp) for sp in spacing])
    assert min(vols) < 3.0 * grid_min_vol, "the smallest lesions are near what the grid can show"
    assert max(vols) > 0.1 * 4.0e5 * recipe.max_organ_fraction or max(vols) > 0.3 * np.pi / 6 * 80.0 ** 3
    # an organ too small for the grid's smallest lesion gets none
    assert painter.lesion_axes_mm("hypo", max(painter.min_host_voxels - 1, 1), g) is None


@pytest.mark.parametrize("spacing,scale", [((6.0, 6.0, 6.0), 1), ((0.8, 0.8, 0.8), 3)], ids=["6mm", "0.8mm"])
def test_pasted_lesions_respect_the_organ_cap(spacing, scale):
    recipe = replace(LesionCurriculum(probability=1.0, max_lesions=1, mass_effect_probability=0.0),
                     margins=(("infiltrative", 1.0),), max_organ_fraction=0.2)
    data, targets = _batch(b=8, scale=scale)
    lesions = _lesions(*_paste(recipe, seed=8, spacing=spacing, batch=(data, targets))[:4])
    healthy = {0: int(((targets[0][0, 0] > 0) & ~(targets[0][0, 3] > 0)).sum()), 1: int((targets[0][0, 1] > 0).sum())}
    assert len(lesions) >= 6
    for organ, _, _, mask in lesions:
        assert int(mask.sum()) <= recipe.max_organ_fraction * healthy[organ] + 1


def test_tiny_organ_gets_no_lesion():
    data, targets = _batch(b=2)
    targets = [t.clone() for t in targets]
    for t in targets:
        t[:, 1] = 0
        t[:, 1, 0, 0, 0] = 1                   # a one-voxel spleen (and its /2 level)
    _, _, new_data, new_targets, pasted = _paste(replace(PLAIN, kinds=(("hypo", 1.0),)), 9, batch=(data, targets))
    assert not (new_targets[0][:, 4] > 0).any()


# ------------------------------------------------------------------------------- mass effect
def test_mass_effect_moves_image_and_labels_together():
    vol = torch.zeros(2, 40, 40, 40)
    zz = torch.arange(40).float()
    vol[0] = (zz[:, None, None] % 4 < 2).float() * 100.0          # stripes along z ...
    vol[1] = (zz[:, None, None] % 4 < 2).float()                   # ... and the same stripes as a label
    pushed = vol.clone()
    push_tissue(pushed[:1], (20, 20, 20), (1.0, 1.0, 1.0), radius_mm=6.0, push_mm=2.0, mode="bilinear")
    push_tissue(pushed[1:], (20, 20, 20), (1.0, 1.0, 1.0), radius_mm=6.0, push_mm=2.0, mode="nearest")
    assert torch.allclose(pushed[:, :, :, :2], vol[:, :, :, :2], atol=1e-3), "far tissue does not move"
    near = pushed[:, 10:30, 16:24, 16:24]
    assert not torch.equal(near, vol[:, 10:30, 16:24, 16:24]), "tissue next to the lesion moves"
    # the label follows the image: where the image is clearly one stripe, so is the label
    img, lab = pushed[0], pushed[1]
    assert torch.equal(lab[img > 90] > 0.5, torch.ones_like(lab[img > 90], dtype=torch.bool))
    assert not (lab[img < 10] > 0.5).any()
    # outward: along z, the stripe edges next to the lesion move away from its centre
    col0, col1 = vol[1, :, 20, 20], pushed[1, :, 20, 20]
    edges0 = torch.nonzero(col0[1:] != col0[:-1]).flatten()
    edges1 = torch.nonzero(col1[1:] != col1[:-1]).flatten()
    assert edges1[edges1 > 26].min() >= edges0[edges0 > 26].min()


def test_curriculum_with_mass_effect_keeps_labels_consistent_at_every_scale():
    recipe = replace(LesionCurriculum(probability=1.0), mass_effect_probability=1.0, mass_effect_push=(0.3, 0.35))
    data, targets, new_data, new_targets, pasted = _paste(recipe, seed=10, batch=_batch(b=4, scale=2),
                                                          spacing=(3.0, 3.0, 3.0))
    assert pasted.count >= 4
    for t in new_targets:
        assert set(torch.unique(t).tolist()) <= {0.0, 1.0}
        # every lesion mark lies in its host organ, after the push
        assert not ((t[:, 3] > 0) & ~(t[:, 0] > 0)).any() and not ((t[:, 4] > 0) & ~(t[:, 1] > 0)).any()
    # the organs keep roughly their size (pushed, not created or erased)
    for c in (0, 1):
        before, after = float(targets[0][:, c].sum()), float(new_targets[0][:, c].sum())
        assert 0.85 * before <= after <= 1.2 * before


# ------------------------------------------------------------------------------- labels
def test_host_only_labels_teach_the_host_and_leave_other_channels_alone():
    recipe = replace(LesionCurriculum(probability=1.0), mass_effect_probability=0.0)
    data, targets, new_data, new_targets, pasted = _paste(recipe, seed=11)
    assert pasted.organ_weights is not None and len(pasted.organ_weights) == len(targets)
    for t_old, t_new, w in zip(targets, new_targets, pasted.organ_weights):
        liver_lesion = (t_new[:, 3] > 0) & ~(t_old[:, 3] > 0)
        spleen_lesion = t_new[:, 4] > 0
        assert liver_lesion.any() and spleen_lesion.any()
        # host: weight 1 and (after healthy_organ_targets) target 0, i.e. "not healthy liver"
        healthy, _ = healthy_organ_targets(t_new, ROLES, "negative")
        assert (w[:, 0][liver_lesion] == 1).all() and (healthy[:, 0][liver_lesion] == 0).all()
        assert (w[:, 1][spleen_lesion] == 1).all() and (healthy[:, 1][spleen_lesion] == 0).all()
        # the other organs (spleen, aorta for a liver lesion) learn nothing there
        assert (w[:, 1][liver_lesion] == 0).all() and (w[:, 2][liver_lesion] == 0).all()
        assert (w[:, 0][spleen_lesion] == 0).all()
        # healthy tissue away from lesions keeps full weight
        assert (w[:, :3][:, :, ~(liver_lesion | spleen_lesion).any(0)] >= 0).all() and w.mean() > 0.9
    lesions = (new_targets[0][:, 3:] > targets[0][:, 3:]).any(1)
    assert (pasted.tissue_weight[lesions] == 0).all() and pasted.tissue_weight.mean() > 0.9


def test_other_organ_logits_get_no_gradient_from_a_pasted_lesion_unless_all_negative():
    data, targets = _batch(b=2)
    grads = {}
    for labels in ("host_only", "all_negative"):
        recipe = replace(PLAIN, kinds=(("hyper", 1.0),), lesion_labels=labels)
        _, _, nd, nt, pasted = _paste(recipe, seed=12, b=2, batch=(data, targets))
        logits = [torch.zeros(t.shape, requires_grad=True) for t in nt]
        bg = torch.zeros((2, 4) + tuple(nt[0].shape[2:]), requires_grad=True)
        loss = stage1_loss(logits, nt, ["a", "b"], nd, {"background_logits": bg}, ROLES,
                           ["air", "fat", "soft_tissue", "bone"], PROPS,
                           organ_weights=pasted.organ_weights, tissue_weight=pasted.tissue_weight)
        loss.backward()
        liver_lesion = (nt[0][:, 3] > 0) & ~(targets[0][:, 3] > 0)
        assert liver_lesion.any()
        grads[labels] = (logits[0].grad[:, 0][liver_lesion].abs().sum(), logits[0].grad[:, 1][liver_lesion].abs().sum(),
                         bg.grad.abs().sum(1)[liver_lesion].sum())
    host, other, tissue = grads["host_only"]
    assert host > 0 and other == 0 and tissue == 0
    host, other, tissue = grads["all_negative"]
    assert host > 0 and other > 0 and tissue > 0
    assert HypodenseLesionRecipe().lesion_labels == "all_negative"


# ------------------------------------------------------------------------------- switches and seeds
def test_probability_zero_and_no_host_change_nothing():
    data, targets = _batch()
    d, t, pasted = add_synthetic_lesions(data, targets, ROLES, SPACING, PROPS, LesionCurriculum(probability=0.0))
    assert pasted.count == 0 and d is data and t is targets and pasted.organ_weights is None
    no_hosts = ClassRoles(names=["liver", "liver tumour"], organs=[0], tumours=[1], hosts={1: []}, zero_shot=[])
    d, t, pasted = add_synthetic_lesions(data, [x[:, [0, 3]] for x in targets], no_hosts, SPACING, PROPS,
                                         LesionCurriculum(probability=1.0))
    assert pasted.count == 0


def test_same_generator_seed_same_lesions():
    for recipe in (LesionCurriculum(), HypodenseLesionRecipe()):
        data, targets = _batch()
        a = add_synthetic_lesions(data, targets, ROLES, SPACING, PROPS, recipe, torch.Generator().manual_seed(5))
        b = add_synthetic_lesions(data, targets, ROLES, SPACING, PROPS, recipe, torch.Generator().manual_seed(5))
        assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


def test_warm_up_keeps_the_first_epochs_free_of_lesions():
    recipe = LesionCurriculum(start_fraction=0.25)
    assert [lesions_active(recipe, e, 20) for e in (0, 4, 5, 19)] == [False, False, True, True]
    assert not lesions_active(None, 10, 20) and not lesions_active(LesionCurriculum(probability=0.0), 10, 20)


def test_hypodense_recipe_is_darker_but_not_below_water_and_capped():
    recipe = HypodenseLesionRecipe(probability=1.0, max_lesions=1, texture_hu=0.0)
    data, targets, nd, nt, _ = _paste(recipe, seed=2, b=8)
    lesions = _lesions(data, targets, nd, nt)
    assert len(lesions) >= 6
    for organ, organ_hu, hu, mask in lesions:
        core = float(hu.min())
        assert -10.0 - 1e-3 <= core <= organ_hu - 25.0 + 1e-3 or core == pytest.approx(-10.0, abs=1e-3)
        assert float(hu.max()) < organ_hu + 1e-3, "never brighter than the organ"


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("change,setting,valid", [
    ({"probability": 1.5}, "probability", "[0, 1]"),
    ({"mass_effect_probability": -0.1}, "mass_effect_probability", "[0, 1]"),
    ({"calcification_hu": (300.0, 4000.0)}, "calcification_hu", "CT window [-1024, 3071]"),
    ({"fluid_hu": -1500.0}, "fluid_hu", "CT window [-1024, 3071]"),
    ({"hyper_hu": (20.0, 5000.0)}, "hyper_hu", "+-4095"),
    ({"diameter_mm": (30.0, 10.0)}, "diameter_mm", "ordered pair"),
    ({"diameter_mm": (0.0, 10.0)}, "diameter_mm", "above 0"),
    ({"start_fraction": 1.0}, "start_fraction", "[0, 1)"),
    ({"max_lesions": 0}, "max_lesions", ">= 1"),
    ({"kinds": (("glowing", 1.0),)}, "kinds", "names from"),
    ({"lesion_labels": "some"}, "lesion_labels", "host_only"),
    ({"infiltrative_irregularity": (0.2, 1.0)}, "infiltrative_irregularity", "[0, 1)"),
])
def test_unrealisable_settings_name_the_setting_and_its_range(change, setting, valid):
    with pytest.raises(LesionRecipeError) as e:
        check_recipe(replace(LesionCurriculum(), **change), SPACING)
    msg = str(e.value)
    assert f"LesionCurriculum.{setting} = " in msg and valid in msg and "\n" not in msg


def test_sizes_checked_against_the_grid_and_the_host_organs():
    # upper end below what a 6 mm grid can show (2.5 voxels = 15 mm)
    with pytest.raises(LesionRecipeError, match=r"diameter_mm = \(3\.0, 10\.0\).*at least 15\.0 mm"):
        check_recipe(LesionCurriculum(diameter_mm=(3.0, 10.0)), SPACING)
    check_recipe(LesionCurriculum(diameter_mm=(3.0, 10.0)), (0.8, 0.8, 0.8))
    # smallest lesion larger than half of the largest host organ (200 voxels of 1.5 mm = 675 mm3)
    with pytest.raises(LesionRecipeError, match=r"diameter_mm = \(20\.0, 80\.0\).*largest host organ"):
        check_recipe(LesionCurriculum(diameter_mm=(20.0, 80.0)), (1.5, 1.5, 1.5), largest_host_voxels=200)
    check_recipe(LesionCurriculum(diameter_mm=(5.0, 80.0)), (1.5, 1.5, 1.5), largest_host_voxels=200)
    with pytest.raises(LesionRecipeError, match=r"HypodenseLesionRecipe\.radius_mm"):
        check_recipe(HypodenseLesionRecipe(radius_mm=(10.0, 16.0)), (1.5, 1.5, 1.5), largest_host_voxels=200)
    with pytest.raises(LesionRecipeError, match=r"HypodenseLesionRecipe\.probability = 2"):
        LesionSynthesiser(HypodenseLesionRecipe(probability=2), ROLES, SPACING, PROPS)


# ------------------------------------------------------------------------------- trainers
def _trainer(cls, tiny_planned, tmp_path, monkeypatch):
    env = tiny_planned["env"]
    for k in ("nnUNet_raw", "nnUNet_preprocessed"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    pre = os.path.join(env["nnUNet_preprocessed"], "Dataset501_ZePTTiny")
    with open(os.path.join(pre, "nnUNetPlans.json")) as f:
        plans = json.load(f)
    with open(os.path.join(pre, "dataset.json")) as f:
        dataset_json = json.load(f)
    plans["continue_training"] = False      # what nnU-Net's run_training sets before it builds a trainer
    return cls(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))


def test_trainers_use_the_curriculum_by_default_and_the_variant_the_earlier_recipe(tiny_planned, tmp_path, monkeypatch):
    from nnunetv2_zept.trainers import (nnUNetTrainerZePTStage1, nnUNetTrainerZePTStage1_hypodenseLesions,
                                        nnUNetTrainerZePTStage1_noSyntheticLesions)
    from nnunetv2_zept.training.lesion_hypodense import HypodensePainter

    default = _trainer(nnUNetTrainerZePTStage1, tiny_planned, tmp_path, monkeypatch)
    assert isinstance(default.lesion_synthesiser.painter, CurriculumPainter)
    variant = _trainer(nnUNetTrainerZePTStage1_hypodenseLesions, tiny_planned, tmp_path, monkeypatch)
    assert isinstance(variant.lesion_synthesiser.painter, HypodensePainter)
    assert variant.lesion_synthesiser.recipe == HypodenseLesionRecipe()
    off = _trainer(nnUNetTrainerZePTStage1_noSyntheticLesions, tiny_planned, tmp_path, monkeypatch)
    assert off.lesion_synthesiser is None
    # a batch through the trainer's own hook: lesions pasted, their weights handed to the next loss
    default.lesion_synthesiser.recipe = replace(default.lesion_synthesiser.recipe, probability=1.0)
    data, targets = _tiny_batch(default)
    new_data, new_targets = default.training_batch(data, targets)
    assert not torch.equal(new_data, data) and default._pasted_lesions.count >= 1
    assert default._pasted_lesions.organ_weights is not None


def _tiny_batch(trainer):
    """A batch of the tiny dataset's shapes: liver, two kidneys in a fat body (one-patch cases)."""
    from nnunetv2_zept.experiments import tiny_phantoms as tiny_dataset
    shape = tuple(trainer.configuration_manager.patch_size)
    img, seg = tiny_dataset.make_case(np.random.RandomState(0), shape=shape)
    props = trainer.plans_manager.foreground_intensity_properties_per_channel["0"]
    data = normalised_from_hu(torch.tensor(img)[None, None].repeat(2, 1, 1, 1, 1), props)
    regions = [[1, 4], [2], [3, 5], [4], [5]]
    t = torch.tensor(np.stack([np.isin(seg, r) for r in regions]))[None].float().repeat(2, 1, 1, 1, 1)
    return data, [t, torch.nn.functional.interpolate(t, scale_factor=0.5, mode="nearest")]


def test_trainer_start_refuses_a_recipe_its_host_organs_cannot_hold(tiny_planned, tmp_path, monkeypatch):
    from nnunetv2_zept.trainers import nnUNetTrainerZePTStage1

    class TooLarge(nnUNetTrainerZePTStage1):
        # the tiny dataset's largest host (the liver) has about 1,600 voxels of 1.5 mm (5.4 ml)
        SYNTHETIC_LESIONS = LesionCurriculum(diameter_mm=(30.0, 80.0))

    class OutsideWindow(nnUNetTrainerZePTStage1):
        SYNTHETIC_LESIONS = LesionCurriculum(hypo_hu=(-150.0, -15.0), soft_tissue_hu=4000.0)

    # a TrainerStop: nnUNetv2_train ends with this one line instead of a traceback
    with pytest.raises(TrainerStop, match=r"LesionCurriculum\.diameter_mm = \(30\.0, 80\.0\).*largest host"):
        _trainer(TooLarge, tiny_planned, tmp_path, monkeypatch)
    with pytest.raises(TrainerStop, match=r"soft_tissue_hu = 4000\.0.*CT window"):
        _trainer(OutsideWindow, tiny_planned, tmp_path, monkeypatch)
