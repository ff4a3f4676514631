"""Tumour-presence score and lesion extraction: volume filter, host region, boundary band, geometry."""
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_zept.tumour_score import (ImageGeometry, TumourScoreSettings, extract_lesions,
                                        host_mask_from_probabilities, host_region, tumour_presence_score)

SHAPE = (40, 40, 40)
ISO = (1.0, 1.0, 1.0)
BG = 0.05
RES = TumourScoreSettings().level_resolution / 4   # the score is bisected on its logit; dp <= dlogit / 4


def organ():
    """A 24^3 mm cube host organ at 1 mm spacing (voxels 8..31)."""
    m = np.zeros(SHAPE, dtype=bool)
    m[8:32, 8:32, 8:32] = True
    return m


def background():
    return np.full(SHAPE, BG, dtype=np.float32)


def test_tumour_free_case_scores_the_background_level():
    s = tumour_presence_score(background(), organ(), ISO)
    assert BG - RES <= s <= BG
    assert extract_lesions(background(), {"liver": organ()}, ISO) == []


def test_single_hot_voxel_does_not_count_but_a_lesion_does():
    p = background()
    p[20, 20, 20] = 0.99                          # 1 mm^3 < 50 mm^3
    assert tumour_presence_score(p, organ(), ISO) <= BG
    p[14:18, 14:18, 14:18] = 0.9                  # 64 mm^3 lesion deep inside the organ
    s = tumour_presence_score(p, organ(), ISO)
    assert 0.9 - RES <= s <= 0.9
    lesions = extract_lesions(p, {"liver": organ()}, ISO)
    assert len(lesions) == 1
    les = lesions[0]
    assert les.n_voxels == 64 and les.volume_ml == pytest.approx(0.064) and les.core_volume_ml == pytest.approx(0.064)
    assert les.max_probability == pytest.approx(0.9) and les.host == "liver"
    assert les.centre_voxel == pytest.approx((15.5, 15.5, 15.5))
    assert les.bbox_voxel == (14, 14, 14, 18, 18, 18)


@pytest.mark.parametrize("level", [1e-5, 1e-9])
def test_cases_below_any_probability_resolution_still_rank_by_their_lesions(level):
    """Zero-shot channels often stay far below 1e-4: a lesion 10x above a 10x lower background
    must still outscore a lesion-free case, and both scores stay within the logit resolution."""
    p = np.full(SHAPE, level / 10, dtype=np.float32)
    free = tumour_presence_score(p, organ(), ISO)
    p[14:18, 14:18, 14:18] = level
    with_lesion = tumour_presence_score(p, organ(), ISO)
    assert free == pytest.approx(level / 10, rel=2e-3) and with_lesion == pytest.approx(level, rel=2e-3)
    assert with_lesion > 5 * free


def test_small_stray_pieces_of_the_predicted_host_are_not_searched():
    """A small false 'host' piece far from the organ (a classifier's stray voxels) must not carry
    the case score; pieces of comparable size (two lungs) both count."""
    shape = (40, 40, 80)
    host = np.zeros(shape, dtype=bool)
    host[8:32, 8:32, 8:32] = True                 # the organ, 13824 voxels
    host[14:22, 14:22, 60:68] = True              # a stray piece of 512 voxels (3.7 %), 28 mm away
    p = np.full(shape, BG, dtype=np.float32)
    p[14:22, 14:22, 60:68] = 0.9                  # a 'lesion' filling the stray piece
    assert tumour_presence_score(p, host, ISO) <= BG
    assert tumour_presence_score(p, host, ISO, TumourScoreSettings(min_host_fraction=0.0)) == pytest.approx(0.9, abs=RES)
    host[8:32, 8:32, 40:48] = True                # a second piece a third the organ's size (a second lung) ...
    assert tumour_presence_score(p, host, ISO) <= BG          # (the stray piece is still left out)
    p[14:22, 14:22, 40:48] = 0.9                  # ... is searched
    assert tumour_presence_score(p, host, ISO) == pytest.approx(0.9, abs=RES)
    with pytest.raises(ValueError, match="min_host_fraction"):
        TumourScoreSettings(min_host_fraction=1.5)


def test_minimum_volume_is_counted_in_mm3_at_the_image_spacing():
    spacing = (2.0, 1.0, 1.0)                     # 2 mm^3 voxels: 50 mm^3 = 25 voxels
    p = background()
    p[20, 14:19, 14:19] = 0.8                     # 25 voxels = 50 mm^3: counts
    assert tumour_presence_score(p, organ(), spacing) == pytest.approx(0.8, abs=RES)
    p[20, 18, 18] = BG                            # 24 voxels = 48 mm^3: does not
    assert tumour_presence_score(p, organ(), spacing) <= BG


def test_evidence_outside_the_dilated_host_is_ignored():
    p = background()
    p[12:18, 12:18, 33:37] = 0.9                  # 2-5 mm outside an organ face: inside the 5 mm margin
    assert tumour_presence_score(p, organ(), ISO) == pytest.approx(0.9, abs=RES)
    p = background()
    p[0:4, 0:4, 0:4] = 0.9                        # > 5 mm away from the organ
    assert tumour_presence_score(p, organ(), ISO) <= BG
    assert extract_lesions(p, {"liver": organ()}, ISO) == []


def test_rim_along_the_organ_surface_is_not_a_lesion_unless_band_switched_off():
    host = organ()
    p = background()
    # a one-voxel shell on the organ surface, far more than 50 mm^3 in volume
    p[8:32, 8:32, 8:32] = 0.9
    p[9:31, 9:31, 9:31] = BG
    assert tumour_presence_score(p, host, ISO) <= BG
    assert extract_lesions(p, {"liver": host}, ISO) == []
    off = TumourScoreSettings(boundary_mm=0.0)
    assert tumour_presence_score(p, host, ISO, off) == pytest.approx(0.9, abs=RES)
    # a lesion straddling the surface keeps its core part and is one lesion
    p = background()
    p[12:18, 4:12, 12:18] = 0.9                   # y 4..11 crosses the surface at y = 8
    lesions = extract_lesions(p, {"liver": host}, ISO)
    assert len(lesions) == 1 and lesions[0].n_voxels == 6 * 8 * 6
    assert lesions[0].core_volume_ml < lesions[0].volume_ml


def test_unseen_lesion_left_out_of_the_organ_channel_is_inside_the_filled_host():
    host = organ()
    host[18:24, 18:24, 18:24] = False             # organ channel leaves a hole where the lesion is
    p = background()
    p[18:24, 18:24, 18:24] = 0.7
    assert tumour_presence_score(p, host, ISO, TumourScoreSettings(host_margin_mm=0.0)) == pytest.approx(0.7, abs=RES)


def test_no_host_organ_means_score_zero():
    p = background()
    p[10:20, 10:20, 10:20] = 0.9
    empty = np.zeros(SHAPE, dtype=bool)
    assert tumour_presence_score(p, empty, ISO) == 0.0
    assert extract_lesions(p, {"liver": empty}, ISO) == []


def test_score_reaches_threshold_exactly_when_lesions_are_reported():
    rng = np.random.default_rng(0)
    host = organ()
    for _ in range(12):
        p = background()
        z, y, x = rng.integers(10, 26, 3)
        size = int(rng.integers(2, 6))
        p[z:z + size, y:y + size, x:x + size] = rng.uniform(0.3, 0.7)
        p += rng.uniform(0, 0.05, SHAPE).astype(np.float32)
        s = tumour_presence_score(p, host, ISO)
        lesions = extract_lesions(p, {"liver": host}, ISO)
        assert (s >= 0.5) == (len(lesions) > 0)


def test_score_is_the_level_of_the_best_lesion_and_lesions_are_ranked():
    p = background()
    p[12:16, 12:16, 12:16] = 0.6
    p[24:28, 24:28, 24:28] = 0.8
    p[25, 25, 25] = 0.99                          # hottest voxel: max probability, not the level
    s = tumour_presence_score(p, organ(), ISO)
    assert s == pytest.approx(0.8, abs=RES)
    lesions, label_map = extract_lesions(p, {"liver": organ()}, ISO, return_label_map=True)
    assert [l.rank for l in lesions] == [1, 2]
    assert lesions[0].max_probability == pytest.approx(0.99) and lesions[1].max_probability == pytest.approx(0.6)
    assert label_map[25, 25, 25] == 1 and label_map[13, 13, 13] == 2 and label_map[0, 0, 0] == 0
    assert (label_map == 1).sum() == 64


def test_lesion_host_is_the_overlapping_or_nearest_organ():
    left = np.zeros(SHAPE, dtype=bool)
    left[8:32, 4:18, 8:32] = True
    right = np.zeros(SHAPE, dtype=bool)
    right[8:32, 24:38, 8:32] = True
    p = background()
    p[12:16, 26:30, 12:16] = 0.9                  # inside the right organ
    p[20:24, 18:21, 20:25] = 0.9                  # in the gap, 1 mm from left, 4 mm from right
    lesions = extract_lesions(p, {"kidney_left": left, "kidney_right": right}, ISO,
                              TumourScoreSettings(boundary_mm=0.0))
    hosts = sorted((l.centre_voxel[1] > 24, l.host) for l in lesions)
    assert hosts == [(False, "kidney_left"), (True, "kidney_right")]


def test_physical_centre_matches_simpleitk():
    spacing_zyx = (2.0, 1.0, 0.5)
    direction = (-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0)
    origin = (10.0, -20.0, 30.0)
    img = sitk.GetImageFromArray(np.zeros((6, 7, 8), dtype=np.uint8))
    img.SetSpacing(spacing_zyx[::-1])
    img.SetDirection(direction)
    img.SetOrigin(origin)
    geo = ImageGeometry.from_sitk(img)
    assert geo.spacing == spacing_zyx
    idx_zyx = (2.5, 3.0, 4.25)
    expected = img.TransformContinuousIndexToPhysicalPoint(idx_zyx[::-1])
    assert geo.index_to_physical(idx_zyx) == pytest.approx(expected)
    props = {"spacing": list(spacing_zyx), "sitk_stuff": {"spacing": img.GetSpacing(), "origin": origin,
                                                          "direction": direction}}
    assert ImageGeometry.from_nnunet_properties(props) == geo
    # lesion centres use it
    p = np.zeros((6, 7, 8), dtype=np.float32)
    p[2:4, 3:4, 4:5] = 0.9
    host = np.ones((6, 7, 8), dtype=bool)
    les = extract_lesions(p, {"organ": host}, geo, TumourScoreSettings(min_lesion_volume_mm3=1.0, min_lesion_voxels=1, boundary_mm=0))
    assert les[0].centre_mm == pytest.approx(img.TransformContinuousIndexToPhysicalPoint((4.0, 3.0, 2.5)))
    assert les[0].volume_ml == pytest.approx(2 * 1.0 / 1000)


def test_helpers_and_settings_validation():
    a = np.zeros((2, 2, 2), np.float32)
    b = a.copy()
    b[0, 0, 0] = 0.7
    assert host_mask_from_probabilities([a, b]).sum() == 1
    assert host_region(np.zeros((4, 4, 4), bool), ISO) is None
    with pytest.raises(ValueError, match="threshold"):
        TumourScoreSettings(threshold=1.5)
    with pytest.raises(ValueError, match="host_margin_mm"):
        TumourScoreSettings(host_margin_mm=-1)
    with pytest.raises(ValueError, match="shape"):
        tumour_presence_score(np.zeros((3, 3, 3)), np.zeros((3, 3, 4), bool), ISO)


def test_grid_rules_bite_only_where_the_mm_settings_are_finer_than_the_grid():
    coarse = (6.0, 6.0, 6.0)
    mm_only = TumourScoreSettings(min_lesion_voxels=1, min_margin_voxels=0, min_boundary_voxels=0)
    grid = TumourScoreSettings(min_lesion_voxels=2, min_margin_voxels=1, min_boundary_voxels=1)
    # the mm settings on a 6 mm grid: 50 mm^3 < 1 voxel, a 5 mm margin and a 2 mm band are empty
    assert mm_only.min_core_voxels(coarse) == 1 and grid.min_core_voxels(coarse) == 2
    assert mm_only.margin_mm(coarse) == 5.0 and mm_only.band_mm(coarse) == 2.0
    assert grid.margin_mm(coarse) == 6.0 and grid.band_mm(coarse) == 6.0
    assert TumourScoreSettings().min_core_voxels(coarse) == 4          # the default, chosen on development data
    # at 1 mm the mm settings are coarser than any of the voxel minimums: nothing changes
    fine = mm_only
    for settings in (grid, TumourScoreSettings()):
        assert (settings.min_core_voxels(ISO), settings.margin_mm(ISO), settings.band_mm(ISO)) == \
            (fine.min_core_voxels(ISO), fine.margin_mm(ISO), fine.band_mm(ISO))
    assert TumourScoreSettings(boundary_mm=0.0, min_boundary_voxels=1).band_mm(coarse) == 0.0   # band off stays off

    host = organ()
    deep = background()
    deep[18:22, 18:22, 18:22] = 0.9               # a lesion deep inside the organ counts under every rule
    hug = background()
    hug[8, 12:20, 12:20] = 0.9                    # one voxel thick, on the organ's surface layer
    lone = background()
    lone[20, 20, 20] = 0.9                        # a single voxel inside
    outside = background()
    outside[20, 20, 32] = 0.9                     # the first voxel outside the organ face
    outside[20, 21, 32] = 0.9
    for settings in (mm_only, grid):
        assert tumour_presence_score(deep, host, coarse, settings) == pytest.approx(0.9, abs=RES)
    assert tumour_presence_score(hug, host, coarse, mm_only) == pytest.approx(0.9, abs=RES)
    assert tumour_presence_score(hug, host, coarse, grid) <= BG
    assert tumour_presence_score(lone, host, coarse, mm_only) == pytest.approx(0.9, abs=RES)
    assert tumour_presence_score(lone, host, coarse, replace(mm_only, min_lesion_voxels=2)) <= BG
    assert tumour_presence_score(outside, host, coarse, replace(mm_only, boundary_mm=0.0)) <= BG
    assert tumour_presence_score(outside, host, coarse, replace(mm_only, boundary_mm=0.0, min_margin_voxels=1)) \
        == pytest.approx(0.9, abs=RES)
