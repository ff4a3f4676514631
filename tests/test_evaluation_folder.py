"""End-to-end evaluation of a tiny synthetic prediction folder in nnU-Net's --save_probabilities layout,
and the input errors it must name."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from sklearn.metrics import roc_auc_score

from nnunetv2_zept.cli import main as cli_main
from nnunetv2_zept.evaluation import evaluate_folder
from nnunetv2_zept.evaluation.case_io import EvaluationInputError, read_probability_channels
from nnunetv2_zept.evaluation.overlap import dice

SHAPE = (16, 32, 32)                  # z, y, x
SPACING_XYZ = (1.5, 1.5, 2.0)
NAMES = ["liver", "liver_tumour", "spleen", "pancreas", "pancreas_tumour"]
DATASET = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "liver": [1, 2], "liver_tumour": 2, "spleen": 3, "pancreas": [4, 5],
               "pancreas_tumour": 5},
    "regions_class_order": [1, 2, 3, 4, 5],
    "numTraining": 0,
    "file_ending": ".nii.gz",
    "zept": {"organs": ["liver", "spleen", "pancreas"],
             "tumours": {"liver_tumour": {"host": ["liver"]},
                         "pancreas_tumour": {"host": ["pancreas"], "zero_shot": True}}},
}
CASES = {"CASE_L1": "liver", "CASE_L2": "liver", "CASE_P1": "pancreas", "CASE_P2": "pancreas",
         "CASE_N1": None, "CASE_N2": None}


def reference(kind, shift):
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[2:14, 2:16, 2:16] = 1                     # liver
    lab[4:12, 20:28, 2:10] = 3                    # spleen
    lab[5:11, 20:28, 16:28] = 4                   # pancreas
    if kind == "liver":
        lab[5:9, 5 + shift:9 + shift, 6:10] = 2
    elif kind == "pancreas":
        lab[6:9, 22:26, 19 + shift:23 + shift] = 5
    return lab


def probabilities(lab, rng, kind, shift_organs):
    """Region probabilities [C, z, y, x] in dataset.json `labels` order, like nnU-Net's sigmoid output.
    Imperfect on purpose: organs shifted by one voxel in some cases, tumour scores overlapping the
    host tissue's scores (voxel AUROC < 1, tumour DSC < 1)."""
    def region(ids, inside, outside, noise=0.04, shift=0):
        m = np.roll(np.isin(lab, ids), shift, axis=2)
        return np.where(m, inside, outside).astype(np.float32) + rng.uniform(0, noise, SHAPE).astype(np.float32)

    liver = region([1, 2], 0.93, 0.02, shift=shift_organs)
    spleen = region([3], 0.93, 0.02, shift=shift_organs)
    pancreas = region([4], 0.9, 0.02)             # zero-shot: the organ channel misses the unseen tumour
    tumour_l = region([2], 0.0, 0.02)
    tumour_l[lab == 1] = rng.uniform(0.0, 0.45, int((lab == 1).sum()))
    tumour_l[lab == 2] = rng.uniform(0.3, 1.0, int((lab == 2).sum()))
    tumour_p = region([5], 0.0, 0.02)
    tumour_p[lab == 4] = rng.uniform(0.0, 0.4, int((lab == 4).sum()))
    tumour_p[lab == 5] = rng.uniform(0.35, 0.9, int((lab == 5).sum()))
    if kind is None:
        tumour_l[8, 8, 8] = 0.97                  # a single hot voxel: a false positive, but no lesion
    return np.stack([liver, tumour_l, spleen, pancreas, tumour_p]).clip(0, 1)


def segmentation(probs):
    """nnU-Net's region export: paint regions in regions_class_order where p >= 0.5."""
    seg = np.zeros(probs.shape[1:], dtype=np.uint8)
    for i, label in enumerate(DATASET["regions_class_order"]):
        seg[probs[i] >= 0.5] = label
    return seg


def write_image(array, path):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin((-10.0, 5.0, 100.0))
    sitk.WriteImage(img, path)


@pytest.fixture()
def folders(tmp_path):
    rng = np.random.default_rng(0)
    ref_dir, pred_dir = tmp_path / "labelsTs", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    truth = {}
    for i, (case, kind) in enumerate(CASES.items()):
        lab = reference(kind, shift=i % 2)
        probs = probabilities(lab, rng, kind, shift_organs=i % 2)
        write_image(lab, str(ref_dir / f"{case}.nii.gz"))
        write_image(segmentation(probs), str(pred_dir / f"{case}.nii.gz"))
        np.savez_compressed(str(pred_dir / f"{case}.npz"), probabilities=probs)
        truth[case] = (lab, probs)
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps(DATASET))
    return ref_dir, pred_dir, dj, truth


def test_cli_end_to_end_writes_summary_table_and_plots(folders, tmp_path, capsys):
    ref_dir, pred_dir, dj, truth = folders
    out = tmp_path / "eval"
    assert cli_main(["evaluate", str(ref_dir), str(pred_dir), "-djfile", str(dj), "-o", str(out),
                     "--tolerance", "spleen=1"]) == 0
    for f in ("summary.json", "summary.md", "roc_liver_tumour.png", "roc_pancreas_tumour.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    summary = json.loads((out / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    pc = summary["per_class"]
    assert sorted(summary["cases"]) == sorted(CASES)

    # organ DSC equals an independent computation on the label maps (regions = unions of label ids)
    pred_liver = [dice(np.isin(truth[c][0], [1, 2]), np.isin(segmentation(truth[c][1]), [1, 2])) for c in CASES]
    assert pc["liver"]["DSC"] == pytest.approx(np.mean(pred_liver)) and pc["liver"]["DSC"] < 0.99
    assert pc["liver"]["role"] == "organ" and pc["liver"]["NSD_tolerance_mm"] == 7.0
    assert pc["liver"]["NSD"] == 1.0                      # 1.5 mm shifts are within 7 mm
    assert pc["spleen"]["NSD_tolerance_mm"] == 1.0 and pc["spleen"]["NSD"] < 1.0   # but not within 1 mm

    # tumour-free cases: the hot voxel makes liver-tumour DSC 0 there, NaN-free means follow nnU-Net
    assert summary["per_case"]["CASE_N1"]["liver_tumour"]["DSC"] == 0.0
    assert summary["per_case"]["CASE_P1"]["liver_tumour"]["DSC"] is None      # both empty: NaN -> null
    dsc_l = [dice(truth[c][0] == 2, segmentation(truth[c][1]) == 2) for c in ("CASE_L1", "CASE_L2")]
    assert pc["liver_tumour"]["DSC_tumour_cases"] == pytest.approx(np.mean(dsc_l)) and 0.6 < np.mean(dsc_l) < 0.95
    assert pc["liver_tumour"]["DSC"] == pytest.approx(np.mean(dsc_l + [0.0, 0.0]))   # N1, N2: false positive voxel

    # case-level detection: the hot voxel is no lesion, so the score separates the cases
    det = pc["liver_tumour"]["detection"]
    assert (det["n_positive_cases"], det["n_negative_cases"]) == (2, 4)
    assert det["AUROC"] == 1.0 and det["TP"] == 2 and det["FP"] == 0
    assert summary["per_case"]["CASE_N1"]["liver_tumour"]["tumour_score"] < 0.5
    assert summary["per_case"]["CASE_L1"]["liver_tumour"]["tumour_score"] >= 0.8
    zs = pc["pancreas_tumour"]
    assert zs["role"] == "zero_shot_tumour" and zs["detection"]["AUROC"] == 1.0
    assert 0.5 <= summary["per_case"]["CASE_P1"]["pancreas_tumour"]["tumour_score"] <= 0.9

    # pooled voxel AUROC over the body equals sklearn on all voxels within the stated bound
    labels = np.concatenate([(truth[c][0] == 2).ravel() for c in CASES])
    scores = np.concatenate([truth[c][1][1].ravel() for c in CASES])
    vb = pc["liver_tumour"]["voxel_body"]
    exact = roc_auc_score(labels, scores)
    assert 0.9 < exact < 1.0
    assert abs(vb["AUROC"] - exact) <= vb["AUROC_error_bound"] + 1e-9
    assert vb["n_positive_voxels"] + vb["n_negative_voxels"] == len(CASES) * np.prod(SHAPE)
    vh = pc["liver_tumour"]["voxel_host"]
    assert 0 < vh["n_negative_voxels"] < vb["n_negative_voxels"]
    assert all(summary["per_case"][c]["liver_tumour"]["host_region_source"] == "reference" for c in CASES)

    g = summary["groups"]
    assert g["zero_shot_tumours"]["classes"] == ["pancreas_tumour"] and g["seen_tumours"]["classes"] == ["liver_tumour"]
    assert g["organs"]["classes"] == ["liver", "spleen", "pancreas"]
    assert g["zero_shot_tumours"]["detection.AUROC"] == 1.0
    md = (out / "summary.md").read_text()
    assert "| pancreas_tumour | zero-shot |" in md and "| liver | 6 |" in md
    assert "summary.md" in capsys.readouterr().out

    # the earlier evaluation is not overwritten without asking
    assert cli_main(["evaluate", str(ref_dir), str(pred_dir), "-djfile", str(dj), "-o", str(out)]) == 1
    assert "already holds" in capsys.readouterr().err


def test_partial_annotation_sources_and_predicted_host_region(folders, tmp_path):
    ref_dir, pred_dir, dj, truth = folders
    ds = json.loads(dj.read_text())
    # the pancreas cases do not annotate their host organ (like MSD lung: no lung label) nor the liver
    ds["zept"]["sources"] = {"pan": {"case_prefix": "CASE_P", "annotates": ["spleen", "pancreas_tumour"]}}
    summary = evaluate_folder(str(ref_dir), str(pred_dir), ds, None)
    p1 = summary["per_case"]["CASE_P1"]
    assert set(p1) == {"spleen", "pancreas_tumour"}
    assert p1["pancreas_tumour"]["host_region_source"] == "prediction"
    assert summary["per_case"]["CASE_N1"]["pancreas_tumour"]["host_region_source"] == "reference"
    det = summary["per_class"]["liver_tumour"]["detection"]
    assert (det["n_positive_cases"], det["n_negative_cases"]) == (2, 2)
    assert summary["per_class"]["liver"]["n_cases"] == 4


def test_body_region_from_ct_images(folders, tmp_path):
    ref_dir, pred_dir, dj, truth = folders
    img_dir = tmp_path / "imagesTs"
    img_dir.mkdir()
    for case in CASES:
        ct = np.full(SHAPE, -1000, np.int16)
        ct[1:15, 1:31, 1:31] = 40                 # body box holding every organ
        write_image(ct, str(img_dir / f"{case}_0000.nii.gz"))
    plain = evaluate_folder(str(ref_dir), str(pred_dir), str(dj))
    body = evaluate_folder(str(ref_dir), str(pred_dir), str(dj), images_folder=str(img_dir))
    vb_plain, vb_body = plain["per_class"]["liver_tumour"]["voxel_body"], body["per_class"]["liver_tumour"]["voxel_body"]
    assert vb_body["n_negative_voxels"] + vb_body["n_positive_voxels"] == len(CASES) * 14 * 30 * 30
    assert vb_body["n_positive_voxels"] == vb_plain["n_positive_voxels"]
    assert body["per_case"]["CASE_L1"]["liver_tumour"]["body_region_source"] == "image"
    assert plain["per_case"]["CASE_L1"]["liver_tumour"]["body_region_source"] == "volume"
    os.remove(img_dir / "CASE_N1_0000.nii.gz")
    with pytest.raises(EvaluationInputError, match="CASE_N1.*no CT image"):
        evaluate_folder(str(ref_dir), str(pred_dir), str(dj), images_folder=str(img_dir))


def test_probability_files_that_do_not_match_are_named(folders, tmp_path):
    ref_dir, pred_dir, dj, truth = folders
    probs = truth["CASE_L2"][1]
    np.savez_compressed(str(pred_dir / "CASE_L2.npz"), probabilities=probs[:, :, :, :-1])
    with pytest.raises(EvaluationInputError, match=r"CASE_L2.*image shape \(16, 32, 31\).*\(16, 32, 32\)"):
        evaluate_folder(str(ref_dir), str(pred_dir), str(dj))
    np.savez_compressed(str(pred_dir / "CASE_L2.npz"), probabilities=probs[:4])
    with pytest.raises(EvaluationInputError, match="CASE_L2.*4 probability channels.*defines 5"):
        evaluate_folder(str(ref_dir), str(pred_dir), str(dj))
    np.savez_compressed(str(pred_dir / "CASE_L2.npz"), softmax=probs)
    with pytest.raises(EvaluationInputError, match="CASE_L2.*no key 'probabilities'"):
        evaluate_folder(str(ref_dir), str(pred_dir), str(dj))
    os.remove(pred_dir / "CASE_L2.npz")
    with pytest.raises(EvaluationInputError, match="CASE_L2.*no probability file.*--save_probabilities"):
        evaluate_folder(str(ref_dir), str(pred_dir), str(dj))
    os.remove(ref_dir / "CASE_N2.nii.gz")
    with pytest.raises(EvaluationInputError, match="CASE_N2.*no reference label file"):
        evaluate_folder(str(ref_dir), str(pred_dir), str(dj), case_ids=["CASE_N1", "CASE_N2"])
    with pytest.raises(EvaluationInputError, match="CASE_X9.*no prediction"):
        evaluate_folder(str(ref_dir), str(pred_dir), str(dj), case_ids=["CASE_X9"])


def test_label_map_mismatches_are_named(folders):
    ref_dir, pred_dir, dj, truth = folders
    write_image(np.zeros((16, 32, 30), np.uint8), str(pred_dir / "CASE_N1.nii.gz"))
    with pytest.raises(EvaluationInputError, match="CASE_N1.*prediction shape"):
        evaluate_folder(str(ref_dir), str(pred_dir), str(dj), case_ids=["CASE_N1"])
    bad = truth["CASE_N2"][0].copy()
    bad[0, 0, 0] = 9
    write_image(bad, str(ref_dir / "CASE_N2.nii.gz"))
    with pytest.raises(EvaluationInputError, match=r"CASE_N2.*label id\(s\) \[9\]"):
        evaluate_folder(str(ref_dir), str(pred_dir), str(dj), case_ids=["CASE_N2"])


def test_streaming_reader_returns_the_requested_channels(folders):
    _, pred_dir, _, truth = folders
    probs = truth["CASE_P1"][1]
    got = read_probability_channels(str(pred_dir / "CASE_P1.npz"), [4, 1], 5, SHAPE, "CASE_P1")
    assert sorted(got) == [1, 4]
    assert np.array_equal(got[1], probs[1]) and np.array_equal(got[4], probs[4])
    got = read_probability_channels(str(pred_dir / "CASE_P1.npz"), [1], 5, SHAPE, "CASE_P1", mask_thresholds={3: 0.5})
    assert got[3].dtype == bool and np.array_equal(got[3], probs[3] >= 0.5) and got[3].any()
    half = str(pred_dir / "half.npz")
    np.savez_compressed(half, probabilities=probs.astype(np.float16))
    got = read_probability_channels(half, [2], 5, SHAPE, "half")
    assert got[2].dtype == np.float32 and np.array_equal(got[2], probs[2].astype(np.float16).astype(np.float32))
