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
import stat
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunetv2_zept.input_checks import (InputCheckError, check_finite, check_image_file, check_spacing,
                                        file_kind, hu_check, path_problem)

IMAGE_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gipl", ".gipl.gz")
# nnU-Net names image files <case>_<channel>.<ext>; a user who passes such a file expects <case>
NNUNET_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")
MODALITY_TAG = "0008|0060"
POSITION_TAG = "0020|0032"
SOP_INSTANCE_UID_TAG = "0008|0018"
CT_IMAGE_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
# files that often sit next to the slices of an exported series and are not slices themselves
COMPANION_FILE_ENDINGS = (".txt", ".json", ".xml", ".csv", ".md", ".htm", ".html", ".pdf", ".ini", ".log", ".jpg",
                          ".jpeg", ".png", ".bmp", ".gif", ".zip") + IMAGE_FILE_ENDINGS


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
        problem = path_problem(p)
        if problem:
            problems.append((p, problem))
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


def _checked_case(spec: InputSpec, image: sitk.Image, name: str, **kwargs) -> LoadedCase:
    """The checks every CT gets once it is read: values and spacing (docs/input-checks.md)."""
    array, props = nnunet_array_and_properties(image)
    try:
        check_finite(array, name)
        warnings = hu_check(array, name)
        check_spacing(image.GetSpacing(), name)
    except InputCheckError as e:
        raise PredictInputError(str(e)) from None
    return LoadedCase(spec, image, array, props, warnings=warnings, **kwargs)


def read_image_file(spec: InputSpec, needs_3d: bool = True) -> LoadedCase:
    try:
        check_image_file(spec.path)
    except InputCheckError as e:
        raise PredictInputError(str(e)) from None
    try:
        image = sitk.ReadImage(spec.path)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[-1] if first else "unknown reason"
        raise PredictInputError(f"{spec.path}: could not read the image file (corrupt, truncated or not an image): "
                                f"{detail}") from None
    _check_volume(image, spec.path, needs_3d)
    return _checked_case(spec, image, spec.path)


def _files_in(folder: str) -> List[str]:
    """Regular files below `folder`; anything else in the folder itself (a named pipe, a socket,
    a device) is refused: opening it can block forever, and GDCM scans that folder."""
    out = []
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            try:
                mode = os.stat(path).st_mode
            except OSError:
                mode = None   # a dangling link: not a file to read
            if mode is not None and stat.S_ISREG(mode):
                if not f.startswith("."):
                    out.append(path)
            elif root == folder and mode is not None:
                raise PredictInputError(f"{folder}: {f} is a {file_kind(mode)}, not a regular file; reading it "
                                        f"could block forever. Remove it from the series folder")
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


def _check_unread_slices(folder: str, files: Sequence[str], slice_files: Sequence[str]) -> None:
    """GDCM silently leaves out slice files it cannot parse (e.g. truncated ones), which would
    leave a gap in the volume or shorten it.  Every other file in the folder must be a companion
    file (by its ending), or a complete DICOM object that is not a slice of this series."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    in_series = {os.path.normpath(f) for f in slice_files}
    stray = [f for f in files if os.path.normpath(f) not in in_series and os.path.basename(f).upper() != "DICOMDIR"
             and not os.path.basename(f).lower().endswith(COMPANION_FILE_ENDINGS)]
    if not stray:
        return
    for f in stray:
        name = os.path.basename(f)
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except InvalidDicomError:
            raise PredictInputError(
                f"{folder}: {name} is not a readable DICOM file (no DICOM header: a truncated slice?) and not a "
                f"known companion file; a slice missing from the volume would go unnoticed. Replace the file "
                f"(export the series again) or remove it from the folder") from None
        except Exception as e:
            raise PredictInputError(f"{folder}: the DICOM file {name} cannot be read (corrupt or truncated: "
                                    f"{str(e).splitlines()[0][:120]}). Replace it or remove it from the folder") from None
        meta = getattr(ds, "file_meta", None)
        sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
        if not sop_class or sop_class in CT_IMAGE_SOP_CLASSES or str(ds.get("Modality", "")) == "CT":
            raise PredictInputError(f"{folder}: the slice file {name} of this series cannot be read (corrupt "
                                    f"or truncated), so the volume would have a gap. Replace the file (export the "
                                    f"series again) or remove it from the folder")


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
    spacing_warning = _check_slice_positions(slice_files, image, folder)
    case = _checked_case(spec, image, folder, dicom_files=slice_files, dicom_series_uid=series_id)
    if spacing_warning:
        case.warnings.append(spacing_warning)
    return case


def _check_slice_positions(slice_files: Sequence[str], image: sitk.Image, name: str) -> Optional[str]:
    """Duplicate slices (same SOP Instance UID or same position) and slices out of order make a
    wrong volume: refused.  SimpleITK assumes equal slice distances; a warning says when the
    positions disagree (missing slices)."""
    positions, uids = [], {}
    r = sitk.ImageFileReader()
    for f in slice_files:
        r.SetFileName(f)
        try:
            r.ReadImageInformation()
        except RuntimeError:
            return None
        uid = r.GetMetaData(SOP_INSTANCE_UID_TAG).strip() if r.HasMetaDataKey(SOP_INSTANCE_UID_TAG) else ""
        if uid and uid in uids:
            raise PredictInputError(f"{name}: the slice files {os.path.basename(uids[uid])} and {os.path.basename(f)} "
                                    f"are the same slice (SOP Instance UID {uid}); remove the duplicate file")
        uids[uid] = f
        try:
            positions.append([float(v) for v in r.GetMetaData(POSITION_TAG).split("\\")])
        except (RuntimeError, ValueError):
            return None
    if len(positions) < 2:
        return None
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    along = np.array(positions) @ normal
    d = np.diff(along)
    same = np.flatnonzero(np.abs(d) < 1e-3)
    if same.size:
        k = int(same[0])
        raise PredictInputError(f"{name}: the slice files {os.path.basename(slice_files[k])} and "
                                f"{os.path.basename(slice_files[k + 1])} lie at the same position ({along[k]:.3f} mm; "
                                f"duplicate slices, or two acquisitions in one series); keep one slice per position")
    if np.any(d < 0):
        k = int(np.flatnonzero(d < 0)[0])
        raise PredictInputError(f"{name}: the slices could not be put in order (slice file "
                                f"{os.path.basename(slice_files[k + 1])} at {along[k + 1]:.3f} mm follows one at "
                                f"{along[k]:.3f} mm); check for duplicate or stray slice files in the folder")
    if len(positions) >= 3 and np.max(np.abs(d - np.median(d))) > 0.01 * max(abs(np.median(d)), 1e-3) + 1e-3:
        return (f"{name}: slice distances are not equal (min {np.min(d):.3f} mm, max {np.max(d):.3f} mm; missing "
                f"slices?). The volume was read with spacing {image.GetSpacing()[2]:.3f} mm")
    return None


def load_case(spec: InputSpec, needs_3d: bool = True) -> LoadedCase:
    if spec.kind == "dicom":
        return read_dicom_series(spec, needs_3d)
    return read_image_file(spec, needs_3d)
