"""Reference models: trained nnU-Net model folders shipped as nnU-Net zips, for the demo.

Minutes of CPU cannot train a model that shows what ZePT does, so the sealed benchmark exports
the models of one training seed (benchmarks/zero_shot.py export-reference) and the demo installs them with
nnU-Net's own `nnUNetv2_install_pretrained_model_from_zip`.  A zip is what
`nnUNetv2_export_model_to_zip` writes, made small: the checkpoint keeps no optimiser state and
stores its floating-point weights in half precision (nnU-Net's predictor loads them into its
float32 network unchanged).  Beside the model folder's plans.json lies `zept_reference.json`,
which names the plugin version that trained it; installing a zip of another version is refused,
because a network of another version may not load or may compute something else.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Optional

INFO_FILE = "zept_reference.json"
MAX_ZIP_BYTES = 25 * 2 ** 20


class ReferenceModelError(RuntimeError):
    """A reference model zip cannot be used; the message says why."""


def slim_checkpoint(source: Path, target: Path) -> None:
    """checkpoint_final.pth without optimiser and grad-scaler state, floating-point weights in fp16."""
    import torch

    from nnunetv2_zept.checkpoints import load_checkpoint

    ckpt = load_checkpoint(str(source))
    ckpt["network_weights"] = {k: (v.half() if torch.is_floating_point(v) else v)
                               for k, v in ckpt["network_weights"].items()}
    ckpt["optimizer_state"] = None
    ckpt["grad_scaler_state"] = None
    torch.save(ckpt, str(target))


def export_reference_zip(model_folder: Path, zip_path: Path, info: dict, dataset_name: str,
                         fold: str = "0") -> Path:
    """Zip `model_folder` (`<Trainer>__<Plans>__<configuration>` of nnUNet_results/<dataset_name>) with
    nnU-Net's exporter, after slimming its checkpoint; `info` (plus the plugin version) goes into
    zept_reference.json.  Returns the zip path."""
    from nnunetv2_zept import __version__

    model_folder = Path(model_folder)
    trainer, plans, configuration = model_folder.name.split("__")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        copy = root / dataset_name / model_folder.name
        fold_dir = copy / f"fold_{fold}"
        fold_dir.mkdir(parents=True)
        for f in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
            shutil.copy2(model_folder / f, copy / f)
        src_fold = model_folder / f"fold_{fold}"
        for f in ("debug.json", "progress.png"):
            if (src_fold / f).is_file():
                shutil.copy2(src_fold / f, fold_dir / f)
        (fold_dir / "validation").mkdir()
        summary = src_fold / "validation" / "summary.json"
        (fold_dir / "validation" / "summary.json").write_text(summary.read_text() if summary.is_file() else "{}")
        slim_checkpoint(src_fold / "checkpoint_final.pth", fold_dir / "checkpoint_final.pth")
        zip_path = Path(zip_path)
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        partial = zip_path.with_suffix(".partial")
        env = dict(os.environ, nnUNet_results=str(root))
        exe = Path(sys.executable).parent / "nnUNetv2_export_model_to_zip"
        proc = subprocess.run([str(exe), "-d", dataset_name, "-o", str(partial), "-c", configuration, "-tr", trainer,
                               "-p", plans, "-f", fold], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ReferenceModelError(f"nnUNetv2_export_model_to_zip failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        with zipfile.ZipFile(partial, "a", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"{dataset_name}/{model_folder.name}/{INFO_FILE}",
                       json.dumps(dict(info, plugin_version=__version__, trainer=trainer, plans=plans,
                                       configuration=configuration, fold=fold), indent=1))
        if partial.stat().st_size > MAX_ZIP_BYTES:
            size = partial.stat().st_size / 2 ** 20
            partial.unlink()
            raise ReferenceModelError(f"{zip_path.name} would be {size:.1f} MB, above the {MAX_ZIP_BYTES / 2 ** 20:.0f} MB "
                                      "a reference model may take in the repository")
        partial.replace(zip_path)
    return zip_path


def reference_info(zip_path: Path) -> dict:
    """zept_reference.json of a reference zip (with `model_folder`, its path inside the zip)."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = [n for n in z.namelist() if n.endswith("/" + INFO_FILE)]
            if len(names) != 1:
                raise ReferenceModelError(f"{zip_path}: not a ZePT reference model (no single {INFO_FILE} inside); "
                                          "rebuild it with `python benchmarks/zero_shot.py export-reference`")
            info = json.loads(z.read(names[0]))
    except zipfile.BadZipFile as e:
        raise ReferenceModelError(f"{zip_path}: not a readable zip ({e})") from None
    info["model_folder"] = names[0].rsplit("/", 1)[0]
    return info


def install_reference(zip_path: Path, results_root: Path) -> dict:
    """Check the zip's plugin version against this plugin, then install it into `results_root` with
    nnU-Net's `nnUNetv2_install_pretrained_model_from_zip`.  Returns its info."""
    from nnunetv2_zept import __version__

    info = reference_info(zip_path)
    if info.get("plugin_version") != __version__:
        raise ReferenceModelError(
            f"{Path(zip_path).name} was made by nnunetv2_zept {info.get('plugin_version')} but this is nnunetv2_zept "
            f"{__version__}; a network of another version may not load or may compute something else. Rebuild the "
            f"reference models with `python benchmarks/zero_shot.py export-reference` (docs/benchmarks.md)")
    env = dict(os.environ, nnUNet_results=str(results_root))
    exe = Path(sys.executable).parent / "nnUNetv2_install_pretrained_model_from_zip"
    proc = subprocess.run([str(exe), str(zip_path)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReferenceModelError(f"installing {zip_path} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return info


def shipped_reference_models(folder: Optional[Path] = None) -> Dict[str, Path]:
    """{name: zip} of the reference models in the repository (benchmarks/reference_models), empty
    when the package does not run from a source checkout."""
    folder = Path(folder) if folder else Path(__file__).resolve().parents[2] / "benchmarks" / "reference_models"
    return {p.stem: p for p in sorted(folder.glob("*.zip"))} if folder.is_dir() else {}
