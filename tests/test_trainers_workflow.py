"""Stage 1 / Stage 2 behaviour through the stock commands (issue: trainers)."""
import json
import os
import re
import subprocess
import time

import torch

from conftest import BIN, cli, make_env, plan, train
from nnunetv2_zept.experiments import tiny_phantoms as tiny_dataset


def _ckpt(env, trainer, fold=0, name="checkpoint_final.pth"):
    return os.path.join(env["nnUNet_results"], "Dataset501_ZePTTiny", f"{trainer}__nnUNetPlans__3d_fullres",
                        f"fold_{fold}", name)


def _stage_parameter_names(checkpoint):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2_zept.trainers import nnUNetTrainerZePTStage2

    plans = checkpoint["init_args"]["plans"]
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    net = nnUNetTrainerZePTStage2.build_network_architecture(pm, cm, 1, 5, False)
    names = {id(p): n for n, p in net.named_parameters()}
    return [names[id(p)] for p in net.stage1_parameters()], [names[id(p)] for p in net.stage2_parameters()]


def test_stage2_keeps_every_frozen_tensor_bit_identical(tiny_trained):
    env = tiny_trained["env"]
    c1 = torch.load(_ckpt(env, "nnUNetTrainerZePTStage1"), map_location="cpu", weights_only=False)
    c2 = torch.load(_ckpt(env, "nnUNetTrainerZePTStage2"), map_location="cpu", weights_only=False)
    s1_names, s2_names = _stage_parameter_names(c2)
    assert s1_names and s2_names
    w1, w2 = c1["network_weights"], c2["network_weights"]
    for n in s1_names:
        assert torch.equal(w1[n], w2[n]), f"frozen tensor {n} changed in Stage 2"
    # buffers other than stage/text embeddings (e.g. anomaly calibration) stay as Stage 1 left them
    param_names = set(s1_names) | set(s2_names)
    for n in w1:
        if n not in param_names and "stage" not in n and "text_embeddings" not in n:
            assert torch.equal(w1[n], w2[n]), f"buffer {n} changed in Stage 2"
    assert any(not torch.equal(w1[n], w2[n]) for n in s2_names), "Stage 2 trained nothing"
    # the optimizer holds state only for trained parameters
    n_state = len(c2["optimizer_state"]["state"])
    assert 0 < n_state <= len(s2_names)


def test_checkpoint_carries_roles_and_embeddings(tiny_trained):
    c2 = torch.load(_ckpt(tiny_trained["env"], "nnUNetTrainerZePTStage2"), map_location="cpu", weights_only=False)
    zept = c2["init_args"]["plans"]["configurations"]["3d_fullres"]["zept"]
    assert zept["roles"]["zero_shot"] == [4]
    assert zept["text_encoder"]["name"]
    emb = [v for k, v in c2["network_weights"].items() if k.endswith("text_embeddings")]
    assert emb and emb[0].shape[1] == zept["text_dim"]
    assert torch.allclose(emb[0].norm(dim=1), torch.ones(emb[0].shape[0]), atol=1e-3)


def test_partially_labelled_dataset_trains(tmp_path):
    env = make_env(str(tmp_path))
    block = {
        "organs": ["liver", "kidney_right", "kidney_left"],
        "tumours": {"liver_tumour": {"host": ["liver"]},
                    "kidney_tumour": {"host": ["kidney_right", "kidney_left"], "zero_shot": True}},
        "sources": {"liversite": {"case_prefix": "srcA", "annotates": ["liver", "liver_tumour"]},
                    "kidneysite": {"case_prefix": "srcB", "annotates": ["kidney_right", "kidney_left"]}},
    }
    tiny_dataset.make_dataset(env["nnUNet_raw"], 501, num_train=6, num_test=0, prefixes=["srcA", "srcB"],
                              zept_block=block)
    plan(env, 501)
    r = train(env, 501, "nnUNetTrainerZePTStage1", 0)
    assert "source liversite" in r.stdout and "source kidneysite" in r.stdout
    assert os.path.isfile(_ckpt(env, "nnUNetTrainerZePTStage1"))


def test_resume_after_kill_in_the_middle_of_an_epoch(tiny_planned, tmp_path):
    env = dict(tiny_planned["env"], nnUNet_results=str(tmp_path / "results"), nnUNet_n_proc_DA="0",
               NNUNETV2_ZEPT_EPOCHS="6", NNUNETV2_ZEPT_SAVE_EVERY="1")
    latest = _ckpt(env, "nnUNetTrainerZePTStage1", name="checkpoint_latest.pth")
    proc = subprocess.Popen([os.path.join(BIN, "nnUNetv2_train"), "501", "3d_fullres", "0", "-tr",
                             "nnUNetTrainerZePTStage1", "-device", "cpu"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not os.path.isfile(latest) and time.time() - t0 < 400 and proc.poll() is None:
            time.sleep(0.2)
        assert os.path.isfile(latest), "no checkpoint_latest.pth was written"
        time.sleep(1.5)   # into the next epoch
    finally:
        proc.kill()
        proc.wait()
    assert not os.path.isfile(_ckpt(env, "nnUNetTrainerZePTStage1")), "the run finished before it was killed"
    done_epoch = torch.load(latest, map_location="cpu", weights_only=False)["current_epoch"]
    r = train(env, 501, "nnUNetTrainerZePTStage1", 0, "--c")
    final = torch.load(_ckpt(env, "nnUNetTrainerZePTStage1"), map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 6
    epochs_run = [int(m.group(1)) for m in re.finditer(r": Epoch (\d+)\s*$", r.stdout, re.M)]
    assert epochs_run and epochs_run[0] == done_epoch >= 1


def test_two_fold_cross_validation_find_best_and_ensemble(tiny_planned, tmp_path):
    env = dict(tiny_planned["env"], nnUNet_results=str(tmp_path / "results"))
    pre = os.path.join(env["nnUNet_preprocessed"], "Dataset501_ZePTTiny")
    cases = sorted(f[:-4] for f in os.listdir(os.path.join(pre, "nnUNetPlans_3d_fullres")) if f.endswith(".pkl"))
    splits = [{"train": cases[4:], "val": cases[:4]}, {"train": cases[:4], "val": cases[4:]}]
    split_file = os.path.join(pre, "splits_final.json")
    old = open(split_file).read() if os.path.isfile(split_file) else None
    with open(split_file, "w") as f:
        json.dump(splits, f)
    try:
        for fold in (0, 1):
            train(env, 501, "nnUNetTrainerZePTStage1", fold)
            train(env, 501, "nnUNetTrainerZePTStage2", fold, "--npz")
            train(env, 501, "nnUNetTrainerZePTBaseline", fold, "--npz")
    finally:
        if old is not None:
            with open(split_file, "w") as f:
                f.write(old)
    r = cli(["nnUNetv2_find_best_configuration", "501", "-c", "3d_fullres", "-tr", "nnUNetTrainerZePTStage2",
             "nnUNetTrainerZePTBaseline", "-f", "0", "1", "-np", "1"], env)
    assert "ensemble" in r.stdout.lower()
    assert os.path.isdir(os.path.join(env["nnUNet_results"], "Dataset501_ZePTTiny", "ensembles"))
    # prediction with both folds, probabilities, then nnU-Net's ensembling of two prediction folders
    raw_ts = os.path.join(env["nnUNet_raw"], "Dataset501_ZePTTiny", "imagesTs")
    outs = []
    for tr in ("nnUNetTrainerZePTStage2", "nnUNetTrainerZePTBaseline"):
        out = str(tmp_path / tr)
        cli(["nnUNetv2_predict", "-i", raw_ts, "-o", out, "-d", "501", "-c", "3d_fullres", "-tr", tr,
             "-f", "0", "1", "--save_probabilities", "-device", "cpu", "-npp", "0", "-nps", "0"],
            dict(env, nnUNet_n_proc_DA="0"))
        outs.append(out)
    ens = str(tmp_path / "ensemble")
    cli(["nnUNetv2_ensemble", "-i", *outs, "-o", ens, "-np", "1"], env)
    assert sorted(f for f in os.listdir(ens) if f.endswith(".nii.gz")) == \
        ["test_000.nii.gz", "test_001.nii.gz", "test_002.nii.gz"]


def test_export_model_to_zip_and_install(tiny_trained, tmp_path):
    env = tiny_trained["env"]
    zip_path = str(tmp_path / "model.zip")
    cli(["nnUNetv2_export_model_to_zip", "-d", "501", "-o", zip_path, "-c", "3d_fullres",
         "-tr", "nnUNetTrainerZePTStage2", "-f", "0", "--not_strict"], env)
    other = dict(env, nnUNet_results=str(tmp_path / "other_results"))
    os.makedirs(other["nnUNet_results"])
    cli(["nnUNetv2_install_pretrained_model_from_zip", zip_path], other)
    out = str(tmp_path / "pred")
    raw_ts = os.path.join(env["nnUNet_raw"], "Dataset501_ZePTTiny", "imagesTs")
    # the installed model predicts without the training data (no nnUNet_preprocessed / raw needed)
    pred_env = {k: v for k, v in other.items() if k not in ("nnUNet_preprocessed", "nnUNet_raw")}
    cli(["nnUNetv2_predict", "-i", raw_ts, "-o", out, "-d", "501", "-c", "3d_fullres",
         "-tr", "nnUNetTrainerZePTStage2", "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0"],
        dict(pred_env, nnUNet_n_proc_DA="0"))
    assert len([f for f in os.listdir(out) if f.endswith(".nii.gz")]) == 3


def test_seed_reproduces_a_training_and_another_seed_does_not(tiny_planned, tmp_path):
    """NNUNETV2_ZEPT_SEED fixes network initialisation, patch sampling, augmentation, Gumbel noise and
    synthetic lesions: the same seed gives bit-identical weights, another seed other weights."""
    weights = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        env = dict(tiny_planned["env"], nnUNet_results=str(tmp_path / name), NNUNETV2_ZEPT_SEED=str(seed),
                   NNUNETV2_ZEPT_EPOCHS="1")
        train(env, 501, "nnUNetTrainerZePTStage1", 0)
        weights[name] = torch.load(_ckpt(env, "nnUNetTrainerZePTStage1"), map_location="cpu",
                                   weights_only=False)["network_weights"]
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert any(not torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_like_for_like_baseline_uses_zepts_optimiser_and_schedule(tiny_planned, tmp_path):
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2_zept.training.lr_schedule import WarmupCosineLR

    env = dict(tiny_planned["env"], nnUNet_results=str(tmp_path))
    old = dict(os.environ)
    os.environ.update(env)
    try:
        t = get_trainer_from_args("501", "3d_fullres", 0, "nnUNetTrainerZePTBaselineAdamW", "nnUNetPlans",
                                  device=torch.device("cpu"))
        t.initialize()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert isinstance(t.optimizer, torch.optim.AdamW) and isinstance(t.lr_scheduler, WarmupCosineLR)
    assert t.optimizer.param_groups[0]["lr"] == 1e-3 and t.optimizer.param_groups[0]["weight_decay"] == 1e-4
