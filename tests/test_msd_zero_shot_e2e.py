"""The MSD zero-shot protocol on mini datasets, through the stock commands only: merge the
MSD-format minis (+ KiTS and two multi-organ sets) -> nnUNetv2_plan_and_preprocess -> two folds of
Stage 1 and Stage 2 (nnUNetv2_train, tiny NNUNETV2_ZEPT_EPOCHS/ITERATIONS) -> each fold's model
predicts the zero-shot test sets -> nnunetv2_zept cv-report."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import msd_minis
from conftest import cli, make_env, plan, train

FOLDS = (0, 1)
VALIDATION = (["liver_0", "case_00000", "ctorg_000"], ["liver_1", "case_00001", "word_0001"])


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("msd_e2e")
    env = make_env(str(root), NNUNETV2_ZEPT_EPOCHS="1", NNUNETV2_ZEPT_ITERATIONS="2")
    raw = Path(env["nnUNet_raw"])
    msd_minis.make_msd_minis(raw, n_cases=2)
    mapping = msd_minis.write_mapping(root / "mapping.json")
    merge = cli(["nnunetv2_zept", "merge", "-i", *msd_minis.TRAIN, *msd_minis.TEST, "--test", *msd_minis.TEST,
                 "-o", "600", "--name", "ZePTUnion", "--mapping", mapping], env)
    plan(env, 600)
    pre = Path(env["nnUNet_preprocessed"]) / "Dataset600_ZePTUnion"
    cases = sorted(f[:-4] for f in os.listdir(pre / "nnUNetPlans_3d_fullres") if f.endswith(".pkl"))
    val = [list(v) for v in VALIDATION]
    (pre / "splits_final.json").write_text(json.dumps([{"train": [c for c in cases if c not in v], "val": v}
                                                       for v in val]))
    logs = {}
    for fold in FOLDS:
        logs[("stage1", fold)] = train(env, 600, "nnUNetTrainerZePTStage1", fold).stdout
        logs[("stage2", fold)] = train(env, 600, "nnUNetTrainerZePTStage2", fold, "--npz").stdout
        cli(["nnUNetv2_predict", "-i", str(raw / "Dataset600_ZePTUnion" / "imagesTs"), "-o",
             str(root / "zero_shot" / f"fold_{fold}"), "-d", "600", "-c", "3d_fullres", "-tr",
             "nnUNetTrainerZePTStage2", "-f", str(fold), "--save_probabilities", "-device", "cpu", "-npp", "0",
             "-nps", "0"], dict(env, nnUNet_n_proc_DA="0"))
    report = cli(["nnunetv2_zept", "cv-report", "-d", "600", "-f", "0", "1", "--test-predictions",
                  str(root / "zero_shot")], env)
    results = Path(env["nnUNet_results"]) / "Dataset600_ZePTUnion" / "nnUNetTrainerZePTStage2__nnUNetPlans__3d_fullres"
    return {"env": env, "root": root, "raw": raw, "merge": merge.stdout, "logs": logs, "report": report.stdout,
            "results": results, "val": val}


def test_stock_training_reads_the_merged_sources(cv_run):
    log = cv_run["logs"][("stage1", 0)]
    assert "source kits (prefix 'case_') annotates: kidney_right, kidney_left, kidney_tumour, kidney_cyst" in log
    assert "test source msd_lung (prefix 'lung_') annotates: lung_tumour" in log
    assert "tumour:     colon_tumour [zero-shot] in colon" in log
    assert "wrote" in cv_run["merge"] and "held out as zero-shot" in cv_run["merge"]


def test_cv_report_has_every_fold_mean_std_and_nnunet_values(cv_run):
    out = cv_run["results"] / "zept_cv_report"
    rep = json.loads((out / "cv_report.json").read_text())
    assert rep["folds"] == [0, 1] and (out / "cv_report.png").stat().st_size > 10_000
    assert rep["n_cases"] == {"0": {"validation": 3, "test": 8}, "1": {"validation": 3, "test": 8}}
    for f in ("0", "1"):
        row = rep["per_fold"][f]
        assert 0.0 <= row["organ_DSC"] <= 1.0 and 0.0 <= row["zero_shot_AUROC_host"] <= 1.0
        # nnU-Net's own summary.json of the fold, read back by class
        nn = json.loads((cv_run["results"] / f"fold_{f}" / "validation" / "summary.json").read_text())
        liver = rep["per_class"]["liver"]["per_fold"]["nnunet_Dice"][f]
        assert liver == pytest.approx(nn["mean"]["(1, 9, 15)"]["Dice"])
        assert row["nnunet_foreground_mean_Dice"] == pytest.approx(nn["foreground_mean"]["Dice"])
        # the fold's validation evaluation is the one `nnunetv2_zept evaluate` writes, on that fold's cases
        val = json.loads((out / f"fold_{f}" / "validation" / "summary.json").read_text())
        assert sorted(val["cases"]) == sorted(cv_run["val"][int(f)])
    organ = [rep["per_fold"][f]["organ_DSC"] for f in ("0", "1")]
    assert rep["summary"]["organ_DSC"]["mean"] == pytest.approx(np.mean(organ))
    assert rep["summary"]["organ_DSC"]["std"] == pytest.approx(np.std(organ, ddof=1))
    md = (out / "cv_report.md").read_text()
    assert "| **mean ± std** |" in md and "zero-shot voxel AUROC (host)" in md and "nnU-Net foreground Dice" in md
    assert "| msd_pancreas (test) | pancreatic_tumour |" in md and "| kits (validation) | kidney_right |" in md
    # zero-shot columns come from each fold's test predictions; the pancreas host is annotated in
    # MSD Task07, so its voxel AUROC exists even for a model that predicts no organ yet
    assert rep["per_class"]["lung_tumour"]["split"] == "test"
    assert rep["per_class"]["pancreatic_tumour"]["mean_std"]["AUROC_host"]["n_folds"] == 2


def test_zero_shot_types_without_a_host_label_use_the_predicted_host(cv_run):
    test = json.loads((cv_run["results"] / "zept_cv_report" / "fold_0" / "test" / "summary.json").read_text())
    lung = test["per_case"]["lung_000"]
    assert list(lung) == ["lung_tumour"]                       # MSD lung annotates the tumour only
    assert lung["lung_tumour"]["host_region_source"] == "prediction"
    assert list(test["per_case"]["colon_000"]) == ["colon_tumour"]
    assert test["per_case"]["colon_000"]["colon_tumour"]["host_region_source"] == "prediction"
    pancreas = test["per_case"]["pancreas_000"]
    assert sorted(pancreas) == ["pancreas", "pancreatic_tumour"]
    assert pancreas["pancreatic_tumour"]["host_region_source"] == "reference"
    det = test["per_class"]["pancreatic_tumour"]["detection"]
    assert (det["n_positive_cases"], det["n_negative_cases"]) == (1, 1)


def test_cv_report_refuses_folds_without_probabilities(cv_run):
    env = cv_run["env"]
    r = cli(["nnunetv2_zept", "cv-report", "-d", "600", "-tr", "nnUNetTrainerZePTStage1", "-f", "0"], env,
            expect_ok=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "no .npz probabilities" in r.stderr and "--val --npz" in r.stderr
    r = cli(["nnunetv2_zept", "cv-report", "-d", "600", "-f", "0", "1"], env, expect_ok=False)
    assert r.returncode == 1 and "already holds" in r.stderr and "--overwrite" in r.stderr
