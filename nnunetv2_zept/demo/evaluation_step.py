"""Evaluation of the demo's predictions: the library's `evaluate_folder` for each model, with a plain
baseline's zero-shot types read from its tumour-agnostic score (experiments/baseline_scores.py),
plus the pooled ROC curves that the report draws for all models on the same axes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Set

import numpy as np

from nnunetv2_zept.experiments.baseline_scores import PROBABILITY_KEY, tumour_agnostic_copy, with_zero_shot_from
from nnunetv2_zept.demo.figures import VoxelRocCurves, case_roc, read_label
from nnunetv2_zept.roles import channel_names, roles_from_dataset_json
from nnunetv2_zept.tumour_score import TumourScoreSettings


def _ids(value):
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def evaluate_models(raw: Path, predictions: Dict[str, Path], output: Path, baselines: Set[str] = frozenset()) -> dict:
    """Evaluate every model's prediction folder against labelsTs (the CT body mask from imagesTs);
    the models in `baselines` are plain nnU-Nets, read through their tumour-agnostic score.

    Returns {"summaries": model -> summary dict of evaluate_folder, "voxel_roc": model ->
    VoxelRocCurves, "case_roc": model -> tumour name -> (fpr, tpr, auc) or None, "roles": ClassRoles,
    "names": channel names, "folders": model -> evaluated prediction folder}."""
    from nnunetv2_zept.evaluation.folder_evaluation import evaluate_folder

    dj = json.loads((raw / "dataset.json").read_text())
    roles = roles_from_dataset_json(dj)
    names = channel_names(dj)
    settings = TumourScoreSettings()
    folders = dict(predictions)
    zero_shot_names = [names[z] for z in roles.zero_shot]

    def evaluate(folder: Path, into: Path) -> dict:
        return evaluate_folder(str(raw / "labelsTs"), str(folder), dj, str(into), score_settings=settings, plots=True,
                               images_folder=str(raw / "imagesTs"))

    summaries, voxel, cases = {}, {}, {}
    for model, folder in predictions.items():
        summaries[model] = evaluate(folder, output / model)
        if model in baselines:
            # organs and seen types from its own label maps, zero-shot types from the tumour-agnostic copy
            agnostic = folder.parent / (folder.name + "_tumour_agnostic")
            tumour_agnostic_copy(folder, agnostic, dj)
            folders[model] = agnostic
            summaries[model] = with_zero_shot_from(summaries[model], evaluate(agnostic, output / f"{model}_zero_shot"),
                                                   zero_shot_names)
    for model, folder in folders.items():
        voxel[model] = _voxel_curves(raw, folder, dj, roles, names, settings)
        cases[model] = {}
        for t in roles.tumours:
            name = names[t]
            rows = [(summaries[model]["per_case"][c][name]["tumour_score"],
                     int(summaries[model]["per_case"][c][name]["tumour_present"]))
                    for c in summaries[model]["cases"] if name in summaries[model]["per_case"][c]]
            cases[model][name] = case_roc([r[0] for r in rows], [r[1] for r in rows]) if rows else None
    return {"summaries": summaries, "voxel_roc": voxel, "case_roc": cases, "roles": roles, "names": names,
            "folders": folders, "score_settings": settings}


def _voxel_curves(raw: Path, folder: Path, dj: dict, roles, names, settings: TumourScoreSettings) -> VoxelRocCurves:
    curves = VoxelRocCurves()
    ending = dj.get("file_ending", ".nii.gz")
    tumours = {names[t]: (t, _ids(dj["labels"][names[t]])[0]) for t in roles.tumours}
    hosts = {names[t]: [i for h in roles.hosts[t] for i in _ids(dj["labels"][names[h]])] for t in roles.tumours}
    for npz in sorted(Path(folder).glob("*.npz")):
        case = npz.name[: -len(".npz")]
        ref, spacing_zyx, _ = read_label(raw / "labelsTs" / f"{case}{ending}")
        with np.load(npz, allow_pickle=False) as f:
            probs = f[PROBABILITY_KEY]
            curves.add_case(probs, ref, spacing_zyx, tumours, hosts, settings.host_margin_mm)
    return curves
