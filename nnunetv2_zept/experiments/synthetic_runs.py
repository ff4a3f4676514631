"""The synthetic datasets experiments train on: generated, planned and preprocessed once.

Every experiment (demo, benchmarks) makes its data the same way: the generator's demo anatomy
on a chosen grid, nnU-Net's stock planning and preprocessing, and optionally a narrower U-Net in
the plans (the same plans serve ZePT and the baselines, so their comparison is unchanged).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from nnunetv2_zept.experiments import nnunet_runs


@dataclass(frozen=True)
class SyntheticGrid:
    """Voxel grid of the generated cases and the U-Net width of the plans."""

    shape: Tuple[int, int, int]          # x, y, z voxels
    spacing_mm: float
    min_lesion_mm: float                 # smaller lesions would vanish in partial volume (about 3 voxels)
    unet_features: Optional[int]         # first-stage width of the planned U-Net; None keeps nnU-Net's plan

    def to_dict(self) -> dict:
        return asdict(self)


# CPU: the generator's demo anatomy at 6 mm (one 40 x 48 x 60 patch per case) and a U-Net of width 16,
# about 5x cheaper per step than the generator's 5 mm grid at nnU-Net's width 32
CPU_GRID = SyntheticGrid((60, 46, 40), 6.0, 18.0, 16)
GPU_GRID = SyntheticGrid((72, 56, 48), 5.0, 15.0, None)


def dataset_folder(root: Path, dataset_id: int, name: str) -> Path:
    return Path(root) / f"Dataset{dataset_id:03d}_{name}"


def make_dataset(raw_root: Path, dataset_id: int, name: str, grid: SyntheticGrid, num_train: int, num_test: int,
                 seed: int, tumour_free_fraction: float = 0.3) -> Path:
    """Generate the dataset unless it is there already (same arguments give identical files)."""
    from nnunetv2_zept.synthetic import make_synthetic_dataset

    folder = dataset_folder(raw_root, dataset_id, name)
    if (folder / "dataset.json").is_file():
        return folder
    return make_synthetic_dataset(raw_root, dataset_id=dataset_id, name=name, preset="demo", num_train=num_train,
                                  num_test=num_test, seed=seed, shape=grid.shape, spacing=(grid.spacing_mm,) * 3,
                                  min_lesion_diameter_mm=grid.min_lesion_mm, tumour_free_fraction=tumour_free_fraction)


def plan_dataset(dataset_id: int, name: str, grid: SyntheticGrid, env: Dict[str, str], log_file: Path) -> Path:
    """nnU-Net's planning and preprocessing (skipped when done), then the grid's U-Net width."""
    pre = dataset_folder(Path(env["nnUNet_preprocessed"]), dataset_id, name)
    if not (pre / "nnUNetPlans.json").is_file() or not (pre / "nnUNetPlans_3d_fullres").is_dir():
        nnunet_runs.plan_and_preprocess(dataset_id, env, log_file)
        if grid.unet_features is not None:
            nnunet_runs.set_unet_features(pre, grid.unet_features)
    return pre
