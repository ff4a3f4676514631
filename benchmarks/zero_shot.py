"""Sealed zero-shot benchmark: ZePT against plain nnU-Net and a like-for-like nnU-Net, with seeds,
bootstrap confidence intervals, a development split for every choice and a test split scored once.

Data (synthetic pan-tumour CT, nnunetv2_zept.synthetic, the CPU demo grid: 6 mm, U-Net width 16):
  training cases and the DEVELOPMENT split come from one generator seed, the TEST split from
  another; the two never mix.  Seen tumour types (liver, kidney) appear in training labels; the
  zero-shot types (pancreas tumour, lung nodule, splenic cyst, liver metastasis) only in the
  held-out splits.  Development: 10 cases per tumour type + 15 tumour-free; test: 15 per type + 20
  tumour-free.

Configurations (each trained with several seeds, NNUNETV2_ZEPT_SEED):
  zept          nnUNetTrainerZePTStage1, then nnUNetTrainerZePTStage2
  nnunet        plain nnU-Net as the plugin runs it (nnUNetTrainerZePTBaseline: SGD, poly schedule)
  nnunet_adamw  the like-for-like baseline (nnUNetTrainerZePTBaselineAdamW: ZePT's AdamW and schedule)
  zept_<v>      an ablation: the Stage 2 trainer variant nnUNetTrainerZePTStage2_<v> on its Stage 1
                (nnUNetTrainerZePTStage1_<v> where that exists, else the default Stage 1)
Both baselines make as many steps as ZePT's two stages together, with the same batch and patch.
Their zero-shot score is tumour-agnostic: the maximum of their seen tumour channels inside each
zero-shot type's host region (nnunetv2_zept.experiments.baseline_scores).

Commands (every step is resumable: finished trainings, predictions and evaluations are skipped;
each finished run leaves a small result file under benchmarks/results/zero_shot/ to commit):
  python benchmarks/zero_shot.py dev  --configs zept nnunet nnunet_adamw --seeds 0 1 2
  python benchmarks/zero_shot.py dev  --configs zept_noSelfPrompt zept_noGrouping --seeds 0 1   # ablations
  python benchmarks/zero_shot.py test --configs zept nnunet nnunet_adamw --seeds 0 1 2 --tag v1
  python benchmarks/zero_shot.py re-predict --configs zept --seeds 0 1 2  # dev again, same models, current code
  python benchmarks/zero_shot.py report                                  # tables from the result files
  python benchmarks/zero_shot.py export-reference --seeds 2             # the demo's reference models (one seed)
  python benchmarks/zero_shot.py thresholds --configs zept               # can a threshold delineate? (dev only)
  python benchmarks/zero_shot.py compare --configs zept zept_hypodenseLesions --seeds 0   # a change's before/after
  python benchmarks/zero_shot.py compare --configs zept zept_hostResidualQuery --split test  # after `test` scored both

Development-only studies over the saved runs and predictions (no test data): `thresholds` and
`compare` above (compare --split test only pairs runs that `test` has scored),
benchmarks/score_rules.py (tumour-score grid rules), benchmarks/seen_precedence.py (a label-map rule,
tested and not adopted), benchmarks/seen_false_positives.py (where seen channels fire in
tumour-free cases) and benchmarks/zero_shot_channel_parts.py (a zero-shot channel split into
Stage 1's anomaly and Stage 2's query term).

`test` refuses a configuration that has no development results for the same budget and seeds,
and one that the test record (results/zero_shot/test_record.json) already holds under the same
tag: the test split is scored once per reported configuration, and the record counts them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zero_shot_stats as stats  # noqa: E402
from benchmark_machine import cpu_type  # noqa: E402

RESULTS = HERE / "results" / "zero_shot"
DATASET_ID, DATASET_NAME = 980, "ZePTBench"
TEST_DATASET_ID, TEST_DATASET_NAME = 981, "ZePTBenchTest"
FOLD = "0"


@dataclass(frozen=True)
class Data:
    """The generated cases: training + development split from `train_seed`, test split from `test_seed`."""

    num_train: int = 48
    per_type_dev: int = 10
    free_dev: int = 15
    per_type_test: int = 15
    free_test: int = 20
    train_seed: int = 1000
    test_seed: int = 2000


@dataclass(frozen=True)
class Budget:
    """Training length: both ZePT stages and the baselines share the iterations per epoch (batch and
    patch come from nnU-Net's plan); a baseline gets stage1 + stage2 epochs."""

    iterations: int
    stage1_epochs: int
    stage2_epochs: int
    val_iterations: int = 2

    @property
    def baseline_epochs(self) -> int:
        return self.stage1_epochs + self.stage2_epochs


BUDGETS = {
    # the organ-learning budget (docs/benchmarks.md, "Choosing the budget"): 1500 Stage 1 + 500 Stage 2
    # steps, 2000 steps for each baseline
    "b2000": Budget(iterations=50, stage1_epochs=30, stage2_epochs=10),
    # the next step up, for the Stage 1 seeds b2000 left below "every organ >= 0.7": the added steps
    # go to Stage 1, where the organs are learned (2500 + 500 steps, 3000 for each baseline)
    "b3000": Budget(iterations=50, stage1_epochs=50, stage2_epochs=10),
    # the test suite's pipeline check
    "quick": Budget(iterations=2, stage1_epochs=1, stage2_epochs=1, val_iterations=1),
}
QUICK_DATA = Data(num_train=6, per_type_dev=1, free_dev=2, per_type_test=1, free_test=2)
BASELINES = {"nnunet": "nnUNetTrainerZePTBaseline", "nnunet_adamw": "nnUNetTrainerZePTBaselineAdamW"}
MAIN_CONFIGS = ("zept", "nnunet", "nnunet_adamw")
METRICS = ("case_AUROC", "voxel_AUROC_host", "voxel_AUROC_body", "FPR95_body", "FPR95_host", "DSC", "NSD",
           "DSC_3vox", "NSD_3vox")


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# ------------------------------------------------------------------------------------ configurations
def trainers_of(config: str) -> List[str]:
    """The trainers a configuration runs, in order."""
    if config in BASELINES:
        return [BASELINES[config]]
    if config == "zept":
        return ["nnUNetTrainerZePTStage1", "nnUNetTrainerZePTStage2"]
    if config.startswith("zept_"):
        import nnunetv2_zept.trainers as trainers

        v = config[len("zept_"):]
        s2 = f"nnUNetTrainerZePTStage2_{v}"
        if not hasattr(trainers, s2):
            raise SystemExit(f"configuration {config!r}: there is no trainer {s2}; ablations are "
                             f"{', '.join(ablation_configs())}")
        s1 = f"nnUNetTrainerZePTStage1_{v}"
        return [s1 if hasattr(trainers, s1) else "nnUNetTrainerZePTStage1", s2]
    raise SystemExit(f"unknown configuration {config!r}: use {', '.join(MAIN_CONFIGS)} or zept_<variant> "
                     f"({', '.join(ablation_configs())})")


def ablation_configs() -> List[str]:
    import nnunetv2_zept.trainers as trainers

    return [f"zept_{n[len('nnUNetTrainerZePTStage2_'):]}" for n in trainers.__all__
            if n.startswith("nnUNetTrainerZePTStage2_") and not n.endswith("epochs")]


def training_length(trainer: str, budget: Budget) -> int:
    if trainer in BASELINES.values():
        return budget.baseline_epochs
    return budget.stage1_epochs if "Stage1" in trainer else budget.stage2_epochs


# ------------------------------------------------------------------------------------ the benchmark
class Bench:
    def __init__(self, work: Path, budget_name: str, device: str = "cpu", results: Path = RESULTS):
        from nnunetv2_zept.experiments import nnunet_runs

        self.work = work
        self.budget_name = budget_name
        self.budget = BUDGETS[budget_name]
        self.data = QUICK_DATA if budget_name == "quick" else Data()
        self.device = device
        self.results = results / budget_name
        self.runs = nnunet_runs
        self.env = nnunet_runs.nnunet_environment(work)

    # ---------------------------------------------------------------- data
    def prepare(self) -> Dict[str, Path]:
        """Generate both datasets (once), plan the training one; returns the split folders."""
        if getattr(self, "_folders", None):
            return self._folders
        from nnunetv2_zept.experiments.synthetic_runs import CPU_GRID, GPU_GRID, make_dataset, plan_dataset

        grid = GPU_GRID if self.device == "cuda" else CPU_GRID
        d = self.data
        n_types = 6
        raw = make_dataset(Path(self.env["nnUNet_raw"]), DATASET_ID, DATASET_NAME, grid, d.num_train,
                           n_types * d.per_type_dev + d.free_dev, d.train_seed,
                           d.free_dev / (n_types * d.per_type_dev + d.free_dev))
        test = make_dataset(self.work / "test_split", TEST_DATASET_ID, TEST_DATASET_NAME, grid, 0,
                            n_types * d.per_type_test + d.free_test, d.test_seed,
                            d.free_test / (n_types * d.per_type_test + d.free_test))
        plan_dataset(DATASET_ID, DATASET_NAME, grid, self.env, self.work / "logs" / "plan.log")
        self.dataset_json = json.loads((raw / "dataset.json").read_text())
        self.grid = grid
        self._folders = {"dev": raw, "test": test, "train": raw}
        return self._folders

    def zero_shot_names(self) -> List[str]:
        from nnunetv2_zept.roles import channel_names, roles_from_dataset_json

        names = channel_names(self.dataset_json)
        return [names[z] for z in roles_from_dataset_json(self.dataset_json).zero_shot]

    def split_folders(self, split: str) -> Dict[str, Path]:
        base = self.prepare()[split]
        return {"images": base / "imagesTs", "labels": base / "labelsTs", "cases": base / "cases.json"}

    # ---------------------------------------------------------------- training
    def results_root(self, seed: int) -> Path:
        return self.work / "nnunet_results" / self.budget_name / f"seed{seed}"

    def fold_folder(self, seed: int, trainer: str) -> Path:
        return (self.results_root(seed) / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}" / f"{trainer}__nnUNetPlans__3d_fullres"
                / f"fold_{FOLD}")

    def train(self, config: str, seed: int) -> Dict[str, dict]:
        """Train every trainer of the configuration (skipping finished ones); wall and CPU seconds."""
        self.prepare()
        env = dict(self.env, nnUNet_results=str(self.results_root(seed)))
        os.makedirs(env["nnUNet_results"], exist_ok=True)
        timings = {}
        for trainer in trainers_of(config):
            folder = self.fold_folder(seed, trainer)
            record = folder / "zero_shot_training.json"
            if (folder / "checkpoint_final.pth").is_file() and record.is_file():
                timings[trainer] = json.loads(record.read_text())
                continue
            epochs = training_length(trainer, self.budget)
            log(f"[{config} seed {seed}] training {trainer}: {epochs} epochs x {self.budget.iterations} iterations")
            res = self.runs.train(DATASET_ID, trainer, FOLD, epochs, self.budget.iterations, self.budget.val_iterations,
                                  self.device, env, self.work / "logs" / self.budget_name / f"seed{seed}" / f"{trainer}.log",
                                  seed=seed, save_every=max(1, epochs // 4),
                                  resume=(folder / "checkpoint_latest.pth").is_file(), show=False)
            log_ = self.runs.TrainingLog.parse(res.lines)
            # a resumed training's clock covers only the epochs run after the checkpoint
            timings[trainer] = {"wall_s": res.seconds, "cpu_s": res.cpu_seconds, "epochs": epochs,
                                "epochs_timed": len(log_.train_losses),
                                "iterations": self.budget.iterations,
                                "seconds_per_iteration": log_.seconds_per_iteration(self.budget.iterations,
                                                                                    self.budget.val_iterations),
                                "train_losses": log_.train_losses, "loss_parts": log_.loss_parts,
                                "load_average": os.getloadavg()[0], "cpu": cpu_type()}
            record.write_text(json.dumps(timings[trainer], indent=1))
        return timings

    # ---------------------------------------------------------------- prediction and evaluation
    def run_file(self, split: str, config: str, seed: int) -> Path:
        return self.results / split / config / f"seed{seed}.json"

    def evaluate(self, split: str, config: str, seed: int, again: bool = False, repredict: bool = False) -> dict:
        """Train (if needed), predict the split, evaluate, and write the run's result files.
        `again`: evaluate the saved predictions of a finished run again (after a change of the
        metrics or of the tumour score), keeping its training record; scoring the test split again
        this way changes no model and counts as no new scoring.
        `repredict` (development split only): predict again with the same trained models (after a
        change of the prediction code), keeping the training record."""
        if repredict and split != "dev":
            raise SystemExit("re-predict is for the development split only: predicting the test split with "
                             "changed code is a new scoring; use `test` with a new --tag")
        out = self.run_file(split, config, seed)
        if out.is_file() and not (again or repredict):
            return json.loads(out.read_text())
        pred = self.work / "predictions" / self.budget_name / split / config / f"seed{seed}"
        if again or repredict:
            old = json.loads(out.read_text())
            timings, predict_s = old["training"], old["predict_s"]
        if repredict:
            missing = [t for t in trainers_of(config) if not (self.fold_folder(seed, t) / "checkpoint_final.pth").is_file()]
            if missing:
                raise SystemExit(f"{config} seed {seed}: no trained model of {', '.join(missing)} under "
                                 f"{self.results_root(seed)} to predict again with; run `dev` on a fresh result folder "
                                 "to train it")
            if pred.exists():
                shutil.rmtree(pred)
        elif again:
            if not (pred / "done").is_file():
                raise SystemExit(f"{config} seed {seed}: no saved {split} predictions in {pred} to evaluate again")
        else:
            timings = self.train(config, seed)
        env = dict(self.env, nnUNet_results=str(self.results_root(seed)))
        t0 = time.time()
        if not again:
            self.predict_split(split, config, seed, pred, env, f"predict_{split}_{config}.log",
                               f"predicting the {split} split")
            predict_s = time.time() - t0
        log(f"[{config} seed {seed}] evaluating the {split} split")
        summary, arrays = self.score_predictions(split, config, pred, fresh_agnostic_copy=again or repredict)
        reproduction = self.reproduction(config, seed, timings, env) if split == "test" and not again else None
        if again and split == "test":
            reproduction = old.get("reproduction")
        result = {"split": split, "config": config, "seed": seed, "budget": self.budget_name,
                  "budget_settings": self.budget.__dict__, "data": self.data.__dict__, "grid": self.grid.to_dict(),
                  "trainers": trainers_of(config), "training": timings, "predict_s": predict_s,
                  "full_resolution": {"groups": summary["groups"],
                                      "per_class": {k: _slim(v) for k, v in summary["per_class"].items()}},
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": _commit()}
        if reproduction is not None:
            result["reproduction"] = reproduction
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out.with_suffix(".npz"), **arrays)
        out.write_text(json.dumps(result, indent=1))
        return result

    def reproduction(self, config: str, seed: int, timings: Dict[str, dict], env: Dict[str, str]) -> Optional[dict]:
        """When the model scored on the test split is not the training whose development results are
        on record (model folders do not outlive a machine, so a later session retrains the seed), its
        development split is predicted again: the record then shows how closely a seed reproduces
        its run, next to the test numbers.  None when the model is the recorded training itself."""
        dev = json.loads(self.run_file("dev", config, seed).read_text())
        same = all(abs(dev["training"].get(t, {}).get("wall_s", -1.0) - r["wall_s"]) < 1e-6 for t, r in timings.items())
        if same:
            return None
        pred = self.work / "predictions" / self.budget_name / "dev_retrained" / config / f"seed{seed}"
        self.predict_split("dev", config, seed, pred, env, f"predict_dev_retrained_{config}.log",
                           "retrained model: predicting the development split again")
        summary, _ = self.score_predictions("dev", config, pred)
        return {"dev_recorded": _headline(dev["full_resolution"]["groups"]), "dev_retrained": _headline(summary["groups"]),
                "dev_recorded_commit": dev.get("commit"), "retrained_commit": _commit()}

    def predict_split(self, split: str, config: str, seed: int, pred: Path, env: Dict[str, str], log_name: str,
                      message: str) -> None:
        """Predict the split's images into `pred` with the configuration's last trainer, unless a
        finished prediction is there; `pred/done` marks it finished, so an interrupted one is redone."""
        if (pred / "done").is_file():
            return
        if pred.exists():
            shutil.rmtree(pred)            # an interrupted prediction of this benchmark's own folder
        log(f"[{config} seed {seed}] {message}")
        self.runs.predict(DATASET_ID, trainers_of(config)[-1], FOLD, self.split_folders(split)["images"], pred,
                          self.device, env, self.work / "logs" / self.budget_name / f"seed{seed}" / log_name, show=False)
        (pred / "done").write_text("ok\n")

    def score_predictions(self, split: str, config: str, pred: Path, fresh_agnostic_copy: bool = False):
        """evaluate_run on the predictions in `pred`; for a baseline, the zero-shot types' numbers come
        from its tumour-agnostic copy (made once, or again with `fresh_agnostic_copy`)."""
        folders = self.split_folders(split)
        summary, arrays = evaluate_run(folders, pred, self.dataset_json)
        if config in BASELINES:
            from nnunetv2_zept.experiments.baseline_scores import tumour_agnostic_copy

            agnostic = pred.with_name(pred.name + "_tumour_agnostic")
            if not agnostic.is_dir() or fresh_agnostic_copy:
                tumour_agnostic_copy(pred, agnostic, self.dataset_json)
            # zero-shot types are read from the tumour-agnostic copy; organs and seen types from the
            # baseline's own label maps, in which no zero-shot label has painted over its seen tumours
            summary, arrays = with_zero_shot_from(summary, arrays, *evaluate_run(folders, agnostic, self.dataset_json),
                                                  self.zero_shot_names())
        return summary, arrays

    # ---------------------------------------------------------------- test split
    def record_file(self) -> Path:
        return self.results.parent / "test_record.json"

    def check_test_allowed(self, configs: Sequence[str], seeds: Sequence[int], tag: str) -> None:
        record = json.loads(self.record_file().read_text()) if self.record_file().is_file() else []
        for config in configs:
            missing = [s for s in seeds if not self.run_file("dev", config, s).is_file()]
            if missing:
                raise SystemExit(f"configuration {config!r} (budget {self.budget_name}) has no development results for "
                                 f"seed(s) {missing}: every configuration is run on the development split before the "
                                 f"test split is scored. Run: python benchmarks/zero_shot.py dev --configs {config} "
                                 f"--seeds {' '.join(map(str, seeds))} --budget {self.budget_name}")
            done = [r for r in record if r["config"] == config and r["budget"] == self.budget_name and r["tag"] == tag]
            if done and any(not self.run_file("test", config, s).is_file() for s in seeds):
                raise SystemExit(f"configuration {config!r} (budget {self.budget_name}, tag {tag!r}) was already scored "
                                 f"on the test split on {done[0]['date']}; the test split is scored once per "
                                 f"configuration. A changed model needs a new --tag (and counts as another scoring).")

    def record_test(self, config: str, seeds: Sequence[int], tag: str) -> None:
        path = self.record_file()
        record = json.loads(path.read_text()) if path.is_file() else []
        if any(r["config"] == config and r["budget"] == self.budget_name and r["tag"] == tag for r in record):
            return
        record.append({"config": config, "budget": self.budget_name, "tag": tag, "seeds": list(seeds),
                       "date": time.strftime("%Y-%m-%d %H:%M %Z"), "commit": _commit()})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))


def _headline(groups: dict) -> dict:
    """The numbers a reproduction check compares: organ DSC and the zero-shot and seen headlines."""
    return {"organ_DSC": groups["organs"]["DSC"], "zero_shot_case_AUROC": groups["zero_shot_tumours"]["detection.AUROC"],
            "zero_shot_voxel_AUROC_host": groups["zero_shot_tumours"]["voxel_host.AUROC"],
            "seen_DSC": groups["seen_tumours"]["DSC"]}


def _slim(entry: dict) -> dict:
    keep = ("role", "DSC", "NSD", "DSC_tumour_cases", "NSD_tumour_cases", "voxel_body", "voxel_host", "detection")
    return {k: entry[k] for k in keep if k in entry}


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""


def with_zero_shot_from(summary: dict, arrays: dict, zs_summary: dict, zs_arrays: dict, zero_shot: Sequence[str]):
    """A baseline run's evaluation with the zero-shot types' numbers (summary and per-case arrays)
    from the evaluation of its tumour-agnostic copy (experiments.baseline_scores)."""
    from nnunetv2_zept.experiments.baseline_scores import with_zero_shot_from as merged_summary

    if list(arrays["cases"]) != list(zs_arrays["cases"]):
        raise ValueError("the two evaluations of one run cover different cases")
    arrays = {k: (zs_arrays[k] if k.split("/")[0] in zero_shot else v) for k, v in arrays.items()}
    return merged_summary(summary, zs_summary, zero_shot), arrays


def evaluate_run(folders: Dict[str, Path], prediction: Path, dataset_json: dict):
    """evaluate_folder (CT body mask from the images) + the per-case arrays of zero_shot_stats."""
    from nnunetv2_zept.evaluation import evaluate_folder
    from nnunetv2_zept.roles import channel_names, roles_from_dataset_json

    roles = roles_from_dataset_json(dataset_json)
    names = channel_names(dataset_json)
    hist: dict = {}
    summary = evaluate_folder(str(folders["labels"]), str(prediction), dataset_json, plots=False,
                              images_folder=str(folders["images"]), case_histograms=hist)
    arrays = stats.case_arrays(summary, hist, [names[o] for o in roles.organs], [names[t] for t in roles.tumours])
    return summary, arrays


# ------------------------------------------------------------------------------------ reference models
REFERENCE_MODELS = HERE / "reference_models"
REFERENCE_CONFIGS = {"zept": "zept", "nnunet_adamw": "nnunet_adamw"}      # zip name -> configuration


def export_references(bench: "Bench", folder: Path, seed: int = 0) -> List[Path]:
    """One training seed's models of ZePT and of the like-for-like baseline as nnU-Net zips for the demo
    (nnunetv2_zept.experiments.reference_models), each with its development-split results."""
    from nnunetv2_zept.experiments.reference_models import export_reference_zip

    bench.prepare()
    out = []
    for name, config in REFERENCE_CONFIGS.items():
        dev = bench.run_file("dev", config, seed)
        if not dev.is_file():
            raise SystemExit(f"no development run of {config!r} seed {seed} (budget {bench.budget_name}); run "
                             f"`python benchmarks/zero_shot.py dev --configs {config} --seeds {seed}` first")
        run = json.loads(dev.read_text())
        trainer = trainers_of(config)[-1]
        info = {"name": name, "config": config, "seed": seed, "budget": bench.budget_name,
                "budget_settings": bench.budget.__dict__, "data": bench.data.__dict__, "grid": bench.grid.to_dict(),
                "trainers": trainers_of(config), "commit": run.get("commit"),
                "development_split": run["full_resolution"]["groups"],
                "rebuild": f"python benchmarks/zero_shot.py dev --configs {config} --seeds {seed} --budget "
                           f"{bench.budget_name} && python benchmarks/zero_shot.py export-reference --budget "
                           f"{bench.budget_name} --seeds {seed}"}
        out.append(export_reference_zip(bench.fold_folder(seed, trainer).parent, folder / f"{name}.zip", info,
                                        f"Dataset{DATASET_ID:03d}_{DATASET_NAME}", FOLD))
    return out


# ------------------------------------------------------------------------------------ report
def load_runs(results: Path, split: str, config: str) -> List[dict]:
    runs = []
    for f in sorted((results / split / config).glob("seed*.json")):
        r = json.loads(f.read_text())
        r["arrays"] = dict(np.load(f.with_suffix(".npz"), allow_pickle=False))
        runs.append(r)
    return runs


def summarise(results: Path, split: str, configs: Sequence[str], resamples: int = stats.RESAMPLES) -> dict:
    """Per configuration and tumour type: every metric as mean over seeds with bootstrap CI, and the
    paired differences of ZePT against each baseline."""
    runs = {c: load_runs(results, split, c) for c in configs}
    runs = {c: r for c, r in runs.items() if r}
    if not runs:
        return {}
    any_run = next(iter(runs.values()))[0]
    a = any_run["arrays"]
    tumours = sorted({k.split("/")[0] for k in a if "/" in k})
    present = {t: a[f"{t}/present"] for t in tumours}
    weights = stats.resample_weights(present, len(a["cases"]), resamples)
    metrics = {c: [stats.run_metrics(r["arrays"], tumours, weights) for r in rs] for c, rs in runs.items()}
    out = {"split": split, "tumours": tumours, "configs": {}, "differences": {},
           "n_cases": int(len(a["cases"])), "n_positive": {t: int(present[t].sum()) for t in tumours},
           "resamples": resamples}
    for c, per_seed in metrics.items():
        entry = {"seeds": [r["seed"] for r in runs[c]], "organ_DSC": stats.seed_mean_with_ci([m["organ_DSC"] for m in per_seed])}
        for t in tumours:
            entry[t] = {m: stats.seed_mean_with_ci([s[f"{t}/{m}"] for s in per_seed]) for m in METRICS}
        for group, members in _groups(any_run, tumours).items():
            entry[group] = {m: stats.seed_mean_with_ci([stats.group_mean(s, members, m) for s in per_seed]) for m in METRICS}
        entry["training"] = _training_totals(runs[c])
        # the code that scored a run decides its numbers (score rules change), so the report names it
        entry["scored_by"] = sorted({r.get("commit", "?") for r in runs[c]})
        out["configs"][c] = entry
    if "zept" in metrics:
        for base in BASELINES:
            if base not in metrics:
                continue
            diff = {}
            for t in tumours + list(_groups(any_run, tumours)):
                members = _groups(any_run, tumours).get(t, [t])
                diff[t] = {}
                for m in ("case_AUROC", "voxel_AUROC_host", "voxel_AUROC_body", "DSC"):
                    za = [stats.group_mean(s, members, m) for s in metrics["zept"]]
                    ba = [stats.group_mean(s, members, m) for s in metrics[base]]
                    diff[t][m] = stats.difference_with_ci(za, ba)
            out["differences"][base] = diff
    return out


def _groups(run: dict, tumours: Sequence[str]) -> Dict[str, List[str]]:
    pc = run["full_resolution"]["per_class"]
    return {"zero-shot mean": [t for t in tumours if pc.get(t, {}).get("role") == "zero_shot_tumour"],
            "seen mean": [t for t in tumours if pc.get(t, {}).get("role") == "seen_tumour"]}


def _fully_timed(run: dict) -> bool:
    """False when a training of the run resumed from a checkpoint: its clock missed the earlier epochs."""
    return all(t.get("epochs_timed", t["epochs"]) == t["epochs"] for t in run["training"].values())


def _training_totals(runs: List[dict]) -> dict:
    """Mean wall and CPU minutes over the seeds whose trainings ran without interruption (NaN if none)."""
    timed = [r for r in runs if _fully_timed(r)]
    wall = [sum(t["wall_s"] for t in r["training"].values()) for r in timed]
    cpu = [sum(t["cpu_s"] for t in r["training"].values()) for r in timed]
    return {"wall_min_mean": float(np.mean(wall)) / 60 if timed else float("nan"),
            "cpu_min_mean": float(np.mean(cpu)) / 60 if timed else float("nan"), "timed_seeds": len(timed),
            "steps": int(sum(t["epochs"] * t["iterations"] for t in runs[0]["training"].values()))}


def write_report(results: Path, out_md: Path) -> str:
    lines = ["# Sealed zero-shot benchmark", "",
             "Written by `python benchmarks/zero_shot.py report` from the result files in "
             "`benchmarks/results/zero_shot/`.  Cells: mean over training seeds [bootstrap 95% CI over cases of "
             "that mean] (min–max over seeds). Rows scored by different commits may use different tumour-score "
             "rules; compare rows scored by the same commit.", ""]
    record = json.loads((results / "test_record.json").read_text()) if (results / "test_record.json").is_file() else []
    for budget_dir in sorted(p for p in results.iterdir() if p.is_dir()):
        for split in ("test", "dev"):
            configs = sorted(p.name for p in (budget_dir / split).glob("*") if p.is_dir()) if (budget_dir / split).is_dir() else []
            order = [c for c in MAIN_CONFIGS if c in configs] + [c for c in configs if c not in MAIN_CONFIGS]
            s = summarise(budget_dir, split, order)
            if s:
                lines += report_tables(s, budget_dir.name, split)
    lines += reproduction_table(results)
    lines += ["## Test-split record", "",
              f"The test split has been scored {len(record)} time(s) (one per configuration and tag):", ""]
    lines += [f"* {r['date']}: `{r['config']}`, budget {r['budget']}, tag {r['tag']}, seeds {r['seeds']}, commit "
              f"{r['commit']}" for r in record] or ["* (never)"]
    text = "\n".join(lines) + "\n"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    return text


def reproduction_table(results: Path) -> List[str]:
    """Test-split models retrained from their seed (a later session, another machine): their development
    numbers on record next to the retrained model's, i.e. how closely a training seed reproduces its run."""
    rows = []
    for f in sorted(results.glob("*/test/*/seed*.json")):
        r = json.loads(f.read_text())
        rep = r.get("reproduction")
        if not rep:
            continue
        a, b = rep["dev_recorded"], rep["dev_retrained"]
        rows.append(f"| {r['budget']} | {r['config']} | {r['seed']} | " + " | ".join(
            f"{a[k]:.3f} / {b[k]:.3f}" for k in ("organ_DSC", "zero_shot_case_AUROC", "zero_shot_voxel_AUROC_host",
                                                  "seen_DSC")) + f" | {rep['dev_recorded_commit']} / {rep['retrained_commit']} |")
    if not rows:
        return []
    return ["## Retrained seeds: development split, recorded run / retrained model", "",
            "Model folders do not outlive a machine; a seed scored on the test split in a later session is trained "
            "again from the same seed and predicts the development split once more.", "",
            "| budget | configuration | seed | organ DSC | zero-shot case AUROC | zero-shot voxel AUROC (host) | seen DSC "
            "| commits |", "|---|---|---|---|---|---|---|---|"] + rows + [""]


def _training_cell(t: dict, n_seeds: int) -> str:
    if not t["timed_seeds"]:
        return "– (resumed)"
    cell = f"{t['wall_min_mean']:.0f} / {t['cpu_min_mean']:.0f}"
    return cell if t["timed_seeds"] == n_seeds else cell + f" ({t['timed_seeds']} seeds; others resumed)"


def report_tables(s: dict, budget: str, split: str) -> List[str]:
    f = stats.fmt_ci
    name = {"dev": "development split", "test": "TEST split"}[split]
    L = [f"## Budget {budget}, {name} ({s['n_cases']} cases; positive cases per type: "
         + ", ".join(f"{t} {n}" for t, n in s["n_positive"].items()) + ")", ""]
    cfgs = list(s["configs"])
    L += ["| configuration | seeds | organ DSC | zero-shot case AUROC | zero-shot voxel AUROC (host) | "
          "FPR95 (body) | seen DSC | training (min, wall / CPU) | scored by commit |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cfgs:
        e = s["configs"][c]
        z, seen = e["zero-shot mean"], e["seen mean"]
        L.append(f"| {c} | {len(e['seeds'])} | {f(e['organ_DSC'])} | {f(z['case_AUROC'])} | {f(z['voxel_AUROC_host'])} | "
                 f"{f(z['FPR95_body'])} | {f(seen['DSC'])} | {_training_cell(e['training'], len(e['seeds']))} | "
                 f"{', '.join(e['scored_by'])} |")
    for metric, title in (("case_AUROC", "case AUROC"), ("voxel_AUROC_host", "voxel AUROC in the host region"),
                          ("voxel_AUROC_body", "voxel AUROC in the CT body mask"), ("FPR95_body", "FPR95 in the CT body mask"),
                          ("DSC", "DSC on cases with the tumour"), ("NSD", "NSD on cases with the tumour"),
                          ("DSC_3vox", "DSC on lesions at least 3 voxels across"),
                          ("NSD_3vox", "NSD on lesions at least 3 voxels across")):
        L += ["", f"{title} per tumour type:", "", "| configuration | " + " | ".join(s["tumours"]) + " |",
              "|---" * (len(s["tumours"]) + 1) + "|"]
        for c in cfgs:
            L.append(f"| {c} | " + " | ".join(f(s["configs"][c][t][metric]) for t in s["tumours"]) + " |")
    for base, diff in s["differences"].items():
        L += ["", f"ZePT minus {base} (paired bootstrap 95% CI of the difference of seed means):", "",
              "| tumour | case AUROC | voxel AUROC (host) | voxel AUROC (body) | DSC |", "|---|---|---|---|---|"]
        for t, d in diff.items():
            L.append(f"| {t} | " + " | ".join(
                f"{d[m]['difference']:+.2f} [{d[m]['ci_low']:+.2f}, {d[m]['ci_high']:+.2f}]" for m in
                ("case_AUROC", "voxel_AUROC_host", "voxel_AUROC_body", "DSC")) + " |")
    return L + [""]


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("dev", "test", "report", "export-reference", "re-evaluate", "re-predict",
                                        "thresholds", "compare"))
    ap.add_argument("--configs", nargs="+", default=list(MAIN_CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="training seeds (default 0 1 2; compare: every seed all its configurations have)")
    ap.add_argument("--budget", default="b2000", choices=sorted(BUDGETS))
    ap.add_argument("--tag", default="v1", help="name of the model version scored on the test split (test only)")
    ap.add_argument("--work", default=os.environ.get("ZEPT_BENCH_WORK", "/tmp/zept_zero_shot"),
                    help="work folder for data, checkpoints and predictions (not committed)")
    ap.add_argument("--results", default=str(RESULTS), help="result files (committed)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--split", default="dev", choices=("dev", "test"),
                    help="compare only: the split whose runs are paired (test: runs `test` has already scored)")
    ap.add_argument("--out", default=None, help="report Markdown (default <results>/report.md)")
    args = ap.parse_args(argv)
    results = Path(args.results)
    if args.command == "report":
        print(write_report(results, Path(args.out) if args.out else results / "report.md"))
        return 0
    for c in args.configs:
        trainers_of(c)
    if args.command == "thresholds":
        from zero_shot_thresholds import write_threshold_study

        if args.out and len(args.configs) > 1:
            raise SystemExit("thresholds --out names one file, but several --configs were given: "
                             "give one configuration, or leave out --out to write thresholds_dev_<config>.md each")

        for c in args.configs:
            budget_dir = results / args.budget
            print(write_threshold_study(budget_dir, c, load_runs(budget_dir, "dev", c),
                                        Path(args.out) if args.out else budget_dir / f"thresholds_dev_{c}.md"))
        return 0
    if args.command == "compare":
        from zero_shot_compare import write_comparison

        if len(args.configs) < 2:
            raise SystemExit("compare needs a reference configuration and at least one variant: --configs REF VARIANT ...")
        budget_dir = results / args.budget
        runs = {c: load_runs(budget_dir, args.split, c) for c in args.configs}
        seeds = args.seeds or ()
        out = Path(args.out) if args.out else budget_dir / f"compare_{args.split}_{'_'.join(args.configs)}.md"
        print(write_comparison(budget_dir, runs, seeds, out,
                               "python benchmarks/zero_shot.py compare --configs " + " ".join(args.configs)
                               + (f" --seeds {' '.join(map(str, seeds))}" if seeds else "")
                               + (" --split test" if args.split == "test" else ""), args.split))
        return 0
    args.seeds = args.seeds or [0, 1, 2]
    bench = Bench(Path(args.work).resolve(), args.budget, args.device, results)
    if args.command == "re-evaluate":
        for split in ("dev", "test"):
            for config in args.configs:
                for seed in args.seeds:
                    if bench.run_file(split, config, seed).is_file():
                        bench.evaluate(split, config, seed, again=True)
        write_report(results, Path(args.out) if args.out else results / "report.md")
        return 0
    if args.command == "re-predict":
        for config in args.configs:
            for seed in args.seeds:
                if not bench.run_file("dev", config, seed).is_file():
                    raise SystemExit(f"{config} seed {seed} (budget {args.budget}) has no development result to "
                                     "predict again; run `dev` first")
                bench.evaluate("dev", config, seed, repredict=True)
        write_report(results, Path(args.out) if args.out else results / "report.md")
        return 0
    if args.command == "export-reference":
        if len(args.seeds) != 1:
            raise SystemExit("export-reference exports one training seed's models: give exactly one, e.g. --seeds 0")
        for path in export_references(bench, REFERENCE_MODELS, seed=args.seeds[0]):
            log(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MB)")
        return 0
    if args.command == "test":
        bench.check_test_allowed(args.configs, args.seeds, args.tag)
    t0 = time.time()
    for seed in args.seeds:
        for config in args.configs:
            r = bench.evaluate(args.command, config, seed)
            g = r["full_resolution"]["groups"]
            log(f"[{config} seed {seed}] {args.command}: organ DSC {g['organs']['DSC']:.3f}, zero-shot case AUROC "
                f"{g['zero_shot_tumours']['detection.AUROC']:.3f}, voxel AUROC host "
                f"{g['zero_shot_tumours']['voxel_host.AUROC']:.3f}")
    if args.command == "test":
        for config in args.configs:
            bench.record_test(config, args.seeds, args.tag)
    write_report(results, Path(args.out) if args.out else results / "report.md")
    log(f"finished in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
