"""Reading reference label maps and `nnUNetv2_predict --save_probabilities` outputs.

Layout written by nnU-Net 2.8.1 (`inference/export_prediction.py`) per case:
* `<case><file_ending>`: the label map (regions painted in `regions_class_order`);
* `<case>.npz`, key "probabilities": array [C, *shape] where shape is the array shape of the
  input image as nnU-Net's reader returns it (SimpleITK's GetArrayFromImage order, z y x for
  NIfTI; NibabelIO transposes to the same order), C = one sigmoid channel per region in
  dataset.json `labels` order (softmax with background first for label-based datasets);
  cropping and resampling are already undone;
* `<case>.pkl`: nnU-Net's properties.  It is NOT read here: unpickling can run code, and the
  array shape/spacing checks against the label files catch every layout mismatch we know of.

The probability array is read channel by channel from the zip stream, so only the channels an
evaluation needs (tumours and their hosts) are ever held in memory.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from nnunetv2_zept.input_checks import InputCheckError, check_image_file, path_problem
from nnunetv2_zept.prediction_files import anomaly_map_of
from nnunetv2_zept.tumour_score import ImageGeometry

PROBABILITY_KEY = "probabilities"
_SKIP_CHUNK = 1 << 26


class EvaluationInputError(ValueError):
    """Inputs of an evaluation do not match (missing case, wrong shape, ...); the message names
    the case and file and says how to fix it."""


def files_with_ending(folder: str, file_ending: str) -> Dict[str, str]:
    """Case id -> file.  The anomaly maps `nnunetv2_zept predict` writes next to its label maps
    (`<case>_anomaly<ending>`) are not cases of their own."""
    problem = path_problem(folder, "folder")
    if problem is None and not os.path.isdir(folder):
        problem = f"{folder!r} is a file, not a folder"
    if problem:
        raise EvaluationInputError(problem)
    names = [f for f in sorted(os.listdir(folder)) if f.endswith(file_ending) and not f.startswith(".")]
    present = set(names)
    return {f[: -len(file_ending)]: os.path.join(folder, f) for f in names
            if not (anomaly_map_of(f, file_ending) is not None
                    and anomaly_map_of(f, file_ending) + file_ending in present)}


def match_cases(reference_folder: str, prediction_folder: str, file_ending: str,
                case_ids: Optional[Sequence[str]] = None) -> Tuple[List[str], List[str]]:
    """Cases to evaluate and reference cases without a prediction.

    Without `case_ids` every prediction is evaluated (as nnUNetv2_evaluate_folder does); each
    needs a reference file and a probability file.  Listed `case_ids` must all be complete."""
    refs = files_with_ending(reference_folder, file_ending)
    preds = files_with_ending(prediction_folder, file_ending)
    if case_ids is None:
        cases = sorted(preds)
        if not cases:
            raise EvaluationInputError(
                f"no prediction files ending in {file_ending!r} in {prediction_folder!r}; run nnUNetv2_predict "
                "with --save_probabilities into that folder, or check dataset.json `file_ending`")
    else:
        cases = list(case_ids)
        missing = [c for c in cases if c not in preds]
        if missing:
            raise EvaluationInputError(f"case(s) {missing} have no prediction {missing[0]}{file_ending} in "
                                       f"{prediction_folder!r}")
    no_ref = [c for c in cases if c not in refs]
    if no_ref:
        raise EvaluationInputError(
            f"case {no_ref[0]!r}: no reference label file {no_ref[0]}{file_ending} in {reference_folder!r}"
            + (f" ({len(no_ref)} cases without reference: {no_ref[:10]})" if len(no_ref) > 1 else "")
            + "; pass the matching labels folder or restrict the evaluation with case_ids / --cases")
    no_prob = [c for c in cases if not os.path.isfile(os.path.join(prediction_folder, c + ".npz"))]
    if no_prob:
        raise EvaluationInputError(
            f"case {no_prob[0]!r}: prediction {no_prob[0]}{file_ending} has no probability file {no_prob[0]}.npz in "
            f"{prediction_folder!r}" + (f" ({len(no_prob)} cases: {no_prob[:10]})" if len(no_prob) > 1 else "")
            + "; AUROC, FPR95 and tumour scores need them: predict again with `nnUNetv2_predict ... --save_probabilities`")
    unpredicted = sorted(set(refs) - set(preds)) if case_ids is None else []
    return cases, unpredicted


def read_label_map(path: str, case_id: str, what: str) -> Tuple[np.ndarray, ImageGeometry]:
    """Integer label map (array order z, y, x) and its geometry."""
    import SimpleITK as sitk

    try:
        check_image_file(path)
    except InputCheckError as e:
        raise EvaluationInputError(f"case {case_id!r}: {what} {e}") from None
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as e:
        detail = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        raise EvaluationInputError(f"case {case_id!r}: cannot read {what} {path!r}: "
                                   f"{detail[-1] if detail else 'unknown reason'}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise EvaluationInputError(f"case {case_id!r}: {what} {path!r} must be a 3D single-channel label image, got "
                                   f"dimension {image.GetDimension()} with {image.GetNumberOfComponentsPerPixel()} "
                                   "component(s)")
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise EvaluationInputError(f"case {case_id!r}: {what} {path!r} holds non-integer values; label files must "
                                       "hold integer label ids")
        array = rounded.astype(np.int32)
    return array, ImageGeometry.from_sitk(image)


def check_label_values(array: np.ndarray, allowed: Iterable[int], case_id: str, what: str) -> None:
    """Every label id must be defined by dataset.json (counted slab by slab: no full-size int64 copy)."""
    if array.size == 0:
        return
    lo, hi = int(array.min()), int(array.max())
    if lo < 0:
        raise EvaluationInputError(f"case {case_id!r}: {what} contains negative label {lo}")
    counts = np.zeros(hi + 1, dtype=np.int64)
    for z in range(0, array.shape[0], 8):
        counts += np.bincount(array[z:z + 8].ravel().astype(np.int64), minlength=hi + 1)
    unknown = sorted(set(int(v) for v in np.flatnonzero(counts)) - set(int(a) for a in allowed))
    if unknown:
        raise EvaluationInputError(f"case {case_id!r}: {what} contains label id(s) {unknown} that dataset.json "
                                   f"`labels` does not define (defined: {sorted(set(allowed))}); pass the dataset.json "
                                   "these labels belong to")


def _read_into(f, out: np.ndarray) -> bool:
    """Fill `out` from the stream in chunks (no full-size temporary bytes object); False if short."""
    view = out.reshape(-1).view(np.uint8)
    pos = 0
    while pos < view.size:
        b = f.read(min(_SKIP_CHUNK, view.size - pos))
        if not b:
            return False
        view[pos:pos + len(b)] = np.frombuffer(b, dtype=np.uint8)
        pos += len(b)
    return True


def read_probability_channels(npz_path: str, channels: Iterable[int], expected_channels: int,
                              expected_shape: Sequence[int], case_id: str,
                              mask_thresholds: Optional[Dict[int, float]] = None) -> Dict[int, np.ndarray]:
    """Channels (float32 arrays, array order) of the "probabilities" array of a nnU-Net .npz.

    Reads the compressed member as a stream and keeps only `channels` (plus the channels of
    `mask_thresholds`, returned as bool masks p >= threshold, which is all a host organ needs);
    checks the channel count and the spatial shape against the label files and names the case on
    any mismatch.  Peak memory: the returned arrays plus one channel in the file's dtype."""
    mask_thresholds = {int(k): float(v) for k, v in (mask_thresholds or {}).items()}
    wanted = sorted(set(int(c) for c in channels) | set(mask_thresholds))
    member = PROBABILITY_KEY + ".npy"
    try:
        zf = zipfile.ZipFile(npz_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise EvaluationInputError(f"case {case_id!r}: {npz_path!r} is not a readable .npz file ({e}); "
                                   "predict the case again with --save_probabilities") from None
    try:
        with zf:
            return _read_channels(zf, member, npz_path, wanted, mask_thresholds, expected_channels, expected_shape,
                                  case_id)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise EvaluationInputError(f"case {case_id!r}: {npz_path!r} is corrupt or truncated ({e}); predict the case "
                                   "again with --save_probabilities") from None


def _read_channels(zf, member, npz_path, wanted, mask_thresholds, expected_channels, expected_shape,
                   case_id) -> Dict[int, np.ndarray]:
    if member not in zf.namelist():
        keys = [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]
        raise EvaluationInputError(f"case {case_id!r}: {npz_path!r} has no key {PROBABILITY_KEY!r} (keys: {keys}); "
                                   "expected the file nnUNetv2_predict --save_probabilities writes")
    with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        _check_layout(shape, dtype, expected_channels, expected_shape, case_id, npz_path)
        if fortran:   # not what nnU-Net writes; fall back to one full read
            data = np.load(npz_path, allow_pickle=False)[PROBABILITY_KEY]
            for c in wanted:
                _check_probabilities(data[c], c, npz_path, case_id)
            return {c: (data[c] >= mask_thresholds[c]) if c in mask_thresholds
                    else np.ascontiguousarray(data[c], dtype=np.float32) for c in wanted}
        per_channel = int(np.prod(shape[1:])) * dtype.itemsize
        out = {}
        for c in range(shape[0]):
            if not wanted or c > wanted[-1]:
                break
            if c in wanted:
                channel = np.empty(tuple(shape[1:]), dtype=dtype)
                if not _read_into(f, channel):
                    raise EvaluationInputError(f"case {case_id!r}: {npz_path!r} is truncated (channel {c})")
                _check_probabilities(channel, c, npz_path, case_id)
                if c in mask_thresholds:
                    out[c] = channel >= mask_thresholds[c]
                else:
                    out[c] = channel if channel.dtype == np.float32 else channel.astype(np.float32)
                del channel
            else:
                skipped = 0
                while skipped < per_channel:
                    got = len(f.read(min(_SKIP_CHUNK, per_channel - skipped)))
                    if got == 0:
                        raise EvaluationInputError(f"case {case_id!r}: {npz_path!r} is truncated (channel {c})")
                    skipped += got
        return out


def _check_probabilities(channel: np.ndarray, c: int, path: str, case_id: str) -> None:
    """NaN or values outside [0, 1] would be scored silently (NaN sorts anywhere in a ROC)."""
    if channel.dtype.kind != "f":
        return
    bad = np.count_nonzero(~np.isfinite(channel))
    if bad:
        raise EvaluationInputError(f"case {case_id!r}: {path!r} channel {c} holds {bad} NaN or infinite "
                                   f"probabilities; the prediction is broken (NaN in the input CT?). Predict the "
                                   f"case again from a CT with finite values")
    lo, hi = float(channel.min(initial=0.0)), float(channel.max(initial=0.0))
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise EvaluationInputError(f"case {case_id!r}: {path!r} channel {c} holds values from {lo:g} to {hi:g}, "
                                   f"not probabilities in [0, 1]; pass the .npz that nnUNetv2_predict "
                                   f"--save_probabilities writes (sigmoid/softmax outputs, not logits)")


def _check_layout(shape, dtype, expected_channels, expected_shape, case_id, path) -> None:
    if dtype.hasobject or dtype.kind not in "fiu":
        raise EvaluationInputError(f"case {case_id!r}: {path!r} probabilities have dtype {dtype}, expected floats")
    if len(shape) != 1 + len(expected_shape):
        raise EvaluationInputError(
            f"case {case_id!r}: {path!r} probabilities have shape {tuple(shape)}, expected [C, *image shape] = "
            f"[{expected_channels}, {', '.join(map(str, expected_shape))}]")
    if int(shape[0]) != int(expected_channels):
        raise EvaluationInputError(
            f"case {case_id!r}: {path!r} has {shape[0]} probability channels but dataset.json `labels` defines "
            f"{expected_channels}; use the dataset.json of the model that made the predictions")
    if tuple(int(s) for s in shape[1:]) != tuple(int(s) for s in expected_shape):
        hint = (" (the axes look reversed: write probabilities in nnU-Net's array order, as its readers return them)"
                if tuple(shape[1:]) == tuple(expected_shape)[::-1] else "")
        raise EvaluationInputError(
            f"case {case_id!r}: probabilities in {path!r} have image shape {tuple(int(s) for s in shape[1:])} but the "
            f"label files have shape {tuple(int(s) for s in expected_shape)}{hint}; the probability file does not "
            "belong to this reference/prediction")
