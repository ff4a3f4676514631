"""Training and prediction cost of ZePT against plain nnU-Net, side by side in one run.

Same data set (synthetic pan-tumour CT, demo preset), same nnU-Net plan (patch, batch size,
network), same device.  Four parts:

1. Training step, data loading excluded: each trainer (nnUNetTrainer = plain nnU-Net,
   nnUNetTrainerZePTStage1, nnUNetTrainerZePTStage2) is instantiated in-process in a FRESH
   subprocess, `initialize()` + `on_train_start()` are called, batches are pre-fetched from its
   own dataloader and `train_step` alone is timed.  Stage 2 runs with its random initial
   weights (no Stage 1 checkpoint is loaded): its frozen Stage 1 part does the same arithmetic
   whatever the weights, and the attention masks are dense boolean tensors whose cost does not
   depend on their content.
2. Training iteration, data loading included: the same process then times
   `train_step(next(dataloader_train))` (nnU-Net's data augmentation on the main thread with
   nnUNet_n_proc_DA=0 on CPU, its worker processes on CUDA).
   Peak memory: CPU: peak RSS of the subprocess (getrusage ru_maxrss; whole process, so the
   ~0.5 GB of Python/torch/nnU-Net is in every number) and that peak minus the RSS before the
   first step ("step"); CUDA: torch.cuda.max_memory_allocated.
3. Prediction: `nnUNetv2_predict` (its entry point, in a fresh subprocess) with each trainer's
   model on the same held-out cases, `--disable_tta` for all, plus plain nnU-Net with its
   default mirroring TTA (ZePT models disable mirroring by design: left and right organs are
   distinct classes).  The models are the trainers' states after part 1 (a few steps);
   prediction cost does not depend on the weights.
4. Scaling: network-level forward+backward (as trained in each stage) of ZePT vs the plain
   U-Net of the same plan, for several patch sizes and numbers of classes.

Repeats are interleaved (plain, S1, S2, plain, S1, S2, ...) so that the drift of a shared
machine affects all alike; each figure is the median over repeats with its min-max, and ratios
are taken against plain nnU-Net within the same repeat.

    python benchmarks/training_cost.py                       # CPU, about 10 min on 2 cores
    python benchmarks/training_cost.py --device cuda         # one GPU, mixed precision, < 8 min
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_machine import load_note, machine_description  # noqa: E402

BIN = Path(sys.executable).parent
DATASET_ID = 996
DATASET_NAME = "ZePTCost"
CONFIG = "3d_fullres"
TRAINERS = ("nnUNetTrainer", "nnUNetTrainerZePTStage1", "nnUNetTrainerZePTStage2")
SHORT = {"nnUNetTrainer": "plain nnU-Net", "nnUNetTrainerZePTStage1": "ZePT Stage 1",
         "nnUNetTrainerZePTStage2": "ZePT Stage 2"}
PREDICT_SETTINGS = (("nnUNetTrainer", True), ("nnUNetTrainer", False), ("nnUNetTrainerZePTStage1", False),
                    ("nnUNetTrainerZePTStage2", False))

_ALL_PREDICTIONS = [list(x) for x in PREDICT_SETTINGS]
_NO_TTA = [["nnUNetTrainer", False], ["nnUNetTrainerZePTStage2", False]]

PROFILES = {
    # CPU, the default demo's data (6 mm grid, 60 x 46 x 40 voxels = one patch, U-Net width 16): ~10 min on 2 cores
    "cpu": {"repeats": 3, "warmup": 1, "iters": 3, "iters_with_data": 3, "predict_repeats": 3, "num_train": 8,
            "num_test": 4, "predict_cases": 2, "scaling_patches": [[24, 24, 24], [32, 32, 32], [48, 48, 48]],
            "scaling_classes": [[5, 3], [9, 6], [16, 12]], "scaling_iters": 1, "scaling_batch": 1, "da_procs": 0,
            "shape": [60, 46, 40], "spacing": [6.0, 6.0, 6.0], "unet_features": 16, "predict": _ALL_PREDICTIONS},
    # CPU, prediction of one realistic case (300 x 300 x 200 voxels at 1 mm: nnU-Net plans 128^3-ish windows,
    # many per case), U-Net width 16; the trainings only make the checkpoints (one step each); ~40 min on 2 cores
    "cpu_realistic": {"repeats": 1, "warmup": 0, "iters": 1, "iters_with_data": 1, "predict_repeats": 1, "num_train": 5,
                      "num_test": 4, "predict_cases": 1, "scaling_patches": [], "scaling_classes": [],
                      "scaling_iters": 1, "scaling_batch": 1, "da_procs": 0, "shape": [300, 300, 200],
                      "spacing": [1.0, 1.0, 1.0], "unet_features": 16, "predict": _NO_TTA, "skip_stage1": True},
    # the test suite's check that the script runs (gpu_cost.sh --cpu-smoke): meaningless numbers
    "smoke": {"repeats": 1, "warmup": 0, "iters": 1, "iters_with_data": 1, "predict_repeats": 1, "num_train": 5,
              "num_test": 4, "predict_cases": 1, "scaling_patches": [[16, 16, 16]], "scaling_classes": [],
              "scaling_iters": 1, "scaling_batch": 1, "da_procs": 0, "shape": [32, 32, 24],
              "spacing": [7.5, 7.5, 7.5], "unet_features": 8, "predict": _NO_TTA},
    # one GPU: larger cases (x, y, z) so that nnU-Net plans a GPU-sized patch, nnU-Net's own width; < 4 min
    "cuda": {"repeats": 2, "warmup": 2, "iters": 6, "iters_with_data": 6, "predict_repeats": 2, "num_train": 8,
             "num_test": 4, "scaling_patches": [[64, 64, 64], [96, 96, 96], [128, 128, 128]],
             "scaling_classes": [[5, 3], [9, 6], [16, 12], [25, 20]], "scaling_iters": 3, "scaling_batch": 2,
             "predict_cases": 2, "da_procs": 6, "shape": [192, 192, 96], "spacing": [1.2, 1.2, 2.5],
             "unet_features": None, "predict": _ALL_PREDICTIONS},
}


def _env(work: Path, device: str, da_procs: int) -> dict:
    env = dict(os.environ)
    env.update({"nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "preprocessed"),
                "nnUNet_results": str(work / "results"), "nnUNet_def_n_proc": "1", "nnUNet_compile": "f",
                "nnUNet_n_proc_DA": str(da_procs)})
    return env


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(cmd: List[str], env: dict, timeout: int = 1200) -> dict:
    """Run this script in a fresh process; its last stdout line is a JSON result."""
    proc = subprocess.run([sys.executable, __file__] + cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ children
def _set_threads(device: str, threads: int) -> None:
    import torch

    if device == "cpu":
        # nnUNetv2_train / _predict use every core on CPU; --threads overrides (e.g. 1 on a crowded machine,
        # where spinning OpenMP threads of many processes make multi-threaded timings erratic)
        torch.set_num_threads(threads or os.cpu_count() or 1)


def child_train(trainer_name: str, results: str, save: bool, warmup: int, iters: int, iters_with_data: int,
                device: str, threads: int = 0) -> dict:
    """Time train_step without and with data loading for one trainer (in this fresh process)."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    os.environ["nnUNet_results"] = results
    dev = torch.device(device)
    _set_threads(device, threads)
    trainer = get_trainer_from_args(str(DATASET_ID), CONFIG, 0, trainer_name, "nnUNetPlans", device=dev)
    trainer.initialize()
    trainer.on_train_start()
    trainer.on_train_epoch_start()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    batches = [next(trainer.dataloader_train) for _ in range(warmup + iters)]
    for b in batches[:warmup]:
        trainer.train_step(b)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = _rss()
    times = []
    for b in batches[warmup:]:
        sync()
        t0 = time.perf_counter()
        trainer.train_step(b)
        sync()
        times.append(time.perf_counter() - t0)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gpu_peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
    del batches
    times_data = []
    for _ in range(iters_with_data):
        sync()
        t0 = time.perf_counter()
        trainer.train_step(next(trainer.dataloader_train))
        sync()
        times_data.append(time.perf_counter() - t0)
    peak_rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gpu_peak_data = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
    net = trainer.network
    n_trained = sum(p.numel() for p in net.parameters() if p.requires_grad)
    n_params = sum(p.numel() for p in net.parameters())
    out = {"trainer": trainer_name, "step_s": statistics.median(times), "step_all_s": times,
           "iter_with_data_s": statistics.median(times_data), "iter_with_data_all_s": times_data,
           "peak_rss_mb": peak_rss / 2 ** 20, "step_rss_mb": (peak_rss - rss0) / 2 ** 20,
           "peak_rss_with_data_mb": peak_rss_data / 2 ** 20,
           "gpu_peak_mb": None if gpu_peak is None else gpu_peak / 2 ** 20,
           "gpu_peak_with_data_mb": None if gpu_peak_data is None else gpu_peak_data / 2 ** 20,
           "patch_size": list(trainer.configuration_manager.patch_size), "batch_size": trainer.batch_size,
           "params": n_params, "trained_params": n_trained}
    if save:
        trainer.on_train_end()      # writes checkpoint_final.pth (used by the prediction part)
    else:
        for dl in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(dl, "_finish"):
                dl._finish()
    return out


def child_predict(argv: List[str], device: str, threads: int = 0, command: str = "nnUNetv2_predict") -> dict:
    """A prediction command's own entry point in this fresh process: wall time, the part spent loading
    the model (start-up), the network's time per sliding-window tile, and peak memory."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if threads and device == "cpu":
        # the entry point calls torch.set_num_threads(cpu_count) for -device cpu; keep the override
        torch.set_num_threads = (lambda n, _f=torch.set_num_threads: _f(threads))
        torch.set_num_threads(threads)
    timers = {"startup_s": 0.0, "window_s": 0.0, "windows": 0}

    def timed(owner, name, counter=None):
        original = getattr(owner, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                if device == "cuda":
                    torch.cuda.synchronize()
                timers[counter or "startup_s"] += time.perf_counter() - t
                if counter:
                    timers["windows"] += 1
        setattr(owner, name, wrapper)

    timed(nnUNetPredictor, "initialize_from_trained_model_folder")
    if command != "nnUNetv2_predict":
        # the plugin's predict reads the checkpoints with its safe loader and builds the network itself
        from nnunetv2_zept.prediction import predictor as zept_predictor

        timed(zept_predictor, "_initialize_safely")
    timed(nnUNetPredictor, "_internal_maybe_mirror_and_predict", "window_s")
    t0 = time.perf_counter()
    if command == "nnUNetv2_predict":
        from nnunetv2.inference.predict_from_raw_data import predict_entry_point

        sys.argv = [command] + argv
        predict_entry_point()
    else:
        from nnunetv2_zept.cli import main as zept_main

        rc = zept_main(["predict"] + argv)
        if rc:
            raise SystemExit(f"nnunetv2_zept predict failed with {rc}")
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "startup_s": timers["startup_s"], "work_s": wall - timers["startup_s"],
            "window_s": timers["window_s"] / max(timers["windows"], 1), "windows": timers["windows"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else None}


def _scaling_roles(n_organs: int, n_tumours: int) -> dict:
    organs = [f"organ{i}" for i in range(n_organs)]
    tumours = [f"tumour{i}" for i in range(n_tumours)]
    labels = {"background": 0}
    for i, o in enumerate(organs):
        hosted = [n_organs + 1 + j for j in range(n_tumours) if j % n_organs == i]
        labels[o] = [i + 1] + hosted if hosted else i + 1
    for j, t in enumerate(tumours):
        labels[t] = n_organs + 1 + j
    return {"labels": labels, "regions_class_order": list(range(1, n_organs + n_tumours + 1)),
            "zept": {"organs": organs,
                     "tumours": {t: ({"host": [organs[j % n_organs]], "zero_shot": True} if j >= (n_tumours + 1) // 2
                                     else {"host": [organs[j % n_organs]]}) for j, t in enumerate(tumours)}}}


def child_scaling(configs: List[dict], batch: int, iters: int, device: str, threads: int = 0) -> List[dict]:
    """Network-level forward+backward time (and CUDA peak memory) of plain U-Net, ZePT Stage 1 and
    Stage 2 of the same plan, for each (patch, organs, tumours) config; interleaved per config."""
    import torch
    from bench_data import build_variant_network, forward_with_aux
    from nnunetv2_zept.experiments.example_plans import make_plans, managers
    from nnunetv2_zept.roles import roles_from_dataset_json

    dev = torch.device(device)
    _set_threads(device, threads)
    rows = []
    for cfg in configs:
        pm, cm = managers(make_plans(cfg["patch"], [1.5] * len(cfg["patch"]), "plain"))
        roles = roles_from_dataset_json(_scaling_roles(cfg["organs"], cfg["tumours"]))
        row = dict(cfg)
        for variant in ("plain", "zept_s1", "zept_s2"):
            torch.manual_seed(0)
            net, trained = build_variant_network(variant, pm, cm, roles)
            net = net.to(dev).train()
            x = torch.randn(batch, 1, *cm.patch_size, device=dev)

            def step():
                with torch.autocast(dev.type, enabled=dev.type == "cuda"):
                    outs, aux = forward_with_aux(net, x)
                    outs = outs if isinstance(outs, (list, tuple)) else [outs]
                    loss = sum(o.float().mean() for o in outs)
                    if "align_query" in aux:
                        loss = loss + (aux["align_query"] @ aux["align_text"].T).mean()
                    if "background_logits" in aux:
                        loss = loss + aux["background_logits"].float().mean()
                loss.backward()
                for p in trained:
                    p.grad = None
                if dev.type == "cuda":
                    torch.cuda.synchronize()

            step()
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            row[f"{variant}_s"] = statistics.median(times)
            row[f"{variant}_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20 if dev.type == "cuda" else None
            row["patch_planned"] = list(cm.patch_size)
            del net, x
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ driver
def prepare(work: Path, prof: dict, device: str) -> Path:
    from nnunetv2_zept.synthetic import make_synthetic_dataset

    raw = work / "raw" / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    if not (raw / "dataset.json").is_file():
        log(f"generating the synthetic data set (demo anatomy, shape {prof['shape'] or 'of the preset'}, "
            f"{prof['num_train']} training / {prof['num_test']} held-out cases)")
        make_synthetic_dataset(work / "raw", dataset_id=DATASET_ID, name=DATASET_NAME, preset="demo", seed=0,
                               num_train=prof["num_train"], num_test=prof["num_test"], tumour_free_fraction=0.0,
                               shape=prof["shape"], spacing=prof["spacing"],
                               num_processes=min(8, os.cpu_count() or 1) if prof["shape"] else 1)
    pre = work / "preprocessed" / raw.name
    if not (pre / "nnUNetPlans_3d_fullres").is_dir():
        log("planning and preprocessing")
        env = _env(work, device, 1)   # nnUNet_n_proc_DA=0 crashes the planner
        proc = subprocess.run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", CONFIG, "-np",
                               "1", "-npfp", "1"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"planning failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        if prof.get("unet_features"):
            from nnunetv2_zept.experiments.nnunet_runs import set_unet_features

            log(f"U-Net features per stage: {set_unet_features(pre, prof['unet_features'])} (every trainer alike)")
    return raw


def _stats(values: List[float]) -> dict:
    v = [x for x in values if x is not None]
    if not v:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def _ratio_stats(rows: List[dict], base: List[dict], key: str) -> dict:
    """Ratio to plain nnU-Net within each repeat (repeat i against repeat i), then its spread."""
    n = min(len(rows), len(base))
    return _stats([rows[i][key] / base[i][key] for i in range(n) if base[i][key]])


def _cell(s: dict, fmt: str = "{:.2f}") -> str:
    if s["median"] is None:
        return "–"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--profile", default=None, choices=sorted(PROFILES),
                    help="sizes and repeats (default: the device's); cpu_realistic: prediction of one 300 x 300 x 200 "
                         "case; smoke: a few seconds of everything (the test suite)")
    ap.add_argument("--work", default=None, help="work folder (default: a new temporary folder, removed at the end)")
    ap.add_argument("--out", default=None, help="Markdown table (default benchmarks/results/training_cost_<device>.md)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None, help="timed train_step calls per repeat")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads per measured process (default: all cores, "
                    "as nnUNetv2_train and nnUNetv2_predict use)")
    ap.add_argument("--scaling-iters", type=int, default=None, help="timed steps per scaling configuration")
    ap.add_argument("--predict-cases", type=int, default=None, help="held-out cases per prediction run")
    ap.add_argument("--skip", nargs="*", default=[], choices=("train", "predict", "scaling"))
    ap.add_argument("--machine-note", default="", help="free text written next to the timings (e.g. 'shared, load ~5')")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="only write --out from the JSON files of runs that measured different parts "
                         "(e.g. --skip predict scaling / --skip train scaling / --skip train predict run side by side)")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_args", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child:
        a = json.loads(args._args)
        if args._child == "train":
            out = child_train(**a)
        elif args._child == "predict":
            out = child_predict(**a)
        else:
            out = child_scaling(**a)
        print(json.dumps(out))
        return 0

    if args.merge:
        return merge_runs(args)
    prof = dict(PROFILES[args.profile or args.device])
    if args.repeats:
        prof["repeats"] = prof["predict_repeats"] = args.repeats
    if args.predict_cases:
        prof["predict_cases"] = args.predict_cases
    if args.scaling_iters:
        prof["scaling_iters"] = args.scaling_iters
    if args.iters:
        prof["iters"] = prof["iters_with_data"] = args.iters
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device visible to torch", file=sys.stderr)
            return 2
    tmp = None
    if args.work:
        work = Path(args.work).resolve()
    else:
        tmp = tempfile.mkdtemp(prefix="zept_cost_")
        work = Path(tmp)
    out_md = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"training_cost_{args.device}.md"
    t_start = time.time()
    env = _env(work, args.device, prof["da_procs"])
    raw = prepare(work, prof, args.device)
    load_before = os.getloadavg()
    results: Dict[str, object] = {"device": args.device, "profile": prof}

    # ---------------- 1+2: training
    train_rows: Dict[str, List[dict]] = {t: [] for t in TRAINERS}
    results.update({"train": train_rows, "predict": {}, "scaling": [], "load_average_before": load_before})

    def save():   # after every measurement, so that an interrupted run (e.g. a timeout) still leaves its tables
        results["load_average_after"] = os.getloadavg()
        results["runtime_s"] = time.time() - t_start
        write_report(results, out_md, args, prof)
        out_md.with_suffix(".json").write_text(json.dumps(results, indent=1))

    if "train" not in args.skip or "predict" not in args.skip:
        for r in range(prof["repeats"] if "train" not in args.skip else 1):
            for t in TRAINERS:
                if prof.get("skip_stage1") and t == "nnUNetTrainerZePTStage1":
                    continue
                res_root = work / ("results" if r == 0 else f"scratch_results_{r}")
                ckpt = res_root / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}" / f"{t}__nnUNetPlans__{CONFIG}" / "fold_0"
                if "train" in args.skip and (ckpt / "checkpoint_final.pth").is_file():
                    continue   # --work reused for the prediction part only
                a = {"trainer_name": t, "results": str(res_root), "save": r == 0, "warmup": prof["warmup"],
                     "iters": prof["iters"], "iters_with_data": prof["iters_with_data"], "device": args.device,
                     "threads": args.threads}
                log(f"training repeat {r + 1}: {t}")
                row = _child(["--_child", "train", "--_args", json.dumps(a)], env)
                train_rows[t].append(row)
                save()
                log(f"  step {row['step_s']:.2f} s, with data {row['iter_with_data_s']:.2f} s, peak RSS "
                    f"{row['peak_rss_mb']:.0f} MB" + (f", GPU {row['gpu_peak_mb']:.0f} MB" if row['gpu_peak_mb'] else ""))
                if r > 0:
                    shutil.rmtree(res_root, ignore_errors=True)
    save()

    # ---------------- 3: prediction
    pred_rows: Dict[str, List[dict]] = {}
    pred_in = work / "predict_input"
    if not pred_in.is_dir():
        pred_in.mkdir(exist_ok=True)
        for f in sorted((raw / "imagesTs").iterdir())[: prof["predict_cases"]]:
            shutil.copy(f, pred_in / f.name)
    if "predict" not in args.skip:
        for r in range(prof["predict_repeats"]):
            for t, tta in [tuple(x) for x in prof["predict"]] + ([("nnUNetTrainerZePTStage2", "zept_predict")]
                                                                 if prof is not PROFILES["cuda"] else []):
                if tta == "zept_predict":     # the plugin's own command: anomaly maps and tumour reports too
                    key = f"{t}|nnunetv2_zept predict"
                    outdir = work / "pred" / f"{t}_zept_{r}"
                    # the plugin's -i takes image files (a folder is read as one DICOM series)
                    argv_p = ["-i", *sorted(str(p) for p in pred_in.iterdir()), "-o", str(outdir), "-d", str(DATASET_ID),
                              "-c", CONFIG, "-f", "0", "-tr", t, "-device", args.device]
                    log(f"prediction repeat {r + 1}: {t} with nnunetv2_zept predict")
                    try:
                        row = _child(["--_child", "predict", "--_args",
                                      json.dumps({"argv": argv_p, "device": args.device, "threads": args.threads,
                                                  "command": "nnunetv2_zept predict"})], dict(env, nnUNet_n_proc_DA="0"))
                    except Exception as e:
                        log(f"  FAILED: {str(e)[-1500:]}")
                        results.setdefault("errors", []).append(str(e)[-3000:])
                        continue
                    pred_rows.setdefault(key, []).append(row)
                    shutil.rmtree(outdir, ignore_errors=True)
                    results["predict"] = pred_rows
                    save()
                    continue
                key = f"{t}|{'tta' if tta else 'no_tta'}"
                outdir = work / "pred" / f"{t}_{'tta' if tta else 'notta'}_{r}"
                argv_p = ["-i", str(pred_in), "-o", str(outdir), "-d", str(DATASET_ID), "-c", CONFIG, "-f", "0",
                          "-tr", t, "-device", args.device, "-npp", "0", "-nps", "0"] + ([] if tta else ["--disable_tta"])
                log(f"prediction repeat {r + 1}: {t} {'with' if tta else 'without'} TTA")
                try:
                    row = _child(["--_child", "predict", "--_args",
                                  json.dumps({"argv": argv_p, "device": args.device, "threads": args.threads})],
                                 dict(env, nnUNet_n_proc_DA="0"))
                except Exception as e:   # report what was measured even if one part breaks
                    log(f"  FAILED: {str(e)[-1500:]}")
                    results.setdefault("errors", []).append(str(e)[-3000:])
                    continue
                pred_rows.setdefault(key, []).append(row)
                log(f"  {row['wall_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB")
                shutil.rmtree(outdir, ignore_errors=True)
                results["predict"] = pred_rows
                save()

    # ---------------- 4: scaling
    scaling = []
    if "scaling" not in args.skip:
        configs = [{"patch": p, "organs": 5, "tumours": 3} for p in prof["scaling_patches"]]
        configs += [{"patch": prof["scaling_patches"][1], "organs": o, "tumours": n} for o, n in prof["scaling_classes"]
                    if [o, n] != [5, 3]]
        log(f"scaling: {len(configs)} configurations")
        try:
            scaling = _child(["--_child", "scaling", "--_args",
                              json.dumps({"configs": configs, "batch": prof["scaling_batch"], "iters": prof["scaling_iters"],
                                          "device": args.device, "threads": args.threads})], env, timeout=3600)
        except Exception as e:
            log(f"  FAILED: {str(e)[-1500:]}")
            results.setdefault("errors", []).append(str(e)[-3000:])
    results["scaling"] = scaling
    save()
    log(f"done in {(time.time() - t_start) / 60:.1f} min: {out_md}")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def merge_runs(args) -> int:
    """One table from runs of the same --work that measured different parts."""
    runs = [json.loads(Path(p).read_text()) for p in args.merge]
    devices = {r["device"] for r in runs}
    if len(devices) != 1:
        print(f"--merge: runs on different devices {sorted(devices)}", file=sys.stderr)
        return 2
    merged = {"device": devices.pop(), "profile": runs[0]["profile"], "train": {}, "predict": {}, "scaling": [],
              "load_average_before": runs[0]["load_average_before"], "load_average_after": runs[0]["load_average_after"],
              "runtime_s": max(r["runtime_s"] for r in runs), "merged_from": list(args.merge)}
    for r in runs:
        for part in ("train", "predict"):
            for k, rows in r.get(part, {}).items():
                if rows and (part != "train" or len(rows) > len(merged[part].get(k, []))):
                    merged[part][k] = rows
        merged["scaling"] = merged["scaling"] or r.get("scaling", [])
        merged["load_average_before"] = max(merged["load_average_before"], r["load_average_before"])
        merged["load_average_after"] = max(merged["load_average_after"], r["load_average_after"])
    prof = dict(merged["profile"])
    prof["repeats"] = max((len(v) for v in merged["train"].values()), default=prof["repeats"])
    prof["predict_repeats"] = max((len(v) for v in merged["predict"].values()), default=prof["predict_repeats"])
    for r in runs:   # the part-specific settings come from the run that measured that part
        if any(r.get("predict", {}).values()):
            prof["predict_cases"] = r["profile"]["predict_cases"]
        if r.get("scaling"):
            for k in ("scaling_iters", "scaling_batch"):
                prof[k] = r["profile"][k]
        if any(len(v) == prof["repeats"] for v in r.get("train", {}).values()):
            for k in ("warmup", "iters", "iters_with_data", "da_procs"):
                prof[k] = r["profile"][k]
    out_md = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"training_cost_{merged['device']}.md"
    write_report(merged, out_md, args, prof)
    out_md.with_suffix(".json").write_text(json.dumps(merged, indent=1))
    print(out_md)
    return 0



def write_report(results: dict, out_md: Path, args, prof: dict) -> None:
    dev = results["device"]
    tr = results["train"]
    L = [f"# Training and prediction cost: ZePT vs plain nnU-Net ({dev})", "",
         f"Command: `python benchmarks/training_cost.py {' '.join(sys.argv[1:])}`  ",
         f"Date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {machine_description(dev)}; load average before/after "
         f"{results['load_average_before'][0]:.1f}/{results['load_average_after'][0]:.1f}"
         + (f"; {args.machine_note}" if args.machine_note else "") + ".  ",
         load_note([results['load_average_before'][0], results['load_average_after'][0]]) + "  ",
         f"CPU threads per measured process: {args.threads or 'all cores (as nnU-Net)'}.  ",
         f"Cells: median over {prof['repeats']} repeats (min–max); every ratio is taken against plain nnU-Net "
         f"in the same repeat. Total run time {results['runtime_s'] / 60:.1f} min.", ""]
    plain = tr.get("nnUNetTrainer") or []
    if plain:
        r0 = plain[0]
        L += [f"## Training (patch {r0['patch_size']}, batch {r0['batch_size']}, same nnU-Net plan for all)", "",
              "Data loading excluded: `train_step` on pre-fetched batches (after "
              f"{prof['warmup']} warm-up steps, median of {prof['iters']} steps per repeat). Data loading included: "
              f"`train_step(next(dataloader_train))`, nnU-Net's augmentation with nnUNet_n_proc_DA={prof['da_procs']}. "
              "Stage 2 runs with random initial weights (no Stage 1 checkpoint loaded; the cost is the same).", ""]
        mem_key = "gpu_peak_mb" if dev == "cuda" else "peak_rss_mb"
        mem_name = "peak GPU memory allocated (MB)" if dev == "cuda" else "peak RSS of the process (MB)"
        L += [f"| trainer | params (trained) | s / step, no data | ratio | s / iteration with data | ratio | "
              f"{mem_name} | ratio |" + (" step RSS growth (MB) | ratio |" if dev == "cpu" else ""),
              "|---|---|---|---|---|---|---|---|" + ("---|---|" if dev == "cpu" else "")]
        for t in TRAINERS:
            rows = tr.get(t) or []
            if not rows:
                continue
            def ratio(key):
                return _ratio_stats(rows, plain, key)
            line = (f"| {SHORT[t]} (`{t}`) | {rows[0]['params'] / 1e6:.1f} M ({rows[0]['trained_params'] / 1e6:.1f} M) | "
                    f"{_cell(_stats([r['step_s'] for r in rows]))} | {_cell(ratio('step_s'))} | "
                    f"{_cell(_stats([r['iter_with_data_s'] for r in rows]))} | {_cell(ratio('iter_with_data_s'))} | "
                    f"{_cell(_stats([r[mem_key] for r in rows]), '{:.0f}')} | {_cell(ratio(mem_key))} |")
            if dev == "cpu":
                line += (f" {_cell(_stats([r['step_rss_mb'] for r in rows]), '{:.0f}')} | "
                         f"{_cell(ratio('step_rss_mb'))} |")
            L.append(line)
        L.append("")
    pr = results["predict"]
    if pr:
        base = pr.get("nnUNetTrainer|no_tta")
        n_cases = prof["predict_cases"]
        L += [f"## Prediction ({n_cases} held-out case(s) per command, `-npp 0 -nps 0`, "
              f"{prof['predict_repeats']} repeat(s))", "",
              "Wall: the whole command (start-up, preprocessing, sliding window, export). Start-up: loading the "
              "model. Work: wall minus start-up. Tile: the network's time per sliding-window tile.", "",
              "| model | command / TTA | tiles | wall s | ratio | start-up s | work s | ratio | tile s | ratio | "
              "peak RSS (MB) | ratio |" + (" peak GPU (MB) | ratio |" if dev == "cuda" else ""),
              "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if dev == "cuda" else "")]
        keys = [f"{t}|{'tta' if tta else 'no_tta'}" for t, tta in PREDICT_SETTINGS]
        keys += [k for k in pr if k not in keys]
        for key in keys:
            rows = pr.get(key) or []
            if not rows or not base:
                continue
            t, how = key.split("|")
            how = {"tta": "nnUNetv2_predict, mirroring (8x)", "no_tta": "nnUNetv2_predict --disable_tta"}.get(how, how)

            def pratio(k):
                return _ratio_stats(rows, base, k) if all(k in r for r in rows + base) else _stats([])

            def cell(k, fmt="{:.1f}"):
                return _cell(_stats([r.get(k) for r in rows]), fmt)
            line = (f"| {SHORT[t]} | {how} | {rows[0].get('windows', '–')} | {cell('wall_s')} | {_cell(pratio('wall_s'))} | "
                    f"{cell('startup_s')} | {cell('work_s')} | {_cell(pratio('work_s'))} | {cell('window_s', '{:.3f}')} | "
                    f"{_cell(pratio('window_s'))} | {cell('peak_rss_mb', '{:.0f}')} | {_cell(pratio('peak_rss_mb'))} |")
            if dev == "cuda":
                line += f" {cell('gpu_peak_mb', '{:.0f}')} | {_cell(pratio('gpu_peak_mb'))} |"
            L.append(line)
        L += ["", "Ratios are to plain nnU-Net with `--disable_tta`. ZePT models cannot use mirroring TTA (left/right "
              "organs are distinct classes), so the like-for-like comparison is the `--disable_tta` rows; the plain "
              "model's TTA row shows what nnU-Net's default prediction costs. `nnunetv2_zept predict` also writes the "
              "anomaly map and the per-case tumour report.", ""]
    sc = results["scaling"]
    if sc:
        L += ["## Scaling (network only: forward+backward as trained in each stage, "
              f"batch {prof['scaling_batch']}, median of {prof['scaling_iters']} step(s) after a warm-up, one process)", "",
              "| patch | organs | tumours | plain s | Stage 1 s | ratio | Stage 2 s | ratio |"
              + (" plain GPU MB | S1 MB | S2 MB |" if dev == "cuda" else ""),
              "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if dev == "cuda" else "")]
        for row in sc:
            line = (f"| {'x'.join(map(str, row['patch_planned']))} | {row['organs']} | {row['tumours']} | "
                    f"{row['plain_s']:.2f} | {row['zept_s1_s']:.2f} | {row['zept_s1_s'] / row['plain_s']:.2f} | "
                    f"{row['zept_s2_s']:.2f} | {row['zept_s2_s'] / row['plain_s']:.2f} |")
            if dev == "cuda":
                line += f" {row['plain_gpu_mb']:.0f} | {row['zept_s1_gpu_mb']:.0f} | {row['zept_s2_gpu_mb']:.0f} |"
            L.append(line)
        L.append("")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    sys.exit(main())
