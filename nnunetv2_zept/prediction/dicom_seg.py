"""DICOM SEG of a predicted label map that references the CT series it was predicted from.

One segment per class present in the label map (the exported nnU-Net label map, so tumours
painted over their organs, exactly as in the NIfTI label map).  Frames follow the series'
slices: frame k of the volume derives from the slice file at z index k, and empty frames are
omitted (highdicom's default), so every frame references the CT slice it lies on.
"""
from __future__ import annotations

import re
import warnings
from typing import Dict, List, Sequence

import numpy as np


def _camel(name: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    return "".join(w[:1].upper() + w[1:].lower() for w in words)


def _property_codes(class_name: str, is_tumour: bool):
    """(category, type) codes: SNOMED organ codes where pydicom knows the organ's name."""
    from pydicom.sr.codedict import codes

    if is_tumour:
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm
    words = [w for w in re.split(r"[^A-Za-z0-9]+", class_name.lower()) if w not in ("left", "right", "l", "r", "")]
    for candidate in (_camel(" ".join(words)), _camel(words[0]) if words else ""):
        if not candidate:
            continue
        try:
            return codes.SCT.AnatomicalStructure, getattr(codes.SCT, candidate)
        except AttributeError:
            continue
    return codes.SCT.AnatomicalStructure, codes.SCT.Organ


def _repaired_source(ds):
    """In-memory fixes (never written back) for header gaps common in anonymised series that
    highdicom refuses: an empty SOPClassUID/SOPInstanceUID (the file meta holds them) and an
    empty SpecificCharacterSet (means the default repertoire)."""
    meta = getattr(ds, "file_meta", None)
    if not str(ds.get("SOPClassUID", "") or "") and meta is not None and meta.get("MediaStorageSOPClassUID"):
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
    if not str(ds.get("SOPInstanceUID", "") or "") and meta is not None and meta.get("MediaStorageSOPInstanceUID"):
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
        del ds.SpecificCharacterSet
    return ds


class DicomSegUnavailable(ValueError):
    """The series cannot be referenced by a DICOM SEG; the message says why."""


def check_referencable(source) -> None:
    missing = sorted({k for ds in source for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                                    "FrameOfReferenceUID") if not str(ds.get(k, "") or "")})
    if missing:
        raise DicomSegUnavailable(
            f"the series has empty {', '.join(missing)} (blanked by anonymisation?), so a DICOM SEG cannot reference "
            f"it; use the NIfTI label map, or restore the UIDs in the series")


def write_dicom_seg(label_map: np.ndarray, value_names: Dict[int, str], tumour_names: Sequence[str],
                    dicom_files: Sequence[str], output_file: str, series_description: str,
                    software_version: str) -> List[dict]:
    """Write a BINARY DICOM SEG; returns [{segment_number, label_value, name}] of the segments.

    label_map: [z, y, x] integer array on the grid of the series (z index k = dicom_files[k]).
    value_names: label value -> class name, for every value that may occur.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    source = [_repaired_source(pydicom.dcmread(f, stop_before_pixels=True)) for f in dicom_files]
    check_referencable(source)
    if label_map.shape != (len(source), int(source[0].Rows), int(source[0].Columns)):
        raise ValueError(f"label map shape {label_map.shape} does not match the series "
                         f"({len(source)} slices of {source[0].Rows}x{source[0].Columns})")
    present = [int(v) for v in np.unique(label_map) if v != 0]
    if not present:
        return []
    segments, descriptions = [], []
    seg_numbers = np.zeros(label_map.shape, dtype=np.uint8 if len(present) < 255 else np.uint16)
    algorithm = hd.AlgorithmIdentificationSequence(name="nnunetv2_zept", version=software_version,
                                                   family=codes.DCM.ArtificialIntelligence)
    for number, value in enumerate(present, start=1):
        name = value_names.get(value, f"label_{value}")
        category, prop_type = _property_codes(name, name in tumour_names)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64], segmented_property_category=category,
            segmented_property_type=prop_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
        seg_numbers[label_map == value] = number
        segments.append({"segment_number": number, "label_value": value, "name": name})
    with warnings.catch_warnings():
        # anonymised names like "JANCT000" are valid DICOM; highdicom's style hint is noise here
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = _segmentation(hd, source, seg_numbers, descriptions, series_description, software_version)
    seg.save_as(output_file)
    return segments


def _segmentation(hd, source, seg_numbers, descriptions, series_description, software_version):
    return hd.seg.Segmentation(
        source_images=source, pixel_array=seg_numbers,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=int(getattr(source[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="nnunetv2_zept",
        manufacturer_model_name="ZePT nnU-Net", software_versions=software_version, device_serial_number="0",
        series_description=series_description[:64])
