"""DSC and NSD against hand-computed values (conventions, single voxels, anisotropic spacing)."""
import math

import numpy as np
import pytest

from nnunetv2_zept.evaluation.mask_ops import dilate_mm, fill_holes
from nnunetv2_zept.evaluation.overlap import dice, normalised_surface_distance as nsd
from nnunetv2_zept.evaluation.tolerances import default_tolerance, parse_tolerance_args, resolve_tolerances


def box(shape, z, y, x):
    m = np.zeros(shape, dtype=bool)
    m[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return m


SHAPE = (8, 8, 8)
ANISO = (3.0, 1.0, 1.0)        # z, y, x mm


def test_perfect_prediction():
    r = box(SHAPE, (2, 5), (2, 6), (2, 6))
    assert dice(r, r.copy()) == 1.0
    assert nsd(r, r.copy(), ANISO, 1.0) == 1.0


def test_empty_prediction_and_empty_reference_conventions():
    r = box(SHAPE, (2, 5), (2, 6), (2, 6))
    empty = np.zeros(SHAPE, dtype=bool)
    assert dice(r, empty) == 0.0 and nsd(r, empty, ANISO, 2.0) == 0.0          # missed everything
    assert dice(empty, r) == 0.0 and nsd(empty, r, ANISO, 2.0) == 0.0          # false positive only
    assert math.isnan(dice(empty, empty)) and math.isnan(nsd(empty, empty, ANISO, 2.0))   # nothing to find


def test_partial_overlap_dice_by_hand():
    r = box(SHAPE, (2, 5), (2, 6), (2, 6))      # 48 voxels
    p = box(SHAPE, (3, 6), (2, 6), (2, 6))      # 48 voxels, 32 shared
    assert dice(r, p) == pytest.approx(64 / 96)


def test_ignore_voxels_count_for_neither_mask():
    r = box(SHAPE, (2, 5), (2, 6), (2, 6))
    p = box(SHAPE, (2, 6), (2, 6), (2, 6))      # extra slice z=5
    ignore = box(SHAPE, (5, 6), (0, 8), (0, 8))
    assert dice(r, p) < 1.0
    assert dice(r, p, ignore=ignore) == 1.0


def test_single_voxel_lesion():
    r = box(SHAPE, (4, 5), (4, 5), (4, 5))
    assert dice(r, r.copy()) == 1.0 and nsd(r, r.copy(), ANISO, 0.5) == 1.0
    px = box(SHAPE, (4, 5), (4, 5), (5, 6))      # 1 mm away along x
    pz = box(SHAPE, (5, 6), (4, 5), (4, 5))      # 3 mm away along z
    assert dice(r, px) == 0.0
    assert nsd(r, px, ANISO, 2.0) == 1.0
    assert nsd(r, pz, ANISO, 2.0) == 0.0
    assert nsd(r, pz, ANISO, 3.0) == 1.0         # a distance equal to the tolerance is within it


def test_anisotropic_nsd_tolerance_met_along_x_not_along_z():
    """Box 3x4x4 voxels at (3, 1, 1) mm shifted by one voxel.

    Along x (1 mm) every surface voxel is within 1 mm of the other surface -> NSD 1.
    Along z (3 mm): each box has 44 border voxels; the 16 on the face that the shift exposes
    (bottom face of the reference, top face of the prediction) are 3 mm from the other surface,
    all others lie on or 1 mm in-plane from it -> NSD = (28 + 28) / 88 at 2 mm, 1 at 3 mm.
    """
    r = box(SHAPE, (2, 5), (2, 6), (2, 6))
    px = box(SHAPE, (2, 5), (2, 6), (3, 7))
    pz = box(SHAPE, (3, 6), (2, 6), (2, 6))
    assert nsd(r, px, ANISO, 2.0) == 1.0
    assert nsd(r, pz, ANISO, 2.0) == pytest.approx(56 / 88)
    assert nsd(r, pz, ANISO, 3.0) == 1.0
    # isotropic 1 mm spacing: the same z shift is within 2 mm
    assert nsd(r, pz, (1.0, 1.0, 1.0), 2.0) == 1.0


def test_nsd_is_exact_when_masks_are_far_apart_in_a_big_volume():
    shape = (20, 60, 60)
    r = box(shape, (2, 4), (2, 4), (2, 4))
    p = box(shape, (2, 4), (2, 4), (50, 52))    # far away: nothing within tolerance
    assert nsd(r, p, (1.0, 1.0, 1.0), 5.0) == 0.0


def test_fill_holes_in_the_bounding_box_equals_scipys_fill_of_the_whole_array():
    """fill_holes labels only inside the mask's bounding box; random blobs with cavities, away from the
    border and touching it, give exactly what scipy's binary_fill_holes gives on the whole array."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for offset in ((5, 7, 3), (0, 4, 0), (9, 0, 11)):
        m = np.zeros((24, 20, 26), dtype=bool)
        blob = ndimage.binary_dilation(rng.random((12, 11, 13)) > 0.8, iterations=1)
        z, y, x = offset
        m[z:z + 12, y:y + 11, x:x + 13] = blob
        filled = fill_holes(m)
        assert filled.sum() > m.sum() and np.array_equal(filled, ndimage.binary_fill_holes(m)), offset
    assert not fill_holes(np.zeros((4, 4, 4), dtype=bool)).any()


def test_dilate_mm_uses_physical_distances():
    m = box((9, 9, 9), (4, 5), (4, 5), (4, 5))
    d = dilate_mm(m, (3.0, 1.0, 1.0), 2.0)
    assert d[4, 4, 6] and d[4, 6, 4] and not d[4, 4, 7]      # 2 mm in-plane
    assert not d[5, 4, 4]                                   # 3 mm along z
    assert dilate_mm(m, (3.0, 1.0, 1.0), 3.0)[5, 4, 4]


def test_fill_holes_fills_cavities_only():
    shell = box((7, 7, 7), (1, 6), (1, 6), (1, 6)) & ~box((7, 7, 7), (2, 5), (2, 5), (2, 5))
    filled = fill_holes(shell)
    assert filled[3, 3, 3] and filled.sum() == 125
    cup = shell.copy()
    cup[5, 2:5, 2:5] = False                                # opened at the top: not a cavity
    assert not fill_holes(cup)[3, 3, 3]


def test_tolerance_defaults_and_overrides():
    assert default_tolerance("liver") == 7.0 and default_tolerance("liver_tumour") == 7.0
    assert default_tolerance("hepatic_vessel") == 3.0 and default_tolerance("Hepatic Vessel Tumour") == 3.0
    assert default_tolerance("pancreas_tumour") == 5.0 and default_tolerance("lung_nodule") == 2.0
    assert default_tolerance("kidney_cyst") == 2.0 and default_tolerance("kidney_cyst", 1.5) == 1.5
    tol = resolve_tolerances(["liver", "kidney_tumour"], {"kidney_tumour": 1.0})
    assert tol == {"liver": 7.0, "kidney_tumour": 1.0}
    with pytest.raises(ValueError, match="unknown class"):
        resolve_tolerances(["liver"], {"livr": 3})
    assert parse_tolerance_args(["liver=7", "a_b=2.5"]) == {"liver": 7.0, "a_b": 2.5}
    with pytest.raises(ValueError, match="CLASS=MM"):
        parse_tolerance_args(["liver:7"])


@pytest.mark.parametrize("radius", [0.9, 2.0, 4.5])
def test_slabwise_distance_threshold_equals_one_full_transform(radius):
    from scipy import ndimage

    from nnunetv2_zept.evaluation.mask_ops import within_mm

    rng = np.random.default_rng(7)
    sources = rng.random((23, 17, 19)) < 0.01
    spacing = (1.7, 0.8, 1.1)
    full = ndimage.distance_transform_edt(~sources, sampling=spacing) <= radius + 1e-6
    for slab in (17 * 19, 3 * 17 * 19, 10 ** 6):   # 1 slice, 3 slices, everything at once
        assert np.array_equal(within_mm(sources, spacing, radius, slab_voxels=slab), full)
    assert not within_mm(np.zeros((4, 4, 4), bool), spacing, radius).any()


def test_body_mask_from_ct_keeps_lungs_and_drops_table_and_air():
    from nnunetv2_zept.evaluation.mask_ops import body_mask_from_ct

    img = np.full((10, 40, 40), -1000, np.int16)
    yy, xx = np.mgrid[:40, :40]
    body2d = (yy - 20) ** 2 / 15 ** 2 + (xx - 20) ** 2 / 12 ** 2 <= 1
    img[1:9][:, body2d] = 40
    img[3:7, 15:22, 14:19] = -850                 # lung inside the body
    img[:, 37:39, 5:35] = 200                     # table, not connected to the body
    m = body_mask_from_ct(img)
    assert m.sum() == 8 * body2d.sum()
    assert m[5, 18, 16] and not m[5, 38, 10] and not m[0].any()
