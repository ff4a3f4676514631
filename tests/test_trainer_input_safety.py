"""The plugin's trainers through the stock `nnUNetv2_train`: bad settings and bad checkpoints stop
with one line and exit status 1, and checkpoints given with --c or -pretrained_weights are read
with the safe loader, so a crafted file never runs code (docs/input-checks.md)."""
import os
import shutil

import torch

from conftest import cli, stderr_lines, train

DATASET = "Dataset501_ZePTTiny"


def _one_line_stop(r, *phrases):
    """nnU-Net prints tracebacks of exceptions; the plugin's stops are a single stderr line."""
    err = stderr_lines(r.stderr)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(err) == 1 and err[0].startswith("nnUNetv2_train: error: "), r.stderr[-3000:]
    for p in phrases:
        assert p in err[0], err[0]
    return err[0]


def _fold(env, trainer, fold=0):
    return os.path.join(env["nnUNet_results"], DATASET, f"{trainer}__nnUNetPlans__3d_fullres", f"fold_{fold}")


def _payload_checkpoint(source: str, target: str, marker: str) -> None:
    """A real checkpoint plus one object whose unpickling runs `touch marker`."""
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = torch.load(source, map_location="cpu", weights_only=False)
    ckpt["logging"]["payload"] = Payload()
    torch.save(ckpt, target)


def test_bad_training_length_setting_is_one_line(tiny_planned, tmp_path):
    env = dict(tiny_planned["env"], nnUNet_results=str(tmp_path / "results"), NNUNETV2_ZEPT_EPOCHS="abc")
    r = train(env, 501, "nnUNetTrainerZePTStage1", 0, expect_ok=False)
    _one_line_stop(r, "NNUNETV2_ZEPT_EPOCHS='abc'", "positive whole number", "unset it")
    assert not os.path.exists(_fold(env, "nnUNetTrainerZePTStage1"))   # stopped before nnU-Net made the folder


def test_worker_setting_that_cannot_work_is_one_line(tiny_planned, tmp_path):
    # a value that is not a number at all is refused by nnU-Net's own import, before any plugin code
    for value in ("-2", "-1"):
        env = dict(tiny_planned["env"], nnUNet_results=str(tmp_path / value), nnUNet_n_proc_DA=value)
        r = cli(["nnUNetv2_train", "501", "3d_fullres", "0", "-tr", "nnUNetTrainerZePTBaseline", "-device", "cpu"], env,
                expect_ok=False)
        _one_line_stop(r, f"nnUNet_n_proc_DA={value!r} cannot work", "whole number of at least 0", "cores")


def test_continue_from_a_truncated_or_crafted_checkpoint_is_refused(tiny_trained, tmp_path):
    src = os.path.dirname(_fold(tiny_trained["env"], "nnUNetTrainerZePTStage1"))
    env = dict(tiny_trained["env"], nnUNet_results=str(tmp_path / "results"))
    dst = os.path.dirname(_fold(env, "nnUNetTrainerZePTStage1"))
    shutil.copytree(src, dst)
    fold = _fold(env, "nnUNetTrainerZePTStage1")
    final = os.path.join(fold, "checkpoint_final.pth")
    latest = os.path.join(fold, "checkpoint_latest.pth")
    data = open(final, "rb").read()
    os.remove(final)
    for name in ("checkpoint_best.pth",):
        if os.path.exists(os.path.join(fold, name)):
            os.remove(os.path.join(fold, name))
    # an interrupted write: --c picks checkpoint_latest
    with open(latest, "wb") as f:
        f.write(data[: len(data) // 3])
    r = train(env, 501, "nnUNetTrainerZePTStage1", 0, "--c", expect_ok=False)
    _one_line_stop(r, latest, "not a readable checkpoint")
    # a checkpoint that would run a command when nnU-Net's torch.load(weights_only=False) reads it
    marker = tmp_path / "code_ran"
    with open(final, "wb") as f:
        f.write(data)
    _payload_checkpoint(final, latest, str(marker))
    os.remove(final)
    r = train(env, 501, "nnUNetTrainerZePTStage1", 0, "--c", expect_ok=False)
    _one_line_stop(r, latest, "refused", "run code")
    assert not marker.exists()


def test_pretrained_weights_are_read_safely(tiny_trained, tmp_path):
    stage1 = os.path.join(_fold(tiny_trained["env"], "nnUNetTrainerZePTStage1"), "checkpoint_final.pth")
    env = dict(tiny_trained["env"], nnUNet_results=str(tmp_path / "results"), NNUNETV2_ZEPT_EPOCHS="1")
    marker = tmp_path / "code_ran"
    crafted = str(tmp_path / "crafted.pth")
    _payload_checkpoint(stage1, crafted, str(marker))
    r = train(env, 501, "nnUNetTrainerZePTStage2", 0, "-pretrained_weights", crafted, expect_ok=False)
    _one_line_stop(r, crafted, "refused")
    assert not marker.exists()
    random_bytes = tmp_path / "random.pth"
    random_bytes.write_bytes(os.urandom(3000))
    r = train(env, 501, "nnUNetTrainerZePTStage2", 0, "-pretrained_weights", str(random_bytes), expect_ok=False)
    _one_line_stop(r, str(random_bytes), "not a readable checkpoint")
    # a real Stage 1 checkpoint still goes through nnU-Net's own key and shape checks and trains
    r = train(env, 501, "nnUNetTrainerZePTStage2", 0, "-pretrained_weights", stage1)
    assert f"Loading pretrained weights from file  {stage1}" in r.stdout
    assert os.path.isfile(os.path.join(_fold(env, "nnUNetTrainerZePTStage2"), "checkpoint_final.pth"))
