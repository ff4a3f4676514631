"""Running the stock nnU-Net commands in subprocesses, for the demo and the benchmarks.

The commands are the console scripts installed next to the running Python (so an experiment uses
the nnU-Net of its own environment), with nnUNet_raw/_preprocessed/_results inside the
experiment's folder.  Their full output goes to a log file per step; the console gets nnU-Net's
epoch lines.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

try:
    import resource
except ImportError:          # not on Windows: CPU times are then reported as unknown
    resource = None

# nnU-Net lines worth showing on the console while a step runs (everything goes to the log)
_SHOWN = re.compile(r"(Epoch \d+$|train_loss|val_loss|Pseudo dice|Epoch time|Training done|Predicting |"
                    r"Error|error:|Traceback)")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ")
_NUMPY_SCALAR = re.compile(r"np\.float\d+\(([^)]*)\)")


class StepError(RuntimeError):
    """An nnU-Net command of an experiment failed; the message names the command and its log file."""


def executable(name: str) -> str:
    """A console script of this Python environment (nnUNetv2_train etc.)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise StepError(f"{name} not found next to {sys.executable}; install nnunetv2 into this environment "
                            f"(pip install nnunetv2) or run the demo with the Python that has it")
    return str(path)


def nnunet_environment(root: Path, threads: Optional[int] = None) -> Dict[str, str]:
    """Environment of every nnU-Net subprocess: folders under `root`, one worker process, no
    torch.compile (the machines the demo targets are small; compiling costs more than it saves)."""
    env = dict(os.environ)
    env.update({"nnUNet_raw": str(root / "nnUNet_raw"), "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
                "nnUNet_results": str(root / "nnUNet_results"), "nnUNet_def_n_proc": "1", "nnUNet_compile": "f",
                "PYTHONUNBUFFERED": "1"})
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(env[k], exist_ok=True)
    return env


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children so far (NaN if unknown)."""
    if resource is None:
        return float("nan")
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


@dataclass
class StepResult:
    command: List[str]
    log_file: Path
    seconds: float
    lines: List[str] = field(default_factory=list)
    cpu_seconds: float = float("nan")   # user + system time of the command and its children


def run_logged(command: Sequence[str], env: Dict[str, str], log_file: Path, show=True, indent: str = "      ") -> StepResult:
    """Run `command`, writing all its output to `log_file` and echoing nnU-Net's progress lines.
    Raises StepError with the last lines of output when it fails."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    c0 = cpu_seconds()
    lines: List[str] = []
    with open(log_file, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        proc = subprocess.Popen(list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()          # the log is where a user looks while a long step runs
            line = line.rstrip("\n")
            lines.append(line)
            if show and _SHOWN.search(line) and not line.startswith(" {"):
                print(indent + _NUMPY_SCALAR.sub(r"\1", _TIMESTAMP.sub("", line)), flush=True)
        rc = proc.wait()
    seconds = time.time() - t0
    cpu = cpu_seconds() - c0
    if rc != 0:
        tail = "\n".join(lines[-40:])
        raise StepError(f"`{' '.join(command)}` failed with exit code {rc} after {seconds:.0f} s. "
                            f"Last lines of its output (all of it is in {log_file}):\n{tail}")
    return StepResult(list(command), log_file, seconds, lines, cpu)


def plan_and_preprocess(dataset_id: int, env: Dict[str, str], log_file: Path) -> StepResult:
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA): 0 would crash it
    e = dict(env, nnUNet_n_proc_DA="1")
    return run_logged([executable("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", "3d_fullres",
                       "-np", "1", "-npfp", "1", "--verify_dataset_integrity"], e, log_file)


def set_unet_features(preprocessed_dataset: Path, base_features: int, configuration: str = "3d_fullres") -> list:
    """Scale the planned U-Net of `configuration` in nnUNetPlans.json to `base_features` in the first
    stage (doubling per stage, capped like nnU-Net's planner at 320); returns the new widths.
    The preprocessed data do not depend on the width, so no re-preprocessing is needed."""
    import json

    path = Path(preprocessed_dataset) / "nnUNetPlans.json"
    plans = json.loads(path.read_text())
    kwargs = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
    n = len(kwargs["features_per_stage"])
    kwargs["features_per_stage"] = [min(base_features * 2 ** i, 320) for i in range(n)]
    path.write_text(json.dumps(plans, indent=4))
    return kwargs["features_per_stage"]


def augmentation_workers(device: str) -> int:
    """nnU-Net data-augmentation worker processes: none on CPU (they would only compete with the
    training for the few cores), several on a GPU (augmentation would otherwise starve it)."""
    if device == "cpu":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def train(dataset_id: int, trainer: str, fold: str, epochs: int, iterations: int, val_iterations: int, device: str,
          env: Dict[str, str], log_file: Path, seed: Optional[int] = None, save_every: Optional[int] = None,
          resume: bool = False, show: bool = True) -> StepResult:
    """nnUNetv2_train with the plugin's run-length settings (and seed); `resume` adds --c, which
    continues from checkpoint_latest.pth (nnU-Net starts afresh when there is none)."""
    e = dict(env, nnUNet_n_proc_DA=str(augmentation_workers(device)), NNUNETV2_ZEPT_EPOCHS=str(epochs),
             NNUNETV2_ZEPT_ITERATIONS=str(iterations),
             NNUNETV2_ZEPT_VAL_ITERATIONS=str(val_iterations),
             # by default no intermediate checkpoint_latest writes (time on a slow disk); checkpoint_final is
             # always written
             NNUNETV2_ZEPT_SAVE_EVERY=str(save_every or max(epochs, 1)))
    if seed is not None:
        e["NNUNETV2_ZEPT_SEED"] = str(seed)
    return run_logged([executable("nnUNetv2_train"), str(dataset_id), "3d_fullres", fold, "-tr", trainer,
                       "-device", device] + (["--c"] if resume else []), e, log_file, show=show)


def predict(dataset_id: int, trainer: str, fold: str, input_folder: Path, output_folder: Path, device: str,
            env: Dict[str, str], log_file: Path, show: bool = True) -> StepResult:
    e = dict(env, nnUNet_n_proc_DA="0")
    return run_logged([executable("nnUNetv2_predict"), "-i", str(input_folder), "-o", str(output_folder),
                       "-d", str(dataset_id), "-c", "3d_fullres", "-f", fold, "-tr", trainer, "--save_probabilities",
                       "--disable_tta", "-npp", "0", "-nps", "0", "-device", device], e, log_file, show=show)


# ---------------------------------------------------------------------------- training logs
_LOSS = re.compile(r"train_loss (-?[0-9.]+(?:e-?\d+)?)")
_VAL_LOSS = re.compile(r"val_loss (-?[0-9.]+(?:e-?\d+)?)")
_EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")
_PARTS = re.compile(r"(train|val) loss parts: (.+)$")


@dataclass
class TrainingLog:
    """What the console output of one nnUNetv2_train run says about the training."""

    train_losses: List[float]
    val_losses: List[float]
    epoch_seconds: List[float]
    # per-epoch loss terms of the ZePT trainers ("train loss parts: organ 0.8, ..."), by split and name
    loss_parts: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, lines: Sequence[str]) -> "TrainingLog":
        tl, vl, et = [], [], []
        parts: Dict[str, Dict[str, List[float]]] = {}
        for line in lines:
            for pattern, out in ((_LOSS, tl), (_VAL_LOSS, vl), (_EPOCH_TIME, et)):
                m = pattern.search(line)
                if m:
                    out.append(float(m.group(1)))
            m = _PARTS.search(line.rstrip())
            if m:
                for item in m.group(2).split(", "):
                    name, _, value = item.rpartition(" ")
                    parts.setdefault(m.group(1), {}).setdefault(name, []).append(float(value))
        return cls(tl, vl, et, parts)

    def seconds_per_iteration(self, iterations: int, val_iterations: int) -> float:
        """Mean wall time of one training step, counting the epoch's validation batches as steps
        (they are cheaper, so this slightly overstates a step) and leaving out the first epoch
        (start-up, first data loading)."""
        times = self.epoch_seconds[1:] or self.epoch_seconds
        if not times:
            return float("nan")
        return sum(times) / len(times) / (iterations + val_iterations)

    def to_dict(self) -> dict:
        return {"train_losses": self.train_losses, "val_losses": self.val_losses, "epoch_seconds": self.epoch_seconds,
                "loss_parts": self.loss_parts}
