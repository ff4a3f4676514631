"""Makes the stock nnU-Net commands find the ZePT trainers with no manual step.

nnU-Net 2.8 searches the folders listed in `nnUNet_extTrainer` after its own trainer tree.
The `nnunetv2_zept.pth` start-up hook calls `autoregister()` in every Python process of the
environment; it appends `nnunetv2_zept/nnunet_ext` to that variable and keeps whatever the
user listed.  Nothing heavy is imported here: this runs before every Python program.
It also keeps `nnUNetv2_find_best_configuration` working with zero-shot classes, for the
results of the plugin's trainers only (`_model_selection.py`).  Set `NNUNETV2_ZEPT_NO_AUTOREGISTER=1` to opt out of both.
"""
import os

ENV_VAR = "nnUNet_extTrainer"
OPT_OUT_VAR = "NNUNETV2_ZEPT_NO_AUTOREGISTER"


def trainer_folder() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_ext")


def autoregister() -> None:
    if os.environ.get(OPT_OUT_VAR, "") == "1":
        return
    from nnunetv2_zept import _model_selection

    _model_selection.install()
    folder = trainer_folder()
    current = os.environ.get(ENV_VAR, "")
    entries = [e for e in current.split(os.pathsep) if e.strip()]
    if any(os.path.normpath(e) == folder for e in entries):
        return
    entries.append(folder)
    os.environ[ENV_VAR] = os.pathsep.join(entries)


def export_line() -> str:
    """Shell line for setups where `.pth` files do not run (python -S, embedded interpreters)."""
    current = [e for e in os.environ.get(ENV_VAR, "").split(os.pathsep) if e.strip()]
    folder = trainer_folder()
    if folder not in current:
        current.append(folder)
    return f"export {ENV_VAR}={os.pathsep.join(current)}"
