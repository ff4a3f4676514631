"""Loading nnU-Net checkpoints without running code from them.

nnU-Net saves its checkpoints with plain `torch.save`; besides tensors they hold numpy scalars
(logged losses and Dice values).  `torch.load(weights_only=True)` refuses those unless their
reconstructors are allow-listed; this allows exactly the numpy types nnU-Net writes, nothing that
could execute code.
"""
import io
import os

import numpy as np
import torch

_NUMPY_SAFE = [np._core.multiarray.scalar, np._core.multiarray._reconstruct, np.ndarray, np.dtype] + [
    getattr(np.dtypes, n) for n in ("Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType",
                                    "Int32DType", "Int64DType", "UInt8DType", "BoolDType") if hasattr(np.dtypes, n)]


class CheckpointError(RuntimeError):
    pass


def _detail(error: Exception) -> str:
    """The informative line of torch's (long, multi-paragraph) load errors."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported operand" in ln or "PytorchStreamReader" in ln:
            return ln.split(". This is an internal")[0][:200]
    return (lines[0][:200] if lines else type(error).__name__)


def _load(source, name: str, map_location) -> dict:
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE):
            ckpt = torch.load(source, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        detail = _detail(e)
        if "GLOBAL" in detail:
            raise CheckpointError(
                f"{name}: refused: loading it would run code or build objects that nnU-Net checkpoints never hold "
                f"({detail}). Do not use this file unless you trust where it came from.") from None
        raise CheckpointError(f"{name}: not a readable checkpoint (corrupt, truncated or not a PyTorch file: "
                              f"{detail}).") from None
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise CheckpointError(f"{name}: not an nnU-Net checkpoint (no 'network_weights').")
    return ckpt


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """An nnU-Net checkpoint as a dict, loaded with `weights_only=True`.

    Every failure is one CheckpointError naming the file: empty, corrupt or truncated files, and
    files that hold objects whose loading would run code (refused, never executed)."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty (0 bytes); it was not written completely.")
    return _load(path, str(path), map_location)


def read_checked_checkpoint(path: str) -> bytes:
    """The file's bytes, read once, after `load_checkpoint`'s checks accepted them: a caller that
    must hand the file to code using `torch.load(weights_only=False)` hands over these bytes, which
    unpickle to the same tensors and dicts and hold no code."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e}).") from None
    if not data:
        raise CheckpointError(f"{path}: the checkpoint file is empty (0 bytes); it was not written completely.")
    _load(io.BytesIO(data), str(path), "cpu")
    return data


def checkpoint_from_bytes(data: bytes, name: str, map_location="cpu") -> dict:
    return _load(io.BytesIO(data), name, map_location)
