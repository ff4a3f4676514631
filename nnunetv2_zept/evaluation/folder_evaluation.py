"""Evaluation of a folder of `nnUNetv2_predict --save_probabilities` outputs against reference labels.

Per case and class: organs get DSC and NSD; tumour types additionally get voxel AUROC and
FPR95 over the body and over the host-organ region, and the case tumour-presence score
(`nnunetv2_zept.tumour_score`) used for case-level detection AUROC.  Classes are aggregated per
class and per group (organs, seen tumours, zero-shot tumours).  Cases are processed one at a
time; voxel ROC statistics are pooled in fixed-bin histograms (see histogram_roc.py), so memory
does not grow with the number of cases.
"""
from __future__ import annotations

import math
import os
import time
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from nnunetv2_zept.evaluation.case_io import (EvaluationInputError, check_label_values, match_cases,
                                              read_label_map, read_probability_channels)
from nnunetv2_zept.evaluation.histogram_roc import DEFAULT_BINS, LOGIT_RANGE, RocHistogram
from nnunetv2_zept.evaluation.mask_ops import body_mask_from_ct, bounding_box, margin_in_voxels, within_mm
from nnunetv2_zept.evaluation.overlap import dice, normalised_surface_distance
from nnunetv2_zept.evaluation.tolerances import DEFAULT_TOLERANCE_MM, resolve_tolerances
from nnunetv2_zept.input_checks import InputCheckError, check_image_file, read_json
from nnunetv2_zept.roles import ClassRoles, channel_names, is_region_based, roles_from_dataset_json
from nnunetv2_zept.tumour_score import ImageGeometry, TumourScoreSettings, host_region, tumour_presence_score

SUMMARY_FILES = ("summary.json", "summary.md")
BODY_THRESHOLD_HU = -500.0
TARGET_TPR = 0.95


def _label_ids(value) -> List[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _nanmean(values) -> float:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else float("nan")


def evaluated_channels(roles: ClassRoles, case_id: str) -> List[int]:
    """Classes whose reference is annotated in this case: the `annotates` list of the matching
    `zept.sources` or `zept.test_sources` entry (zero-shot tumours included: test labels hold
    them), else all classes."""
    for s in list(roles.sources) + list(roles.test_sources):
        if s.matches(case_id):
            return sorted(s.annotates)
    return list(range(roles.num_channels))


def _isin(array: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    # one comparison per id: np.isin may sort the whole volume (several int64 copies of it)
    mask = array == ids[0]
    for i in ids[1:]:
        mask |= array == i
    return mask


def _load_dataset_json(dataset_json: Union[str, Mapping]) -> dict:
    if isinstance(dataset_json, Mapping):
        return dict(dataset_json)
    try:
        data = read_json(dataset_json, "dataset.json")
    except InputCheckError as e:
        raise EvaluationInputError(str(e)) from None
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
        raise EvaluationInputError(f"dataset.json {dataset_json!r} has no `labels` object; pass the dataset.json of "
                                   "the model's dataset (-djfile)")
    return data


def check_same_geometry(geo, geo_other, case: str, what: str, whose: str = "reference") -> None:
    """Spacing, origin and direction must agree: a prediction on another grid (flipped axis,
    shifted origin) has the same array shape and would be scored voxel by voxel against the wrong
    anatomy.  Tolerances allow for NIfTI's float32 header."""
    for name, a, b, atol in (("spacing", geo.spacing[::-1], geo_other.spacing[::-1], 1e-4),
                             ("origin", geo.origin, geo_other.origin, 1e-2),
                             ("direction", geo.direction, geo_other.direction, 1e-4)):
        if not np.allclose(a, b, rtol=1e-3 if name == "spacing" else 0.0, atol=atol):
            raise EvaluationInputError(
                f"case {case!r}: {what} {name} {tuple(round(float(v), 4) for v in b)} != {whose} {name} "
                f"{tuple(round(float(v), 4) for v in a)}; it lies on another voxel grid (flipped or shifted axes), so "
                f"voxels would be compared with the wrong anatomy. Predict from the images that belong to these "
                f"labels, or resample the {what} onto the {whose} grid")


def _check_output_folder(output_folder: str, overwrite: bool) -> None:
    if os.path.isfile(output_folder):
        raise EvaluationInputError(f"output folder {output_folder!r} is a file")
    existing = [f for f in SUMMARY_FILES if os.path.exists(os.path.join(output_folder, f))]
    if existing and not overwrite:
        raise EvaluationInputError(f"{output_folder!r} already holds {existing}; choose another output folder or "
                                   "pass overwrite=True (--overwrite) to replace the earlier evaluation")


def evaluate_folder(reference_folder: str, prediction_folder: str, dataset_json: Union[str, Mapping],
                    output_folder: Optional[str] = None, case_ids: Optional[Sequence[str]] = None,
                    tolerances_mm: Optional[Mapping[str, float]] = None,
                    default_tolerance_mm: float = DEFAULT_TOLERANCE_MM, n_bins: int = DEFAULT_BINS,
                    score_settings: Optional[TumourScoreSettings] = None, overwrite: bool = False,
                    plots: bool = True, verbose: bool = False, images_folder: Optional[str] = None,
                    body_threshold_hu: float = BODY_THRESHOLD_HU, case_histograms: Optional[dict] = None) -> dict:
    """Evaluate predictions against references; return the summary dict (also written as
    summary.json, summary.md and roc_<tumour>.png into `output_folder` when given).

    reference_folder: label maps `<case><file_ending>` (labelsTr/labelsTs style).
    prediction_folder: `<case><file_ending>` + `<case>.npz` from nnUNetv2_predict --save_probabilities.
    dataset_json: path or dict of the dataset (its `labels`, `file_ending` and optional `zept` block).
    tolerances_mm: NSD tolerance per class name (others: MSD defaults, else default_tolerance_mm).
    score_settings: tumour-score / host-region settings (host margin is also used for voxel AUROC).
    images_folder: optional CT images `<case>_0000<file_ending>` (imagesTs); when given, the
    "body" region of the voxel AUROC is the body mask (HU > body_threshold_hu, largest component,
    holes filled per slice) instead of the whole volume.
    case_histograms: if a dict is given, it receives case -> tumour name -> {"body": RocHistogram,
    "host": RocHistogram} of every case (for resampling cases, e.g. bootstrap confidence intervals).
    """
    t0 = time.time()
    dj = _load_dataset_json(dataset_json)
    roles = roles_from_dataset_json(dj)
    names = channel_names(dj)
    ids = {c: _label_ids(dj["labels"][n]) for c, n in enumerate(names)}
    ignore_id = dj["labels"].get("ignore")
    allowed = {0} | {i for v in ids.values() for i in v} | ({int(ignore_id)} if ignore_id is not None else set())
    region_based = is_region_based(dj)
    channel_offset = 0 if region_based else 1     # softmax outputs carry background as channel 0
    n_prob_channels = len(names) + channel_offset
    file_ending = dj.get("file_ending", ".nii.gz")
    settings = score_settings or TumourScoreSettings()
    tolerances = resolve_tolerances(names, tolerances_mm, default_tolerance_mm)
    if output_folder is not None:
        _check_output_folder(output_folder, overwrite)

    cases, unpredicted = match_cases(reference_folder, prediction_folder, file_ending, case_ids)
    per_case: Dict[str, dict] = {}
    pooled = {t: {"body": RocHistogram(n_bins), "host": RocHistogram(n_bins)} for t in roles.tumours}
    detection = {t: {"scores": [], "labels": [], "cases": []} for t in roles.tumours}

    for n_done, case in enumerate(cases, start=1):
        tc = time.time()
        per_case[case] = _evaluate_case(case, reference_folder, prediction_folder, file_ending, roles, names, ids,
                                        ignore_id, allowed, channel_offset, n_prob_channels, tolerances, settings,
                                        pooled, detection, n_bins, images_folder, body_threshold_hu,
                                        case_histograms)
        if verbose:
            print(f"[{n_done}/{len(cases)}] {case}: {time.time() - tc:.1f} s", flush=True)

    summary = _aggregate(roles, names, cases, per_case, pooled, detection, tolerances, settings, n_bins)
    summary["unpredicted_reference_cases"] = unpredicted
    summary["settings"]["body_region"] = (f"CT body mask (HU > {body_threshold_hu:g}, largest component, holes filled "
                                          "per slice)" if images_folder else "whole image volume")
    summary["inputs"] = {"reference_folder": os.path.abspath(reference_folder),
                         "images_folder": os.path.abspath(images_folder) if images_folder else None,
                         "prediction_folder": os.path.abspath(prediction_folder),
                         "file_ending": file_ending, "region_based": region_based}
    summary["runtime_s"] = round(time.time() - t0, 2)
    if output_folder is not None:
        from nnunetv2_zept.evaluation.report import write_outputs

        write_outputs(summary, output_folder, curves=_curves(roles, names, pooled, detection) if plots else None)
    return summary


def _evaluate_case(case, reference_folder, prediction_folder, file_ending, roles, names, ids, ignore_id, allowed,
                   channel_offset, n_prob_channels, tolerances, settings, pooled, detection, n_bins,
                   images_folder=None, body_threshold_hu=BODY_THRESHOLD_HU, case_histograms=None) -> dict:
    ref, geo = read_label_map(os.path.join(reference_folder, case + file_ending), case, "reference")
    pred, geo_p = read_label_map(os.path.join(prediction_folder, case + file_ending), case, "prediction")
    if ref.shape != pred.shape:
        raise EvaluationInputError(f"case {case!r}: prediction shape {pred.shape} != reference shape {ref.shape} "
                                   "(array order z, y, x); the prediction does not belong to this reference")
    check_same_geometry(geo, geo_p, case, "prediction")
    check_label_values(ref, allowed, case, "reference")
    check_label_values(pred, allowed, case, "prediction")
    spacing = geo.spacing
    ignore = (ref == int(ignore_id)) if ignore_id is not None else None
    valid = ~ignore if ignore is not None else None
    body = _body_mask(images_folder, case, file_ending, ref.shape, body_threshold_hu, geo) if images_folder else None
    body_valid = body if valid is None else (valid if body is None else body & valid)
    evaluated = evaluated_channels(roles, case)
    result: Dict[str, dict] = {}

    for c in evaluated:
        r = _isin(ref, ids[c])
        p = _isin(pred, ids[c])
        if ignore is not None:
            r &= valid
            p &= valid
        result[names[c]] = {"DSC": dice(r, p), "NSD": normalised_surface_distance(r, p, spacing, tolerances[names[c]]),
                            "n_reference_voxels": int(np.count_nonzero(r)),
                            "n_predicted_voxels": int(np.count_nonzero(p))}

    del pred          # the probabilities below are the big arrays; the label map is done with
    tumours = [t for t in roles.tumours if t in evaluated]
    if not tumours:
        return result
    # tumour channels as float32; host-only channels straight to bool masks while streaming
    host_channels = sorted({h for t in tumours for h in roles.hosts[t]})
    probs = read_probability_channels(
        os.path.join(prediction_folder, case + ".npz"), [t + channel_offset for t in tumours], n_prob_channels,
        ref.shape, case, mask_thresholds={h + channel_offset: settings.host_threshold
                                          for h in host_channels if h not in tumours})
    probs = {c - channel_offset: v for c, v in probs.items()}
    host_masks = {h: (probs.pop(h) if h not in tumours else probs[h] >= settings.host_threshold)
                  for h in host_channels}

    for t in tumours:
        p_t = probs[t]
        ref_t = _isin(ref, ids[t])
        if ignore is not None:
            ref_t &= valid
        entry = result[names[t]]
        pred_host = np.zeros(ref.shape, dtype=bool)
        for h in roles.hosts[t]:
            pred_host |= host_masks[h]
        hr = host_region(pred_host, spacing, settings)
        entry["tumour_present"] = bool(ref_t.any())
        entry["tumour_score"] = tumour_presence_score(p_t, pred_host, spacing, settings, region=hr)
        del pred_host
        entry["detected"] = bool(entry["tumour_score"] >= settings.threshold)
        detection[t]["scores"].append(entry["tumour_score"])
        detection[t]["labels"].append(int(entry["tumour_present"]))
        detection[t]["cases"].append(case)

        h_body = RocHistogram(n_bins).add(p_t, ref_t, region=body_valid)
        entry["body_region_source"] = "image" if body is not None else "volume"
        # host region: dilated reference host (with the tumour, which lies in it by definition)
        # where the case annotates a non-empty host; else the predicted host region of the score
        # (built inside its bounding box only: the region is empty outside it, so this is exact)
        annotated_hosts = [h for h in roles.hosts[t] if h in evaluated]
        ref_host = ref_t.copy()
        for h in annotated_hosts:
            ref_host |= _isin(ref, ids[h])
        # grown by host_margin_mm exactly, at any spacing: the voxel metric's region is a definition,
        # not one of the score's grid rules (which are tuned for case detection)
        box = bounding_box(ref_host, margin_in_voxels(settings.host_margin_mm, spacing))
        if annotated_hosts and box is not None and ref_host[box].sum() > ref_t[box].sum():
            region = within_mm(ref_host[box], spacing, settings.host_margin_mm)
            entry["host_region_source"] = "reference"
        elif hr is not None:
            box, region = hr.box, hr.region.copy()
            entry["host_region_source"] = "prediction"
        else:
            box, region = (slice(0, 0),) * 3, np.zeros((0, 0, 0), dtype=bool)
            entry["host_region_source"] = "prediction"
        del ref_host
        if valid is not None:
            region &= valid[box]
        h_host = RocHistogram(n_bins).add(p_t[box], ref_t[box], region=region)
        for key, h in (("body", h_body), ("host", h_host)):
            entry[f"AUROC_{key}"] = h.auroc()
            entry[f"FPR95_{key}"] = h.fpr_at_tpr(TARGET_TPR)
            pooled[t][key] += h
        if case_histograms is not None:
            case_histograms.setdefault(case, {})[names[t]] = {"body": h_body, "host": h_host}
        entry["host_region_voxels"] = int(np.count_nonzero(region))
    return result


def _body_mask(images_folder, case, file_ending, shape, threshold_hu, geometry) -> np.ndarray:
    import SimpleITK as sitk

    path = os.path.join(images_folder, f"{case}_0000{file_ending}")
    if not os.path.isfile(path):
        raise EvaluationInputError(f"case {case!r}: no CT image {case}_0000{file_ending} in {images_folder!r} for the "
                                   "body mask; pass the imagesTs folder of these cases or leave out --images")
    try:
        check_image_file(path)
    except InputCheckError as e:
        raise EvaluationInputError(f"case {case!r}: image {e}") from None
    image = sitk.ReadImage(path)
    array = sitk.GetArrayFromImage(image)
    if array.shape != tuple(shape):
        raise EvaluationInputError(f"case {case!r}: image {path!r} has shape {array.shape} but the labels have {tuple(shape)}")
    check_same_geometry(geometry, ImageGeometry.from_sitk(image), case, "image", "label")
    return body_mask_from_ct(array, threshold_hu)


def _detection_summary(scores, labels, threshold) -> dict:
    from sklearn.metrics import roc_auc_score

    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    n_pos, n_neg = int(labels.sum()), int((1 - labels).sum())
    auc = float(roc_auc_score(labels, scores)) if n_pos and n_neg else float("nan")
    hit = scores >= threshold
    tp, fp = int(np.sum(hit & (labels == 1))), int(np.sum(hit & (labels == 0)))
    fn, tn = n_pos - tp, n_neg - fp
    return {"AUROC": auc, "n_positive_cases": n_pos, "n_negative_cases": n_neg, "threshold": threshold,
            "TP": tp, "FP": fp, "FN": fn, "TN": tn,
            "sensitivity": tp / n_pos if n_pos else float("nan"),
            "specificity": tn / n_neg if n_neg else float("nan")}


def _aggregate(roles, names, cases, per_case, pooled, detection, tolerances, settings, n_bins) -> dict:
    per_class = {}
    for c, name in enumerate(names):
        rows = [per_case[k][name] for k in cases if name in per_case[k]]
        role = ("organ" if c in roles.organs else "zero_shot_tumour" if c in roles.zero_shot else "seen_tumour")
        entry = {"role": role, "n_cases": len(rows), "NSD_tolerance_mm": tolerances[name],
                 "DSC": _nanmean([r["DSC"] for r in rows]), "NSD": _nanmean([r["NSD"] for r in rows]),
                 "n_cases_with_reference": sum(1 for r in rows if r["n_reference_voxels"] > 0)}
        if c in roles.tumours:
            with_tumour = [r for r in rows if r["n_reference_voxels"] > 0]
            entry["DSC_tumour_cases"] = _nanmean([r["DSC"] for r in with_tumour])
            entry["NSD_tumour_cases"] = _nanmean([r["NSD"] for r in with_tumour])
            entry["hosts"] = [names[h] for h in roles.hosts[c]]
            for key in ("body", "host"):
                entry[f"voxel_{key}"] = dict(pooled[c][key].summary(TARGET_TPR),
                                             AUROC_case_mean=_nanmean([r.get(f"AUROC_{key}") for r in rows]),
                                             FPR95_case_mean=_nanmean([r.get(f"FPR95_{key}") for r in rows]))
            entry["detection"] = _detection_summary(detection[c]["scores"], detection[c]["labels"], settings.threshold)
        per_class[name] = entry

    def group(members, keys):
        out = {"classes": [names[m] for m in members]}
        for k in keys:
            out[k] = _nanmean([_get(per_class[names[m]], k) for m in members])
        return out

    tumour_keys = ["DSC", "DSC_tumour_cases", "NSD", "NSD_tumour_cases", "voxel_body.AUROC", "voxel_body.FPR95",
                   "voxel_body.AUROC_case_mean", "voxel_host.AUROC", "voxel_host.FPR95", "voxel_host.AUROC_case_mean",
                   "detection.AUROC"]
    groups = {"organs": group(roles.organs, ["DSC", "NSD"]),
              "seen_tumours": group(roles.seen_tumours, tumour_keys),
              "zero_shot_tumours": group(roles.zero_shot, tumour_keys)}
    return {"cases": list(cases), "per_class": per_class, "groups": groups, "per_case": per_case,
            "settings": {"n_bins": n_bins, "histogram_logit_bin_width": 2 * LOGIT_RANGE / n_bins, "target_tpr": TARGET_TPR,
                         "nsd_tolerances_mm": tolerances, "tumour_score": settings.to_dict(),
                         "dsc_convention": "NaN when reference and prediction are both empty (left out of means); "
                                           "0 when only one is empty"}}


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part, float("nan")) if isinstance(d, dict) else float("nan")
    return d


def _curves(roles, names, pooled, detection) -> dict:
    curves = {}
    for t in roles.tumours:
        det = detection[t]
        case_curve = None
        if len(set(det["labels"])) == 2:
            from sklearn.metrics import roc_curve

            fpr, tpr, _ = roc_curve(det["labels"], det["scores"])
            case_curve = (fpr, tpr)
        curves[names[t]] = {"body": pooled[t]["body"].roc_curve()[:2], "host": pooled[t]["host"].roc_curve()[:2],
                            "case": case_curve, "zero_shot": t in roles.zero_shot}
    return curves
