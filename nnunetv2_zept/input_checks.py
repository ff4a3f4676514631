"""Checks of the files a user hands to the plugin's commands (predict, evaluate, convert).

Each check turns an input that would otherwise give a silent wrong result, a hang or a traceback
into an `InputCheckError` (or a warning) whose one-line message names the file and the fix.
The bounds are documented for users in docs/input-checks.md; change both together.
"""
from __future__ import annotations

import gzip
import json
import os
import stat
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np

# Hounsfield units of tissue lie in about [-1100, 4000]; the robust range (0.5th to 99.5th
# percentile) of a CT in HU stays inside it.  Far outside (x2.5) the values are not HU at all
# (scaled, e.g. x1000, or another unit): refused.  Moderately outside: a warning.
PLAUSIBLE_HU = (-1100.0, 4000.0)
IMPOSSIBLE_HU = (-10000.0, 10000.0)
ROBUST_PERCENTILES = (0.5, 99.5)
# A constant fill value outside the scanner's field of view (-1024, -2048, -3024, -32768, ...)
# that covers more than this share of the volume is left out of the robust range.
PADDING_SHARE = 0.005
# Voxel spacing that CT models are trained at.  Outside it the header's unit is almost always
# wrong (cm or µm written as mm): 0.1 mm makes the resampled volume vanish, 20 mm makes it huge.
SPACING_RANGE_MM = (0.3, 10.0)
_SAMPLE_VOXELS = 2_000_000
_CHUNK = 1 << 22


class InputCheckError(ValueError):
    """An input file that the plugin refuses; the message names the file and the fix."""


# ------------------------------------------------------------------------------------- paths


def path_problem(path: str, what: str = "input") -> Optional[str]:
    """Why `path` cannot be used as an existing input, or None.

    Unlike os.path.exists, a permission problem is reported as such, not as a missing path."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{what} {path!r} does not exist"
    except PermissionError:
        return (f"{what} {path!r} cannot be accessed: permission denied (a folder on the way lacks read/search "
                f"permission for this user); fix the permissions or copy the data somewhere readable")
    except OSError as e:
        return f"{what} {path!r} cannot be accessed: {e.strerror or e}"
    if stat.S_ISDIR(st.st_mode):
        if not os.access(path, os.R_OK | os.X_OK):
            return f"{what} folder {path!r} cannot be read: permission denied; fix its permissions"
        return None
    if not stat.S_ISREG(st.st_mode):
        return (f"{what} {path!r} is not a regular file (it is a {file_kind(st.st_mode)}); reading it could "
                f"block forever. Pass a regular file")
    if not os.access(path, os.R_OK):
        return f"{what} file {path!r} cannot be read: permission denied; fix its permissions"
    return None


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder"), (stat.S_ISREG, "regular file")):
        if test(mode):
            return name
    return "special file"


def read_json(path: str, what: str) -> object:
    """A JSON file's content; every failure is one InputCheckError naming the file and the fix."""
    problem = path_problem(path, what)
    if problem is None and os.path.isdir(path):
        problem = f"{what} {path!r} is a folder; pass the JSON file"
    if problem:
        raise InputCheckError(problem)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputCheckError(f"{what} {path!r} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}; "
                              f"fix the JSON syntax there") from None
    except UnicodeDecodeError as e:
        raise InputCheckError(f"{what} {path!r} is not a UTF-8 text file ({e.reason} at byte {e.start}); "
                              f"pass the JSON file") from None
    except OSError as e:
        raise InputCheckError(f"{what} {path!r} cannot be read: {e.strerror or e}") from None


# ------------------------------------------------------------------------------------- image files


def _nifti_header(path: str):
    import nibabel as nib

    try:
        return nib.load(path).header
    except Exception:
        return None   # not readable as NIfTI by nibabel: SimpleITK's own error is reported


def _chunks(path: str):
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return
            yield chunk


def check_image_file(path: str) -> None:
    """What SimpleITK does not say about a .nii/.nii.gz file: it reads a truncated file and fills
    the missing part with zeros, and it reads NaN and infinite voxels as 0 (water).  One pass over
    the (decompressed) data checks the gzip stream, the data size the NIfTI header promises and,
    for float data, that every voxel is finite.  Other .gz files get the gzip check."""
    low = path.lower()
    is_nifti = low.endswith((".nii", ".nii.gz"))
    if not (is_nifti or low.endswith(".gz")):
        return
    header = _nifti_header(path) if is_nifti else None
    offset = expected = n_voxels = None
    dtype = None
    if header is not None:
        dtype = header.get_data_dtype()
        offset = int(header.get_data_offset())
        n_voxels = int(np.prod(header.get_data_shape(), dtype=np.int64))
        expected = offset + n_voxels * dtype.itemsize
    scan = dtype is not None and dtype.kind == "f"
    total, bad, carry = 0, 0, b""
    problem = None
    try:
        for chunk in _chunks(path):
            if scan:
                start, end = max(offset - total, 0), min(len(chunk), expected - total)
                if end > start:
                    data = carry + chunk[start:end]
                    usable = len(data) // dtype.itemsize * dtype.itemsize
                    bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:usable], dtype=dtype))))
                    carry = data[usable:]
            total += len(chunk)
    except EOFError:
        problem = "the compressed data ends early"
    except (gzip.BadGzipFile, zlib.error) as e:
        problem = f"the compressed data is corrupt ({e})"
    if problem is None and expected is not None and total < expected:
        problem = f"it holds {total} bytes of data but its header describes {expected}"
    if problem:
        raise InputCheckError(f"{path}: could not read the image file: {problem} (truncated or damaged file; the "
                              f"missing voxels would be read as zeros). Copy or export the file again")
    if bad:
        raise InputCheckError(
            f"{path}: {bad} voxel(s) ({100.0 * bad / max(n_voxels, 1):.2g}% of the image) are NaN or infinite (the "
            f"NIfTI reader would silently turn them into 0); a CT must hold finite Hounsfield units. Replace them "
            f"(e.g. by -1024, air) before predicting")


def check_finite(array: np.ndarray, name: str) -> None:
    """NaN or Inf voxels make nnU-Net's normalisation and every probability of the case NaN."""
    if np.issubdtype(array.dtype, np.integer):
        return
    bad = np.count_nonzero(~np.isfinite(array))
    if bad:
        raise InputCheckError(
            f"{name}: {bad} voxel(s) ({100.0 * bad / array.size:.2g}% of the image) are NaN or infinite; a CT must "
            f"hold finite Hounsfield units. Replace them (e.g. by -1024, air) before predicting")


def robust_hu_range(array: np.ndarray) -> Tuple[float, float]:
    """0.5th and 99.5th percentile of the intensities, a constant padding value left out."""
    flat = array.reshape(-1)
    if flat.size > _SAMPLE_VOXELS:
        flat = flat[:: int(np.ceil(flat.size / _SAMPLE_VOXELS))]
    lowest = flat.min()
    if np.count_nonzero(flat == lowest) > PADDING_SHARE * flat.size:
        rest = flat[flat > lowest]
        flat = rest if rest.size else flat
    lo, hi = np.percentile(flat, ROBUST_PERCENTILES)
    return float(lo), float(hi)


def hu_check(array: np.ndarray, name: str) -> List[str]:
    """Warnings about intensities that do not look like Hounsfield units; raises when they
    cannot be HU at all."""
    lo, hi = robust_hu_range(array)
    where = f"{name}: the intensities range from {lo:.6g} to {hi:.6g} ({ROBUST_PERCENTILES[0]:g}th to " \
            f"{ROBUST_PERCENTILES[1]:g}th percentile)"
    if lo < IMPOSSIBLE_HU[0] or hi > IMPOSSIBLE_HU[1]:
        raise InputCheckError(
            f"{where}, far outside the Hounsfield units of CT (about {PLAUSIBLE_HU[0]:g} to {PLAUSIBLE_HU[1]:g}); "
            f"the values look scaled (e.g. x1000) or in another unit. Convert the image to HU "
            f"(value x RescaleSlope + RescaleIntercept) before predicting")
    if lo < PLAUSIBLE_HU[0] or hi > PLAUSIBLE_HU[1]:
        return [f"{where}, outside the Hounsfield units of CT (about {PLAUSIBLE_HU[0]:g} to {PLAUSIBLE_HU[1]:g}); "
                f"check that the image is in HU and was not rescaled"]
    if lo > -200 or hi < 200:
        return [f"{where}, which does not look like CT in Hounsfield units (air is about -1000 HU, bone above "
                f"200 HU); check that the input is a CT and was not rescaled or shifted (e.g. stored values "
                f"without RescaleIntercept -1024)"]
    return []


def check_spacing(spacing_xyz: Sequence[float], name: str) -> None:
    lo, hi = SPACING_RANGE_MM
    bad = [(axis, float(s)) for axis, s in zip("xyz", spacing_xyz) if not lo <= abs(float(s)) <= hi]
    if bad:
        listed = ", ".join(f"{axis} {s:g} mm" for axis, s in bad)
        effect = ("the volume would shrink to almost nothing at the model's spacing and come out empty"
                  if any(abs(s) < lo for _, s in bad) else
                  "the volume would be upsampled to an enormous size and take hours")
        raise InputCheckError(
            f"{name}: voxel spacing {listed} is outside {lo:g}-{hi:g} mm, the range CT models are trained at "
            f"({effect}). The header's spacing is probably in another unit: correct it to mm (e.g. SimpleITK "
            f"SetSpacing) or resample the image to {lo:g}-{hi:g} mm")
