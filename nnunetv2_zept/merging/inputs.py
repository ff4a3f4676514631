"""Reading the input datasets of a merge: dataset.json, cases, and one scan per case that checks
geometry and label ids (headers and label files only; images are never decoded here)."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from nnunetv2_zept.conversion import find_raw_dataset
from nnunetv2_zept.roles import IGNORED_LABEL_KEYS
from nnunetv2_zept.merging.vocabulary import MergeError, merge_error

# geometry tolerances: far below a voxel, above what float32 NIfTI headers round to
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-2
DIRECTION_ATOL = 1e-3


@dataclass
class InputCase:
    case_id: str
    images: List[Path]            # one file per channel, in channel order
    label: Path


@dataclass
class InputDataset:
    folder: Path
    dataset_json: dict
    file_ending: str
    channel_names: Dict[str, str]
    labels: Dict[str, object]          # dataset.json `labels` without background/ignore
    region_based: bool
    atomic: Dict[int, Optional[str]]   # label id -> the label that names it alone (None: no label does)
    cases: List[InputCase]
    unlabelled_images: int = 0         # imagesTr cases without a label file (not merged)
    test_images_skipped: int = 0       # files in the input's own imagesTs (no labels: not merged)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def name_part(self) -> str:
        return self.folder.name.split("_", 1)[1] if re.match(r"^Dataset\d+_", self.folder.name) else self.folder.name

    @property
    def dataset_id(self) -> Optional[int]:
        m = re.match(r"^Dataset(\d+)_", self.folder.name)
        return int(m.group(1)) if m else None


def locate_input(spec: str, raw_root: Optional[Path]) -> Path:
    """An input given as a path to a dataset folder, or as an id / name in nnUNet_raw."""
    p = Path(spec).expanduser()
    if (os.sep in spec or spec.startswith(".")) or (p.is_dir() and (p / "dataset.json").is_file()):
        if not p.is_dir():
            raise merge_error(f"input {spec!r} is not a folder", "pass a dataset folder, or a dataset id/name in nnUNet_raw")
        return p.resolve()
    if raw_root is None:
        raise merge_error(f"input {spec!r} is not a folder and nnUNet_raw is not set",
                          "export nnUNet_raw=/path/to/nnUNet_raw, or pass the dataset folder's path")
    try:
        return find_raw_dataset(spec, raw_root).resolve()
    except ValueError as e:
        raise MergeError(str(e)) from None


def _channel_names(dj: dict, where: str) -> Dict[str, str]:
    channels = dj.get("channel_names", dj.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise merge_error(f"{where} has no `channel_names`", 'add "channel_names": {"0": "CT"} (nnU-Net format)')
    return {str(int(k)): str(v) for k, v in channels.items()}


def _atomic_ids(labels: Dict[str, object], where: str) -> Tuple[Dict[int, Optional[str]], bool]:
    region_based = any(isinstance(v, (list, tuple)) for v in labels.values())
    atomic: Dict[int, Optional[str]] = {}
    for name, value in labels.items():
        ids = list(value) if isinstance(value, (list, tuple)) else [value]
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or i < 1:
                raise merge_error(f"{where} label {name!r} = {value!r} holds {i!r}, not a positive integer id",
                                  "fix `labels` in that dataset.json (background is 0, classes 1, 2, ...)")
            atomic.setdefault(i, None)
        if len(ids) == 1:
            if atomic[ids[0]] is not None:
                raise merge_error(f"{where} labels {atomic[ids[0]]!r} and {name!r} both have id {ids[0]}",
                                  "give every label its own id in that dataset.json")
            atomic[ids[0]] = name
    return dict(sorted(atomic.items())), region_based


def read_input(folder: Path) -> InputDataset:
    where = f"{folder / 'dataset.json'}"
    try:
        dj = json.loads((folder / "dataset.json").read_text())
    except FileNotFoundError:
        raise merge_error(f"{folder} has no dataset.json", "each input must be an nnU-Net raw dataset") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise merge_error(f"{where} cannot be read ({e})", "fix that dataset.json") from None
    if not isinstance(dj, dict):
        raise merge_error(f"{where} is not a JSON object", "fix that dataset.json (nnU-Net format)")
    for key in ("labels", "file_ending"):
        if key not in dj:
            raise merge_error(f"{where} has no `{key}`", "fix that dataset.json (nnU-Net format)")
    if "zept" in dj:
        raise merge_error(f"input {folder.name} is already a ZePT dataset (its dataset.json has a `zept` block)",
                          "merge the original public datasets it was made from")
    labels = dj["labels"]
    if not isinstance(labels, dict) or labels.get("background") != 0:
        raise merge_error(f"{where} `labels` must be an object with \"background\": 0", "fix that dataset.json")
    if "ignore" in labels:
        raise merge_error(f"input {folder.name} has an ignore label ({labels['ignore']})",
                          "merge does not carry ignore labels over: relabel those voxels in a copy of the dataset "
                          "(as background or as a class) and merge the copy")
    fg = {k: v for k, v in labels.items() if k not in IGNORED_LABEL_KEYS}
    if not fg:
        raise merge_error(f"{where} has no foreground labels", "add the classes to `labels`")
    atomic, region_based = _atomic_ids(fg, where)
    channels = _channel_names(dj, where)
    ending = dj["file_ending"]
    cases, unlabelled = _list_cases(folder, dj, ending, len(channels))
    if not cases:
        raise merge_error(f"input {folder.name} has no training cases (no label files ending in {ending!r} in "
                          f"{folder / 'labelsTr'})", "check the folder and `file_ending` in its dataset.json")
    ts = folder / "imagesTs"
    n_ts = len([f for f in os.listdir(ts) if f.endswith(ending)]) if ts.is_dir() else 0
    return InputDataset(folder, dj, ending, channels, fg, region_based, atomic, cases, unlabelled, n_ts)


def _list_cases(folder: Path, dj: dict, ending: str, n_channels: int) -> Tuple[List[InputCase], int]:
    if "dataset" in dj:          # nnU-Net's alternative layout: files listed in dataset.json
        cases = []
        for cid, entry in sorted(dj["dataset"].items()):
            images = [Path(os.path.expandvars(i)) for i in entry["images"]]
            label = Path(os.path.expandvars(entry["label"]))
            cases.append(InputCase(cid, [p if p.is_absolute() else folder / p for p in images],
                                   label if label.is_absolute() else folder / label))
        return cases, 0
    labels_dir, images_dir = folder / "labelsTr", folder / "imagesTr"
    if not labels_dir.is_dir() or not images_dir.is_dir():
        raise merge_error(f"input {folder.name} has no imagesTr/labelsTr folders", "each input must be an nnU-Net raw dataset")
    ids = sorted(f[: -len(ending)] for f in os.listdir(labels_dir) if f.endswith(ending) and not f.startswith("."))
    image_files = set(f for f in os.listdir(images_dir) if f.endswith(ending))
    cases = []
    for cid in ids:
        names = [f"{cid}_{c:04d}{ending}" for c in range(n_channels)]
        missing = [n for n in names if n not in image_files]
        if missing:
            raise merge_error(f"input {folder.name}, case {cid!r}: image file(s) {missing} missing in imagesTr "
                              f"(dataset.json declares {n_channels} channel(s))",
                              "add the images, or remove the case's label file from that dataset")
        cases.append(InputCase(cid, [images_dir / n for n in names], labels_dir / (cid + ending)))
    image_ids = {re.sub(r"_\d{4}$", "", f[: -len(ending)]) for f in image_files}
    return cases, len(image_ids - set(ids))


# ----------------------------------------------------------------------------------------------
# per-case scan (run in worker processes)

@dataclass
class CaseScan:
    voxels: Dict[int, int] = field(default_factory=dict)    # label id -> voxel count
    error: Optional[str] = None
    orientation: str = ""          # closest axis orientation, SimpleITK's letters ("LPS" = identity direction)


def _geometry(path: Path):
    import SimpleITK as sitk

    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    r.ReadImageInformation()
    return r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection(), r.GetNumberOfComponents()


def geometry_problem(label: Path, images: Sequence[Path]) -> Optional[str]:
    """Why the label and image headers of one case disagree, or None."""
    try:
        lg = _geometry(label)
    except RuntimeError as e:
        return f"cannot read {label}: {str(e).strip().splitlines()[-1]}"
    for img in images:
        try:
            ig = _geometry(img)
        except RuntimeError as e:
            return f"cannot read {img}: {str(e).strip().splitlines()[-1]}"
        what = []
        if tuple(ig[0]) != tuple(lg[0]):
            what.append(f"size {tuple(ig[0])} vs {tuple(lg[0])}")
        if not np.allclose(ig[1], lg[1], rtol=SPACING_RTOL, atol=1e-6):
            what.append(f"spacing {tuple(round(v, 5) for v in ig[1])} vs {tuple(round(v, 5) for v in lg[1])}")
        if not np.allclose(ig[2], lg[2], rtol=0, atol=ORIGIN_ATOL_MM):
            what.append(f"origin {tuple(round(v, 3) for v in ig[2])} vs {tuple(round(v, 3) for v in lg[2])}")
        if not np.allclose(ig[3], lg[3], rtol=0, atol=DIRECTION_ATOL):
            what.append(f"direction {tuple(round(v, 4) for v in ig[3])} vs {tuple(round(v, 4) for v in lg[3])}")
        if what:
            return f"image {img.name} and label {label.name} disagree: " + "; ".join(what)
    if lg[4] != 1:
        return f"label {label.name} has {lg[4]} components per voxel, expected 1"
    return None


def scan_case(job: Tuple[str, str, List[str]]) -> CaseScan:
    """Geometry check and label-id counts of one case (a top-level function for worker pools)."""
    import SimpleITK as sitk

    _case_id, label, images = job
    problem = geometry_problem(Path(label), [Path(i) for i in images])
    if problem:
        return CaseScan(error=problem)
    try:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(label))
    except RuntimeError as e:
        return CaseScan(error=f"cannot read {label}: {str(e).strip().splitlines()[-1]}")
    if not np.issubdtype(arr.dtype, np.integer):
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            return CaseScan(error=f"label {Path(label).name} holds non-integer values")
        arr = rounded.astype(np.int64)
    if arr.size and arr.min() < 0:
        return CaseScan(error=f"label {Path(label).name} holds negative values")
    counts = np.zeros(int(arr.max()) + 1 if arr.size else 1, dtype=np.int64)
    for z in range(0, arr.shape[0], 8):       # slabs: no full-size int64 copy of a large label map
        counts += np.bincount(arr[z:z + 8].ravel().astype(np.int64), minlength=counts.size)
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(_geometry(Path(label))[3])
    return CaseScan(voxels={int(i): int(n) for i, n in enumerate(counts) if n}, orientation=orientation)


def run_jobs(function: Callable, jobs: list, num_processes: int, chunksize: int = 2) -> list:
    """`function` over `jobs`, in a spawn pool when more than one process is asked for."""
    if num_processes > 1 and len(jobs) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
            return pool.map(function, jobs, chunksize=chunksize)
    return [function(j) for j in jobs]
