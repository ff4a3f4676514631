"""The experiment machinery shared by the demo and the benchmarks: the plain baselines'
tumour-agnostic zero-shot score."""
import numpy as np
import pytest
import SimpleITK as sitk

from liver_spleen import DATASET_JSON
from nnunetv2_zept.experiments.baseline_scores import FLOOR, tumour_agnostic_copy


def _write_prediction(folder, case, prob, seg):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{case}.npz", probabilities=prob)
    img = sitk.GetImageFromArray(seg.astype(np.uint8))
    img.SetSpacing((2.0, 2.0, 3.0))
    sitk.WriteImage(img, str(folder / f"{case}.nii.gz"))


def _prediction():
    shape = (4, 6, 12)
    prob = np.full((5, *shape), 0.01, np.float32)
    prob[0, ..., :4] = 0.9        # liver: x < 4
    prob[0, 1, 2, 2] = 0.1        # a cavity in the liver (a lesion the organ channel left out)
    prob[1, ..., 8:] = 0.9        # spleen: x >= 8
    prob[2, 1, 2, 2] = 0.8        # seen tumour inside the liver's cavity
    prob[2, 2, 2, 9] = 0.7        # seen tumour inside the spleen
    prob[2, 3, 3, 6] = 0.95       # seen tumour between the organs (x = 6)
    seg = np.zeros(shape, np.uint8)
    return prob, seg


def test_zero_shot_channels_hold_the_seen_maximum_inside_each_hosts_region(tmp_path):
    prob, seg = _prediction()
    pred, out = tmp_path / "pred", tmp_path / "copy"
    _write_prediction(pred, "c1", prob, seg)

    assert tumour_agnostic_copy(pred, out, DATASET_JSON, growth_mm=0.0) == 1

    new = np.load(out / "c1.npz")["probabilities"]
    np.testing.assert_array_equal(new[:3], prob[:3])                 # organ and seen channels unchanged
    liver = prob[0] > 0.5
    liver[1, 2, 2] = True                                            # its cavity is filled
    np.testing.assert_array_equal(new[4][liver], prob[2][liver])     # metastasis score = seen score in the liver
    assert np.all(new[4][~liver] == np.float32(FLOOR))
    spleen = prob[1] > 0.5
    np.testing.assert_array_equal(new[3][spleen], prob[2][spleen])
    assert np.all(new[3][~spleen] == np.float32(FLOOR))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "c1.nii.gz")))
    assert lab[1, 2, 2] == 5 and lab[2, 2, 9] == 4     # painted as nnU-Net does (later regions over earlier)
    assert lab[3, 3, 6] == 3                            # outside every host: stays the seen type
    assert lab[0, 0, 0] == 1 and lab[0, 0, 10] == 2 and lab[0, 0, 6] == 0
    np.testing.assert_array_equal(np.load(pred / "c1.npz")["probabilities"], prob)   # original untouched
    assert not (tmp_path / "copy.partial").exists()

    # grown by 6 mm (3 voxels along x at 2 mm): the tumour between the organs is inside both regions now
    tumour_agnostic_copy(pred, out, DATASET_JSON, growth_mm=6.0, shell_margin=0.0)
    new = np.load(out / "c1.npz")["probabilities"]
    assert new[3][3, 3, 6] == prob[2][3, 3, 6] and new[4][3, 3, 6] == prob[2][3, 3, 6]
    # ... in the outer shell of both (beyond the organs' closed outlines), so ZePT's shell margin lowers
    # its logit there, while the liver's cavity keeps the seen score
    tumour_agnostic_copy(pred, out, DATASET_JSON, growth_mm=6.0, shell_margin=2.0)
    new = np.load(out / "c1.npz")["probabilities"]
    lowered = 1.0 / (1.0 + np.exp(-(np.log(0.95 / 0.05) - 2.0)))
    assert new[3][3, 3, 6] == new[4][3, 3, 6] and abs(float(new[4][3, 3, 6]) - lowered) < 1e-6
    assert new[4][1, 2, 2] == prob[2][1, 2, 2]


def test_bad_prediction_folders_are_refused_and_nothing_is_written(tmp_path):
    prob, seg = _prediction()
    pred = tmp_path / "pred"
    _write_prediction(pred, "c1", prob, seg)
    (pred / "c2.npz").write_bytes((pred / "c1.npz").read_bytes())
    with pytest.raises(FileNotFoundError, match="c2.nii.gz"):
        tumour_agnostic_copy(pred, tmp_path / "x", DATASET_JSON)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
    with pytest.raises(FileNotFoundError, match="--save_probabilities"):
        tumour_agnostic_copy(tmp_path, tmp_path / "y", DATASET_JSON)


def test_a_baselines_seen_types_come_from_its_own_labels_and_zero_shot_types_from_the_copy():
    from nnunetv2_zept.experiments.baseline_scores import with_zero_shot_from

    def summary(tag):
        return {"per_class": {"liver": {"DSC": f"{tag} liver"}, "liver_tumour": {"DSC": f"{tag} seen"},
                              "liver_metastasis": {"DSC": f"{tag} zero-shot"}},
                "groups": {"organs": tag, "seen_tumours": tag, "zero_shot_tumours": tag},
                "per_case": {"c1": {"liver_tumour": tag, "liver_metastasis": tag},
                             "c2": {"liver_tumour": tag, "liver_metastasis": tag}}}

    merged = with_zero_shot_from(summary("own"), summary("copy"), ["liver_metastasis"])
    assert merged["per_class"] == {"liver": {"DSC": "own liver"}, "liver_tumour": {"DSC": "own seen"},
                                   "liver_metastasis": {"DSC": "copy zero-shot"}}
    assert merged["groups"] == {"organs": "own", "seen_tumours": "own", "zero_shot_tumours": "copy"}
    assert merged["per_case"]["c2"] == {"liver_tumour": "own", "liver_metastasis": "copy"}
    other = summary("copy")
    del other["per_case"]["c2"]
    with pytest.raises(ValueError, match="different cases"):
        with_zero_shot_from(summary("own"), other, ["liver_metastasis"])
