"""Settings of the one-command demo: dataset size, training length per model, device.

The demo trains ZePT (Stage 1 + Stage 2) from scratch, which shows that training works, and
predicts fresh held-out cases with it and with the reference models of the sealed benchmark
(ZePT and the like-for-like nnU-Net at the benchmark's budget), which show what the method does.

Training length is given per model as epochs x iterations per epoch.  All models share the
iterations per epoch; a baseline trained here gets as many epochs as Stage 1 and Stage 2 together,
so it makes exactly as many optimiser steps as the whole ZePT model (a fair budget).

The default preset was sized from measured per-iteration times on a 2-core CPU (docs/demo.md,
"How long it takes"); `--longer` is the benchmark's budget, `--quick` the tiny run of the test suite.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Tuple

DEFAULT_OUTPUT = "zept_demo"
DEFAULT_DATASET_ID = 990
DEFAULT_DATASET_NAME = "ZePTSynthetic"


@dataclass(frozen=True)
class TrainingLength:
    """nnU-Net training length of one model: epochs x iterations (batches) per epoch."""

    epochs: int
    iterations: int

    @property
    def total(self) -> int:
        return self.epochs * self.iterations


@dataclass(frozen=True)
class DemoSettings:
    output: Path = Path(DEFAULT_OUTPUT)
    preset: str = "default"                # default | quick | longer | gpu (recorded in the report)
    device: str = "cpu"
    # training cases: the sealed benchmark's training set (generator seed 1000), so that the model trained
    # here and the reference models differ only in their training length
    num_train: int = 48
    seed: int = 1000
    # fresh held-out cases from a generator seed that no training or benchmark uses
    num_test: int = 30
    held_out_seed: int = 3000
    # seed of every training here (NNUNETV2_ZEPT_SEED): with augmentation in the main process a run on the
    # same machine trains the same models bit for bit, so two demo runs differ only where the code does;
    # 0 is the reference models' training seed
    train_seed: int = 0
    dataset_id: int = DEFAULT_DATASET_ID
    # synthetic grid (x, y, z): the generator's demo anatomy at 6 mm, 60 x 46 x 40 voxels, one patch per case
    shape: Tuple[int, int, int] = (60, 46, 40)
    spacing_mm: float = 6.0
    min_lesion_mm: float = 18.0             # 3 voxels: smaller lesions would vanish in partial volume
    # U-Net width: nnU-Net plans 32 features in the first stage; 16 makes a CPU step about 2.5x cheaper
    # (the models trained here and the reference models use the same plans).  None keeps nnU-Net's plan.
    unet_features: Optional[int] = 16
    fold: str = "0"
    iterations: int = 50                    # per epoch, shared by all models
    # 1,000 Stage 1 steps: on a 2-core AVX-512 Xeon 1,200 took the demo to 21.5 min (target: 20)
    stage1_epochs: int = 20
    stage2_epochs: int = 8
    train_baseline: bool = False            # also train the like-for-like nnU-Net here (same steps as ZePT)
    baseline_epochs: Optional[int] = None   # None: stage1_epochs + stage2_epochs (same number of steps)
    val_iterations: int = 1                 # nnU-Net's per-epoch validation batches (progress only)
    reference_models: Optional[Path] = None  # folder of reference model zips (None: the repository's)
    use_reference: bool = True
    overwrite: bool = False
    threads: Optional[int] = None           # torch threads in the nnU-Net subprocesses (None: torch default)

    @property
    def stage1(self) -> TrainingLength:
        return TrainingLength(self.stage1_epochs, self.iterations)

    @property
    def stage2(self) -> TrainingLength:
        return TrainingLength(self.stage2_epochs, self.iterations)

    @property
    def baseline(self) -> TrainingLength:
        epochs = self.baseline_epochs if self.baseline_epochs is not None else self.stage1_epochs + self.stage2_epochs
        return TrainingLength(epochs, self.iterations)

    def check(self) -> "DemoSettings":
        problems = []
        for name in ("num_train", "iterations", "stage1_epochs", "stage2_epochs", "val_iterations"):
            if getattr(self, name) < 1:
                problems.append(f"{name.replace('_', '-')} = {getattr(self, name)} must be at least 1")
        if self.train_seed < 0:
            problems.append(f"train-seed = {self.train_seed} must be 0 or more")
        if self.baseline_epochs is not None and self.baseline_epochs < 1:
            problems.append(f"baseline-epochs = {self.baseline_epochs} must be at least 1")
        if self.num_test < 7:
            problems.append(f"num-test = {self.num_test}: the held-out set needs at least 7 cases (one per tumour "
                            "type plus a tumour-free control)")
        if self.fold == "0" and self.num_train < 5:
            problems.append(f"num-train = {self.num_train} is too small for fold 0 (nnU-Net's 5-fold split needs 5)")
        if self.fold not in ("all", "0"):
            problems.append(f"fold = {self.fold!r}: the demo trains fold 'all' or '0'")
        if self.unet_features is not None and self.unet_features < 4:
            problems.append(f"unet-features = {self.unet_features} must be at least 4")
        if self.device not in ("cpu", "cuda"):
            problems.append(f"device = {self.device!r}: choose cpu or cuda")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output"] = str(self.output)
        d["reference_models"] = None if self.reference_models is None else str(self.reference_models)
        d["shape"] = list(self.shape)
        d["training"] = {name: dict(asdict(getattr(self, name)), total_iterations=getattr(self, name).total)
                         for name in ("stage1", "stage2", "baseline")}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# Sized on the 2-core development CPU (docs/demo.md): the default, installation included, stays under
# 20 minutes there and trains Stage 1 long enough to learn the organs; --longer is the sealed
# benchmark's budget (benchmarks/zero_shot.py, b2000) and trains the like-for-like baseline too.
PRESETS = {
    "default": dict(),
    # the test suite: a few steps of everything on a coarser grid, 6 training and 7 held-out cases
    "quick": dict(num_train=6, num_test=7, shape=(48, 36, 32), spacing_mm=7.5, min_lesion_mm=22.5, unet_features=8,
                  iterations=2, stage1_epochs=1, stage2_epochs=1, val_iterations=1),
    "longer": dict(stage1_epochs=30, stage2_epochs=10, train_baseline=True),
    # on a GPU: the generator's demo grid (5 mm) and nnU-Net's own U-Net width
    "gpu": dict(shape=(72, 56, 48), spacing_mm=5.0, min_lesion_mm=15.0, unet_features=None, iterations=50,
                stage1_epochs=30, stage2_epochs=10, train_baseline=True, device="cuda"),
}


def demo_settings(preset: str = "default", **overrides) -> DemoSettings:
    """Settings of a preset with explicit values (those not None) replacing the preset's."""
    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = dict(PRESETS[preset], preset=preset)
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("output", "reference_models"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    return replace(DemoSettings(), **values).check()
