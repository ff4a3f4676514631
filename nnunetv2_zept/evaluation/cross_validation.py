"""Leaderboard-style cross-validation report of one trainer: per fold and mean ± std over folds.

Input: nnU-Net's results folder `<Trainer>__<Plans>__<configuration>/fold_X/validation` (trained
with `--npz`, or completed with `nnUNetv2_train ... --val --npz`) and nnU-Net's own `summary.json`
there; optionally, per fold, the zero-shot test predictions of that fold's model
(`nnUNetv2_predict -f X --save_probabilities` on imagesTs, into `<test predictions>/fold_X`).

Every fold is scored by `evaluate_folder` (the same code as `nnunetv2_zept evaluate`): the
validation cases against the reference labels nnU-Net validates with (`gt_segmentations` of the
preprocessed dataset), the test cases against labelsTs.  Zero-shot tumour types have no voxels in
training cases, so their columns come from the test predictions only.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from nnunetv2_zept.evaluation.case_io import EvaluationInputError
from nnunetv2_zept.evaluation.report import _fmt, json_safe
from nnunetv2_zept.roles import channel_names, roles_from_dataset_json

REPORT_FILES = ("cv_report.md", "cv_report.json", "cv_report.png")

# leaderboard columns: (key, group, metric path in the group means, split, header)
COLUMNS = [
    ("organ_DSC", "organs", "DSC", "validation", "organ DSC"),
    ("organ_NSD", "organs", "NSD", "validation", "organ NSD"),
    ("seen_DSC", "seen_tumours", "DSC_tumour_cases", "validation", "seen tumour DSC (tumour cases)"),
    ("seen_AUROC_host", "seen_tumours", "voxel_host.AUROC", "validation", "seen voxel AUROC (host)"),
    ("seen_detection_AUROC", "seen_tumours", "detection.AUROC", "validation", "seen detection AUROC"),
    ("zero_shot_AUROC_host", "zero_shot_tumours", "voxel_host.AUROC", "test", "zero-shot voxel AUROC (host)"),
    ("zero_shot_FPR95_host", "zero_shot_tumours", "voxel_host.FPR95", "test", "zero-shot FPR95 (host)"),
    ("zero_shot_DSC", "zero_shot_tumours", "DSC_tumour_cases", "test", "zero-shot DSC (tumour cases)"),
    ("zero_shot_detection_AUROC", "zero_shot_tumours", "detection.AUROC", "test", "zero-shot detection AUROC"),
]


def _get(d, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return float("nan") if d is None else float(d)


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (ddof 1) over the folds that have a value."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return {"mean": float(np.mean(vals)) if vals else float("nan"),
            "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan"), "n_folds": len(vals)}


def _pm(ms: dict, digits: int = 3) -> str:
    if ms["n_folds"] == 0:
        return "–"
    return _fmt(ms["mean"], digits) + (f" ± {_fmt(ms['std'], digits)}" if ms["n_folds"] > 1 else "")


def _region_key(key: str) -> tuple:
    return tuple(sorted(int(v) for v in re.findall(r"-?\d+", key)))


def nnunet_summary_values(summary_path: str, dataset_json: dict) -> dict:
    """nnU-Net's own validation summary.json: foreground mean Dice and Dice per class (region keys
    such as "(1, 9, 15)" mapped back to class names)."""
    with open(summary_path) as f:
        s = json.load(f)
    ids = {}
    for name in channel_names(dataset_json):
        v = dataset_json["labels"][name]
        ids[tuple(sorted(set(int(i) for i in (v if isinstance(v, (list, tuple)) else [v]))))] = name
    per_class = {}
    for key, metrics in (s.get("mean") or {}).items():
        name = ids.get(tuple(sorted(set(_region_key(key)))))
        if name is not None:
            per_class[name] = float(metrics.get("Dice", float("nan")))
    return {"foreground_mean_Dice": float((s.get("foreground_mean") or {}).get("Dice", float("nan"))),
            "per_class_Dice": per_class}


def _source_of(roles, case: str, test: bool) -> str:
    for s in (roles.test_sources if test else roles.sources):
        if s.matches(case):
            return s.name
    return "(no source)"


def _per_source(summary: dict, roles, test: bool) -> Dict[str, Dict[str, float]]:
    """Mean DSC per (source, class) over the source's cases."""
    rows: Dict[str, Dict[str, List[float]]] = {}
    for case, classes in summary["per_case"].items():
        src = _source_of(roles, case, test)
        for name, m in classes.items():
            if name in [roles.names[t] for t in roles.tumours] and not m.get("n_reference_voxels"):
                continue       # tumour DSC on cases that hold the tumour, as in the leaderboards
            rows.setdefault(src, {}).setdefault(name, []).append(m["DSC"])
    return {src: {n: float(np.nanmean(v)) if not all(math.isnan(x) for x in v) else float("nan")
                  for n, v in cls.items()} for src, cls in rows.items()}


def _check_npz(validation: str, fold: int, command_hint: str) -> None:
    preds = [f for f in os.listdir(validation) if f.endswith((".nii.gz", ".nrrd", ".mha", ".nii"))]
    missing = [f for f in preds if not os.path.isfile(os.path.join(validation, re.sub(r"\.(nii\.gz|nrrd|mha|nii)$",
                                                                                       "", f) + ".npz"))]
    if not preds:
        raise EvaluationInputError(f"fold {fold}: {validation} holds no predictions; finish the fold's training "
                                   f"(or run `{command_hint} --val --npz`)")
    if missing:
        raise EvaluationInputError(f"fold {fold}: {len(missing)} validation prediction(s) have no .npz probabilities "
                                   f"(e.g. {missing[0]}); AUROC and tumour scores need them: run "
                                   f"`{command_hint} --val --npz`")


def cross_validation_report(trainer_folder: str, folds: Optional[Sequence[int]] = None,
                            output_folder: Optional[str] = None, reference_folder: Optional[str] = None,
                            test_predictions: Optional[str] = None, test_labels: Optional[str] = None,
                            test_images: Optional[str] = None, overwrite: bool = False, plots: bool = True,
                            verbose: bool = False, **evaluate_kwargs) -> dict:
    """Evaluate the folds of one results folder and write cv_report.{md,json,png} (+ per-fold
    evaluation folders) into `output_folder` (default `<trainer_folder>/zept_cv_report`)."""
    from nnunetv2_zept.evaluation.folder_evaluation import evaluate_folder

    trainer_folder = os.path.abspath(trainer_folder)
    dj_path = os.path.join(trainer_folder, "dataset.json")
    if not os.path.isfile(dj_path):
        raise EvaluationInputError(f"{trainer_folder} is not an nnU-Net results folder (no dataset.json); pass "
                                   "<nnUNet_results>/DatasetXXX/<Trainer>__<Plans>__<configuration>")
    with open(dj_path) as f:
        dj = json.load(f)
    roles = roles_from_dataset_json(dj)
    available = sorted(int(m.group(1)) for d in os.listdir(trainer_folder)
                       if (m := re.fullmatch(r"fold_(\d+)", d)) and os.path.isdir(os.path.join(trainer_folder, d,
                                                                                              "validation")))
    folds = list(folds) if folds is not None else available
    if not folds:
        raise EvaluationInputError(f"{trainer_folder} has no fold_X/validation folder; train the folds first "
                                   "(nnUNetv2_train ... --npz)")
    missing = [f for f in folds if f not in available]
    if missing:
        raise EvaluationInputError(f"fold(s) {missing} have no validation folder in {trainer_folder} "
                                   f"(available: {available}); train them, or leave them out of -f")
    base = os.path.basename(trainer_folder)
    trainer, plans, configuration = (base.split("__") + ["?", "?", "?"])[:3]
    dataset = os.path.basename(os.path.dirname(trainer_folder))
    hint = f"nnUNetv2_train {dataset} {configuration} FOLD -tr {trainer} -p {plans}"
    if reference_folder is None:
        reference_folder = _default_reference(dataset)
    if test_predictions is not None:
        test_labels = test_labels or _default_raw(dataset, "labelsTs")
        for f in folds:
            if not os.path.isdir(os.path.join(test_predictions, f"fold_{f}")):
                raise EvaluationInputError(
                    f"no test predictions of fold {f}: {os.path.join(test_predictions, f'fold_{f}')} does not exist; "
                    f"make them with `nnUNetv2_predict -i imagesTs -o {os.path.join(test_predictions, f'fold_{f}')} "
                    f"-d {dataset} -c {configuration} -tr {trainer} -p {plans} -f {f} --save_probabilities`")
    output_folder = output_folder or os.path.join(trainer_folder, "zept_cv_report")
    existing = [f for f in REPORT_FILES if os.path.exists(os.path.join(output_folder, f))]
    if existing and not overwrite:
        raise EvaluationInputError(f"{output_folder!r} already holds {existing}; choose another output folder or "
                                   "pass --overwrite to replace the earlier report")
    for f in folds:
        _check_npz(os.path.join(trainer_folder, f"fold_{f}", "validation"), f, hint.replace("FOLD", str(f)))

    per_fold = {}
    for f in folds:
        if verbose:
            print(f"fold {f}: validation cases", flush=True)
        validation = os.path.join(trainer_folder, f"fold_{f}", "validation")
        val = evaluate_folder(reference_folder, validation, dj, os.path.join(output_folder, f"fold_{f}", "validation"),
                              overwrite=overwrite, plots=False, **evaluate_kwargs)
        entry = {"validation": val, "nnunet": None, "test": None}
        summary_json = os.path.join(validation, "summary.json")
        if os.path.isfile(summary_json):
            entry["nnunet"] = nnunet_summary_values(summary_json, dj)
        if test_predictions is not None:
            if verbose:
                print(f"fold {f}: zero-shot test cases", flush=True)
            entry["test"] = evaluate_folder(test_labels, os.path.join(test_predictions, f"fold_{f}"), dj,
                                            os.path.join(output_folder, f"fold_{f}", "test"), overwrite=overwrite,
                                            plots=False, images_folder=test_images, **evaluate_kwargs)
        per_fold[f] = entry
    report = _aggregate(per_fold, roles, dj)
    report["inputs"] = {"trainer_folder": trainer_folder, "dataset": dataset, "trainer": trainer, "plans": plans,
                        "configuration": configuration, "folds": folds,
                        "reference_folder": os.path.abspath(reference_folder),
                        "test_predictions": os.path.abspath(test_predictions) if test_predictions else None,
                        "test_labels": os.path.abspath(test_labels) if test_labels else None,
                        "test_images": os.path.abspath(test_images) if test_images else None}
    os.makedirs(output_folder, exist_ok=True)
    report["plot"] = None
    if plots:
        plot_cv_report(report, os.path.join(output_folder, "cv_report.png"))
        report["plot"] = "cv_report.png"
    with open(os.path.join(output_folder, "cv_report.json"), "w") as fh:
        json.dump(json_safe(report), fh, indent=2, allow_nan=False)
    with open(os.path.join(output_folder, "cv_report.md"), "w") as fh:
        fh.write(cv_report_markdown(report))
    return report


def _default_reference(dataset: str) -> str:
    pre = os.environ.get("nnUNet_preprocessed")
    if pre and os.path.isdir(os.path.join(pre, dataset, "gt_segmentations")):
        return os.path.join(pre, dataset, "gt_segmentations")
    raw_labels = _default_raw(dataset, "labelsTr")
    if os.path.isdir(raw_labels):
        return raw_labels
    raise EvaluationInputError(f"no reference labels for {dataset}: neither $nnUNet_preprocessed/{dataset}/"
                               f"gt_segmentations nor $nnUNet_raw/{dataset}/labelsTr exists; set the nnU-Net "
                               "environment variables or pass the labels folder with --reference")


def _default_raw(dataset: str, sub: str) -> str:
    raw = os.environ.get("nnUNet_raw")
    if not raw:
        raise EvaluationInputError(f"nnUNet_raw is not set, so {sub} of {dataset} cannot be found; export nnUNet_raw "
                                   f"or pass the folder explicitly")
    return os.path.join(raw, dataset, sub)


def _aggregate(per_fold: Mapping[int, dict], roles, dj) -> dict:
    names = roles.names
    kind = {names[c]: ("organ" if c in roles.organs else "zero_shot_tumour" if c in roles.zero_shot
                       else "seen_tumour") for c in range(len(names))}
    rows = {}
    for f, e in per_fold.items():
        row = {}
        for key, group, path, split, _ in COLUMNS:
            s = e[split]
            # group means are stored under flat dotted keys ("voxel_host.AUROC")
            value = s["groups"][group].get(path) if s is not None else None
            row[key] = float("nan") if value is None else float(value)
        row["nnunet_foreground_mean_Dice"] = e["nnunet"]["foreground_mean_Dice"] if e["nnunet"] else float("nan")
        rows[f] = row
    keys = [c[0] for c in COLUMNS] + ["nnunet_foreground_mean_Dice"]
    summary = {k: mean_std([rows[f][k] for f in rows]) for k in keys}

    per_class = {}
    for name in names:
        k = kind[name]
        split = "test" if k == "zero_shot_tumour" else "validation"
        metrics = {"DSC": "DSC", "NSD": "NSD"} if k == "organ" else {
            "DSC_tumour_cases": "DSC_tumour_cases", "AUROC_host": "voxel_host.AUROC",
            "FPR95_host": "voxel_host.FPR95", "detection_AUROC": "detection.AUROC"}
        entry = {"role": k, "split": split, "per_fold": {}, "mean_std": {}}
        for m, path in metrics.items():
            vals = {f: (_get(e[split]["per_class"].get(name, {}), path) if e[split] is not None else float("nan"))
                    for f, e in per_fold.items()}
            entry["per_fold"][m] = vals
            entry["mean_std"][m] = mean_std(list(vals.values()))
        nn = {f: (e["nnunet"]["per_class_Dice"].get(name, float("nan")) if e["nnunet"] else float("nan"))
              for f, e in per_fold.items()}
        entry["per_fold"]["nnunet_Dice"] = nn
        entry["mean_std"]["nnunet_Dice"] = mean_std(list(nn.values()))
        per_class[name] = entry

    per_source: Dict[str, Dict[str, dict]] = {}
    for split, test in (("validation", False), ("test", True)):
        collected: Dict[str, Dict[str, List[float]]] = {}
        for f, e in per_fold.items():
            if e[split] is None:
                continue
            for src, cls in _per_source(e[split], roles, test).items():
                for n, v in cls.items():
                    collected.setdefault(f"{src} ({split})", {}).setdefault(n, []).append(v)
        for src, cls in collected.items():
            per_source[src] = {n: mean_std(v) for n, v in cls.items()}
    n_cases = {f: {"validation": len(e["validation"]["cases"]), "test": len(e["test"]["cases"]) if e["test"] else 0}
               for f, e in per_fold.items()}
    return {"folds": list(per_fold), "columns": [{"key": c[0], "group": c[1], "metric": c[2], "split": c[3],
                                                  "header": c[4]} for c in COLUMNS],
            "per_fold": rows, "summary": summary, "per_class": per_class, "per_source": per_source,
            "n_cases": n_cases, "groups": {"organs": [names[c] for c in roles.organs],
                                           "seen_tumours": [names[c] for c in roles.seen_tumours],
                                           "zero_shot_tumours": [names[c] for c in roles.zero_shot]},
            "std": "sample standard deviation over folds (ddof 1); – where fewer than 2 folds have a value"}


def cv_report_markdown(report: dict) -> str:
    inp = report["inputs"]
    has_test = inp["test_predictions"] is not None
    cols = [c for c in report["columns"] if has_test or c["split"] != "test"]
    lines = [f"# Cross-validation: {inp['trainer']} ({inp['plans']}, {inp['configuration']}) on {inp['dataset']}", "",
             f"Folds {', '.join(map(str, report['folds']))}. Validation cases scored against "
             f"`{inp['reference_folder']}`" + (f"; zero-shot test cases (each fold's model on imagesTs) against "
                                              f"`{inp['test_labels']}`" if has_test else "") + ". "
             "Columns are means over the classes of a group (see the per-class table); the last row is mean ± sample "
             "std over folds. The nnU-Net column is nnU-Net's own `summary.json` (foreground mean Dice), which scores "
             "every class in every case: a class that a case's source does not annotate counts as absent there, "
             "while the ZePT columns score each class only on the cases whose source annotates it.", ""]
    if not has_test:
        lines += ["Zero-shot tumour types have no voxels in training cases, so cross-validation cannot score them; "
                  "pass the folds' test predictions (`--test-predictions`) to add the zero-shot columns.", ""]
    header = ["fold"] + [c["header"] for c in cols] + ["nnU-Net foreground Dice"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for f in report["folds"]:
        row = report["per_fold"][f]
        lines.append("| " + " | ".join([str(f)] + [_fmt(row[c["key"]]) for c in cols]
                                       + [_fmt(row["nnunet_foreground_mean_Dice"])]) + " |")
    s = report["summary"]
    lines.append("| **mean ± std** | " + " | ".join([_pm(s[c["key"]]) for c in cols]
                                                  + [_pm(s["nnunet_foreground_mean_Dice"])]) + " |")
    lines += ["", "## Per class (mean ± std over folds)", "",
              "| class | kind | scored on | DSC | NSD | voxel AUROC (host) | FPR95 (host) | detection AUROC | "
              "nnU-Net Dice |", "|---|---|---|---|---|---|---|---|---|"]
    for name, e in report["per_class"].items():
        if e["role"] == "zero_shot_tumour" and not has_test:
            continue
        m = e["mean_std"]
        dsc = m.get("DSC") or m.get("DSC_tumour_cases")
        kind = {"organ": "organ", "seen_tumour": "seen tumour", "zero_shot_tumour": "zero-shot tumour"}[e["role"]]
        empty = {"n_folds": 0}
        lines.append(f"| {name} | {kind} | {e['split']} | {_pm(dsc)} | {_pm(m.get('NSD', empty))} | "
                     f"{_pm(m.get('AUROC_host', empty))} | {_pm(m.get('FPR95_host', empty))} | "
                     f"{_pm(m.get('detection_AUROC', empty))} | {_pm(m['nnunet_Dice'])} |")
    lines += ["", "Tumour DSC is over the cases whose reference holds the tumour; AUROC and FPR95 are pooled over "
              "the voxels of all cases of a fold (host region: the dilated reference host organ, or the predicted "
              "host where the case does not annotate it, as for MSD lung and colon).", ""]
    if report["per_source"]:
        lines += ["## Per source (DSC, mean ± std over folds)", "", "| source | class | DSC |", "|---|---|---|"]
        for src, cls in report["per_source"].items():
            for n, ms in cls.items():
                lines.append(f"| {src} | {n} | {_pm(ms)} |")
        lines.append("")
    if report.get("plot"):
        lines += [f"![per-class results]({report['plot']})", ""]
    return "\n".join(lines)


def plot_cv_report(report: dict, path: str) -> None:
    """Per-class bars (mean over folds, error bar = std, dots = folds): DSC of organs and seen
    tumours on the validation cases; voxel AUROC (host) of the tumour types."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    pc = report["per_class"]
    panels = [("DSC (validation; tumours: cases with tumour)",
               [(n, "DSC" if e["role"] == "organ" else "DSC_tumour_cases") for n, e in pc.items()
                if e["role"] != "zero_shot_tumour"]),
              ("voxel AUROC in the host region (seen: validation, zero-shot: test)",
               [(n, "AUROC_host") for n, e in pc.items() if e["role"] != "organ"])]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [3, 2]})
    colours = {"organ": "tab:blue", "seen_tumour": "tab:orange", "zero_shot_tumour": "tab:green"}
    for ax, (title, items) in zip(axes, panels):
        for x, (name, metric) in enumerate(items):
            e = pc[name]
            vals = [v for v in e["per_fold"][metric].values() if v is not None and not math.isnan(v)]
            ms = e["mean_std"][metric]
            if vals:
                ax.bar(x, ms["mean"], color=colours[e["role"]], alpha=0.6,
                       yerr=ms["std"] if ms["n_folds"] > 1 else None, capsize=3)
                ax.plot([x] * len(vals), vals, "k.", ms=4)
            else:
                ax.text(x, 0.02, "n/a", ha="center", fontsize=7, rotation=90)
        ax.set_xlim(-0.7, len(items) - 0.3)
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([n for n, _ in items], rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_title(title, fontsize=9)
    from matplotlib.patches import Patch

    axes[0].legend(handles=[Patch(color=c, alpha=0.6, label=k.replace("_", " ")) for k, c in colours.items()],
                   fontsize=7, loc="upper right")
    fig.suptitle(f"{report['inputs']['trainer']} on {report['inputs']['dataset']}: folds "
                 f"{', '.join(map(str, report['folds']))} (bar: mean, line: std, dots: folds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
