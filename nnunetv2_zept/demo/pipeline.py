"""The demo pipeline: synthetic datasets -> plan -> Stage 1, Stage 2 (, baseline) -> reference models ->
predict fresh held-out cases -> evaluate -> report.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from nnunetv2_zept.experiments import nnunet_runs as nnunet_steps
from nnunetv2_zept.demo.settings import DEFAULT_DATASET_NAME, DemoSettings

MARKER = "zept_demo.json"      # marks a folder this demo wrote (and may replace with --overwrite)
TRAINERS = {"stage1": "nnUNetTrainerZePTStage1", "stage2": "nnUNetTrainerZePTStage2",
            "baseline": "nnUNetTrainerZePTBaselineAdamW"}
HELD_OUT_NAME = "ZePTDemoHeldOut"


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


@dataclass
class DemoModel:
    """A model whose predictions of the held-out cases the report shows."""

    key: str
    label: str
    dataset_id: int
    trainer: str
    results: Path                 # its nnUNet_results root
    baseline: bool                # plain nnU-Net: zero-shot read by the tumour-agnostic score
    reference: Optional[dict] = None   # zept_reference.json of an installed reference model


def phases(settings: DemoSettings, with_reference: bool) -> List[str]:
    return (["making the synthetic datasets", "planning and preprocessing", "training Stage 1", "training Stage 2"]
            + (["training the nnU-Net baseline"] if settings.train_baseline else [])
            + (["installing the reference models"] if with_reference else [])
            + ["predicting the held-out cases", "evaluating", "writing the report"])


def run_demo(settings: DemoSettings) -> Path:
    """Run the whole demo; return the path of report.md."""
    from nnunetv2_zept.demo.evaluation_step import evaluate_models
    from nnunetv2_zept.demo.report import write_report
    from nnunetv2_zept.experiments.reference_models import install_reference, shipped_reference_models
    from nnunetv2_zept.experiments.synthetic_runs import SyntheticGrid, make_dataset, plan_dataset

    t_start = time.time()
    references = shipped_reference_models(settings.reference_models) if settings.use_reference else {}
    out = prepare_output(settings)
    env = nnunet_steps.nnunet_environment(out, settings.threads)
    logs = out / "logs"
    progress = Progress(phases(settings, bool(references)))
    did = settings.dataset_id
    grid = SyntheticGrid(tuple(settings.shape), settings.spacing_mm, settings.min_lesion_mm, settings.unet_features)
    trained: Dict[str, dict] = {}

    progress.start("making the synthetic datasets", f"{settings.num_train} training cases (seed {settings.seed}), "
                   f"{settings.num_test} fresh held-out cases (seed {settings.held_out_seed})")
    raw = make_dataset(Path(env["nnUNet_raw"]), did, DEFAULT_DATASET_NAME, grid, settings.num_train, 0, settings.seed)
    n_types = len(json.loads((raw / "dataset.json").read_text())["zept"]["tumours"])
    # the same number of cases per tumour type, the rest (at least one) tumour-free
    free = settings.num_test - n_types * max(1, (settings.num_test - 1) // n_types)
    held_out = make_dataset(out / "held_out", did + 1, HELD_OUT_NAME, grid, 0, settings.num_test, settings.held_out_seed,
                            free / settings.num_test)
    meta = json.loads((held_out / "cases.json").read_text())

    progress.start("planning and preprocessing")
    plan_dataset(did, DEFAULT_DATASET_NAME, grid, env, logs / "plan_and_preprocess.log")

    models: Dict[str, DemoModel] = {"zept": DemoModel("zept", "ZePT (trained here)", did, TRAINERS["stage2"],
                                                      Path(env["nnUNet_results"]), False)}
    runs = [("training Stage 1", "stage1"), ("training Stage 2", "stage2")]
    if settings.train_baseline:
        runs.append(("training the nnU-Net baseline", "baseline"))
        models["baseline"] = DemoModel("baseline", "nnU-Net like-for-like (trained here)", did, TRAINERS["baseline"],
                                       Path(env["nnUNet_results"]), True)
    for phase, key in runs:
        length = getattr(settings, key)
        progress.start(phase, f"{TRAINERS[key]}, fold {settings.fold}, {length.epochs} epochs x {length.iterations} "
                              f"iterations = {length.total} steps on {settings.device}")
        res = nnunet_steps.train(did, TRAINERS[key], settings.fold, length.epochs, length.iterations,
                                 settings.val_iterations, settings.device, env, logs / f"train_{key}.log",
                                 seed=settings.train_seed)
        log = nnunet_steps.TrainingLog.parse(res.lines)
        spi = log.seconds_per_iteration(length.iterations, settings.val_iterations)
        loss = (f", training loss {log.train_losses[0]:.3f} -> {log.train_losses[-1]:.3f}" if log.train_losses else "")
        print(f"      {length.total} steps, {spi:.2f} s per step{loss}", flush=True)
        trained[key] = dict(log.to_dict(), seconds=res.seconds, cpu_seconds=res.cpu_seconds,
                            seconds_per_iteration=spi, trainer=TRAINERS[key],
                            epochs=length.epochs, iterations=length.iterations, total_iterations=length.total)

    if references:
        progress.start("installing the reference models", ", ".join(p.name for p in references.values()))
        root = out / "reference_results"
        for name, zip_path in references.items():
            info = install_reference(zip_path, root)
            dataset_name, folder = info["model_folder"].split("/")
            is_baseline = info["config"] != "zept"
            models[f"reference_{name}"] = DemoModel(
                f"reference_{name}", ("nnU-Net like-for-like (reference)" if is_baseline else "ZePT (reference)"),
                int(dataset_name[len("Dataset"):len("Dataset") + 3]), folder.split("__")[0], root, is_baseline, info)

    progress.start("predicting the held-out cases", f"{settings.num_test} cases, {len(models)} models")
    predictions, pred_seconds = {}, {}
    for key, m in models.items():
        predictions[key] = out / "predictions" / key
        res = nnunet_steps.predict(m.dataset_id, m.trainer, settings.fold, held_out / "imagesTs", predictions[key],
                                   settings.device, dict(env, nnUNet_results=str(m.results)), logs / f"predict_{key}.log")
        pred_seconds[key] = res.seconds

    progress.start("evaluating")
    evaluation = evaluate_models(held_out, predictions, out / "evaluation", {k for k, m in models.items() if m.baseline})

    progress.start("writing the report")
    t_report = time.time()
    report = write_report(out / "report", settings, held_out, meta, models, trained, evaluation, dict(progress.seconds),
                          pred_seconds, phase_started=t_report, t_start=t_start, run_info=run_info(),
                          phase_cpu_seconds=dict(progress.cpu_seconds),
                          reference_folder=settings.reference_models if settings.use_reference else None)
    progress.finish()
    timings = dict(progress.seconds)
    total = time.time() - t_start
    (out / MARKER).write_text(json.dumps({"status": "finished", "settings": settings.to_dict(),
                                          "phase_seconds": timings, "phase_cpu_seconds": progress.cpu_seconds,
                                          "total_seconds": total,
                                          "report": str(report)}, indent=2))
    n = len(progress.phases)
    print(f"[{n}/{n}] done in {total / 60:.1f} min. Report: {report}", flush=True)
    return report


def run_info() -> dict:
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}
