"""The stock nnU-Net commands with the plugin's trainers: plan -> Stage 1 -> Stage 2 -> validate ->
predict -> find_best_configuration, on the tiny dataset (issue: installable plugin)."""
import os
import re
import shutil

import numpy as np
import SimpleITK as sitk

from conftest import cli, make_env, stderr_lines, train


def test_stage2_refuses_to_start_without_stage1(tiny_planned, tmp_path):
    # same preprocessed data, empty results folder
    env = dict(tiny_planned["env"], nnUNet_results=str(tmp_path / "results"))
    r = train(env, 501, "nnUNetTrainerZePTStage2", 0, expect_ok=False)
    # one line on stderr, exit status 1, no traceback (nnU-Net prints one for any exception)
    out = stderr_lines(r.stderr)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(out) == 1, r.stderr[-3000:]
    out = out[0]
    expected = os.path.join(str(tmp_path / "results"), "Dataset501_ZePTTiny",
                            "nnUNetTrainerZePTStage1__nnUNetPlans__3d_fullres", "fold_0", "checkpoint_final.pth")
    assert expected in out
    assert "nnUNetv2_train Dataset501_ZePTTiny 3d_fullres 0 -tr nnUNetTrainerZePTStage1" in out


def test_unknown_trainer_name_is_a_clear_error(tiny_planned):
    r = train(tiny_planned["env"], 501, "nnUNetTrainerZePTStage3", 0, expect_ok=False)
    assert r.returncode != 0
    assert "Could not find requested nnunet trainer nnUNetTrainerZePTStage3" in r.stdout + r.stderr


def test_both_stages_train_validate_and_checkpoint(tiny_trained):
    res = os.path.join(tiny_trained["env"]["nnUNet_results"], "Dataset501_ZePTTiny")
    for tr in ("nnUNetTrainerZePTStage1", "nnUNetTrainerZePTStage2"):
        fold = os.path.join(res, f"{tr}__nnUNetPlans__3d_fullres", "fold_0")
        assert os.path.isfile(os.path.join(fold, "checkpoint_final.pth"))
        assert os.path.isfile(os.path.join(fold, "validation", "summary.json"))
        assert any(f.endswith(".npz") for f in os.listdir(os.path.join(fold, "validation")))
    assert "Stage 2 starts from Stage 1 checkpoint" in tiny_trained["stage2_log"]
    assert "ZePT class roles" in tiny_trained["stage1_log"]
    # each loss term is printed per epoch (the total alone hides which one moves)
    assert re.search(r"train loss parts: organ [\d.]+, background_tissue [\d.]+", tiny_trained["stage1_log"])
    assert re.search(r"train loss parts: tumour_mask [\d.]+, alignment [\d.]+", tiny_trained["stage2_log"])
    assert re.search(r"val loss parts: tumour_mask [\d.]+", tiny_trained["stage2_log"])


def test_new_training_never_overwrites_a_finished_one(tiny_trained):
    fold = os.path.join(tiny_trained["env"]["nnUNet_results"], "Dataset501_ZePTTiny",
                        "nnUNetTrainerZePTStage2__nnUNetPlans__3d_fullres", "fold_0", "checkpoint_final.pth")
    before = os.path.getmtime(fold)
    r = train(tiny_trained["env"], 501, "nnUNetTrainerZePTStage2", 0, expect_ok=False)
    assert r.returncode != 0 and "already holds checkpoint_final.pth" in r.stdout + r.stderr
    assert os.path.getmtime(fold) == before


def test_predict_keeps_input_geometry(tiny_trained, tmp_path):
    env = dict(tiny_trained["env"], nnUNet_n_proc_DA="0")
    raw = os.path.join(env["nnUNet_raw"], "Dataset501_ZePTTiny")
    inp = tmp_path / "in"
    inp.mkdir()
    # a case with another spacing, origin and direction than the training data
    src = sitk.ReadImage(os.path.join(raw, "imagesTs", "test_001_0000.nii.gz"))
    moved = sitk.GetImageFromArray(sitk.GetArrayFromImage(src))
    moved.SetSpacing((1.2, 1.7, 2.0))
    moved.SetOrigin((-33.0, 12.5, 101.0))
    moved.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(moved, str(inp / "moved_0000.nii.gz"))
    out = tmp_path / "out"
    cli(["nnUNetv2_predict", "-i", str(inp), "-o", str(out), "-d", "501", "-c", "3d_fullres",
         "-tr", "nnUNetTrainerZePTStage2", "-f", "0", "--save_probabilities", "-device", "cpu",
         "-npp", "0", "-nps", "0"], env)
    pred = sitk.ReadImage(str(out / "moved.nii.gz"))
    assert pred.GetSize() == moved.GetSize()
    assert np.allclose(pred.GetSpacing(), moved.GetSpacing())
    assert np.allclose(pred.GetOrigin(), moved.GetOrigin())
    assert np.allclose(pred.GetDirection(), moved.GetDirection())
    probs = np.load(out / "moved.npz")["probabilities"]
    assert probs.shape[0] == 5 and np.isfinite(probs).all()
    assert 0.0 <= probs.min() and probs.max() <= 1.0


def test_find_best_configuration_with_a_never_predicted_zero_shot_class(tiny_trained, tmp_path):
    # A zero-shot class has no reference in any validation case; where the model also predicts none
    # of it, nnU-Net's per-class Dice is NaN and so would be its foreground mean, and find_best would
    # stop with an IndexError.  Force that case: strip the zero-shot label from the validation output.
    import json

    from nnunetv2_zept.experiments import tiny_phantoms as tiny_dataset

    src = os.path.join(tiny_trained["env"]["nnUNet_results"], "Dataset501_ZePTTiny")
    model = "nnUNetTrainerZePTStage2__nnUNetPlans__3d_fullres"
    env = dict(tiny_trained["env"], nnUNet_results=str(tmp_path / "results"))
    dst = os.path.join(env["nnUNet_results"], "Dataset501_ZePTTiny", model)
    shutil.copytree(os.path.join(src, model), dst)
    val = os.path.join(dst, "fold_0", "validation")
    zero_shot_label = tiny_dataset.LABELS["kidney_tumour"]
    for f in (f for f in os.listdir(val) if f.endswith(".nii.gz")):
        im = sitk.ReadImage(os.path.join(val, f))
        arr = sitk.GetArrayFromImage(im)
        arr[arr == zero_shot_label] = 0
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(im)
        sitk.WriteImage(out, os.path.join(val, f))

    r = cli(["nnUNetv2_find_best_configuration", "501", "-c", "3d_fullres", "-tr", "nnUNetTrainerZePTStage2",
             "-f", "0", "-np", "1", "--disable_ensembling"], env)
    assert "nnUNetv2_predict" in r.stdout
    assert f"({zero_shot_label},)" in r.stdout and "Dice is undefined" in r.stdout

    with open(os.path.join(dst, "crossval_results_folds_0", "summary.json")) as f:
        summary = json.load(f)
    per_class = {k: v["Dice"] for k, v in summary["mean"].items()}
    assert np.isnan(per_class[str((zero_shot_label,))])
    defined = [v for v in per_class.values() if not np.isnan(v)]
    assert defined and np.isclose(summary["foreground_mean"]["Dice"], np.mean(defined))
    with open(os.path.join(env["nnUNet_results"], "Dataset501_ZePTTiny", "inference_information.json")) as f:
        info = json.load(f)
    assert np.isfinite(info["best_model_or_ensemble"]["result_on_crossval_pre_pp"])