"""Settings of the one-command demo: dataset size, training length per model, device.

Training length is given per model as epochs x iterations per epoch.  All three models share
the iterations per epoch; the plain nnU-Net baseline gets as many epochs as Stage 1 and Stage 2
together, so it makes exactly as many optimiser steps as the whole ZePT model (a fair budget).

The default preset was sized from measured per-iteration times on a 2-core CPU (docs/demo.md,
"How long it takes"); `--longer` multiplies the training length, `--quick` is the tiny run of
the test suite.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
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
    preset: str = "default"                # default | quick | longer (recorded in the report)
    device: str = "cpu"
    num_train: int = 24
    num_test: int = 24
    seed: int = 0
    dataset_id: int = DEFAULT_DATASET_ID
    # synthetic grid (x, y, z): the generator's demo anatomy at 6 mm, 60 x 46 x 40 voxels, one patch per case
    shape: Tuple[int, int, int] = (60, 46, 40)
    spacing_mm: float = 6.0
    min_lesion_mm: float = 18.0             # 3 voxels: smaller lesions would vanish in partial volume
    # U-Net width: nnU-Net plans 32 features in the first stage; 16 makes a CPU step about 2.5x cheaper
    # (both ZePT and the baseline use the same plans).  None keeps nnU-Net's plan.
    unet_features: Optional[int] = 16
    fold: str = "0"
    iterations: int = 20                    # per epoch, shared by all models
    stage1_epochs: int = 10
    stage2_epochs: int = 8
    baseline_epochs: Optional[int] = None   # None: stage1_epochs + stage2_epochs (same number of steps)
    val_iterations: int = 1                 # nnU-Net's per-epoch validation batches (progress only)
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
        if self.baseline_epochs is not None and self.baseline_epochs < 1:
            problems.append(f"baseline-epochs = {self.baseline_epochs} must be at least 1")
        if self.num_test < 6:
            problems.append(f"num-test = {self.num_test}: the held-out set needs at least 6 cases (one per zero-shot "
                            "tumour type plus tumour-free controls)")
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
        d["shape"] = list(self.shape)
        d["training"] = {name: dict(asdict(getattr(self, name)), total_iterations=getattr(self, name).total)
                         for name in ("stage1", "stage2", "baseline")}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# Sized on the 2-core development CPU (see docs/demo.md): the default fills about 14 of the 20
# minutes the demo may take there.  Stage 1 gets the larger share of the default's ZePT steps
# (backbone, organ queries and the anomaly calibration all come from it); the longer preset gives
# Stage 2 as many, because its tumour mask loss is what still falls slowly at the default.
PRESETS = {
    "default": dict(),
    # the test suite: a few steps of everything on a coarser grid, 5 training and 6 held-out cases
    "quick": dict(num_train=5, num_test=6, shape=(48, 36, 32), spacing_mm=7.5, min_lesion_mm=22.5, unet_features=8,
                  iterations=2, stage1_epochs=1, stage2_epochs=1, val_iterations=1),
    # 3.3x the steps of the default (about 45 minutes on 2 CPU cores, measured)
    "longer": dict(iterations=30, stage1_epochs=20, stage2_epochs=20),
    # on a GPU: the generator's demo grid (5 mm) and nnU-Net's own U-Net width, 1500 + 750 ZePT steps
    "gpu": dict(shape=(72, 56, 48), spacing_mm=5.0, min_lesion_mm=15.0, unet_features=None, iterations=50,
                stage1_epochs=30, stage2_epochs=15, device="cuda"),
}


def demo_settings(preset: str = "default", **overrides) -> DemoSettings:
    """Settings of a preset with explicit values (those not None) replacing the preset's."""
    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = dict(PRESETS[preset], preset=preset)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "output" in values:
        values["output"] = Path(values["output"])
    return replace(DemoSettings(), **values).check()
