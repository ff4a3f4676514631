"""A tiny region dataset: the test suite's end-to-end runs through the stock nnU-Net commands and
the Stage 1 learning-speed benchmark train on it.

Each case is a 32^3 CT-like volume (HU) with a body of fat and muscle, a liver, two kidneys
and, depending on the case, a hypodense liver tumour (seen class) or a kidney tumour (declared
zero-shot: it only occurs in the held-out cases).  Small enough that nnU-Net plans a single
patch and a CLI training run takes seconds.
"""
import json
import os
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk

LABELS = {"liver": 1, "kidney_right": 2, "kidney_left": 3, "liver_tumour": 4, "kidney_tumour": 5}


def _ball(shape, centre, radii):
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return (((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2 +
            ((xx - centre[2]) / radii[2]) ** 2) <= 1.0


def make_case(rng: np.random.RandomState, shape=(32, 32, 32), liver_tumour=False, kidney_tumour=False):
    img = np.full(shape, -1000.0, dtype=np.float32)
    seg = np.zeros(shape, dtype=np.uint8)
    c = np.array(shape) / 2 + rng.uniform(-1.5, 1.5, 3)
    body = _ball(shape, c, (shape[0] * 0.48, shape[1] * 0.45, shape[2] * 0.47))
    img[body] = -100.0
    img[body & ~_ball(shape, c, (shape[0] * 0.43, shape[1] * 0.40, shape[2] * 0.42))] = 40.0
    liver = _ball(shape, c + [0, -3 + rng.uniform(-1, 1), -5], (8, 7, 7))
    kr = _ball(shape, c + [2, 6, -8 + rng.uniform(-1, 1)], (4, 3, 3))
    kl = _ball(shape, c + [2, 6, 8 + rng.uniform(-1, 1)], (4, 3, 3))
    img[liver] = 100.0
    seg[liver] = LABELS["liver"]
    img[kr] = 180.0
    seg[kr] = LABELS["kidney_right"]
    img[kl] = 180.0
    seg[kl] = LABELS["kidney_left"]
    if liver_tumour:
        t = _ball(shape, c + [0, -3, -5] + rng.uniform(-2, 2, 3), (3, 3, 3)) & liver
        img[t] = 40.0
        seg[t] = LABELS["liver_tumour"]
    if kidney_tumour:
        t = _ball(shape, c + [2, 6, 8] + rng.uniform(-1, 1, 3), (2, 2, 2)) & kl
        img[t] = 20.0
        seg[t] = LABELS["kidney_tumour"]
    img += rng.normal(0, 10, shape).astype(np.float32)
    return img, seg


def _write(arr, path, spacing, dtype):
    im = sitk.GetImageFromArray(arr.astype(dtype))
    im.SetSpacing(spacing)
    im.SetOrigin((10.0, -20.0, 5.0))
    sitk.WriteImage(im, path)


def dataset_json(num_training: int, zept_block: Optional[Dict] = None, zero_shot: bool = True) -> Dict:
    d = {
        "channel_names": {"0": "CT"},
        "labels": {
            "background": 0,
            "liver": [LABELS["liver"], LABELS["liver_tumour"]],
            "kidney_right": [LABELS["kidney_right"]],
            "kidney_left": [LABELS["kidney_left"], LABELS["kidney_tumour"]],
            "liver_tumour": [LABELS["liver_tumour"]],
            "kidney_tumour": [LABELS["kidney_tumour"]],
        },
        "regions_class_order": [1, 2, 3, 4, 5],
        "numTraining": num_training,
        "file_ending": ".nii.gz",
    }
    if not zero_shot:
        # no zero-shot class: every class can be scored in cross-validation
        del d["labels"]["kidney_tumour"]
        d["labels"]["kidney_left"] = [LABELS["kidney_left"]]
        d["regions_class_order"] = [1, 2, 3, 4]
        d["zept"] = zept_block if zept_block is not None else {
            "organs": ["liver", "kidney_right", "kidney_left"], "tumours": {"liver_tumour": {"host": ["liver"]}}}
        return d
    d["zept"] = zept_block if zept_block is not None else {
        "organs": ["liver", "kidney_right", "kidney_left"],
        "tumours": {"liver_tumour": {"host": ["liver"]},
                    "kidney_tumour": {"host": ["kidney_right", "kidney_left"], "zero_shot": True}},
    }
    return d


def make_dataset(raw_root: str, dataset_id: int = 501, name: str = "ZePTTiny", num_train: int = 8,
                 num_test: int = 3, seed: int = 0, prefixes: Optional[List[str]] = None,
                 zept_block: Optional[Dict] = None, spacing=(1.5, 1.5, 1.5), zero_shot: bool = True,
                 tumour_in_every_case: bool = False) -> str:
    rng = np.random.RandomState(seed)
    folder = os.path.join(raw_root, f"Dataset{dataset_id:03d}_{name}")
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for i in range(num_train):
        prefix = prefixes[i % len(prefixes)] if prefixes else "case"
        img, seg = make_case(rng, liver_tumour=tumour_in_every_case or (i % 2 == 0))
        _write(img, os.path.join(folder, "imagesTr", f"{prefix}_{i:03d}_0000.nii.gz"), spacing, np.float32)
        _write(seg, os.path.join(folder, "labelsTr", f"{prefix}_{i:03d}.nii.gz"), spacing, np.uint8)
    for i in range(num_test):
        img, seg = make_case(rng, liver_tumour=(i == 0), kidney_tumour=zero_shot and (i == 1))
        _write(img, os.path.join(folder, "imagesTs", f"test_{i:03d}_0000.nii.gz"), spacing, np.float32)
        _write(seg, os.path.join(folder, "labelsTs", f"test_{i:03d}.nii.gz"), spacing, np.uint8)
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json(num_train, zept_block, zero_shot), f, indent=2)
    return folder
