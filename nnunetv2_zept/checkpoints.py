"""Loading nnU-Net checkpoints without running code from them.

nnU-Net saves its checkpoints with plain `torch.save`; besides tensors they hold numpy scalars
(logged losses and Dice values).  `torch.load(weights_only=True)` refuses those unless their
reconstructors are allow-listed; this allows exactly the numpy types nnU-Net writes, nothing that
could execute code.
"""
import numpy as np
import torch

_NUMPY_SAFE = [np._core.multiarray.scalar, np._core.multiarray._reconstruct, np.ndarray, np.dtype] + [
    getattr(np.dtypes, n) for n in ("Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType",
                                    "Int32DType", "Int64DType", "UInt8DType", "BoolDType") if hasattr(np.dtypes, n)]


class CheckpointError(RuntimeError):
    pass


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """An nnU-Net checkpoint as a dict, loaded with `weights_only=True`."""
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as an nnU-Net checkpoint without running code from it "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). Was it written by nnU-Net v2?")
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise CheckpointError(f"{path}: not an nnU-Net checkpoint (no 'network_weights').")
    return ckpt
