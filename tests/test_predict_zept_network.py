"""`nnunetv2_zept predict` with the real ZePT Stage 2 network (trained on the tiny synthetic
dataset by the shared fixture) on real CT: a NIfTI volume and a DICOM series."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SHARED_REAL, cli


def _real(*parts):
    p = os.path.join(SHARED_REAL, *parts)
    if not os.path.exists(p):
        pytest.skip(f"real CT test data missing: {p}")
    return p


def _read_input(path):
    if os.path.isdir(path):
        r = sitk.ImageSeriesReader()
        r.SetFileNames(r.GetGDCMSeriesFileNames(path))
        return r.Execute()
    return sitk.ReadImage(path)


def test_zept_model_predicts_real_ct_with_anomaly_map_and_scores(tiny_trained, tmp_path):
    nifti = _real("totalsegmentator", "example_ct_sm.nii.gz")
    dicom = _real("dcmqi_ct3slice", "ct-3slice")
    env = dict(tiny_trained["env"], nnUNet_n_proc_DA="0")
    out = tmp_path / "out"
    r = cli(["nnunetv2_zept", "predict", "-i", nifti, dicom, "-o", str(out), "-d", "501", "-c", "3d_fullres",
             "-tr", "nnUNetTrainerZePTStage2", "-f", "0", "-device", "cpu", "--dicom-seg"], env)
    for cid, path in (("example_ct_sm", nifti), ("ct-3slice", dicom)):
        ref = _read_input(path)
        for name in (f"{cid}.nii.gz", f"{cid}_anomaly.nii.gz"):
            img = sitk.ReadImage(str(out / name))
            assert img.GetSize() == ref.GetSize(), name
            assert np.allclose(img.GetSpacing(), ref.GetSpacing(), atol=1e-4), name
            assert np.allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-3), name
            assert np.allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6), name
        anomaly = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{cid}_anomaly.nii.gz")))
        assert np.isfinite(anomaly).all() and 0.0 <= anomaly.min() and anomaly.max() <= 1.0
        rep = json.loads((out / f"{cid}.json").read_text())
        assert rep["anomaly_map"]["available"] is True
        assert set(rep["tumours"]) == {"liver_tumour", "kidney_tumour"}
        assert rep["tumours"]["kidney_tumour"]["zero_shot"] is True
        for t in rep["tumours"].values():
            assert 0.0 <= t["presence_score"] <= 1.0
    # the DICOM series gets a DICOM SEG that references it
    import pydicom
    seg = pydicom.dcmread(out / "ct-3slice_seg.dcm")
    first = pydicom.dcmread(sorted(Path(dicom).iterdir())[0], stop_before_pixels=True)
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
