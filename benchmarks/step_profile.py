"""Where the time of one training step goes: Stage 1, Stage 2 and plain nnU-Net (with nnU-Net's SGD
and with ZePT's AdamW) on the demo's data.

Each trainer runs in a fresh subprocess, on the default demo's dataset (synthetic CT at 6 mm,
60 x 46 x 40 voxels = one whole-case patch, U-Net width 16, batch 2) with the demo's worker
settings on CPU (nnUNet_n_proc_DA=0: augmentation in the main process, torch on every core).
A step is split into the phases the trainers run, each timed with the trainer's own objects:

    data        next(dataloader_train): nnU-Net's loading, cropping and augmentation
    lesions     ZePT Stage 1 only: the synthetic lesions pasted into the batch (training_batch)
    forward     network(data)
    loss        the stage's loss; its terms as sub-rows (healthy-organ targets, organ BCE+Dice,
                tissue pseudo-labels, tissue BCE+Dice, tumour mask, alignment)
    backward    loss.backward()
    optimiser   gradient clipping + optimizer.step() (+ zero_grad)

On a CPU every operation is synchronous, so wall-clock intervals are exact.  The same batches
are then run through the trainer's own `train_step` (the column "train_step"), which is what
training runs; the phase sum must match it.  Repeats are interleaved across trainers (A, B, C,
A, B, C, ...) so that a drifting machine affects all alike; figures are medians over all steps.

Stage 2 starts from random weights (no Stage 1 checkpoint): its frozen part does the same
arithmetic whatever the weights.

    python benchmarks/step_profile.py                      # about 4 min on 2 idle cores
    python benchmarks/step_profile.py --steps 3 --repeats 1 --out /tmp/p.md   # a quick look
    python benchmarks/step_profile.py --before /path/to/old/checkout   # an older version's trainers as extra columns
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TRAINERS = ("nnUNetTrainerZePTBaseline", "nnUNetTrainerZePTBaselineAdamW", "nnUNetTrainerZePTStage1",
            "nnUNetTrainerZePTStage2")
SHORT = {"nnUNetTrainerZePTBaseline": "plain nnU-Net", "nnUNetTrainerZePTBaselineAdamW": "nnU-Net, ZePT's optimiser",
         "nnUNetTrainerZePTStage1": "ZePT Stage 1", "nnUNetTrainerZePTStage2": "ZePT Stage 2"}
BEFORE = "(before)"
PHASES = ("data", "lesions", "forward", "loss", "backward", "optimiser")
DATASET_ID = 993


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# ------------------------------------------------------------------------------------ child
class PhaseTimer:
    def __init__(self):
        self.times: Dict[str, List[float]] = defaultdict(list)
        self._step: Dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._step[name] = self._step.get(name, 0.0) + time.perf_counter() - t0

    def end_step(self) -> None:
        for k, v in self._step.items():
            self.times[k].append(v)
        self._step = {}


def _wrap_loss_terms(timer: PhaseTimer) -> None:
    """Time the loss's library calls under 'loss: <term>' (the functions the stage losses call)."""
    import nnunetv2_zept.losses.stage_losses as sl

    terms = {"healthy_organ_targets": "loss: healthy-organ targets",
             "masked_deep_supervision_loss": "loss: organ / tumour BCE+Dice (all levels)",
             "tissue_pseudo_labels": "loss: tissue pseudo-labels",
             "masked_bce_dice": "loss: tissue BCE+Dice"}
    for name, label in terms.items():
        if hasattr(sl, name):
            f = getattr(sl, name)
            setattr(sl, name, (lambda *a, _f=f, _l=label, **k: _timed(timer, _l, _f, *a, **k)))
    import nnunetv2_zept.losses.alignment as al
    f = al.alignment_loss
    al.alignment_loss = lambda *a, _f=f, **k: _timed(timer, "loss: alignment", _f, *a, **k)


def _timed(timer, label, f, *a, **k):
    with timer(label):
        return f(*a, **k)


def child(trainer_name: str, results: str, warmup: int, steps: int, threads: int) -> dict:
    import resource

    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    os.environ["nnUNet_results"] = results
    torch.set_num_threads(threads or os.cpu_count() or 1)
    trainer = get_trainer_from_args(str(DATASET_ID), "3d_fullres", 0, trainer_name, "nnUNetPlans",
                                    device=torch.device("cpu"))
    trainer.initialize()
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    zept = hasattr(trainer, "compute_loss")
    with_aux = zept and "aux" in inspect.signature(trainer.compute_loss).parameters
    timer = PhaseTimer()
    if zept:
        _wrap_loss_terms(timer)
    params = [p for p in trainer.network.parameters() if p.requires_grad]

    def phased_step(batch):
        with timer("data"):
            batch = next(trainer.dataloader_train) if batch is None else batch
        data = batch["data"]
        target = batch["target"] if isinstance(batch["target"], list) else [batch["target"]]
        if zept:
            with timer("lesions"):
                data, target = trainer.training_batch(data, target)
        trainer.optimizer.zero_grad(set_to_none=True)
        with timer("forward"):
            if with_aux:
                output, aux = trainer.network(data, with_aux=True)
            else:
                output = trainer.network(data)
        with timer("loss"):
            if with_aux:
                loss = trainer.compute_loss(trainer._as_list(output), aux, target, batch["keys"], data, {})
            elif zept:   # the trainers before 2026-12-01 read the aux outputs from a network attribute
                loss = trainer.compute_loss(trainer._as_list(output), target, batch["keys"], data, {})
            else:
                loss = trainer.loss(output, target)
        with timer("backward"):
            loss.backward()
        with timer("optimiser"):
            torch.nn.utils.clip_grad_norm_(params, 12)
            trainer.optimizer.step()
        timer.end_step()
        return batch

    for _ in range(warmup):
        trainer.train_step(next(trainer.dataloader_train))
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    batches = [phased_step(None) for _ in range(steps)]
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    # the same batches through the trainer's own train_step (data already loaded)
    whole = []
    for b in batches:
        t = time.perf_counter()
        trainer.train_step(b)
        whole.append(time.perf_counter() - t)
    for dl in (trainer.dataloader_train, trainer.dataloader_val):
        if hasattr(dl, "_finish"):
            dl._finish()
    return {"trainer": trainer_name, "phases": dict(timer.times), "train_step_s": whole,
            "iteration_wall_s": wall / steps, "cpu_s_per_iteration": ((r1.ru_utime - r0.ru_utime) +
                                                                       (r1.ru_stime - r0.ru_stime)) / steps,
            "patch_size": [int(p) for p in trainer.configuration_manager.patch_size],
            "batch_size": int(trainer.batch_size), "threads": torch.get_num_threads(),
            "features": list(trainer.configuration_manager.network_arch_init_kwargs.get("features_per_stage", []))}


# ------------------------------------------------------------------------------------ driver
def prepare(work: Path) -> Dict[str, str]:
    """The default demo's dataset (same generator settings, plans and U-Net width) under `work`."""
    from nnunetv2_zept.experiments import nnunet_runs as nnunet_steps
    from nnunetv2_zept.demo.settings import demo_settings
    from nnunetv2_zept.synthetic import make_synthetic_dataset

    s = demo_settings("default", output=work)
    env = nnunet_steps.nnunet_environment(work)
    pre = Path(env["nnUNet_preprocessed"])
    if not any(pre.glob(f"Dataset{DATASET_ID}_*/nnUNetPlans_3d_fullres")):
        log("generating and preprocessing the default demo's dataset")
        raw = make_synthetic_dataset(env["nnUNet_raw"], dataset_id=DATASET_ID, name="ZePTStepProfile", preset="demo",
                                     num_train=s.num_train, num_test=6, seed=s.seed, shape=s.shape,
                                     spacing=(s.spacing_mm,) * 3, min_lesion_diameter_mm=s.min_lesion_mm)
        nnunet_steps.plan_and_preprocess(DATASET_ID, env, work / "plan.log")
        if s.unet_features is not None:
            nnunet_steps.set_unet_features(pre / raw.name, s.unet_features)
    env["nnUNet_n_proc_DA"] = str(nnunet_steps.augmentation_workers("cpu"))
    return env


def _median(v):
    return statistics.median(v) if v else float("nan")


def summarise(rows: Dict[str, List[dict]]) -> Dict[str, dict]:
    out = {}
    for t, rs in rows.items():
        phases: Dict[str, List[float]] = defaultdict(list)
        for r in rs:
            for k, v in r["phases"].items():
                phases[k].extend(v)
        med = {k: _median(v) for k, v in phases.items()}
        whole = _median([x for r in rs for x in r["train_step_s"]])
        out[t] = {"phases": med, "train_step_s": whole,
                  "iteration_s": sum(med.get(p, 0.0) for p in PHASES),
                  "iteration_wall_s": _median([r["iteration_wall_s"] for r in rs]),
                  "cpu_s_per_iteration": _median([r["cpu_s_per_iteration"] for r in rs]),
                  "steps": sum(len(r["train_step_s"]) for r in rs)}
    return out


def _short(key: str) -> str:
    name, _, suffix = key.partition(" ")
    return SHORT.get(name, name) + (f" {suffix}" if suffix else "")


def table(summary: Dict[str, dict]) -> str:
    ts = list(summary)
    head = "| phase | " + " | ".join(_short(t) for t in ts) + " |"
    lines = [head, "|---" * (len(ts) + 1) + "|"]

    def row(label, key, sub=False):
        cells = []
        for t in ts:
            v = summary[t]["phases"].get(key)
            cells.append("–" if v is None else f"{v:.3f}")
        lines.append(f"| {'&nbsp;&nbsp;' if sub else ''}{label} | " + " | ".join(cells) + " |")

    for p in PHASES:
        row(p, p)
        if p == "loss":
            subs = sorted({k for t in ts for k in summary[t]["phases"] if k.startswith("loss: ")})
            for k in subs:
                row(k[len("loss: "):], k, sub=True)
    lines.append("| **iteration (sum of phases)** | " + " | ".join(f"**{summary[t]['iteration_s']:.3f}**" for t in ts) + " |")
    lines.append("| trainer's train_step (same batches, data excluded) | "
                 + " | ".join(f"{summary[t]['train_step_s']:.3f}" for t in ts) + " |")
    lines.append("| CPU seconds per iteration | " + " | ".join(f"{summary[t]['cpu_s_per_iteration']:.2f}" for t in ts) + " |")
    base = ts[0]
    lines.append(f"| iteration / {_short(base)} | "
                 + " | ".join(f"{summary[t]['iteration_s'] / summary[base]['iteration_s']:.2f}x" for t in ts) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="work folder (reused between runs; default: a temporary folder)")
    ap.add_argument("--out", default=str(HERE / "results" / "step_profile_cpu.md"))
    ap.add_argument("--steps", type=int, default=10, help="profiled steps per repeat")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: every core, as nnUNetv2_train)")
    ap.add_argument("--trainers", nargs="+", default=list(TRAINERS))
    ap.add_argument("--label", default="", help="free text for the table's heading (e.g. 'before', a commit)")
    ap.add_argument("--before", default=None, metavar="DIR",
                    help="a folder holding another version's nnunetv2_zept package: its trainers (--before-trainers) "
                         "run interleaved with this version's, on the same data, as extra columns '(before)'")
    ap.add_argument("--before-trainers", nargs="+", default=["nnUNetTrainerZePTBaseline", "nnUNetTrainerZePTStage1",
                                                              "nnUNetTrainerZePTStage2"])
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        print(json.dumps(child(**json.loads(args._child))))
        return 0

    from benchmark_machine import load_note, machine_line

    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="zept_profile_"))
    env = prepare(work)
    runs = [(t, t, env) for t in args.trainers]
    if args.before:
        before_env = dict(env, PYTHONPATH=os.pathsep.join([str(Path(args.before).resolve())] + (
            [env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])))
        runs += [(f"{t} {BEFORE}", t, before_env) for t in args.before_trainers]
    rows: Dict[str, List[dict]] = {key: [] for key, _, _ in runs}
    loads = [os.getloadavg()[0]]
    t_start = time.time()
    for r in range(args.repeats):
        for key, t, run_env in runs:
            res = work / f"results_{key.replace(' ', '_')}_{r}"
            a = dict(trainer_name=t, results=str(res), warmup=args.warmup, steps=args.steps, threads=args.threads)
            log(f"repeat {r + 1}/{args.repeats}: {key}")
            proc = subprocess.run([sys.executable, __file__, "--_child", json.dumps(a)], env=run_env,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{key} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            rows[key].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            loads.append(os.getloadavg()[0])
    summary = summarise(rows)
    first = next(iter(rows.values()))[0]
    md = [f"## Training step profile{' (' + args.label + ')' if args.label else ''}", "",
          f"`python benchmarks/step_profile.py{' ' + ' '.join(argv or sys.argv[1:]) if (argv or sys.argv[1:]) else ''}`",
          "", machine_line(), load_note(loads), "",
          f"Default demo data: patch {first['patch_size']}, batch {first['batch_size']}, U-Net features "
          f"{first['features']}, {first['threads']} torch threads, nnUNet_n_proc_DA={env['nnUNet_n_proc_DA']}; "
          f"seconds per step, median over {args.repeats} x {args.steps} steps per trainer, "
          f"runtime {time.time() - t_start:.0f} s.", "", table(summary), ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "rows": rows, "loads": loads}, indent=1))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
