"""nnU-Net's model selection stays defined when a class has no Dice in any case (zero-shot classes
in cross-validation); the rest of nnU-Net's summary is untouched."""
import math
import os
import subprocess
import sys

from nnunetv2_zept._model_selection import PATCHED_FLAG, nan_safe_foreground_mean

NAN = float("nan")


def _result(per_class):
    return {"mean": {k: {"Dice": v, "IoU": v} for k, v in per_class.items()},
            "foreground_mean": {"Dice": sum(per_class[k] for k in per_class if k != 0) / (len(per_class) - 1),
                                "IoU": 0.5}}


def test_nan_foreground_mean_becomes_mean_over_defined_classes():
    r = _result({0: 0.9, (1,): 0.8, (2,): 0.4, (3,): NAN})
    assert math.isnan(r["foreground_mean"]["Dice"])
    assert nan_safe_foreground_mean(r) == [(3,)]
    assert math.isclose(r["foreground_mean"]["Dice"], 0.6)          # background (0) stays out, as in nnU-Net
    assert r["foreground_mean"]["IoU"] == 0.5                          # a defined mean is left as it is
    assert math.isnan(r["mean"][(3,)]["Dice"])                         # per-class values are nnU-Net's


def test_defined_or_all_undefined_means_are_left_alone():
    r = _result({0: 0.9, (1,): 0.8, (2,): 0.4})
    assert nan_safe_foreground_mean(r) == [] and math.isclose(r["foreground_mean"]["Dice"], 0.6)
    r = _result({(1,): NAN, (2,): NAN})
    assert nan_safe_foreground_mean(r) == [] and math.isnan(r["foreground_mean"]["Dice"])


CHECK = ("import nnunetv2.evaluation.find_best_configuration as f, nnunetv2.evaluation.accumulate_cv_results as a; "
         f"print(getattr(f.compute_metrics_on_folder, {PATCHED_FLAG!r}, False), "
         f"getattr(a.compute_metrics_on_folder, {PATCHED_FLAG!r}, False))")


def test_installed_at_start_up_for_nnunet_model_selection_and_can_be_turned_off():
    env = dict(os.environ)
    env.pop("NNUNETV2_ZEPT_NO_AUTOREGISTER", None)
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
    env["NNUNETV2_ZEPT_NO_AUTOREGISTER"] = "1"
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_scope_is_the_results_of_plugin_trainers():
    from nnunetv2_zept._model_selection import is_plugin_results_folder

    r = "/data/results/Dataset501_X"
    assert is_plugin_results_folder(f"{r}/nnUNetTrainerZePTStage2__nnUNetPlans__3d_fullres/crossval_results_folds_0")
    assert is_plugin_results_folder(f"{r}/nnUNetTrainerZePTBaseline__nnUNetPlans__3d_fullres/fold_0/validation")
    assert is_plugin_results_folder(f"{r}/ensembles/ensemble___nnUNetTrainer__nnUNetPlans__3d_fullres___"
                                    f"nnUNetTrainerZePTStage2__nnUNetPlans__3d_fullres___0_1_2_3_4")
    for plain in (f"{r}/nnUNetTrainer__nnUNetPlans__3d_fullres/crossval_results_folds_0",
                  f"{r}/ensembles/ensemble___nnUNetTrainer__nnUNetPlans__3d_fullres___"
                  f"nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres___0_1_2_3_4",
                  "/data/nnUNetTrainerZePTStage2_predictions"):   # a user's folder named after a trainer
        assert not is_plugin_results_folder(plain)


# one process per run: seeded, CPU, data augmentation in the main process (nnUNet_n_proc_DA=0)
SEEDED_TRAIN = ("import random, sys, numpy, torch; random.seed(0); numpy.random.seed(0); torch.manual_seed(0); "
                "from nnunetv2.run.run_training import run_training_entry; run_training_entry()")
TEST_TRAINERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "predict_ext_trainers")


def test_plain_nnunet_training_is_bit_for_bit_the_same_with_and_without_the_plugin(tiny_planned, tmp_path):
    """Same seed, same data, nnU-Net's own trainer: identical weights, losses and validation
    summary with the plugin's start-up hook on and off.  Then nnU-Net's evaluation of that plain
    model's predictions with a class that is empty everywhere: nnU-Net's NaN foreground mean
    stands (the plugin changes it only inside the results of its own trainers)."""
    import json

    import SimpleITK as sitk
    import torch

    from conftest import BIN
    from nnunetv2_zept.experiments.tiny_phantoms import LABELS

    results = {}
    for mode in ("plugin", "no_plugin"):
        env = dict(tiny_planned["env"], nnUNet_results=str(tmp_path / mode), nnUNet_n_proc_DA="0",
                   nnUNet_extTrainer=TEST_TRAINERS, OMP_NUM_THREADS="1")
        if mode == "no_plugin":
            env["NNUNETV2_ZEPT_NO_AUTOREGISTER"] = "1"
        else:
            env.pop("NNUNETV2_ZEPT_NO_AUTOREGISTER", None)
        r = subprocess.run([sys.executable, "-c", SEEDED_TRAIN, "501", "3d_fullres", "0", "-tr", "nnUNetTrainerPlainTiny",
                            "-device", "cpu"], env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        folder = os.path.join(env["nnUNet_results"], "Dataset501_ZePTTiny", "nnUNetTrainerPlainTiny__nnUNetPlans__3d_fullres")
        ckpt = torch.load(os.path.join(folder, "fold_0", "checkpoint_final.pth"), map_location="cpu", weights_only=False)
        with open(os.path.join(folder, "fold_0", "validation", "summary.json")) as f:
            summary = json.load(f)
        # a crossval-style folder: the validation label maps without the zero-shot label, which no
        # reference holds either, so its Dice is undefined in every case
        cv = os.path.join(folder, "crossval_results_folds_0")
        os.makedirs(cv)
        val = os.path.join(folder, "fold_0", "validation")
        for name in sorted(f for f in os.listdir(val) if f.endswith(".nii.gz")):
            img = sitk.ReadImage(os.path.join(val, name))
            arr = sitk.GetArrayFromImage(img)
            arr[arr == LABELS["kidney_tumour"]] = 0
            out = sitk.GetImageFromArray(arr)
            out.CopyInformation(img)
            sitk.WriteImage(out, os.path.join(cv, name))
        pre = os.path.join(env["nnUNet_preprocessed"], "Dataset501_ZePTTiny")
        r = subprocess.run([os.path.join(BIN, "nnUNetv2_evaluate_folder"), os.path.join(pre, "gt_segmentations"), cv,
                            "-djfile", os.path.join(folder, "dataset.json"), "-pfile", os.path.join(folder, "plans.json"),
                            "-o", os.path.join(cv, "summary.json"), "-np", "1", "--chill"],
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        with open(os.path.join(cv, "summary.json")) as f:
            cv_summary = json.load(f)
        results[mode] = (ckpt, summary, cv_summary, r.stdout)

    (a, sa, ca, out_a), (b, sb, cb, out_b) = results["plugin"], results["no_plugin"]
    assert a["network_weights"].keys() == b["network_weights"].keys()
    for k in a["network_weights"]:
        assert torch.equal(a["network_weights"][k], b["network_weights"][k]), k
    for k in ("train_losses", "val_losses", "mean_fg_dice", "dice_per_class_or_region"):
        assert json.dumps(a["logging"][k], default=float) == json.dumps(b["logging"][k], default=float), k

    def metrics(s):   # file paths differ between the two results folders
        return json.dumps({"foreground_mean": s["foreground_mean"], "mean": s["mean"],
                           "per_case": [c["metrics"] for c in s["metric_per_case"]]}, sort_keys=True)
    assert metrics(sa) == metrics(sb)
    assert metrics(ca) == metrics(cb) and math.isnan(ca["foreground_mean"]["Dice"])
    assert "nnunetv2_zept" not in out_a
