"""MSD-format mini datasets made with the synthetic generator, each with its public dataset's label
conventions (as `nnUNetv2_convert_MSD_dataset` and the public releases write them):

| dataset | labels |
|---|---|
| Dataset003_Liver | liver=1, cancer=2 |
| Dataset007_Pancreas | pancreas=1, cancer=2 |
| Dataset009_Spleen | spleen=1 |
| Dataset006_Lung | cancer=1 (no organ label) |
| Dataset010_Colon | colon cancer primaries=1 (no organ label) |
| Dataset008_HepaticVessel | Vessel=1, Tumour=2 |
| Dataset220_KiTS23 | kidney=1 (both sides), tumor=2, cyst=3 |
| Dataset011_WORDmini | WORD names: liver, spleen, left_kidney, right_kidney, stomach, pancreas, colon |
| Dataset012_CTORGmini | CT-ORG names: liver, bladder, lungs, kidneys (both sides), bone, brain |

Cases are small phantoms (10 mm voxels, 36 x 28 x 24), so that nnU-Net plans one patch per case
and a CLI training run takes seconds.  The generator has no colon label or colon tumour: the colon
is its gas/stool-filled bowel frame with the adjacent wall, and a colon cancer is a soft-tissue
wall thickening painted into it here.
"""
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunetv2_zept.synthetic.anatomy import Tissue
from nnunetv2_zept.synthetic.case import default_label_ids, make_case

SPACING = (10.0, 10.0, 10.0)
SHAPE = (36, 28, 24)
TYPES = ["liver_tumour", "kidney_tumour", "kidney_cyst", "pancreas_tumour", "lung_nodule", "liver_metastasis"]
IDS = default_label_ids(TYPES)

# folder, dataset.json name, case-id pattern, labels, tumour types per case (cycled; [] = tumour-free)
TASKS = {
    "Dataset003_Liver": ("Liver", "liver_{i}", {"liver": 1, "cancer": 2}, [["liver_tumour"], []]),
    "Dataset006_Lung": ("Lung", "lung_{i:03d}", {"cancer": 1}, [["lung_nodule"]]),
    "Dataset007_Pancreas": ("Pancreas", "pancreas_{i:03d}", {"pancreas": 1, "cancer": 2}, [["pancreas_tumour"], []]),
    "Dataset008_HepaticVessel": ("HepaticVessel", "hepaticvessel_{i:03d}", {"Vessel": 1, "Tumour": 2},
                                 [["liver_metastasis"]]),
    "Dataset009_Spleen": ("Spleen", "spleen_{i}", {"spleen": 1}, [[]]),
    "Dataset010_Colon": ("Colon", "colon_{i:03d}", {"colon cancer primaries": 1}, [["colon"]]),
    "Dataset220_KiTS23": ("KiTS23", "case_{i:05d}", {"kidney": 1, "tumor": 2, "cyst": 3},
                          [["kidney_tumour"], ["kidney_cyst"], ["kidney_tumour", "kidney_cyst"]]),
    "Dataset011_WORDmini": ("WORD", "word_{i:04d}", {"liver": 1, "spleen": 2, "left_kidney": 3, "right_kidney": 4,
                                                     "stomach": 5, "pancreas": 6, "colon": 7}, [[]]),
    "Dataset012_CTORGmini": ("CT-ORG", "ctorg_{i:03d}", {"liver": 1, "bladder": 2, "lungs": 3, "kidneys": 4,
                                                         "bone": 5, "brain": 6}, [[]]),
}


def colon_mask(tissue: np.ndarray) -> np.ndarray:
    """The generator's colon: its gas/stool lumen and the bowel wall around it."""
    lumen = np.isin(tissue, [Tissue.GAS, Tissue.STOOL])
    return lumen | (ndimage.binary_dilation(lumen, iterations=1) & (tissue == Tissue.BOWEL_WALL))


def _paint_colon_cancer(image: np.ndarray, colon: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft-tissue (40-70 HU) thickening of the colon wall, about 2 cm across."""
    wall = np.argwhere(colon)
    centre = wall[int(rng.integers(len(wall)))]
    zz, yy, xx = np.ogrid[:colon.shape[0], :colon.shape[1], :colon.shape[2]]
    ball = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= 1.6 ** 2
    tumour = ball & ndimage.binary_dilation(colon, iterations=1)
    image[tumour] = rng.uniform(40, 70) + rng.normal(0, 10, int(tumour.sum()))
    return tumour


def _task_label(folder: str, case, tumour: np.ndarray) -> np.ndarray:
    lab, tis = case.label, case.tissue
    out = np.zeros(lab.shape, np.uint8)
    if folder == "Dataset003_Liver":
        out[lab == IDS["liver"]] = 1
        out[lab == IDS["liver_tumour"]] = 2
    elif folder == "Dataset006_Lung":
        out[lab == IDS["lung_nodule"]] = 1
    elif folder == "Dataset007_Pancreas":
        out[lab == IDS["pancreas"]] = 1
        out[lab == IDS["pancreas_tumour"]] = 2
    elif folder == "Dataset008_HepaticVessel":
        out[(tis == Tissue.HEPATIC_VESSEL) & (lab == IDS["liver"])] = 1
        out[lab == IDS["liver_metastasis"]] = 2
    elif folder == "Dataset009_Spleen":
        out[lab == IDS["spleen"]] = 1
    elif folder == "Dataset010_Colon":
        out[tumour] = 1
    elif folder == "Dataset220_KiTS23":
        out[np.isin(lab, [IDS["kidney_right"], IDS["kidney_left"]])] = 1
        out[lab == IDS["kidney_tumour"]] = 2
        out[lab == IDS["kidney_cyst"]] = 3
    elif folder == "Dataset011_WORDmini":
        for name, value in (("liver", 1), ("spleen", 2), ("kidney_left", 3), ("kidney_right", 4), ("stomach", 5),
                            ("pancreas", 6)):
            out[lab == IDS[name]] = value
        out[colon_mask(tis) & (out == 0)] = 7
    elif folder == "Dataset012_CTORGmini":
        out[lab == IDS["liver"]] = 1
        out[lab == IDS["lung"]] = 3
        out[np.isin(lab, [IDS["kidney_right"], IDS["kidney_left"]])] = 4
        out[np.isin(tis, [Tissue.BONE_CORTEX, Tissue.BONE_MARROW, Tissue.RIB]) & (out == 0)] = 5
    return out


def task_case(folder: str, i: int, seed: int = 0):
    """(case id, generator case, CT array with any painted colon cancer, task label array) of case i."""
    _, pattern, _, plan = TASKS[folder]
    types = plan[i % len(plan)]
    rng = np.random.default_rng([seed, sum(map(ord, folder)), i])
    case = make_case(int(rng.integers(2 ** 31)), SHAPE, SPACING, [t for t in types if t != "colon"], IDS,
                     min_lesion_diameter_mm=2.5 * SPACING[0])
    image = case.image.astype(np.float32)
    tumour = _paint_colon_cancer(image, colon_mask(case.tissue), rng) if "colon" in types else None
    return pattern.format(i=i), case, image, _task_label(folder, case, tumour)


def make_task(raw_root, folder: str, n_cases: int = 3, seed: int = 0) -> Path:
    name, pattern, labels, plan = TASKS[folder]
    out = Path(raw_root) / folder
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        cid, case, image, label = task_case(folder, i, seed)
        img, lab = case.to_sitk()
        ct = sitk.GetImageFromArray(image.astype(np.int16))
        ct.CopyInformation(img)
        seg = sitk.GetImageFromArray(label)
        seg.CopyInformation(lab)
        sitk.WriteImage(ct, str(out / "imagesTr" / f"{cid}_0000.nii.gz"), True)
        sitk.WriteImage(seg, str(out / "labelsTr" / f"{cid}.nii.gz"), True)
    (out / "dataset.json").write_text(json.dumps({
        "name": name, "channel_names": {"0": "CT"}, "labels": {"background": 0, **labels},
        "numTraining": n_cases, "file_ending": ".nii.gz"}, indent=2))
    return out


def make_msd_minis(raw_root, folders: List[str] = None, n_cases: int = 3, seed: int = 0) -> Dict[str, Path]:
    return {f: make_task(raw_root, f, n_cases, seed) for f in (folders or list(TASKS))}


# the mapping file the union needs: CT-ORG's bone is the network's background tissue, its bladder and
# brain have no voxels in these phantoms
MAPPING = {"Dataset012_CTORGmini": {"bone": None, "bladder": None, "brain": None}}
TRAIN = ["Dataset003_Liver", "Dataset009_Spleen", "Dataset220_KiTS23", "Dataset011_WORDmini", "Dataset012_CTORGmini"]
TEST = ["Dataset006_Lung", "Dataset007_Pancreas", "Dataset008_HepaticVessel", "Dataset010_Colon"]


def write_mapping(path) -> str:
    Path(path).write_text(json.dumps(MAPPING, indent=2))
    return str(path)
