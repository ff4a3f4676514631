"""A tumour-agnostic zero-shot score for the plain nnU-Net baseline.

The baseline has one sigmoid channel per class like ZePT, but its zero-shot tumour channels
were trained on negatives only (those types never occur in training labels), so their
probabilities say nothing.  The fairest zero-shot reading of a plain network is "anything that
looks like a tumour it knows": per voxel, the highest probability over its seen tumour
channels.  This module writes a copy of a prediction folder in which every zero-shot channel
holds that score; the evaluation's host-organ restriction then turns it into a per-type score
(liver metastasis = tumour-like voxels in or near the liver, and so on).

The label maps are copied unchanged: they cannot hold overlapping tumour labels, so the DSC of
the baseline's zero-shot types stays that of its own (never trained) channels.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

PROBABILITY_KEY = "probabilities"


def tumour_agnostic_copy(prediction_folder: Path, output_folder: Path, seen_channels: Sequence[int],
                         zero_shot_channels: Sequence[int], file_ending: str = ".nii.gz") -> int:
    """Copy `prediction_folder` (nnUNetv2_predict --save_probabilities output of a region model)
    to `output_folder`, replacing each zero-shot channel of every `<case>.npz` with the voxel-wise
    maximum of the seen tumour channels.  Channels are indices into the probability array
    ([C, z, y, x], one channel per dataset.json label without background).  Returns the number
    of cases written."""
    prediction_folder, output_folder = Path(prediction_folder), Path(output_folder)
    if not seen_channels:
        raise ValueError("the tumour-agnostic score needs at least one seen tumour channel")
    output_folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for npz in sorted(prediction_folder.glob("*.npz")):
        case = npz.name[: -len(".npz")]
        label_file = prediction_folder / (case + file_ending)
        if not label_file.is_file():
            raise FileNotFoundError(f"{npz} has no label map {label_file.name} beside it; is {prediction_folder} "
                                    "an nnUNetv2_predict output folder?")
        with np.load(npz, allow_pickle=False) as f:
            if PROBABILITY_KEY not in f:
                raise KeyError(f"{npz} holds no {PROBABILITY_KEY!r} array (keys: {list(f.keys())})")
            probs = np.array(f[PROBABILITY_KEY])
        channels = list(seen_channels) + list(zero_shot_channels)
        if probs.ndim != 4 or max(channels) >= probs.shape[0]:
            raise ValueError(f"{npz}: probabilities of shape {probs.shape} do not have channels {channels}")
        agnostic = probs[list(seen_channels)].max(axis=0)
        for c in zero_shot_channels:
            probs[c] = agnostic
        np.savez_compressed(output_folder / npz.name, **{PROBABILITY_KEY: probs})
        shutil.copy2(label_file, output_folder / label_file.name)
        n += 1
    if n == 0:
        raise FileNotFoundError(f"no <case>.npz files in {prediction_folder}; predict with --save_probabilities")
    return n
