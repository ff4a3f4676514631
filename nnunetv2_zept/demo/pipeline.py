"""The demo pipeline: synthetic dataset -> plan -> Stage 1, Stage 2, baseline -> predict -> evaluate -> report.

Every nnU-Net step is the stock command in a subprocess (experiments/nnunet_runs.py); the evaluation is
the library's `evaluate_folder`, so the numbers are exactly what `nnunetv2_zept evaluate` gives.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from nnunetv2_zept.experiments import nnunet_runs as nnunet_steps
from nnunetv2_zept.demo.settings import DEFAULT_DATASET_NAME, DemoSettings

MARKER = "zept_demo.json"      # marks a folder this demo wrote (and may replace with --overwrite)
TRAINERS = {"stage1": "nnUNetTrainerZePTStage1", "stage2": "nnUNetTrainerZePTStage2",
            "baseline": "nnUNetTrainerZePTBaseline"}
MODEL_LABELS = {"zept": "ZePT", "baseline": "nnU-Net baseline"}
PHASES = ["making the synthetic dataset", "planning and preprocessing", "training Stage 1", "training Stage 2",
          "training the nnU-Net baseline", "predicting the held-out cases", "evaluating", "writing the report"]


class DemoError(RuntimeError):
    """The demo cannot run as asked (existing output folder, bad settings); the message says why."""


def prepare_output(settings: DemoSettings) -> Path:
    """Create the output folder, refusing to touch an existing one without `overwrite` and
    never removing a non-empty folder that this demo did not write."""
    out = Path(settings.output).expanduser().resolve()
    if out.exists():
        if not out.is_dir():
            raise DemoError(f"output {out} exists and is a file; choose another --output")
        contents = list(out.iterdir())
        if contents:
            if not settings.overwrite:
                raise DemoError(f"output folder {out} already exists and is not empty. Pass --overwrite to replace an "
                                f"earlier demo run there, or choose another folder with --output")
            if not (out / MARKER).is_file():
                raise DemoError(f"output folder {out} is not empty and was not written by the demo (no {MARKER}); "
                                f"it is left untouched even with --overwrite. Choose another folder with --output")
            for p in contents:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"status": "running", "settings": settings.to_dict()}, indent=2))
    return out


class Progress:
    """The "[3/8] training Stage 1 ..." lines and the wall time of each phase."""

    def __init__(self, phases: List[str]):
        self.phases = phases
        self.seconds: Dict[str, float] = {}
        self.cpu_seconds: Dict[str, float] = {}
        self._current: Optional[str] = None
        self._t0 = self._c0 = 0.0

    def start(self, phase: str, detail: str = "") -> None:
        self.finish()
        k = self.phases.index(phase) + 1
        print(f"[{k}/{len(self.phases)}] {phase}{' (' + detail + ')' if detail else ''} ...", flush=True)
        self._current, self._t0, self._c0 = phase, time.time(), nnunet_steps.cpu_seconds()

    def finish(self) -> None:
        if self._current is not None:
            dt = time.time() - self._t0
            self.seconds[self._current] = dt
            self.cpu_seconds[self._current] = nnunet_steps.cpu_seconds() - self._c0
            print(f"      done in {dt:.0f} s (CPU time {self.cpu_seconds[self._current]:.0f} s)", flush=True)
            self._current = None


def run_demo(settings: DemoSettings) -> Path:
    """Run the whole demo; return the path of report.md."""
    from nnunetv2_zept.demo.evaluation_step import evaluate_models
    from nnunetv2_zept.demo.report import write_report
    from nnunetv2_zept.synthetic import make_synthetic_dataset

    t_start = time.time()
    out = prepare_output(settings)
    env = nnunet_steps.nnunet_environment(out, settings.threads)
    logs = out / "logs"
    progress = Progress(PHASES)
    did = settings.dataset_id
    trained: Dict[str, dict] = {}

    progress.start(PHASES[0], f"{settings.num_train} training + {settings.num_test} held-out cases, seed {settings.seed}")
    raw = make_synthetic_dataset(env["nnUNet_raw"], dataset_id=did, name=DEFAULT_DATASET_NAME, preset="demo",
                                 num_train=settings.num_train, num_test=settings.num_test, seed=settings.seed,
                                 shape=settings.shape, spacing=(settings.spacing_mm,) * 3,
                                 min_lesion_diameter_mm=settings.min_lesion_mm)
    meta = json.loads((raw / "cases.json").read_text())

    progress.start(PHASES[1])
    nnunet_steps.plan_and_preprocess(did, env, logs / "plan_and_preprocess.log")
    if settings.unet_features is not None:
        widths = nnunet_steps.set_unet_features(Path(env["nnUNet_preprocessed"]) / raw.name, settings.unet_features)
        print(f"      U-Net features per stage set to {widths} (ZePT and baseline alike)")

    for phase, key in zip(PHASES[2:5], ("stage1", "stage2", "baseline")):
        length = getattr(settings, key)
        progress.start(phase, f"{TRAINERS[key]}, fold {settings.fold}, {length.epochs} epochs x {length.iterations} "
                              f"iterations = {length.total} steps on {settings.device}")
        res = nnunet_steps.train(did, TRAINERS[key], settings.fold, length.epochs, length.iterations,
                                 settings.val_iterations, settings.device, env, logs / f"train_{key}.log")
        log = nnunet_steps.TrainingLog.parse(res.lines)
        spi = log.seconds_per_iteration(length.iterations, settings.val_iterations)
        loss = (f", training loss {log.train_losses[0]:.3f} -> {log.train_losses[-1]:.3f}" if log.train_losses else "")
        print(f"      {length.total} steps, {spi:.2f} s per step{loss}", flush=True)
        trained[key] = dict(log.to_dict(), seconds=res.seconds, cpu_seconds=res.cpu_seconds,
                            seconds_per_iteration=spi, trainer=TRAINERS[key],
                            epochs=length.epochs, iterations=length.iterations, total_iterations=length.total)

    progress.start(PHASES[5], f"{settings.num_test} cases, ZePT and baseline")
    predictions = {"zept": out / "predictions" / "zept", "baseline": out / "predictions" / "baseline"}
    pred_seconds = {}
    for model, trainer in (("zept", TRAINERS["stage2"]), ("baseline", TRAINERS["baseline"])):
        res = nnunet_steps.predict(did, trainer, settings.fold, raw / "imagesTs", predictions[model], settings.device,
                                   env, logs / f"predict_{model}.log")
        pred_seconds[model] = res.seconds

    progress.start(PHASES[6])
    evaluation = evaluate_models(raw, predictions, out / "evaluation")

    progress.start(PHASES[7])
    t_report = time.time()
    report = write_report(out / "report", settings, raw, meta, trained, evaluation, dict(progress.seconds),
                          pred_seconds, phase_started=t_report, t_start=t_start, run_info=run_info(),
                          phase_cpu_seconds=dict(progress.cpu_seconds))
    progress.finish()
    timings = dict(progress.seconds)
    total = time.time() - t_start
    (out / MARKER).write_text(json.dumps({"status": "finished", "settings": settings.to_dict(),
                                          "phase_seconds": timings, "phase_cpu_seconds": progress.cpu_seconds,
                                          "total_seconds": total,
                                          "report": str(report)}, indent=2))
    print(f"[{len(PHASES)}/{len(PHASES)}] done in {total / 60:.1f} min. Report: {report}", flush=True)
    return report


def run_info() -> dict:
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}
