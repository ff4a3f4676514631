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
