"""Shared fixtures: nnU-Net folders in a temporary directory, a tiny planned dataset, and one
short Stage 1 + Stage 2 training through the stock commands that several tests reuse."""
import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from nnunetv2_zept.experiments import tiny_phantoms as tiny_dataset  # noqa: E402

REPO = os.path.dirname(HERE)
SHARED_REAL = os.path.join(os.path.dirname(REPO), "shared", "data", "real")
BIN = os.path.dirname(sys.executable)

# 2-core machines: nnU-Net's default pool sizes make validation several times slower
FAST_ENV = {
    "nnUNet_def_n_proc": "1",
    "nnUNet_compile": "f",
    "OMP_NUM_THREADS": "2",
    "NNUNETV2_ZEPT_EPOCHS": "2",
    "NNUNETV2_ZEPT_ITERATIONS": "3",
    "NNUNETV2_ZEPT_VAL_ITERATIONS": "1",
}


def cli(args, env, timeout=900, expect_ok=True):
    """Run a console script of this environment; on failure show its output."""
    exe = os.path.join(BIN, args[0])
    proc = subprocess.run([exe] + list(args[1:]), env=env, capture_output=True, text=True, timeout=timeout)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def real_data(*parts):
    """A path in the shared real CT data; the test is skipped, with the reason, when it is absent."""
    from pathlib import Path

    p = Path(SHARED_REAL).resolve().joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real CT test data missing: {p} (expected in ../shared/data/real relative to the repo root)")
    return p


def stderr_lines(stderr):
    """Non-empty stderr lines, Python warnings left out (a library's FutureWarning is not a message
    of ours): what a command says on failure must be these lines."""
    out, in_warning = [], False
    for line in stderr.splitlines():
        if re.match(r"^\S.*:\d+: \w*Warning: ", line):
            in_warning = True
            continue
        if in_warning and line.startswith("  "):
            in_warning = False
            continue
        in_warning = False
        if line.strip():
            out.append(line)
    return out


def make_env(root, **extra):
    env = dict(os.environ)
    env.pop("nnUNet_extTrainer", None)   # the plugin's start-up hook must set it by itself
    env.update(FAST_ENV)
    env.update({"nnUNet_raw": os.path.join(root, "raw"), "nnUNet_preprocessed": os.path.join(root, "preprocessed"),
                "nnUNet_results": os.path.join(root, "results")})
    env.update({k: str(v) for k, v in extra.items()})
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(env[k], exist_ok=True)
    return env


def plan(env, dataset_id):
    e = dict(env, nnUNet_n_proc_DA="1")   # 0 crashes nnU-Net's planner (torch.set_num_threads(0))
    cli(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "3d_fullres", "-np", "1", "-npfp", "1",
         "--verify_dataset_integrity"], e)


def train(env, dataset_id, trainer, fold=0, *extra, expect_ok=True):
    e = dict(env, nnUNet_n_proc_DA="0")
    return cli(["nnUNetv2_train", str(dataset_id), "3d_fullres", str(fold), "-tr", trainer, "-device", "cpu",
                *extra], e, expect_ok=expect_ok)


@pytest.fixture(scope="session")
def tiny_planned(tmp_path_factory):
    """Dataset 501 (tiny, region-based, zept block), planned and preprocessed."""
    root = str(tmp_path_factory.mktemp("nnunet_tiny"))
    env = make_env(root)
    tiny_dataset.make_dataset(env["nnUNet_raw"], 501)
    plan(env, 501)
    return {"root": root, "env": env, "id": 501}


@pytest.fixture(scope="session")
def tiny_trained(tiny_planned):
    """Stage 1 and Stage 2, fold 0, a few iterations each, with --npz probabilities."""
    env = tiny_planned["env"]
    s1 = train(env, 501, "nnUNetTrainerZePTStage1", 0, "--npz")
    s2 = train(env, 501, "nnUNetTrainerZePTStage2", 0, "--npz")
    return dict(tiny_planned, stage1_log=s1.stdout, stage2_log=s2.stdout)
