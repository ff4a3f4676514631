"""Per-case findings: class volumes, tumour-presence scores and lesions, anomaly-map summary.

Scores and lesions come from `nnunetv2_zept.tumour_score` (defined once for prediction and
evaluation).  Host organs are the predicted organ regions (probability >= 0.5); in ZePT region
datasets an organ region already contains the tumours inside it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from nnunetv2_zept.roles import ClassRoles, ZePTConfigError, roles_from_dataset_json
from nnunetv2_zept.tumour_score import (ImageGeometry, TumourScoreSettings, extract_lesions, host_region,
                                        tumour_presence_score)


def roles_for_model(plans: dict, configuration: str, dataset_json: dict) -> Tuple[Optional[ClassRoles], str]:
    """Class roles of a model: those the ZePT trainer stored in plans.json, else read from
    dataset.json.  (None, reason) when the model's classes have no tumour/organ roles."""
    zept = plans.get("configurations", {}).get(configuration, {}).get("zept")
    if isinstance(zept, dict) and "roles" in zept:
        return ClassRoles.from_dict(zept["roles"]), "class roles from the model's plans.json (ZePT trainer)"
    try:
        roles = roles_from_dataset_json(dataset_json)
    except ZePTConfigError as e:
        return None, f"no tumour scores: the model's classes have no organ/tumour roles ({e})"
    return roles, ("class roles from the model's dataset.json `zept` block" if not roles.inferred else
                   "class roles inferred from class names (no `zept` block in dataset.json)")


def _channel(prob_names: List[str], name: str) -> int:
    return prob_names.index(name)


def class_volumes(probabilities: np.ndarray, prob_names: List[str], voxel_ml: float) -> Dict[str, float]:
    """Volume (mL) of each channel's predicted region (p >= 0.5), background excluded."""
    return {n: float(np.count_nonzero(probabilities[i] >= 0.5) * voxel_ml)
            for i, n in enumerate(prob_names) if n != "background"}


def tumour_findings(probabilities: np.ndarray, prob_names: List[str], roles: ClassRoles, has_regions: bool,
                    image: sitk.Image, settings: TumourScoreSettings) -> Dict[str, dict]:
    """Per tumour class (seen and zero-shot): presence score and lesions."""
    geometry = ImageGeometry.from_sitk(image)
    out = {}
    for t in roles.tumours:
        tname = roles.names[t]
        prob = probabilities[_channel(prob_names, tname)]
        host_names = [roles.names[h] for h in roles.hosts.get(t, [])]
        host_masks = {}
        for hn in host_names:
            m = probabilities[_channel(prob_names, hn)] >= settings.host_threshold
            if not has_regions:   # softmax labels: the organ label excludes its tumours
                m = m | (prob >= settings.threshold)
            host_masks[hn] = m
        union = np.zeros(prob.shape, dtype=bool)
        for m in host_masks.values():
            union |= m
        region = host_region(union, geometry.spacing, settings)
        score = tumour_presence_score(prob, union, geometry.spacing, settings, region=region)
        lesions = extract_lesions(prob, host_masks, geometry, settings) if host_masks else []
        out[tname] = {
            "zero_shot": t in roles.zero_shot,
            "host_organs": host_names,
            "host_organ_found": bool(union.any()),
            "presence_score": float(score),
            "tumour_detected": bool(len(lesions) > 0),
            "lesions": [lesion_dict(les) for les in lesions],
        }
    return out


def lesion_dict(lesion) -> dict:
    d = lesion.to_dict()
    return {
        "rank": d["rank"], "volume_ml": round(d["volume_ml"], 4), "core_volume_ml": round(d["core_volume_ml"], 4),
        "centre_mm": [round(c, 2) for c in d["centre_mm"]],
        "centre_voxel_xyz": [round(c, 2) for c in d["centre_voxel"][::-1]],
        "highest_probability": round(d["max_probability"], 4), "mean_probability": round(d["mean_probability"], 4),
        "host_organ": d["host"], "n_voxels": d["n_voxels"],
    }


def anomaly_findings(anomaly: np.ndarray, probabilities: np.ndarray, prob_names: List[str],
                     roles: Optional[ClassRoles], image: sitk.Image, settings: TumourScoreSettings) -> dict:
    """Summary of the anomaly map: overall, and inside each predicted organ (highest value and
    volume of tissue with anomaly >= 0.5), a tumour-type-agnostic hint where to look."""
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    high = anomaly >= 0.5
    out = {"max": float(anomaly.max(initial=0.0)), "mean": float(anomaly.mean()) if anomaly.size else 0.0,
           "volume_ml_above_0.5": float(np.count_nonzero(high) * voxel_ml)}
    if roles is not None:
        per_organ = {}
        for o in roles.organs:
            mask = probabilities[_channel(prob_names, roles.names[o])] >= settings.host_threshold
            per_organ[roles.names[o]] = {
                "max": float(anomaly[mask].max(initial=0.0)),
                "volume_ml_above_0.5": float(np.count_nonzero(high & mask) * voxel_ml)}
        out["per_organ"] = per_organ
    return out
