"""The synthetic dataset passes nnU-Net's own integrity check and plans a single-patch 3d_fullres."""
import json
import os
import subprocess
import sys
from pathlib import Path

from nnunetv2_zept.synthetic import make_synthetic_dataset


def test_plan_and_preprocess_verifies_dataset(tmp_path):
    raw, pre, res = tmp_path / "raw", tmp_path / "pre", tmp_path / "res"
    make_synthetic_dataset(raw, dataset_id=996, name="SynPlan", num_train=3, num_test=2, seed=1,
                           seen_tumours=("liver_tumour",), zero_shot_tumours=("lung_nodule",),
                           tumour_free_fraction=0.5)
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(res),
               nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1", nnUNet_compile="f")
    exe = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
    cmd = [str(exe) if exe.exists() else "nnUNetv2_plan_and_preprocess",
           "-d", "996", "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--verify_dataset_integrity"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "verify_dataset_integrity Done" in out.stdout
    plans = json.loads((pre / "Dataset996_SynPlan" / "nnUNetPlans.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    # one patch covers a whole demo case (z, y, x = 48, 56, 72 voxels)
    assert all(p >= s for p, s in zip(cfg["patch_size"], (48, 56, 72))), cfg["patch_size"]
    assert cfg["normalization_schemes"] == ["CTNormalization"]
    n_pre = len(list((pre / "Dataset996_SynPlan" / "nnUNetPlans_3d_fullres").glob("*.pkl")))
    assert n_pre == 3
