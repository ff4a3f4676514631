"""Stage 1's generic synthetic lesions: where they go, what they change, how they are marked."""
import pytest
import torch

from nnunetv2_zept.roles import ClassRoles
from nnunetv2_zept.training.healthy_organ_targets import healthy_organ_targets
from nnunetv2_zept.training.background_tissue import hu_from_normalised, normalised_from_hu
from nnunetv2_zept.training.synthetic_lesions import LesionRecipe, add_synthetic_lesions, lesion_hosts, lesion_shape

# channels: 0 liver, 1 spleen, 2 aorta (hosts nothing), 3 liver tumour (seen), 4 splenic cyst (zero-shot)
ROLES = ClassRoles(names=["liver", "spleen", "aorta", "liver tumour", "splenic cyst"], organs=[0, 1, 2],
                   tumours=[3, 4], hosts={3: [0], 4: [1]}, zero_shot=[4])
# nnU-Net's foreground intensity properties of the CT channel
PROPS = {"mean": 50.0, "std": 100.0, "percentile_00_5": -1000.0, "percentile_99_5": 1000.0}
SPACING = (6.0, 6.0, 6.0)


def _batch(b=4, shape=(24, 20, 16)):
    """CT at 100 HU in the spleen, 60 HU in the liver, 200 HU aorta, -100 HU elsewhere; full + /2 targets."""
    t = torch.zeros((b, 5) + shape)
    t[:, 0, 2:12, 2:18, 2:14] = 1
    t[:, 1, 14:22, 4:14, 4:12] = 1
    t[:, 2, 12:14, 8:10, :] = 1
    t[:, 3, 4:7, 4:7, 4:7] = 1          # an annotated liver tumour (inside the liver region)
    hu = torch.full((b, 1) + shape, -100.0)
    hu[:, 0][t[:, 0] > 0] = 60.0
    hu[:, 0][t[:, 1] > 0] = 100.0
    hu[:, 0][t[:, 2] > 0] = 200.0
    hu[:, 0][t[:, 3] > 0] = 20.0
    data = normalised_from_hu(hu, PROPS)
    half = torch.nn.functional.interpolate(t, scale_factor=0.5, mode="nearest")
    return data, [t, half]


def test_hosts_are_organs_with_any_tumour_type_seen_or_zero_shot():
    assert lesion_hosts(ROLES) == {0: 3, 1: 4}


def test_lesions_stay_in_healthy_host_tissue_and_are_marked_at_every_scale():
    data, targets = _batch()
    g = torch.Generator().manual_seed(0)
    new_data, new_targets, n = add_synthetic_lesions(data, targets, ROLES, SPACING, PROPS,
                                                     LesionRecipe(probability=1.0), g)
    assert n >= 4
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
    data, targets = _batch()
    _, new_targets, _ = add_synthetic_lesions(data, targets, ROLES, SPACING, PROPS, LesionRecipe(probability=1.0),
                                              torch.Generator().manual_seed(1))
    healthy, _ = healthy_organ_targets(new_targets[0], ROLES, "negative")
    lesion = new_targets[0][:, 4] > 0
    assert lesion.any() and not (healthy[:, 1][lesion] > 0).any()


def _lesion_cores(data, targets, recipe, seed, b=8):
    """(organ HU, lesion core HU, lesion voxels, organ voxels) of every pasted lesion of 4+ voxels."""
    new_data, new_targets, _ = add_synthetic_lesions(data, targets, ROLES, SPACING, PROPS, recipe,
                                                     torch.Generator().manual_seed(seed))
    out = []
    for i in range(b):
        for organ, marker in ((0, 3), (1, 4)):
            m = (new_targets[0][i, marker] > 0) & ~(targets[0][i, marker] > 0)
            if int(m.sum()) >= 4:        # a lesion of a voxel or two is all rim (partial volume)
                old_hu, new_hu = hu_from_normalised(data[i, 0][m], PROPS), hu_from_normalised(new_data[i, 0][m], PROPS)
                # at the lesion's core (soft weight 1, no texture) the voxel takes the drawn lesion HU
                core = (new_hu - old_hu).abs().argmax()
                out.append((float(old_hu[core]), float(new_hu[core]), int(m.sum()), int((targets[0][i, organ] > 0).sum())))
    return out


def test_lesions_in_parenchyma_are_darker_but_not_below_water_and_capped_in_size():
    data, targets = _batch(b=8)
    recipe = LesionRecipe(probability=1.0, max_lesions=1, texture_hu=0.0)
    cores = _lesion_cores(data, targets, recipe, seed=2)
    assert len(cores) >= 6
    for organ_hu, lesion_hu, n_lesion, n_organ in cores:
        assert -10.0 - 1e-3 <= lesion_hu <= organ_hu - 25.0 + 1e-3 or lesion_hu == pytest.approx(-10.0, abs=1e-3)
        assert lesion_hu < organ_hu - 1.0
        assert n_lesion <= 0.5 * n_organ


def test_lesions_in_an_aerated_organ_are_fluid_or_soft_tissue():
    data, targets = _batch(b=8)
    hu = hu_from_normalised(data, PROPS)
    hu[:, 0][targets[0][:, 1] > 0] = -850.0           # make the spleen channel an aerated organ
    cores = _lesion_cores(normalised_from_hu(hu, PROPS), targets, LesionRecipe(probability=1.0, texture_hu=0.0), seed=3)
    lung = [c for c in cores if c[0] < -800]
    assert lung and all(-10.0 - 1e-3 <= c[1] <= 80.0 + 1e-3 for c in lung)


def test_probability_zero_and_no_host_change_nothing():
    data, targets = _batch()
    d, t, n = add_synthetic_lesions(data, targets, ROLES, SPACING, PROPS, LesionRecipe(probability=0.0))
    assert n == 0 and d is data and t is targets
    no_hosts = ClassRoles(names=["liver", "liver tumour"], organs=[0], tumours=[1], hosts={1: []}, zero_shot=[])
    d, t, n = add_synthetic_lesions(data[:, :, :], [x[:, [0, 3]] for x in targets], no_hosts, SPACING, PROPS,
                                    LesionRecipe(probability=1.0))
    assert n == 0


def test_tiny_organ_gets_no_lesion():
    organ = torch.zeros(10, 10, 10, dtype=torch.bool)
    organ[4:6, 4:6, 4:6] = True
    assert lesion_shape(organ, SPACING, LesionRecipe()) is None


def test_same_generator_seed_same_lesions():
    data, targets = _batch()
    a = add_synthetic_lesions(data, targets, ROLES, SPACING, PROPS, LesionRecipe(), torch.Generator().manual_seed(5))
    b = add_synthetic_lesions(data, targets, ROLES, SPACING, PROPS, LesionRecipe(), torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


def test_warm_up_keeps_the_first_epochs_free_of_lesions():
    from nnunetv2_zept.training.synthetic_lesions import lesions_active
    recipe = LesionRecipe(start_fraction=0.25)
    assert [lesions_active(recipe, e, 20) for e in (0, 4, 5, 19)] == [False, False, True, True]
    assert not lesions_active(None, 10, 20) and not lesions_active(LesionRecipe(probability=0.0), 10, 20)
    with pytest.raises(ValueError, match="start_fraction"):
        LesionRecipe(start_fraction=1.0)
