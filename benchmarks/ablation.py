"""Ablation benchmark: the full ZePT model against switched-off variants and plain nnU-Net, on the
synthetic pan-tumour CT dataset, every model trained with the same budget by the stock commands.

For each seed (an independent repeat: nnU-Net does not seed its trainings, so runs differ in
initialisation and patch sampling; the data set is the same) and each variant:

  1. Stage 1 (`nnUNetv2_train ... -tr nnUNetTrainerZePTStage1[_ignoreTumourVoxels]`), shared by
     every variant that differs only in Stage 2 switches (self_prompt, alignment,
     anomaly_injection, anomaly_calibration, organ_restriction): they start Stage 2 from the
     same checkpoint via NNUNETV2_ZEPT_STAGE1_CHECKPOINT;
  2. Stage 2 (or nnUNetTrainerZePTBaseline for the baseline), each variant in its own
     nnUNet_results root;
  3. `nnUNetv2_predict --save_probabilities --disable_tta` on the held-out cases (imagesTs);
  4. evaluation with `nnunetv2_zept.evaluation.evaluate_folder` (voxel ROC over the CT body mask).

The plain baseline has no zero-shot output: its zero-shot score is tumour-agnostic, the maximum
of its seen tumour channels' probabilities, written into the zero-shot channels of a copy of
its .npz files; in the copy's label maps a voxel where that score is >= 0.5 inside a predicted
host organ of a zero-shot type gets that type's label (so its DSC is measured the same way).

Every finished step leaves a file behind (checkpoint_final.pth, the predictions, summary.json),
so re-running the same command skips finished work: the benchmark is resumable.  After every
evaluated run the Markdown table and the JSON are rewritten from everything finished so far.

    python benchmarks/ablation.py                       # default budget, ~1 h on a 2-core CPU
    python benchmarks/ablation.py --quick               # tiny budget, checks the pipeline end to end
    python benchmarks/ablation.py --scale 20 --device cuda --work /data/zept_ablation   # GPU
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
DATASET_ID = 995
DATASET_NAME = "ZePTAblation"
CONFIG = "3d_fullres"
FOLD = "0"

# Stage 1 runs; a variant names the one its Stage 2 starts from.
STAGE1_GROUPS: Dict[str, dict] = {
    "full": {"trainer": "nnUNetTrainerZePTStage1", "switches": {}},
    "no_grouping": {"trainer": "nnUNetTrainerZePTStage1", "switches": {"grouping": False}},
    "shared_queries": {"trainer": "nnUNetTrainerZePTStage1", "switches": {"disentangled": False}},
    "bg_none": {"trainer": "nnUNetTrainerZePTStage1", "switches": {"background_queries": "none"}},
    "bg_one": {"trainer": "nnUNetTrainerZePTStage1", "switches": {"background_queries": "one"}},
    "ignore_tumour_voxels": {"trainer": "nnUNetTrainerZePTStage1_ignoreTumourVoxels", "switches": {}},
    "no_synthetic_lesions": {"trainer": "nnUNetTrainerZePTStage1_noSyntheticLesions", "switches": {}},
}

# variant -> (Stage 1 group, Stage 2 switches, description); "baseline" is plain nnU-Net.  Run order:
# the full model and the baseline first, then the variants sharing the full model's Stage 1, so that a
# partial run already compares something.
VARIANTS: Dict[str, dict] = {
    "full": {"stage1": "full", "switches": {}, "what": "full model (project defaults)"},
    "baseline": {"stage1": None, "switches": None,
                 "what": "plain nnU-Net (nnUNetTrainerZePTBaseline), tumour-agnostic zero-shot score"},
    "no_self_prompt": {"stage1": "full", "switches": {"self_prompt": False}, "what": "no self-prompting"},
    "no_alignment": {"stage1": "full", "switches": {"alignment": False}, "what": "no query-knowledge alignment"},
    "no_anomaly_injection": {"stage1": "full", "switches": {"anomaly_injection": False},
                             "what": "no anomaly injection into the tumour decoder"},
    "minmax": {"stage1": "full", "switches": {"anomaly_calibration": "minmax"},
               "what": "per-patch min-max anomaly (paper)"},
    "no_organ_restriction": {"stage1": "full", "switches": {"organ_restriction": False},
                             "what": "prompts and zero-shot scores not restricted to organs"},
    "no_grouping": {"stage1": "no_grouping", "switches": {"grouping": False},
                    "what": "plain cross-attention instead of object-aware grouping"},
    "shared_queries": {"stage1": "shared_queries", "switches": {"disentangled": False},
                       "what": "one shared query set (disentangled false)"},
    "bg_none": {"stage1": "bg_none", "switches": {"background_queries": "none"},
                "what": "no background tissue query (paper)"},
    "bg_one": {"stage1": "bg_one", "switches": {"background_queries": "one"},
               "what": "one catch-all background query"},
    "ignore_tumour_voxels": {"stage1": "ignore_tumour_voxels", "switches": {},
                             "what": "Stage 1 ignores tumour voxels (paper targets)"},
    "no_synthetic_lesions": {"stage1": "no_synthetic_lesions", "switches": {},
                             "what": "no generic synthetic lesions in Stage 1"},
    "zero_shot_adapter": {"stage1": "full", "switches": {"zero_shot_adapter": True},
                          "what": "Stage 2 adapter term on zero-shot channels too"},
}

# training length per stage: epochs x iterations (x --scale on the iterations)
BUDGETS = {
    # ~1 h for 2 seeds x 12 variants on an idle 2-core CPU (18 trainings, 12 predictions and
    # evaluations per seed): enough to rank mechanisms only roughly; use --scale on a GPU.  The
    # baseline makes as many steps as Stage 1 and Stage 2 together (as in the demo).
    "default": {"stage1": (2, 40), "stage2": (2, 30), "baseline": (2, 70), "val_iterations": 1,
                "num_train": 24, "num_test": 18},
    "quick": {"stage1": (1, 2), "stage2": (1, 2), "baseline": (1, 2), "val_iterations": 1,
              "num_train": 10, "num_test": 7},
}


def data_grid(quick: bool, device: str) -> dict:
    """Grid, smallest lesion and U-Net width of the demo preset for this device (docs/demo.md):
    on CPU the 6 mm grid and a U-Net of width 16 (about 5x cheaper per step than the generator's
    5 mm grid at nnU-Net's width 32), on CUDA the 5 mm grid and nnU-Net's own width."""
    from nnunetv2_zept.demo.settings import demo_settings

    d = demo_settings("quick" if quick else ("gpu" if device == "cuda" else "default"))
    return {"shape": list(d.shape), "spacing_mm": d.spacing_mm, "min_lesion_mm": d.min_lesion_mm,
            "unet_features": d.unet_features}

METRICS = ("DSC", "voxel_AUROC", "FPR95", "case_AUROC")
METRIC_TITLES = {"DSC": "DSC (cases with the tumour)", "voxel_AUROC": "voxel AUROC (CT body mask, pooled)",
                 "FPR95": "FPR95 (CT body mask, pooled; lower is better)",
                 "case_AUROC": "case-level detection AUROC (tumour-free and other-type cases negative)"}


# ------------------------------------------------------------------------------------ helpers
def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def base_env(work: Path, results_root: Path, device: str) -> dict:
    env = dict(os.environ)
    env.update({"nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "preprocessed"),
                "nnUNet_results": str(results_root), "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0",
                "nnUNet_compile": "f"})
    if device == "cpu":
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    for k in ("NNUNETV2_ZEPT_SWITCHES", "NNUNETV2_ZEPT_STAGE1_CHECKPOINT"):
        env.pop(k, None)
    return env


def run_cli(args: List[str], env: dict, log_file: Path) -> float:
    """Run a console script of this environment, output to log_file; returns wall seconds."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log_file, "a") as f:
        f.write(f"\n$ {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run([str(BIN / args[0])] + args[1:], env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_file.read_text()[-4000:]
        raise RuntimeError(f"{' '.join(args)} failed with exit code {proc.returncode}; log {log_file}:\n{tail}")
    return time.time() - t0


def dataset_folder(root: Path) -> Path:
    return root / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"


def prepare_dataset(work: Path, budget: dict, data_seed: int, device: str) -> Path:
    """Generate, plan and preprocess the data set once (skipped when already there)."""
    raw = dataset_folder(work / "raw")
    if not (raw / "dataset.json").is_file():
        from nnunetv2_zept.synthetic import make_synthetic_dataset

        grid = budget["grid"]
        log(f"generating synthetic data set {raw.name} (demo preset, {budget['num_train']} train / "
            f"{budget['num_test']} test cases, {grid['shape']} voxels at {grid['spacing_mm']} mm, seed {data_seed})")
        make_synthetic_dataset(work / "raw", dataset_id=DATASET_ID, name=DATASET_NAME, preset="demo", seed=data_seed,
                               num_train=budget["num_train"], num_test=budget["num_test"], shape=grid["shape"],
                               spacing=(grid["spacing_mm"],) * 3, min_lesion_diameter_mm=grid["min_lesion_mm"])
    sys.path.insert(0, str(HERE))
    from bench_data import add_missing_texts

    added = add_missing_texts(raw / "dataset.json")
    if added:
        log(f"added knowledge texts to dataset.json for classes without a built-in one: {added}")
    pre = dataset_folder(work / "preprocessed")
    if (pre / "dataset.json").is_file():
        add_missing_texts(pre / "dataset.json")
    if not (pre / "nnUNetPlans.json").is_file() or not (pre / "nnUNetPlans_3d_fullres").is_dir():
        log("planning and preprocessing")
        env = base_env(work, work / "results_unused", device)
        env["nnUNet_n_proc_DA"] = "1"   # 0 crashes nnU-Net's planner (torch.set_num_threads(0))
        run_cli(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", CONFIG, "-np", "1", "-npfp", "1",
                 "--verify_dataset_integrity"], env, work / "logs" / "plan.log")
        if budget["grid"]["unet_features"] is not None:
            from nnunetv2_zept.demo.nnunet_steps import set_unet_features

            widths = set_unet_features(pre, budget["grid"]["unet_features"], CONFIG)
            log(f"U-Net features per stage set to {widths} (every variant and the baseline alike)")
    return raw


def training_env(env: dict, epochs: int, iterations: int, val_iterations: int) -> dict:
    env = dict(env)
    env.update({"NNUNETV2_ZEPT_EPOCHS": str(epochs), "NNUNETV2_ZEPT_ITERATIONS": str(iterations),
                "NNUNETV2_ZEPT_VAL_ITERATIONS": str(val_iterations),
                "NNUNETV2_ZEPT_SAVE_EVERY": str(max(1, epochs // 2))})
    return env


def fold_folder(results_root: Path, trainer: str) -> Path:
    return dataset_folder(results_root) / f"{trainer}__nnUNetPlans__{CONFIG}" / f"fold_{FOLD}"


def train(results_root: Path, trainer: str, env: dict, log_file: Path, device: str, cli: bool = False) -> float:
    """Train one fold, continuing an interrupted run (nnU-Net's --c) and skipping a finished one.

    cli=False runs nnUNetv2_train's own code path (`get_trainer_from_args`, `maybe_load_checkpoint`,
    `run_training`) in a subprocess but leaves out its final validation of the fold's validation
    cases, which this benchmark does not use (it evaluates the held-out cases); cli=True runs the
    stock `nnUNetv2_train ... --c` command."""
    if (fold_folder(results_root, trainer) / "checkpoint_final.pth").is_file():
        return 0.0
    if cli:
        return run_cli(["nnUNetv2_train", str(DATASET_ID), CONFIG, FOLD, "-tr", trainer, "-device", device, "--c"],
                       env, log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log_file, "a") as f:
        f.write(f"\n$ train {trainer} (nnUNetv2_train --c without the final validation)\n")
        f.flush()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_train", trainer, device], env=env,
                              stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"training {trainer} failed with exit code {proc.returncode}; log {log_file}:\n"
                           f"{log_file.read_text()[-4000:]}")
    return time.time() - t0


def _train_child(trainer: str, device: str) -> int:
    """nnUNetv2_train DATASET 3d_fullres 0 -tr TRAINER -device DEVICE --c, minus the final validation."""
    import multiprocessing

    import torch
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    if device == "cpu":
        threads = int(os.environ.get("ZEPT_ABLATION_THREADS", "0") or 0)
        torch.set_num_threads(threads or multiprocessing.cpu_count())
    else:
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        torch.backends.cudnn.benchmark = True
    t = get_trainer_from_args(str(DATASET_ID), CONFIG, int(FOLD), trainer, "nnUNetPlans", True,
                              device=torch.device(device))
    maybe_load_checkpoint(t, True, False, None)
    t.run_training()
    return 0


# ------------------------------------------------------------------------------------ baseline zero-shot copy
def baseline_zero_shot_copy(pred: Path, out: Path, dataset_json: dict) -> None:
    """Copy of the baseline's predictions whose zero-shot channels hold its tumour-agnostic score
    (max over seen tumour probabilities) and whose label maps give that score's >= 0.5 voxels
    inside a predicted host organ of a zero-shot type that type's label."""
    import numpy as np
    import SimpleITK as sitk
    from nnunetv2_zept.roles import roles_from_dataset_json

    roles = roles_from_dataset_json(dataset_json)
    names = [n for n in dataset_json["labels"] if n != "background"]
    fe = dataset_json.get("file_ending", ".nii.gz")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for npz in sorted(pred.glob("*.npz")):
        case = npz.name[:-4]
        with np.load(npz) as f:
            prob = f["probabilities"].copy()
        score = prob[list(roles.seen_tumours)].max(0)
        img = sitk.ReadImage(str(pred / f"{case}{fe}"))
        seg = sitk.GetArrayFromImage(img)
        for z in roles.zero_shot:
            prob[z] = score
            host = np.zeros(seg.shape, bool)
            for h in roles.hosts[z]:
                host |= prob[h] >= 0.5
            lab = dataset_json["labels"][names[z]]
            seg[(score >= 0.5) & host] = lab if isinstance(lab, int) else lab[0]
        np.savez_compressed(tmp / npz.name, probabilities=prob)
        new = sitk.GetImageFromArray(seg)
        new.CopyInformation(img)
        sitk.WriteImage(new, str(tmp / f"{case}{fe}"), True)
    tmp.rename(out)


# Stage 2 modules that a switch removes from the network.  A shared Stage 1 checkpoint holds their
# (untrained, Stage-2-only) initial weights, which the strict load_state_dict of a variant without
# them rejects; such a variant starts from a copy of the checkpoint without those keys.
REMOVED_BY_SWITCH = {"alignment": "alignment_head."}


def stage1_checkpoint_for(ckpt1: Path, switches: dict) -> Path:
    prefixes = tuple(p for k, p in REMOVED_BY_SWITCH.items() if switches.get(k) is False)
    if not prefixes:
        return ckpt1
    out = ckpt1.with_name("checkpoint_final_without_" + "_".join(p.strip(".") for p in prefixes) + ".pth")
    if not out.is_file():
        import torch
        from nnunetv2_zept.checkpoints import load_checkpoint

        ckpt = load_checkpoint(str(ckpt1))
        ckpt["network_weights"] = {k: v for k, v in ckpt["network_weights"].items() if not k.startswith(prefixes)}
        tmp = out.with_suffix(".partial")
        torch.save(ckpt, tmp)
        tmp.rename(out)
    return out


class Busy(RuntimeError):
    """Another driver process is working on this run (several drivers may share one --work)."""


class Lock:
    """An exclusive lock file holding the owner's pid; a lock whose owner is gone is taken over."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                return self
            except FileExistsError:
                try:
                    pid = int(self.path.read_text() or 0)
                    os.kill(pid, 0)
                except (ValueError, ProcessLookupError, FileNotFoundError):
                    self.path.unlink(missing_ok=True)   # stale: its owner died
                    continue
                raise Busy(f"{self.path.name} is held by process {pid}")
        raise Busy(f"{self.path.name}: could not be taken")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ one run
def run_variant(variant: str, seed: int, work: Path, raw: Path, budget: dict, scale: float, device: str,
                cli: bool = False) -> dict:
    """Train (sharing Stage 1), predict and evaluate one variant for one seed; returns its metrics."""
    spec = VARIANTS[variant]
    tag = f"seed{seed}"
    eval_dir = work / "evals" / variant / tag
    if (eval_dir / "summary.json").is_file():
        return json.loads((eval_dir / "summary.json").read_text())
    with Lock(work / "locks" / f"{variant}_{tag}"):
        return _run_variant_locked(variant, seed, work, raw, budget, scale, device, cli)


def _run_variant_locked(variant: str, seed: int, work: Path, raw: Path, budget: dict, scale: float, device: str,
                        cli: bool) -> dict:
    spec = VARIANTS[variant]
    tag = f"seed{seed}"
    eval_dir = work / "evals" / variant / tag
    logs = work / "logs" / variant / tag
    timing: Dict[str, float] = {}
    val_its = budget["val_iterations"]

    def its(stage):
        e, i = budget[stage]
        return e, max(1, int(round(i * scale)))

    if variant == "baseline":
        trainer = "nnUNetTrainerZePTBaseline"
        root = work / "results" / variant / tag
        env = training_env(base_env(work, root, device), *its("baseline"), val_its)
        log(f"[{variant} {tag}] training {trainer}")
        timing["train_baseline_s"] = train(root, trainer, env, logs / "train.log", device, cli)
    else:
        group = spec["stage1"]
        s1 = STAGE1_GROUPS[group]
        root1 = work / "results" / "stage1" / group / tag
        env1 = training_env(base_env(work, root1, device), *its("stage1"), val_its)
        env1["NNUNETV2_ZEPT_SWITCHES"] = json.dumps(s1["switches"])
        ckpt1 = fold_folder(root1, s1["trainer"]) / "checkpoint_final.pth"
        if not ckpt1.is_file():
            log(f"[{variant} {tag}] training Stage 1 '{group}' ({s1['trainer']}, switches {s1['switches']})")
        if ckpt1.is_file():
            timing["train_stage1_s"] = 0.0
        else:
            with Lock(work / "locks" / f"stage1_{group}_{tag}"):
                timing["train_stage1_s"] = train(root1, s1["trainer"], env1,
                                                 work / "logs" / "stage1" / group / tag / "train.log", device, cli)
        trainer = "nnUNetTrainerZePTStage2"
        root = work / "results" / variant / tag
        env = training_env(base_env(work, root, device), *its("stage2"), val_its)
        env["NNUNETV2_ZEPT_SWITCHES"] = json.dumps(spec["switches"])
        env["NNUNETV2_ZEPT_STAGE1_CHECKPOINT"] = str(stage1_checkpoint_for(ckpt1, spec["switches"]))
        log(f"[{variant} {tag}] training Stage 2 (switches {spec['switches']}) from Stage 1 '{group}'")
        timing["train_stage2_s"] = train(root, trainer, env, logs / "train.log", device, cli)

    pred = work / "predictions" / variant / tag
    if not (pred / "done").is_file():
        log(f"[{variant} {tag}] predicting {len(list((raw / 'imagesTs').glob('*')))} held-out cases")
        if pred.exists():
            shutil.rmtree(pred)   # an interrupted prediction of this benchmark's own work folder
        timing["predict_s"] = run_cli(
            ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(DATASET_ID), "-c", CONFIG,
             "-f", FOLD, "-tr", trainer, "--save_probabilities", "--disable_tta", "-device", device,
             "-npp", "0", "-nps", "0"], env, logs / "predict.log")
        (pred / "done").write_text("ok\n")
    return evaluate_variant(variant, seed, work, raw, pred, timing, device, budget, scale)


def evaluate_variant(variant: str, seed: int, work: Path, raw: Path, pred: Path, timing: Dict[str, float], device: str,
                     budget: dict, scale: float) -> dict:
    """Evaluate one variant's saved predictions and write its summary.json (replacing an old one)."""
    tag = f"seed{seed}"
    eval_dir = work / "evals" / variant / tag
    dataset_json = json.loads((raw / "dataset.json").read_text())
    evaluated = pred
    if variant == "baseline":
        evaluated = work / "predictions" / "baseline_zero_shot" / tag
        if not evaluated.is_dir():
            baseline_zero_shot_copy(pred, evaluated, dataset_json)

    from nnunetv2_zept.evaluation import evaluate_folder

    log(f"[{variant} {tag}] evaluating")
    t0 = time.time()
    tmp_eval = eval_dir.with_name(tag + ".partial")
    if tmp_eval.exists():
        shutil.rmtree(tmp_eval)
    summary = evaluate_folder(str(raw / "labelsTs"), str(evaluated), dataset_json, output_folder=str(tmp_eval),
                              plots=False, images_folder=str(raw / "imagesTs"))
    timing = dict(timing, evaluate_s=time.time() - t0)
    result = {"variant": variant, "seed": seed, "metrics": extract_metrics(summary, dataset_json),
              "timing_s": timing, "device": device, "budget": budget, "scale": scale,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    (tmp_eval / "summary.json").rename(tmp_eval / "evaluation_summary.json")
    (tmp_eval / "summary.json").write_text(json.dumps(result, indent=1))
    eval_dir.parent.mkdir(parents=True, exist_ok=True)
    if eval_dir.exists():
        shutil.rmtree(eval_dir)     # this benchmark's own earlier evaluation of the same predictions
    tmp_eval.rename(eval_dir)
    return result


def re_evaluate(work: Path, raw: Path) -> int:
    """Evaluate every finished run's saved predictions again (after a change of the metrics),
    keeping its training and prediction times; returns the number of runs re-evaluated."""
    n = 0
    for summary_file in sorted((work / "evals").glob("*/seed*/summary.json")):
        old = json.loads(summary_file.read_text())
        pred = work / "predictions" / old["variant"] / f"seed{old['seed']}"
        if not (pred / "done").is_file():
            log(f"[{old['variant']} seed{old['seed']}] no finished predictions in {pred}; left as it is")
            continue
        evaluate_variant(old["variant"], int(old["seed"]), work, raw, pred, old.get("timing_s", {}), old["device"],
                         old["budget"], old["scale"])
        n += 1
    return n


def extract_metrics(summary: dict, dataset_json: dict) -> dict:
    from nnunetv2_zept.roles import roles_from_dataset_json

    roles = roles_from_dataset_json(dataset_json)
    names = [n for n in dataset_json["labels"] if n != "background"]
    pc = summary["per_class"]
    out = {"organ_DSC": summary["groups"]["organs"]["DSC"], "zero_shot": {}}
    for z in roles.zero_shot:
        e = pc[names[z]]
        out["zero_shot"][names[z]] = {
            "DSC": e.get("DSC_tumour_cases"), "DSC_all_cases": e.get("DSC"),
            "voxel_AUROC": e["voxel_body"].get("AUROC"), "FPR95": e["voxel_body"].get("FPR95"),
            "voxel_AUROC_host": e["voxel_host"].get("AUROC"), "FPR95_host": e["voxel_host"].get("FPR95"),
            "case_AUROC": e["detection"].get("AUROC"),
            "n_positive_cases": e["detection"].get("n_positive_cases"),
            "n_negative_cases": e["detection"].get("n_negative_cases")}
    return out


# ------------------------------------------------------------------------------------ report
def _num(v) -> Optional[float]:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _stats(values: List[Optional[float]]) -> dict:
    vals = [v for v in (_num(x) for x in values) if v is not None]
    if not vals:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def _fmt(s: dict) -> str:
    if s["mean"] is None:
        return "–"
    if s["n"] == 1:
        return f"{s['mean']:.3f} (n=1)"
    return f"{s['mean']:.3f} ({s['min']:.2f}–{s['max']:.2f})"


def aggregate(results: List[dict], zero_shot_types: List[str]) -> dict:
    by_variant: Dict[str, List[dict]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    agg = {}
    for v, rs in by_variant.items():
        entry = {"seeds": sorted(r["seed"] for r in rs), "organ_DSC": _stats([r["metrics"]["organ_DSC"] for r in rs])}
        for m in METRICS:
            per_type = {t: _stats([r["metrics"]["zero_shot"][t][m] for r in rs]) for t in zero_shot_types}
            # mean over types per seed first, then the spread of that mean over seeds
            means = []
            for r in rs:
                vals = [_num(r["metrics"]["zero_shot"][t][m]) for t in zero_shot_types]
                vals = [x for x in vals if x is not None]
                means.append(sum(vals) / len(vals) if vals else None)
            entry[m] = {"per_type": per_type, "mean_over_types": _stats(means)}
        agg[v] = entry
    return agg


def check_targets(agg: dict, zero_shot_types: List[str]) -> List[str]:
    """The issue's zero-shot targets, from the means over seeds."""
    lines = []
    full, base = agg.get("full"), agg.get("baseline")
    if full and base:
        for m in ("voxel_AUROC", "case_AUROC"):
            for t in zero_shot_types:
                a, b = full[m]["per_type"][t]["mean"], base[m]["per_type"][t]["mean"]
                ok = a is not None and b is not None and a > b
                lines.append(f"full vs baseline, {m}, {t}: {_f(a)} vs {_f(b)} -> {'met' if ok else 'NOT met'}")
    if full:
        for v in agg:
            if v in ("full", "baseline"):
                continue
            for m in ("voxel_AUROC", "case_AUROC"):
                a, b = full[m]["mean_over_types"]["mean"], agg[v][m]["mean_over_types"]["mean"]
                ok = a is not None and b is not None and a > b
                lines.append(f"full vs {v}, mean {m}: {_f(a)} vs {_f(b)} -> {'met' if ok else 'NOT met'}")
    return lines


def _f(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def write_report(work: Path, out_md: Path, out_json: Path, args, budget: dict, raw: Path) -> None:
    results = [json.loads(p.read_text()) for p in sorted((work / "evals").glob("*/seed*/summary.json"))]
    if not results:
        return
    dj = json.loads((raw / "dataset.json").read_text())
    zs = sorted(dj["zept"]["tumours"], key=list(dj["labels"]).index)
    zs = [t for t in zs if dj["zept"]["tumours"][t].get("zero_shot")]
    agg = aggregate(results, zs)
    order = [v for v in VARIANTS if v in agg]
    targets = check_targets(agg, zs)
    cases = json.loads((raw / "cases.json").read_text())
    n_pos = {t: sum(1 for c in cases["cases"] if c["split"] == "test" and t in c["tumours"]) for t in zs}
    n_free = sum(1 for c in cases["cases"] if c["split"] == "test" and not c["tumours"])
    L = ["# ZePT ablation on synthetic pan-tumour CT", "",
         f"Command: `{' '.join(['python', 'benchmarks/ablation.py'] + sys.argv[1:])}`  ",
         f"Written {time.strftime('%Y-%m-%d %H:%M')} from {len(results)} finished runs; device {args.device}.  ",
         f"Data: synthetic demo preset, {cases['generator']['num_train']} training cases, "
         f"{cases['generator']['num_test']} held-out cases ({n_free} tumour-free; zero-shot cases per type: "
         + ", ".join(f"{t} {n_pos[t]}" for t in zs) + ")"
         + (f", {' x '.join(map(str, budget['grid']['shape']))} voxels at {budget['grid']['spacing_mm']:g} mm, "
            f"U-Net width {budget['grid']['unet_features'] or 'as planned'}" if "grid" in budget else "") + ".  ",
         f"Budget per seed: Stage 1 {budget['stage1'][0]} epochs x {max(1, round(budget['stage1'][1] * args.scale))} "
         f"iterations, Stage 2 {budget['stage2'][0]} x {max(1, round(budget['stage2'][1] * args.scale))}, baseline "
         f"{budget['baseline'][0]} x {max(1, round(budget['baseline'][1] * args.scale))} (batch and patch from "
         f"nnU-Net's plan).  ",
         "Cells: mean over seeds (min–max over seeds); a zero-shot mean is averaged over types within a seed first.",
         "", "## Summary", "",
         "| variant | seeds | organ DSC | zero-shot DSC | voxel AUROC | FPR95 | case AUROC |",
         "|---|---|---|---|---|---|---|"]
    for v in order:
        a = agg[v]
        L.append(f"| {v} | {len(a['seeds'])} | {_fmt(a['organ_DSC'])} | " +
                 " | ".join(_fmt(a[m]["mean_over_types"]) for m in METRICS) + " |")
    for m in METRICS:
        L += ["", f"## {METRIC_TITLES[m]}, per zero-shot tumour type", "",
              "| variant | " + " | ".join(zs) + " | mean |", "|---" * (len(zs) + 2) + "|"]
        for v in order:
            a = agg[v][m]
            L.append(f"| {v} | " + " | ".join(_fmt(a["per_type"][t]) for t in zs) + f" | {_fmt(a['mean_over_types'])} |")
    L += ["", "## Variants", ""] + [f"* `{v}`: {VARIANTS[v]['what']}" for v in order]
    L += ["", "## Targets (full model vs baseline per type; vs each variant on the mean over types)", ""]
    L += [f"* {t}" for t in targets] or ["* (not enough finished runs)"]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(L) + "\n")
    out_json.write_text(json.dumps({"aggregate": agg, "targets": targets, "runs": results,
                                    "zero_shot_types": zs, "budget": budget, "scale": args.scale}, indent=1))


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="work folder (data, results, predictions, evaluations); "
                    "default /tmp/zept_ablation (or /tmp/zept_ablation_quick with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny budget and data: checks the pipeline end to end")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the iterations per epoch (e.g. 20 on a GPU)")
    ap.add_argument("--epochs", type=int, nargs=3, default=None, metavar=("S1", "S2", "BASE"),
                    help="override the epochs of Stage 1, Stage 2 and the baseline")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="independent repeats (default 0 1)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data set (same for every run)")
    ap.add_argument("--num-test", type=int, default=None, help="held-out cases (default 18, --quick 7)")
    ap.add_argument("--out-md", default=None, help="default <work>/ablation.md")
    ap.add_argument("--out-json", default=None, help="default <work>/ablation.json")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the tables from finished runs")
    ap.add_argument("--re-evaluate", action="store_true",
                    help="evaluate the saved predictions of every finished run again (after a change of the "
                         "metrics), keep their training times, and rewrite the tables; trains nothing")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads per training (default: all cores, as nnUNetv2_train; 1 helps on a crowded machine)")
    ap.add_argument("--cli-train", action="store_true",
                    help="train with the stock nnUNetv2_train command (adds its final validation of the fold)")
    ap.add_argument("--_train", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._train:
        return _train_child(*args._train)

    if args.threads:
        os.environ["ZEPT_ABLATION_THREADS"] = str(args.threads)
    budget = dict(BUDGETS["quick" if args.quick else "default"], grid=data_grid(args.quick, args.device))
    if args.epochs:
        budget["stage1"] = (args.epochs[0], budget["stage1"][1])
        budget["stage2"] = (args.epochs[1], budget["stage2"][1])
        budget["baseline"] = (args.epochs[2], budget["baseline"][1])
    if args.num_test:
        budget["num_test"] = args.num_test
    work = Path(args.work or ("/tmp/zept_ablation_quick" if args.quick else "/tmp/zept_ablation")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings_file = work / "settings.json"
    settings = {"budget": budget, "scale": args.scale, "data_seed": args.data_seed, "device": args.device}
    if settings_file.is_file():
        old = json.loads(settings_file.read_text())
        old["budget"] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in old["budget"].items()}
        if old != settings:
            print(f"{work} holds runs made with other settings ({old}); use another --work or the same settings "
                  f"to resume them.", file=sys.stderr)
            return 2
    else:
        settings_file.write_text(json.dumps(settings, indent=1))
    out_md = Path(args.out_md) if args.out_md else work / "ablation.md"
    out_json = Path(args.out_json) if args.out_json else work / "ablation.json"

    raw = prepare_dataset(work, budget, args.data_seed, args.device)
    if args.re_evaluate:
        log(f"re-evaluated {re_evaluate(work, raw)} finished runs")
    if args.report_only or args.re_evaluate:
        write_report(work, out_md, out_json, args, budget, raw)
        return 0
    t_start = time.time()
    failures = []
    todo = [(seed, v) for seed in args.seeds for v in VARIANTS if v in args.variants]
    while todo:
        busy = []
        for seed, variant in todo:
            t0 = time.time()
            try:
                r = run_variant(variant, seed, work, raw, budget, args.scale, args.device, args.cli_train)
            except Busy as e:   # another driver on the same --work runs it (or its Stage 1): come back later
                log(f"[{variant} seed{seed}] busy elsewhere ({e}); retrying later")
                busy.append((seed, variant))
                continue
            except Exception as e:   # keep going: one broken variant must not lose the others
                failures.append(f"{variant} seed {seed}: {e}")
                log(f"[{variant} seed{seed}] FAILED: {str(e)[:2000]}")
                continue
            zs = r["metrics"]["zero_shot"]
            log(f"[{variant} seed{seed}] done in {time.time() - t0:.0f} s: organ DSC {_f(r['metrics']['organ_DSC'])}, "
                + ", ".join(f"{t} vAUROC {_f(_num(m['voxel_AUROC']))} cAUROC {_f(_num(m['case_AUROC']))}"
                            for t, m in zs.items()))
            write_report(work, out_md, out_json, args, budget, raw)
        if busy and len(busy) == len(todo):
            time.sleep(60)
        todo = busy
    write_report(work, out_md, out_json, args, budget, raw)
    log(f"finished in {(time.time() - t_start) / 60:.1f} min; tables in {out_md} and {out_json}")
    for f in failures:
        log(f"FAILED {f[:500]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
