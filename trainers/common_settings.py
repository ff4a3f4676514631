"""Settings every trainer of the plugin shares, the ZePT stages and the plain baselines alike, so
that a comparison between them differs only in the method; and how they stop on bad input and
load checkpoints (safely, see docs/input-checks.md)."""
import functools
import io
import os
import random
from typing import Union

import numpy as np
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

ENV_EPOCHS = "NNUNETV2_ZEPT_EPOCHS"
ENV_ITERATIONS = "NNUNETV2_ZEPT_ITERATIONS"
ENV_VAL_ITERATIONS = "NNUNETV2_ZEPT_VAL_ITERATIONS"
ENV_SAVE_EVERY = "NNUNETV2_ZEPT_SAVE_EVERY"
ENV_SEED = "NNUNETV2_ZEPT_SEED"
_SAFE_FLAG = "_nnunetv2_zept_safe_loader"


class TrainerStop(SystemExit):
    """A setting or input that stops a plugin training, for `nnUNetv2_train`.

    nnU-Net prints the traceback of any exception that reaches `nnUNetv2_train`.  A SystemExit
    whose code is a text ends the command with exit status 1 and that text as the only line on
    stderr (a DDP worker prints it and exits with 1)."""

    def __init__(self, message: str):
        one_line = " ".join(ln.strip() for ln in str(message).splitlines() if ln.strip())
        super().__init__(f"nnUNetv2_train: error: {one_line}")


def _env_int(name: str):
    """A positive integer from the environment, or None when the variable is unset or empty."""
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        v = int(value)
    except ValueError:
        v = 0
    if v < 1:
        raise TrainerStop(f"{name}={value!r} is not a positive whole number; set it to one (e.g. {name}=2) or "
                          f"unset it for the trainer's default")
    return v


def _check_worker_settings() -> None:
    """nnU-Net's worker counts, checked before anything starts: nnU-Net accepts a negative count
    and fails later, deep inside its data loading.  A value that is not a whole number at all
    never reaches this check: nnU-Net parses both variables while it is imported
    (`nnunetv2/configuration.py`) and stops there with its own ValueError."""
    cores = os.cpu_count() or 1
    for name in ("nnUNet_n_proc_DA", "nnUNet_def_n_proc"):
        value = os.environ.get(name)
        if value is None or value == "":
            continue
        try:
            n = int(value)
        except ValueError:
            n = -1
        if n < (0 if name == "nnUNet_n_proc_DA" else 1):
            least = "0 (augmentation in the main process)" if name == "nnUNet_n_proc_DA" else "1"
            raise TrainerStop(f"{name}={value!r} cannot work: it must be a whole number of at least {least}; this "
                              f"machine has {cores} cores (e.g. {name}={min(cores, 2) if name.endswith('DA') else 1})")


def _env_seed() -> "int | None":
    value = os.environ.get(ENV_SEED, "")
    if value == "":
        return None
    try:
        seed = int(value)
    except ValueError:
        raise TrainerStop(f"{ENV_SEED}={value!r} is not an integer; set a seed such as 0, or unset it") from None
    if not 0 <= seed < 2 ** 31:
        raise TrainerStop(f"{ENV_SEED}={value!r} must lie in [0, 2**31); set a seed such as 0, or unset it")
    return seed


def _checked_checkpoint(path: str) -> bytes:
    """The checkpoint's bytes once the plugin's safe loader accepted them; anything else stops."""
    from nnunetv2_zept.checkpoints import CheckpointError, read_checked_checkpoint

    try:
        return read_checked_checkpoint(path)
    except CheckpointError as e:
        raise TrainerStop(str(e)) from None


class _NamedBytes(io.BytesIO):
    """In-memory checkpoint that prints as its file name in nnU-Net's messages."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self._name = name

    def __str__(self):
        return self._name


def _guard_pretrained_weights() -> None:
    """`nnUNetv2_train -pretrained_weights F` reads F with `torch.load(weights_only=False)`, which
    runs any code a crafted file holds.  In a process that runs a plugin trainer, nnU-Net's loader
    is handed the bytes the safe loader accepted (the same bytes unpickle to the same tensors and
    dicts, with no code), so its key and shape checks stay nnU-Net's own."""
    import nnunetv2.run.run_training as run_training

    original = run_training.load_pretrained_weights
    if getattr(original, _SAFE_FLAG, False):
        return

    @functools.wraps(original)
    def load_pretrained_weights(network, fname, verbose=False):
        if isinstance(fname, (str, os.PathLike)):
            fname = _NamedBytes(_checked_checkpoint(os.fspath(fname)), os.fspath(fname))
        return original(network, fname, verbose)

    setattr(load_pretrained_weights, _SAFE_FLAG, True)
    run_training.load_pretrained_weights = load_pretrained_weights


class PluginTrainerSettings(nnUNetTrainer):
    """Training length from the environment, no mirroring, no torch.compile, optional seed, safe
    checkpoints.

    NNUNETV2_ZEPT_SEED=N seeds Python, NumPy and torch before the network is built, and the data
    augmentation workers, so that a seed reproduces its run on the same machine with nnUNet_n_proc_DA
    0 or 1 (several workers deliver batches in the order they finish, which no seed fixes).
    nnU-Net itself does not seed its trainings.
    """

    DEFAULT_EPOCHS = 1000

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # read before nnU-Net creates the output folder and log file: a bad value leaves nothing behind
        lengths = {name: _env_int(name) for name in (ENV_EPOCHS, ENV_ITERATIONS, ENV_VAL_ITERATIONS, ENV_SAVE_EVERY)}
        seed = _env_seed()
        _check_worker_settings()
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = lengths[ENV_EPOCHS] or self.DEFAULT_EPOCHS
        for name, attribute in ((ENV_ITERATIONS, "num_iterations_per_epoch"),
                                (ENV_VAL_ITERATIONS, "num_val_iterations_per_epoch"), (ENV_SAVE_EVERY, "save_every")):
            if lengths[name] is not None:
                setattr(self, attribute, lengths[name])
        self.seed = seed
        if self.seed is not None:
            # every DDP rank draws other patches; torch gets the same seed on every rank (same initial weights)
            random.seed(self.seed + self.local_rank)
            np.random.seed(self.seed + self.local_rank)
            torch.manual_seed(self.seed)
            self.print_to_log_file(f"{ENV_SEED}={self.seed}: Python, NumPy and torch seeded")
        workers = os.environ.get("nnUNet_n_proc_DA")
        if workers and int(workers) > (os.cpu_count() or 1):
            self.print_to_log_file(f"nnUNet_n_proc_DA={workers} is more than the {os.cpu_count()} cores of this machine; "
                                   f"nnU-Net starts {os.cpu_count()} augmentation workers")
        _guard_pretrained_weights()

    def get_dataloaders(self):
        train, val = super().get_dataloaders()
        if self.seed is not None:
            for i, gen in enumerate((train, val)):
                if getattr(gen, "seeds", None) is not None and hasattr(gen, "_finish"):
                    # nnU-Net starts its augmentation workers unseeded: restart them with seeds
                    gen._finish()
                    gen.seeds = [self.seed * 1000 + 100 * i + 10 * self.local_rank + w for w in range(len(gen.seeds))]
                    next(gen)
        return train, val

    def _do_i_compile(self):
        # Gumbel sampling and data-dependent attention masks break graph capture (and the baseline
        # must be run the same way to be comparable)
        return False

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        # left and right organs are distinct classes: no mirroring in training or at test time
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written whole or not at all: a training killed while nnU-Net writes
        `checkpoint_latest.pth` in place would leave a truncated file and lose the run's progress, so
        it is written next to its name and moved over it in one step."""
        partial = filename + ".partial"
        super().save_checkpoint(partial)
        if os.path.isfile(partial):
            os.replace(partial, filename)

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        """`--c`, `--val` and `--val_best` read the checkpoint with the plugin's safe loader (nnU-Net
        uses `weights_only=False`; its dict argument is broken in 2.8.1, so the restore steps of
        nnU-Net's `load_checkpoint` are repeated here on the safely loaded dict)."""
        from nnunetv2_zept.checkpoints import checkpoint_from_bytes

        checkpoint = filename_or_checkpoint
        if not isinstance(checkpoint, dict):
            path = os.fspath(checkpoint)
            checkpoint = checkpoint_from_bytes(_checked_checkpoint(path), path, map_location=self.device)
        if not self.was_initialized:
            self.initialize()
        network = self.network.module if self.is_ddp else self.network
        network = getattr(network, "_orig_mod", network)
        own = network.state_dict()
        weights = {(k[7:] if k not in own and k.startswith("module.") else k): v
                   for k, v in checkpoint["network_weights"].items()}
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        network.load_state_dict(weights)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
