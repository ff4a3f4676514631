"""Reading the CTs a user hands to `nnunetv2_zept predict`: image files and DICOM series folders.

Every input becomes a `LoadedCase`: the SimpleITK image (HU, geometry of the input), the array
and properties in the form nnU-Net's `SimpleITKIO` produces them, and, for DICOM, the ordered
slice files (needed to reference them from a DICOM SEG).  Anything wrong with an input is a
`PredictInputError` whose message names the input and says how to fix it; the caller reports
it and goes on with the other inputs.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

IMAGE_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gipl", ".gipl.gz")
# nnU-Net names image files <case>_<channel>.<ext>; a user who passes such a file expects <case>
NNUNET_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")
MODALITY_TAG = "0008|0060"


class PredictInputError(ValueError):
    """An input that cannot be predicted; the message names the input and the fix."""


@dataclass
class InputSpec:
    """One input as the user named it, before reading."""

    path: str
    kind: str            # "file" or "dicom"
    case_id: str


@dataclass
class LoadedCase:
    spec: InputSpec
    image: sitk.Image                      # HU, geometry of the input
    array: np.ndarray                      # [1, z, y, x] float32, as SimpleITKIO.read_images returns it
    properties: dict                       # {'sitk_stuff': {...}, 'spacing': [z, y, x]} as SimpleITKIO
    dicom_files: List[str] = field(default_factory=list)   # slice files in the volume's z order
    dicom_series_uid: Optional[str] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def case_id(self) -> str:
        return self.spec.case_id


def _strip_image_ending(name: str) -> Optional[str]:
    low = name.lower()
    for end in sorted(IMAGE_FILE_ENDINGS, key=len, reverse=True):
        if low.endswith(end):
            return name[: -len(end)]
    return None


def _safe_case_id(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "case"


def case_id_for(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    stem = _strip_image_ending(base)
    if stem is None:
        return _safe_case_id(base)
    return _safe_case_id(NNUNET_CHANNEL_SUFFIX.sub("", stem))


def describe_inputs(paths: Sequence[str]) -> Tuple[List[InputSpec], List[Tuple[str, str]]]:
    """Classify the user's inputs; unique case ids (a clash gets `_2`, `_3`, ...).

    Returns (specs, problems) where problems are (input, message) for paths that do not exist
    or are neither an image file nor a folder.
    """
    specs, problems, used = [], [], set()
    for p in paths:
        if not os.path.exists(p):
            problems.append((p, f"input {p!r} does not exist"))
            continue
        if os.path.isdir(p):
            kind = "dicom"
        elif _strip_image_ending(os.path.basename(p)) is not None:
            kind = "file"
        else:
            problems.append((p, f"input {p!r} is neither a DICOM series folder nor an image file with one of the "
                                f"endings {', '.join(IMAGE_FILE_ENDINGS)}. Pass the folder that holds the DICOM "
                                f"slices, or convert the image to NIfTI"))
            continue
        cid = case_id_for(p)
        unique, k = cid, 2
        while unique in used:
            unique = f"{cid}_{k}"
            k += 1
        used.add(unique)
        specs.append(InputSpec(os.path.abspath(p), kind, unique))
    return specs, problems


def nnunet_array_and_properties(image: sitk.Image) -> Tuple[np.ndarray, dict]:
    """The array and properties nnU-Net's SimpleITKIO.read_images returns for this image (3D only)."""
    array = sitk.GetArrayFromImage(image)[None].astype(np.float32, copy=False)
    props = {
        "sitk_stuff": {"spacing": image.GetSpacing(), "origin": image.GetOrigin(),
                       "direction": image.GetDirection()},
        "spacing": [float(abs(s)) for s in list(image.GetSpacing())[::-1]],
    }
    return array, props


def _check_volume(image: sitk.Image, name: str, needs_3d: bool) -> None:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise PredictInputError(
            f"{name}: the image has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour or "
            f"vector image); a CT must be a single-channel greyscale volume in Hounsfield units")
    dim = image.GetDimension()
    if dim == 2 or (needs_3d and dim == 3 and min(image.GetSize()) == 1):
        raise PredictInputError(
            f"{name}: the image is 2D (size {'x'.join(map(str, image.GetSize()))}); this model predicts 3D "
            f"volumes. Pass the whole CT series (all slices) or the 3D volume file")
    if dim != 3:
        raise PredictInputError(
            f"{name}: the image has {dim} dimensions (size {'x'.join(map(str, image.GetSize()))}); pass one 3D CT "
            f"volume per input (split 4D/time series into 3D volumes first)")


def _hu_warnings(array: np.ndarray, name: str) -> List[str]:
    lo, hi = float(np.min(array)), float(np.max(array))
    if lo > -200 or hi < 200:
        return [f"{name}: intensities range from {lo:g} to {hi:g}, which does not look like CT in Hounsfield "
                f"units (air is about -1000 HU); check that the input is a CT and was not rescaled"]
    return []


def read_image_file(spec: InputSpec, needs_3d: bool = True) -> LoadedCase:
    try:
        image = sitk.ReadImage(spec.path)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[-1] if first else "unknown reason"
        raise PredictInputError(f"{spec.path}: could not read the image file (corrupt, truncated or not an image): "
                                f"{detail}") from None
    _check_volume(image, spec.path, needs_3d)
    array, props = nnunet_array_and_properties(image)
    return LoadedCase(spec, image, array, props, warnings=_hu_warnings(array, spec.path))


def _files_in(folder: str) -> List[str]:
    out = []
    for root, _, files in os.walk(folder):
        out.extend(os.path.join(root, f) for f in files if not f.startswith("."))
    return out


def _series_label(folder: str, series_id: str) -> str:
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series_id)
    desc = ""
    try:
        r = sitk.ImageFileReader()
        r.SetFileName(files[0])
        r.ReadImageInformation()
        for tag, label in (("0008|0060", "modality"), ("0008|103e", "description"), ("0020|0011", "number")):
            if r.HasMetaDataKey(tag):
                desc += f" {label} {r.GetMetaData(tag).strip()!r}"
    except RuntimeError:
        pass
    return f"{series_id} ({len(files)} files{desc})"


def _looks_like_dicom(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _check_unread_slices(folder: str, files: Sequence[str], slice_files: Sequence[str]) -> None:
    """GDCM silently leaves out slice files it cannot parse (e.g. truncated ones), which would
    leave a gap in the volume; such a file is an error, other stray files are ignored."""
    import pydicom

    in_series = {os.path.normpath(f) for f in slice_files}
    stray = [f for f in files if os.path.normpath(f) not in in_series and os.path.basename(f).upper() != "DICOMDIR"]
    if not stray:
        return
    try:
        series_uid = str(pydicom.dcmread(slice_files[0], stop_before_pixels=True).get("SeriesInstanceUID", ""))
    except Exception:
        series_uid = None
    for f in stray:
        if not _looks_like_dicom(f):
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as e:
            raise PredictInputError(f"{folder}: the DICOM file {os.path.basename(f)} cannot be read (corrupt or "
                                    f"truncated: {e}). Replace it or remove it from the folder") from None
        if series_uid is not None and str(ds.get("SeriesInstanceUID", "")) == series_uid and "Rows" in ds:
            raise PredictInputError(f"{folder}: the slice file {os.path.basename(f)} of this series cannot be read "
                                    f"(corrupt or truncated pixel data), so the volume would have a gap. Replace "
                                    f"the file (export the series again)")


def read_dicom_series(spec: InputSpec, needs_3d: bool = True) -> LoadedCase:
    """One DICOM series from a folder: HU volume (SimpleITK applies RescaleSlope/Intercept)."""
    folder = spec.path
    files = _files_in(folder)
    if not files:
        raise PredictInputError(f"{folder}: the folder is empty. Pass a folder that holds the slices of one DICOM "
                                f"CT series")
    top_level = [f for f in files if os.path.dirname(f) == os.path.normpath(folder)]
    if not top_level:
        subs = sorted({os.path.relpath(os.path.dirname(f), folder) for f in files})
        raise PredictInputError(f"{folder}: the folder holds no files, only subfolders ({', '.join(subs[:4])}"
                                f"{', ...' if len(subs) > 4 else ''}). Pass the subfolder of the CT series itself")
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    if not series_ids:
        images = [f for f in files if _strip_image_ending(os.path.basename(f)) is not None]
        if images:
            raise PredictInputError(
                f"{folder}: the folder holds image files ({', '.join(os.path.basename(f) for f in images[:3])}"
                f"{', ...' if len(images) > 3 else ''}) but no DICOM series. Pass the image files themselves as "
                f"inputs, e.g. -i {os.path.join(folder, '*' + IMAGE_FILE_ENDINGS[0])}")
        raise PredictInputError(f"{folder}: no DICOM image series found in the folder ({len(files)} files, none "
                                f"readable as DICOM slices; corrupt files or not DICOM)")
    if len(series_ids) > 1:
        listed = "; ".join(_series_label(folder, s) for s in series_ids)
        raise PredictInputError(
            f"{folder}: the folder holds {len(series_ids)} DICOM series ({listed}). Put each series in its own "
            f"folder and pass the CT series' folder")
    series_id = series_ids[0]
    slice_files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series_id))
    _check_unread_slices(folder, top_level, slice_files)

    head = sitk.ImageFileReader()
    head.SetFileName(slice_files[0])
    try:
        head.ReadImageInformation()
    except RuntimeError as e:
        raise PredictInputError(f"{folder}: cannot read DICOM header of {os.path.basename(slice_files[0])}: "
                                f"{str(e).strip().splitlines()[-1]}") from None
    modality = head.GetMetaData(MODALITY_TAG).strip() if head.HasMetaDataKey(MODALITY_TAG) else ""
    if modality != "CT":
        raise PredictInputError(
            f"{folder}: the DICOM series has Modality {modality or '(missing)'!r}, not 'CT'. This command "
            f"segments CT only; pass a CT series")
    if needs_3d and len(slice_files) < 2:
        raise PredictInputError(f"{folder}: the DICOM series has a single slice (2D); this model predicts 3D "
                                f"volumes. Put all slices of the series into the folder")

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(slice_files)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise PredictInputError(f"{folder}: could not read the DICOM series (a slice file may be corrupt or "
                                f"truncated): {str(e).strip().splitlines()[-1]}") from None
    _check_volume(image, folder, needs_3d)
    if image.GetSize()[2] != len(slice_files):
        raise PredictInputError(f"{folder}: the series has {len(slice_files)} files but {image.GetSize()[2]} "
                                f"slices were read; multi-frame or mixed series are not supported")
    array, props = nnunet_array_and_properties(image)
    case = LoadedCase(spec, image, array, props, dicom_files=slice_files, dicom_series_uid=series_id,
                      warnings=_hu_warnings(array, folder))
    spacing_warning = _slice_spacing_warning(slice_files, image, folder)
    if spacing_warning:
        case.warnings.append(spacing_warning)
    return case


def _slice_spacing_warning(slice_files: Sequence[str], image: sitk.Image, name: str) -> Optional[str]:
    """SimpleITK assumes equal slice distances; say so when the positions disagree."""
    positions = []
    r = sitk.ImageFileReader()
    for f in slice_files:
        r.SetFileName(f)
        try:
            r.ReadImageInformation()
            positions.append([float(v) for v in r.GetMetaData("0020|0032").split("\\")])
        except (RuntimeError, ValueError):
            return None
    if len(positions) < 3:
        return None
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    d = np.diff(np.array(positions) @ normal)
    if np.max(np.abs(d - np.median(d))) > 0.01 * max(abs(np.median(d)), 1e-3) + 1e-3:
        return (f"{name}: slice distances are not equal (min {np.min(d):.3f} mm, max {np.max(d):.3f} mm; missing "
                f"slices?). The volume was read with spacing {image.GetSpacing()[2]:.3f} mm")
    return None


def load_case(spec: InputSpec, needs_3d: bool = True) -> LoadedCase:
    if spec.kind == "dicom":
        return read_dicom_series(spec, needs_3d)
    return read_image_file(spec, needs_3d)
