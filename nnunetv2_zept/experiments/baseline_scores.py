"""A tumour-agnostic zero-shot score for the plain nnU-Net baselines.

A baseline has one sigmoid channel per class like ZePT, but its zero-shot tumour channels were
trained on negatives only (those types never occur in training labels), so their probabilities
say nothing.  The fairest zero-shot reading of a plain network is "anything that looks like a
tumour it knows": per voxel, the highest probability over its seen tumour channels.  This module
writes a copy of a prediction folder in which every zero-shot channel holds that score inside the
type's host-organ region, built exactly as the ZePT network builds it (predicted host organs with
their cavities filled, grown by the same number of mm; `architectures.self_prompt.host_regions`,
with the score lowered by ZePT's tumour_shell_margin in the region's outer shell), and ZePT's floor
(probability sigmoid(-30)) outside it.  Baseline and ZePT are then read the
same way: liver metastasis = tumour-like voxels in or near the liver, and so on.

Organs and seen types are evaluated on the baseline's own prediction folder, only the zero-shot
types on the copy (`with_zero_shot_from`).  The copy's label maps are repainted the way nnU-Net
exports region predictions: every channel's voxels
with probability > 0.5 get its label, in `regions_class_order`, later regions over earlier ones,
so a zero-shot type's label covers the tumour-like voxels inside its predicted host organ and its
DSC is measured exactly as ZePT's is.  The prediction folder itself is never changed.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunetv2_zept.architectures.config import DEFAULT_SWITCHES

PROBABILITY_KEY = "probabilities"
FLOOR = float(1.0 / (1.0 + np.exp(30.0)))   # ZePT's logit clamp -30 outside a zero-shot type's region


def tumour_agnostic_copy(prediction_folder: Path, output_folder: Path, dataset_json: dict,
                         growth_mm: float = DEFAULT_SWITCHES["tumour_growth_mm"],
                         shell_margin: float = DEFAULT_SWITCHES["tumour_shell_margin"]) -> int:
    """Copy `prediction_folder` (nnUNetv2_predict --save_probabilities output of a region model of
    `dataset_json`) to `output_folder` with every zero-shot channel of each `<case>.npz` replaced by
    the voxel-wise maximum of the seen tumour channels inside that type's host-organ region (grown
    by `growth_mm`, ZePT's default).  Returns the number of cases written.  `output_folder` is written
    completely or not at all (a `.partial` folder renamed at the end)."""
    import SimpleITK as sitk

    from nnunetv2_zept.roles import roles_from_dataset_json

    prediction_folder, output_folder = Path(prediction_folder), Path(output_folder)
    roles = roles_from_dataset_json(dataset_json)
    if not roles.seen_tumours:
        raise ValueError("the tumour-agnostic score needs at least one seen tumour channel")
    ending = dataset_json.get("file_ending", ".nii.gz")
    order = paint_order(dataset_json)
    tmp = output_folder.with_name(output_folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    n = 0
    for npz in sorted(prediction_folder.glob("*.npz")):
        case = npz.name[: -len(".npz")]
        label_file = prediction_folder / (case + ending)
        if not label_file.is_file():
            shutil.rmtree(tmp)
            raise FileNotFoundError(f"{npz} has no label map {label_file.name} beside it; is {prediction_folder} "
                                    "an nnUNetv2_predict output folder?")
        with np.load(npz, allow_pickle=False) as f:
            if PROBABILITY_KEY not in f:
                shutil.rmtree(tmp)
                raise KeyError(f"{npz} holds no {PROBABILITY_KEY!r} array (keys: {list(f.keys())})")
            probs = np.array(f[PROBABILITY_KEY])
        if probs.ndim != 4 or probs.shape[0] != roles.num_channels:
            shutil.rmtree(tmp)
            raise ValueError(f"{npz}: probabilities of shape {probs.shape}, expected {roles.num_channels} channels")
        image = sitk.ReadImage(str(label_file))
        agnostic = probs[list(roles.seen_tumours)].max(axis=0)
        regions, shells = zero_shot_regions(probs, roles, image.GetSpacing()[::-1], growth_mm, with_shells=True)
        in_shell = lowered_by(agnostic, shell_margin)
        for c, region, shell in zip(roles.zero_shot, regions, shells):
            probs[c] = np.where(region, np.where(shell, in_shell, agnostic), FLOOR)
        np.savez_compressed(tmp / npz.name, **{PROBABILITY_KEY: probs})
        seg = paint_regions(probs, order, sitk.GetArrayFromImage(image).dtype)
        if seg.shape != sitk.GetArrayFromImage(image).shape:
            shutil.rmtree(tmp)
            raise ValueError(f"{npz}: probabilities of spatial shape {seg.shape} do not match {label_file.name}")
        out = sitk.GetImageFromArray(seg)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(tmp / label_file.name), True)
        for extra in (prediction_folder / (case + ".pkl"),):
            if extra.is_file():
                shutil.copy2(extra, tmp / extra.name)
        n += 1
    if n == 0:
        shutil.rmtree(tmp)
        raise FileNotFoundError(f"no <case>.npz files in {prediction_folder}; predict with --save_probabilities")
    if output_folder.exists():
        shutil.rmtree(output_folder)
    tmp.rename(output_folder)
    return n


def with_zero_shot_from(summary: dict, zero_shot_summary: dict, zero_shot_names) -> dict:
    """A baseline's evaluation (`evaluate_folder` summary) of its own prediction folder, with the
    zero-shot types' numbers taken from the evaluation of its tumour-agnostic copy.

    The copy's label maps cannot hold two tumour labels in one voxel: in an organ that hosts a seen
    and a zero-shot type (the liver) the zero-shot label paints over the baseline's seen tumours, so
    organs and seen types are read from the baseline's own label maps and only the zero-shot types
    from the copy."""
    names = set(zero_shot_names)
    merged = dict(summary)
    merged["per_class"] = {k: (zero_shot_summary["per_class"][k] if k in names else v)
                           for k, v in summary["per_class"].items()}
    if "groups" in summary and "zero_shot_tumours" in zero_shot_summary.get("groups", {}):
        merged["groups"] = dict(summary["groups"], zero_shot_tumours=zero_shot_summary["groups"]["zero_shot_tumours"])
    if "per_case" in summary:
        if list(summary["per_case"]) != list(zero_shot_summary["per_case"]):
            raise ValueError("the two evaluations of one baseline cover different cases")
        merged["per_case"] = {c: {k: (zero_shot_summary["per_case"][c][k] if k in names else v)
                                  for k, v in row.items()}
                              for c, row in summary["per_case"].items()}
    return merged


def zero_shot_regions(probs: np.ndarray, roles, spacing_zyx, growth_mm: float, with_shells: bool = False):
    """bool [len(roles.zero_shot), *s]: each zero-shot type's host region from region probabilities
    [C, *s], as the ZePT network restricts its zero-shot channels at full resolution; with_shells:
    (regions, their outer shells) instead."""
    import torch

    from nnunetv2_zept.architectures.self_prompt import host_regions, level_radius, outer_shell

    organ_pos = {c: i for i, c in enumerate(roles.organs)}
    logits = torch.from_numpy(probs[list(roles.organs)].astype(np.float32))[None] - 0.5   # > 0 where p > 0.5
    sets = [[organ_pos[h] for h in roles.hosts[z]] for z in roles.zero_shot]
    radius = level_radius(growth_mm, spacing_zyx, (1,) * (probs.ndim - 1))
    regions = host_regions(logits, sets, radius)
    if not with_shells:
        return regions[0].numpy()
    return regions[0].numpy(), outer_shell(regions, radius)[0].numpy()


def lowered_by(p: np.ndarray, margin: float) -> np.ndarray:
    """Probabilities whose logit is lowered by `margin` (never below ZePT's floor)."""
    q = np.clip(p.astype(np.float64), FLOOR, 1.0 - 1e-12)
    logit = np.log(q) - np.log1p(-q) - float(margin)
    return np.maximum(1.0 / (1.0 + np.exp(-logit)), FLOOR).astype(p.dtype)


def paint_order(dataset_json: dict) -> Sequence[tuple]:
    """(channel, label value) in the order nnU-Net paints region channels into a label map."""
    names = [n for n in dataset_json["labels"] if n not in ("background", "ignore")]
    order = dataset_json.get("regions_class_order")
    if order is None:
        order = [v if isinstance(v, int) else v[0] for v in (dataset_json["labels"][n] for n in names)]
    return list(enumerate(int(v) for v in order))


def paint_regions(probs: np.ndarray, order: Sequence[tuple], dtype=np.uint8) -> np.ndarray:
    """Label map of region probabilities [C, *s]: channel c's voxels with p > 0.5 get its label,
    in the given order (later channels over earlier ones), as nnU-Net's region export does."""
    seg = np.zeros(probs.shape[1:], dtype=dtype)
    for c, value in order:
        seg[probs[c] > 0.5] = value
    return seg
