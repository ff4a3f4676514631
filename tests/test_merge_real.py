"""Merge the real CT files of ../shared/data/real wherever their masks allow (skipped without them):

* TotalSegmentator's example CT with its 3 mm organ map (sided kidneys and lungs as lobes);
* the same CT with both kidneys as one label (a KiTS-style input), which the merge must split
  by side exactly as TotalSegmentator drew them: a real-CT check of the midline rule on an image
  whose x axis is stored flipped;
* dcmqi's 3-slice upper-abdomen CT (DICOM) with its liver mask;
* IBSI's lung-cancer CT with its tumour GTV, as a zero-shot test set without a lung label.

IBSI's soft-tissue sarcomas (limbs) have no host organ that any of these annotates, so a ZePT
dataset cannot hold them; merging them must say so.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SHARED_REAL
from nnunetv2_zept.merging import MergeError, MergeOptions, build_plan, write_plan

pytestmark = pytest.mark.skipif(not os.path.isdir(SHARED_REAL), reason="../shared/data/real is not available")

TS_NAMES = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver", 6: "stomach",
            7: "pancreas", 8: "adrenal_gland_right", 9: "adrenal_gland_left", 10: "lung_upper_lobe_left",
            11: "lung_lower_lobe_left", 12: "lung_upper_lobe_right", 13: "lung_middle_lobe_right",
            14: "lung_lower_lobe_right", 18: "small_bowel", 19: "duodenum", 20: "colon", 30: "vertebrae_L2",
            31: "vertebrae_L1", 32: "vertebrae_T12", 33: "vertebrae_T11", 52: "aorta", 63: "inferior_vena_cava",
            64: "portal_vein_and_splenic_vein", 79: "spinal_cord", 86: "autochthon_left", 87: "autochthon_right",
            88: "iliopsoas_left", 89: "iliopsoas_right", 117: "costal_cartilages",
            **{97 + k: f"rib_left_{6 + k}" for k in range(1, 7)}, **{109 + k: f"rib_right_{6 + k}" for k in range(1, 7)}}
LOBES = {"lung_upper_lobe_left": "lung_left", "lung_lower_lobe_left": "lung_left",
         "lung_upper_lobe_right": "lung_right", "lung_middle_lobe_right": "lung_right",
         "lung_lower_lobe_right": "lung_right"}


def _dataset(raw: Path, folder: str, labels: dict, cases: dict, name: str = None):
    """cases: case id -> (image path or SimpleITK image, label path or image); files are linked, never copied."""
    d = raw / folder
    (d / "imagesTr").mkdir(parents=True)
    (d / "labelsTr").mkdir()
    for cid, (image, label) in cases.items():
        for src, dst in ((image, d / "imagesTr" / f"{cid}_0000.nii.gz"), (label, d / "labelsTr" / f"{cid}.nii.gz")):
            if isinstance(src, sitk.Image):
                sitk.WriteImage(src, str(dst), True)
            else:
                os.symlink(src, dst)
    (d / "dataset.json").write_text(json.dumps({"name": name or folder.split("_", 1)[1], "channel_names": {"0": "CT"},
                                                "labels": {"background": 0, **labels}, "numTraining": len(cases),
                                                "file_ending": ".nii.gz"}))
    return folder


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge_real")
    raw = root / "raw"
    real = Path(SHARED_REAL)
    ts_ct, ts_seg = real / "totalsegmentator" / "example_ct_sm.nii.gz", real / "totalsegmentator" / "example_seg.nii.gz"
    seg = sitk.ReadImage(str(ts_seg))
    present = sorted(int(v) for v in np.unique(sitk.GetArrayFromImage(seg)) if v)
    assert set(present) <= set(TS_NAMES)
    ts = _dataset(raw, "Dataset301_TotalSegExample", {TS_NAMES[i]: i for i in present}, {"ts_000": (ts_ct, ts_seg)})
    both = sitk.GetArrayFromImage(seg)
    kid = sitk.GetImageFromArray(np.isin(both, [2, 3]).astype(np.uint8))
    kid.CopyInformation(seg)
    kits_like = _dataset(raw, "Dataset302_OneKidneyLabel", {"kidney": 1}, {"kid_000": (ts_ct, kid)})
    dcm = real / "dcmqi_ct3slice"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dcm / "ct-3slice")))
    liver = _dataset(raw, "Dataset303_DcmqiLiver", {"liver": 1},
                     {"dcmqi_000": (reader.Execute(), sitk.ReadImage(str(dcm / "liver_seg.nrrd")))})
    ibsi = _dataset(raw, "Dataset304_IBSILung", {"GTV": 1},
                    {"ibsi_lung_000": (real / "ibsi_lung_ct" / "phantom.nii.gz", real / "ibsi_lung_ct" / "mask.nii.gz")})
    sts = _dataset(raw, "Dataset305_IBSISarcoma", {"GTV": 1},
                   {f"sts_{c}": (real / "ibsi_sts" / c / "CT_image.nii.gz", real / "ibsi_sts" / c / "CT_mask.nii.gz")
                    for c in sorted(os.listdir(real / "ibsi_sts")) if c.startswith("STS_")})
    names = {TS_NAMES[i] for i in present}
    mapping = {ts: {**{k: v for k, v in LOBES.items() if k in names}, **{TS_NAMES[i]: None for i in present if TS_NAMES[i].startswith(
        ("vertebrae", "rib_", "autochthon", "iliopsoas", "spinal", "costal"))}},
        ibsi: {"GTV": "lung_tumour"}, sts: {"GTV": "soft_tissue_sarcoma_tumour"}}
    (root / "mapping.json").write_text(json.dumps(mapping))
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        (root / sub).mkdir(exist_ok=True)
    return {"root": root, "raw": raw, "mapping": str(root / "mapping.json"), "ts": ts, "kits_like": kits_like,
            "liver": liver, "ibsi": ibsi, "sts": sts, "seg": both}


@pytest.fixture
def env(real, monkeypatch):
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        monkeypatch.setenv(var, str(real["root"] / sub))
    return real


def _ids(dj, name):
    v = dj["labels"][name]
    return v if isinstance(v, list) else [v]


def test_real_ct_merge(env):
    opts = MergeOptions([env["ts"], env["kits_like"], env["liver"], env["ibsi"]], 650, "RealCT",
                        test_inputs=[env["ibsi"]], mapping_file=env["mapping"])
    # TotalSegmentator's example is stored RAS, the others LPS: one orientation for the network
    with pytest.raises(MergeError, match=r"2 axis orientations \(LPS: 2 case\(s\) of Dataset303_DcmqiLiver, "
                                         r"Dataset304_IBSILung; RAS: 2 case\(s\)"):
        build_plan(opts, log=lambda s: None)
    opts.orientation = "LPS"
    result = write_plan(build_plan(opts, log=lambda s: None), log=lambda s: None)
    dj = json.loads((result.folder / "dataset.json").read_text())
    organs = dj["zept"]["organs"]
    for c in ("liver", "spleen", "kidney_right", "kidney_left", "lung_right", "lung_left", "colon", "pancreas",
              "portal_splenic_vein", "inferior_vena_cava", "adrenal_gland_right", "small_bowel"):
        assert c in organs, c
    assert "kidney" not in organs and not any("vertebra" in c or "rib" in c for c in organs)
    assert dj["zept"]["tumours"] == {"lung_tumour": {"host": ["lung_right", "lung_left"], "zero_shot": True}}
    assert dj["zept"]["test_sources"]["ibsilung"]["annotates"] == ["lung_tumour"]
    # a lung tumour of a CT without lung labels: side unknown, its own id, in the tumour region only
    right, left, unknown = _ids(dj, "lung_tumour")
    gtv = sitk.GetArrayFromImage(sitk.ReadImage(str(result.folder / "labelsTs" / "ibsi_lung_000.nii.gz")))
    assert int((gtv == unknown).sum()) == 125_256 and set(np.unique(gtv).tolist()) == {0, unknown}
    assert unknown not in _ids(dj, "lung_right") + _ids(dj, "lung_left")
    # TotalSegmentator (written reoriented to LPS): lobes -> one lung per side, bones and muscles -> background
    seg_image = sitk.DICOMOrient(sitk.ReadImage(str(Path(SHARED_REAL) / "totalsegmentator" / "example_seg.nii.gz")),
                                 "LPS")
    seg = sitk.GetArrayFromImage(seg_image)
    ts_image = sitk.ReadImage(str(result.folder / "labelsTr" / "ts_000.nii.gz"))
    assert ts_image.GetOrigin() == pytest.approx(seg_image.GetOrigin())
    ts = sitk.GetArrayFromImage(ts_image)
    assert np.array_equal(ts == _ids(dj, "lung_left")[0], np.isin(seg, [10, 11]))
    assert np.array_equal(ts == _ids(dj, "lung_right")[0], np.isin(seg, [12, 13, 14]))
    assert (ts[np.isin(seg, [30, 31, 32, 33, 79, 117])] == 0).all()
    # one kidney label on real CT (x axis stored flipped) is split exactly as TotalSegmentator drew the sides
    kid = sitk.GetArrayFromImage(sitk.ReadImage(str(result.folder / "labelsTr" / "kid_000.nii.gz")))
    assert np.array_equal(kid == _ids(dj, "kidney_right")[0], seg == 2)
    assert np.array_equal(kid == _ids(dj, "kidney_left")[0], seg == 3)
    assert (seg == 2).any() and (seg == 3).any()
    # dcmqi: the liver of the DICOM series, voxel for voxel
    liver = sitk.GetArrayFromImage(sitk.ReadImage(str(result.folder / "labelsTr" / "dcmqi_000.nii.gz")))
    assert int((liver == _ids(dj, "liver")[0]).sum()) == 107_098
    # images are linked to the shared files (across file systems: symbolic links), or reoriented copies
    assert result.links["reoriented copy"] == 2 and sum(result.links.values()) == 4
    assert set(result.links) <= {"hard", "symbolic", "reoriented copy"}
    img = result.folder / "imagesTs" / "ibsi_lung_000_0000.nii.gz"
    assert os.path.realpath(img) == os.path.realpath(Path(SHARED_REAL) / "ibsi_lung_ct" / "phantom.nii.gz") or \
        os.stat(img).st_ino == os.stat(Path(SHARED_REAL) / "ibsi_lung_ct" / "phantom.nii.gz").st_ino


def test_sarcomas_of_the_limbs_have_no_host_organ(env):
    opts = MergeOptions([env["ts"], env["sts"]], 651, "WithSarcoma", test_inputs=[env["sts"]],
                        mapping_file=env["mapping"], orientation="LPS")
    with pytest.raises(MergeError, match="'soft_tissue_sarcoma_tumour' has no host organ among the organs"):
        build_plan(opts, log=lambda s: None)
