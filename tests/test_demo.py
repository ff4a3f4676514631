"""The one-command demo: a shortened run (`--quick`) end to end through the stock nnU-Net commands,
with and without reference models, its refusal to replace folders, and its settings."""
import json
import os
import re
import subprocess

import numpy as np
import pytest

from conftest import BIN, FAST_ENV

from nnunetv2_zept.demo import demo_settings
from nnunetv2_zept.demo.pipeline import MARKER, DemoError, prepare_output


def demo_env():
    env = dict(os.environ)
    env.pop("nnUNet_extTrainer", None)     # the plugin's start-up hook must set it by itself
    env.update({k: v for k, v in FAST_ENV.items() if not k.startswith("NNUNETV2_ZEPT_")})
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env.pop(k, None)                   # the demo sets its own folders
    return env


def run_demo_cli(*args, timeout=1800):
    return subprocess.run([os.path.join(BIN, "nnunetv2_zept"), "demo", *args], env=demo_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "zept_demo"
    proc = run_demo_cli("--quick", "--baseline", "--no-reference", "--output", str(out))
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    return out, proc


def test_quick_demo_writes_report_with_numbers_and_figures(quick_demo):
    out, proc = quick_demo
    # progress: one counter line per phase, and where the report is
    for k in range(1, 9):
        assert f"[{k}/8]" in proc.stdout
    assert "training Stage 1" in proc.stdout and "training Stage 2" in proc.stdout and "baseline" in proc.stdout
    report = out / "report" / "report.md"
    assert str(report) in proc.stdout
    text = report.read_text()
    assert "not shown in this run (switched off)" in text

    # the organ table has a DSC for both models in every organ row
    organ_rows = re.findall(r"^\| (liver|spleen|kidney_right|kidney_left|pancreas|stomach|aorta|lung) \| (.+) \|$",
                            text, flags=re.M)
    assert len(organ_rows) == 8
    for _, cells in organ_rows:
        values = [c.strip().strip("*") for c in cells.split("|")]
        assert len(values) == 2 and all(re.fullmatch(r"\d\.\d{2}", v) for v in values), cells

    # every zero-shot type has a row with DSC / voxel AUROC / case AUROC for both models
    data = json.loads((out / "report" / "report.json").read_text())
    zs = [n for n, e in data["summaries"]["zept"]["per_class"].items() if e["role"] == "zero_shot_tumour"]
    assert set(zs) == {"pancreas_tumour", "lung_nodule", "spleen_cyst", "liver_metastasis"}
    for t in zs:
        row = re.search(rf"^\| {t} \(\d+\) \| (.+) \|$", text, flags=re.M)
        assert row, f"no table row for {t}"
        assert len(row.group(1).split("|")) == 2 and row.group(1).count("/") == 4, row.group(0)
        for m in ("zept", "baseline"):
            e = data["summaries"][m]["per_class"][t]
            assert 0.0 <= e["voxel_host"]["AUROC"] <= 1.0
            assert 0.0 <= e["detection"]["AUROC"] <= 1.0
    assert "tumour-agnostic" in text
    assert "Wall time per phase" in text and "training Stage 1" in text
    # every training is seeded (the default seed 0), so that a run reproduces its models
    assert "training seed 0" in text
    for key in ("stage1", "stage2", "baseline"):
        assert "NNUNETV2_ZEPT_SEED=0: Python, NumPy and torch seeded" in (out / "logs" / f"train_{key}.log").read_text(), key

    # the fresh held-out cases come from their own generator seed, not from the training data
    held = json.loads((out / "held_out" / "Dataset991_ZePTDemoHeldOut" / "cases.json").read_text())
    train = json.loads((out / "nnUNet_raw" / "Dataset990_ZePTSynthetic" / "cases.json").read_text())
    assert held["generator"]["seed"] != train["generator"]["seed"] and held["generator"]["num_train"] == 0

    # the baseline's zero-shot channels hold its seen-tumour maximum inside the host region, ZePT's floor elsewhere
    names = list(json.loads((out / "nnUNet_raw" / "Dataset990_ZePTSynthetic" / "dataset.json").read_text())["labels"])[1:]
    orig = sorted((out / "predictions" / "baseline").glob("*.npz"))[0]
    copy = out / "predictions" / "baseline_tumour_agnostic" / orig.name
    p, q = np.load(orig)["probabilities"], np.load(copy)["probabilities"]
    seen_max = np.maximum(p[names.index("liver_tumour")], p[names.index("kidney_tumour")])
    lung = q[names.index("lung_nodule")]
    inside = lung > 1e-10
    # ... lowered by ZePT's margin in the region's outer shell (the tissue around the lung)
    from nnunetv2_zept.architectures.config import DEFAULT_SWITCHES
    from nnunetv2_zept.experiments.baseline_scores import lowered_by

    lowered = lowered_by(seen_max, DEFAULT_SWITCHES["tumour_shell_margin"])
    same, shell = lung == seen_max, np.isclose(lung, lowered, rtol=1e-5, atol=0)
    assert (same | shell)[inside].all() and same[inside].mean() > 0.2
    np.testing.assert_array_equal(q[names.index("liver")], p[names.index("liver")])

    # figures: slices of held-out cases (one with a zero-shot tumour), ROC per tumour type
    for f in ("held_out_slices_zept.png", "held_out_slices_baseline.png"):
        assert (out / "report" / f).stat().st_size > 10_000
        assert f"({f})" in text
    assert any(c["type"] in zs for c in data["slice_cases"])
    for t in zs:
        assert (out / "report" / f"roc_{t}.png").stat().st_size > 10_000

    # the steps were really trained with the stock commands, with the settings asked for
    assert data["training"]["baseline"]["total_iterations"] == (data["training"]["stage1"]["total_iterations"]
                                                                + data["training"]["stage2"]["total_iterations"])
    for key, trainer in (("stage1", "nnUNetTrainerZePTStage1"), ("stage2", "nnUNetTrainerZePTStage2"),
                         ("baseline", "nnUNetTrainerZePTBaselineAdamW")):
        assert (out / "nnUNet_results" / "Dataset990_ZePTSynthetic" / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
                / "checkpoint_final.pth").is_file()
        assert len(data["training"][key]["train_losses"]) == data["training"][key]["epochs"]
    # the loss terms of each ZePT stage, one value per epoch, and the curves figure
    assert set(data["training"]["stage2"]["loss_parts"]["train"]) == {"tumour_mask", "alignment"}
    assert set(data["training"]["stage1"]["loss_parts"]["train"]) == {"organ", "background_tissue"}
    assert len(data["training"]["stage2"]["loss_parts"]["train"]["alignment"]) == data["training"]["stage2"]["epochs"]
    assert (out / "report" / "training_curves.png").stat().st_size > 10_000 and "(training_curves.png)" in text


def test_demo_installs_reference_models_and_shows_them_beside_the_model_trained_here(quick_demo, tmp_path):
    """Reference zips (here made from the quick demo's own models, as export-reference makes them) are
    installed with nnU-Net's installer and predict the same fresh held-out cases."""
    from nnunetv2_zept.experiments.reference_models import export_reference_zip

    out, _ = quick_demo
    refs = tmp_path / "refs"
    results = out / "nnUNet_results" / "Dataset990_ZePTSynthetic"
    for name, config, trainer in (("zept", "zept", "nnUNetTrainerZePTStage2"),
                                  ("nnunet_adamw", "nnunet_adamw", "nnUNetTrainerZePTBaselineAdamW")):
        export_reference_zip(results / f"{trainer}__nnUNetPlans__3d_fullres", refs / f"{name}.zip",
                             {"name": name, "config": config, "seed": 0, "trainers": [trainer],
                              "rebuild": "python benchmarks/zero_shot.py export-reference"},
                             "Dataset990_ZePTSynthetic")
    out2 = tmp_path / "demo2"
    proc = run_demo_cli("--quick", "--reference-models", str(refs), "--output", str(out2))
    assert proc.returncode == 0, f"demo failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    assert "installing the reference models" in proc.stdout
    data = json.loads((out2 / "report" / "report.json").read_text())
    assert list(data["models"]) == ["zept", "reference_nnunet_adamw", "reference_zept"]
    text = (out2 / "report" / "report.md").read_text()
    assert "ZePT (reference)" in text and "nnU-Net like-for-like (reference)" in text
    assert "python benchmarks/zero_shot.py export-reference" in text
    assert (out2 / "reference_results" / "Dataset990_ZePTSynthetic").is_dir()
    for key in data["models"]:
        assert len(list((out2 / "predictions" / key).glob("*.npz"))) == 7


def test_existing_output_is_not_overwritten_without_flag(quick_demo):
    out, _ = quick_demo
    report = out / "report" / "report.md"
    before = report.read_text()
    proc = run_demo_cli("--quick", "--output", str(out), timeout=120)
    assert proc.returncode != 0
    assert "--overwrite" in proc.stderr and str(out) in proc.stderr
    assert report.read_text() == before
    assert "[1/" not in proc.stdout


def test_overwrite_never_removes_a_folder_the_demo_did_not_write(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "precious.nii.gz").write_bytes(b"data")
    proc = run_demo_cli("--quick", "--overwrite", "--output", str(user), timeout=120)
    assert proc.returncode != 0
    assert MARKER in proc.stderr and "left untouched" in proc.stderr
    assert (user / "precious.nii.gz").read_bytes() == b"data"


def test_overwrite_replaces_an_earlier_demo_folder(tmp_path):
    out = tmp_path / "demo"
    prepare_output(demo_settings("quick", output=out))
    (out / "stale.txt").write_text("old run")
    with pytest.raises(DemoError, match="--overwrite"):
        prepare_output(demo_settings("quick", output=out))
    prepare_output(demo_settings("quick", output=out, overwrite=True))
    assert not (out / "stale.txt").exists() and (out / MARKER).is_file()


def test_settings_give_the_baseline_the_steps_of_both_stages():
    s = demo_settings("default")
    assert s.baseline.total == s.stage1.total + s.stage2.total
    assert s.stage1.total > s.stage2.total       # Stage 1 gets most of the budget
    assert not s.train_baseline and s.use_reference
    longer = demo_settings("longer")
    assert longer.stage1.total > s.stage1.total and longer.train_baseline
    assert demo_settings("default", baseline_epochs=2).baseline.epochs == 2
    with pytest.raises(ValueError, match="num-test"):
        demo_settings("default", num_test=3)
    with pytest.raises(ValueError, match="unknown demo preset"):
        demo_settings("huge")


def test_cli_flags_map_onto_settings():
    import argparse

    from nnunetv2_zept.commands import demo as cmd

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    s = cmd.settings_from_args(p.parse_args(["--epochs", "8", "--iterations", "5", "--num-test", "10", "--seed", "3",
                                             "--fold", "all", "--unet-features", "0"]))
    d = demo_settings("default")
    stage2 = round(8 * d.stage2_epochs / d.stage1_epochs)
    assert (s.stage1.epochs, s.stage2.epochs, s.baseline.epochs, s.iterations) == (8, stage2, 8 + stage2, 5)
    assert (s.num_test, s.seed, s.fold, s.unet_features) == (10, 3, "all", None)
    assert cmd.settings_from_args(p.parse_args(["--longer"])).preset == "longer"
    s = cmd.settings_from_args(p.parse_args(["--baseline", "--no-reference", "--held-out-seed", "7"]))
    assert s.train_baseline and not s.use_reference and s.held_out_seed == 7 and s.train_seed == 0
    assert cmd.settings_from_args(p.parse_args(["--train-seed", "5"])).train_seed == 5
    with pytest.raises(ValueError, match="train-seed"):
        cmd.settings_from_args(p.parse_args(["--train-seed", "-1"]))
    with pytest.raises(SystemExit):
        p.parse_args(["--quick", "--longer"])
