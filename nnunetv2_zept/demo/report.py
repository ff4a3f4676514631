"""The demo report: report.md with every model's results on the fresh held-out cases side by side
(ZePT trained here, and the reference models of the sealed benchmark when they ship), slice
montages of held-out cases, one ROC figure per tumour type and the training curves."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional

from nnunetv2_zept.demo.figures import comparison_roc, held_out_montage, training_curves
from nnunetv2_zept.demo.settings import DemoSettings
from nnunetv2_zept.evaluation.report import json_safe, safe_filename

TRAINED_TITLES = {"stage1": "ZePT Stage 1", "stage2": "ZePT Stage 2", "baseline": "nnU-Net like-for-like"}


def fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{float(v):.{digits}f}"


def _get(summary: dict, name: str, key: str):
    d = summary["per_class"][name]
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _bold_best(values: List[Optional[float]], higher_is_better: bool = True, digits: int = 2) -> List[str]:
    """Formatted values with the best one(s) in bold (nothing bold when fewer than two are defined)."""
    cells = [fmt(v, digits) for v in values]
    ok = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(ok) < 2:
        return cells
    best = max(ok) if higher_is_better else min(ok)
    return [f"**{c}**" if v is not None and math.isfinite(float(v)) and round(float(v), digits) == round(best, digits)
            else c for c, v in zip(cells, values)]


def choose_cases(meta: dict, summary: dict, zero_shot: List[str], seen: List[str]) -> List[dict]:
    """Held-out cases for the slice figure: the largest lesion of up to two zero-shot types, one
    seen type, and one tumour-free control."""
    test = [c for c in meta["cases"] if c["split"] == "test" and c["case_id"] in summary["per_case"]]

    def size(c):
        return sum(l.get("volume_ml", 0.0) or 0.0 for l in c.get("lesions", []))

    picks = []
    for group, k in ((zero_shot, 2), (seen, 1)):
        for t in group:
            if len([p for p in picks if p["group"] == id(group)]) >= k:
                break
            cands = sorted([c for c in test if c["tumours"] == [t]], key=size, reverse=True)
            if cands:
                picks.append({"case": cands[0], "group": id(group), "type": t})
    free = [c for c in test if not c["tumours"]]
    if free:
        picks.append({"case": free[0], "group": None, "type": None})
    out = []
    for p in picks:
        c, t = p["case"], p["type"]
        kind = ("zero-shot " if t in zero_shot else "seen ") if t else ""
        out.append({"case_id": c["case_id"], "type": t, "what": f"{kind}{t}" if t else "tumour-free control"})
    return out


def write_report(report_dir: Path, settings: DemoSettings, held_out: Path, meta: dict, models: Dict[str, object],
                 trained: Dict[str, dict], evaluation: dict, phase_seconds: Dict[str, float],
                 pred_seconds: Dict[str, float], phase_started: float, t_start: float, run_info: dict,
                 phase_cpu_seconds: Optional[Dict[str, float]] = None, reference_folder=None) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    roles, names, summaries = evaluation["roles"], evaluation["names"], evaluation["summaries"]
    keys = list(models)
    labels = {k: models[k].label for k in keys}
    organs = [names[c] for c in roles.organs]
    seen = [names[c] for c in roles.seen_tumours]
    zero_shot = [names[c] for c in roles.zero_shot]
    label_ids = meta["label_ids"]
    label_names = {int(v): k for k, v in label_ids.items()}
    tumour_ids = [int(label_ids[t]) for t in seen + zero_shot]
    references = [k for k in keys if models[k].reference]

    # ---- figures
    cases = choose_cases(meta, summaries[keys[0]], zero_shot, seen)
    for c in cases:
        c["caption"] = f"{c['case_id']}: {c['what']}"
        if c["type"]:
            c["caption"] += "; case score " + ", ".join(
                f"{labels[k]} {summaries[k]['per_case'][c['case_id']][c['type']]['tumour_score']:.2f}" for k in keys)
    figures = {}
    for k in keys:
        png = report_dir / f"held_out_slices_{k}.png"
        held_out_montage(cases, held_out, Path(evaluation["folders"][k]), label_names, tumour_ids, png,
                         f"Held-out cases: ground truth (solid, tumours thick) and {labels[k]} (dashed)")
        figures[k] = png.name
    rocs = {}
    for t in zero_shot + seen:
        kind = "zero-shot" if t in zero_shot else "seen"
        voxel = {labels[k] + (" (tumour-agnostic)" if models[k].baseline and kind == "zero-shot" else ""):
                 evaluation["voxel_roc"][k] for k in keys}
        case_curves = dict(zip(voxel, (evaluation["case_roc"][k][t] for k in keys)))
        rocs[t] = comparison_roc(t, kind, voxel, case_curves, report_dir / f"roc_{safe_filename(t)}.png").name
    curves = (training_curves(trained, {k: v for k, v in TRAINED_TITLES.items() if k in trained},
                              report_dir / "training_curves.png").name if trained else None)

    # ---- text
    g = meta["generator"]
    phase_seconds = dict(phase_seconds)
    phase_seconds["writing the report"] = time.time() - phase_started
    total = time.time() - t_start
    ref_seeds = ", ".join(sorted({str(models[k].reference.get("seed")) for k in references}))
    L: List[str] = ["# ZePT demo report", "",
                    f"{run_info['date']} · `{run_info['command']}` · {run_info['cpu_count']} CPU cores"
                    + (f" · GPU {run_info['cuda']}" if run_info.get("cuda") else "") + f" · device `{settings.device}` · "
                    f"torch {run_info['torch']} · total wall time **{total / 60:.1f} min**", ""]
    L += ["Synthetic pan-tumour CT. Two parts, both evaluated on the same **fresh held-out cases** (generator seed "
          f"{g['seed']}, used by no training and no benchmark):", "",
          f"1. **Trained here**: ZePT Stage 1 + Stage 2 trained from scratch by this run "
          f"({settings.stage1.total} + {settings.stage2.total} steps). It shows that training works on your machine; "
          "minutes of CPU are too short for a model that shows what the method can do.",
          "2. **Reference models**: ZePT and the like-for-like nnU-Net (same network, loss and augmentation as plain "
          "nnU-Net, ZePT's optimiser and schedule, as many steps as ZePT's two stages) trained by the sealed benchmark "
          f"(`benchmarks/zero_shot.py`, training seed {ref_seeds}) and installed with "
          "`nnUNetv2_install_pretrained_model_from_zip`. "
          "They show what the method does." if references else
          "2. **Reference models**: not shown in this run (" + ("switched off" if not settings.use_reference else
          f"no reference model zips in {reference_folder or 'benchmarks/reference_models'}; they ship with the "
          "repository, so run the demo from a clone") + ").", "",
          "Everything was produced by the stock nnU-Net commands (`nnUNetv2_plan_and_preprocess`, `nnUNetv2_train`, "
          "`nnUNetv2_predict --save_probabilities`) and `nnunetv2_zept.evaluation.evaluate_folder`. How to read it: "
          "`docs/demo.md`.", ""]
    L += ["## Settings", "", "| | |", "|---|---|",
          f"| training cases | {settings.num_train} (generator seed {settings.seed}), {' × '.join(map(str, settings.shape))} "
          f"voxels (x × y × z) at {settings.spacing_mm:g} mm |",
          f"| held-out cases | {g['num_test']} (seed {g['seed']}): " + ", ".join(
              f"{t} {sum(1 for c in meta['cases'] if t in c['tumours'])}" for t in zero_shot + seen)
          + f", tumour-free {sum(1 for c in meta['cases'] if not c['tumours'])} |",
          f"| seen tumour types (in training labels) | {', '.join(seen)} |",
          f"| zero-shot tumour types (held-out cases only) | {', '.join(zero_shot)} |",
          f"| nnU-Net configuration | 3d_fullres, fold {settings.fold}, U-Net base features "
          f"{settings.unet_features or 'as planned'}, patch = whole case, batch 2, no mirroring, training seed "
          f"{settings.train_seed} |",
          f"| preset | `{settings.preset}` |", ""]
    if trained:
        L += ["Trained here:", "",
              "| model | trainer | epochs × iterations | steps | s / step | training loss first → last epoch | time |",
              "|---|---|---|---|---|---|---|"]
        for key, t in trained.items():
            loss = (f"{t['train_losses'][0]:.3f} → {t['train_losses'][-1]:.3f}" if t["train_losses"] else "–")
            L.append(f"| {TRAINED_TITLES[key]} | `{t['trainer']}` | {t['epochs']} × {t['iterations']} | "
                     f"{t['total_iterations']} | {fmt(t['seconds_per_iteration'], 2)} | {loss} | {t['seconds']:.0f} s |")
        L += ["", "Seconds per step include nnU-Net's data augmentation and the epoch's validation batch."
              + (f" Loss per epoch: ![training curves]({curves})" if curves else ""), ""]
    if references:
        L += ["Reference models:", "", "| model | trainers | budget (steps) | training seed | plugin version | commit |",
              "|---|---|---|---|---|---|"]
        for k in references:
            info = models[k].reference
            b = info.get("budget_settings", {})
            steps = (f"{b.get('stage1_epochs', 0) * b.get('iterations', 0)} + {b.get('stage2_epochs', 0) * b.get('iterations', 0)}"
                     if info["config"] == "zept" else
                     f"{(b.get('stage1_epochs', 0) + b.get('stage2_epochs', 0)) * b.get('iterations', 0)}")
            L.append(f"| {labels[k]} | {', '.join(f'`{t}`' for t in info.get('trainers', []))} | {steps} | "
                     f"{info.get('seed')} | {info.get('plugin_version')} | {info.get('commit') or '–'} |")
        rebuild = {models[k].reference.get("rebuild") for k in references}
        L += ["", "Rebuild them with: " + "; ".join(f"`{r}`" for r in sorted(x for x in rebuild if x)), ""]
    cpu = dict(phase_cpu_seconds or {})
    L += ["### Wall time per phase", "",
          "CPU time is user + system time of all processes of the phase; on a machine shared with other work "
          "the wall time is longer than on an idle one.", "", "| phase | wall time | CPU time |", "|---|---|---|"]
    for phase, sec in phase_seconds.items():
        extra = ""
        if phase == "predicting the held-out cases" and pred_seconds:
            extra = " (" + ", ".join(f"{labels[m]} {s:.0f} s" for m, s in pred_seconds.items()) + ")"
        L.append(f"| {phase} | {sec:.0f} s{extra} | {fmt(cpu.get(phase), 0)} s |")
    L += [f"| **total** | **{total:.0f} s ({total / 60:.1f} min)** | {fmt(sum(cpu.values()) if cpu else None, 0)} s |",
          ""]

    head = "| | " + " | ".join(labels[k] for k in keys) + " |"
    rule = "|---" * (len(keys) + 1) + "|"
    L += ["## Organs (DSC)", "", head.replace("| |", "| organ |", 1), rule]
    for o in organs:
        L.append(f"| {o} | " + " | ".join(_bold_best([_get(summaries[k], o, "DSC") for k in keys])) + " |")
    L += ["| **mean** | " + " | ".join(_bold_best([summaries[k]["groups"]["organs"]["DSC"] for k in keys])) + " |", ""]

    L += ["## Tumours", "",
          "Each cell: **DSC** on the cases with that tumour / **voxel AUROC** in the host region (reference host "
          f"organ grown by {evaluation['score_settings'].host_margin_mm:g} mm) / **case AUROC** of the per-case "
          "tumour-presence score (negatives: held-out cases without that type). A plain nnU-Net's zero-shot "
          "channels were trained on negatives only, so it is read through its **tumour-agnostic score**: per voxel "
          "the highest probability of its seen tumour channels inside the type's host region (built as ZePT builds "
          "it). Whole-image and CT-body-mask metrics, FPR95, NSD and per-case values: "
          "`evaluation/<model>/summary.md`.", ""]

    def tumour_rows(types, group):
        rows = [head.replace("| |", "| tumour type (cases) |", 1), rule]
        for t in types:
            n = summaries[keys[0]]["per_class"][t]["detection"]["n_positive_cases"]
            cells = [f"{fmt(_get(summaries[k], t, 'DSC_tumour_cases'))} / {fmt(_get(summaries[k], t, 'voxel_host.AUROC'))} / "
                     f"{fmt(_get(summaries[k], t, 'detection.AUROC'))}" for k in keys]
            rows.append(f"| {t} ({n}) | " + " | ".join(cells) + " |")
        cells = [f"{fmt(summaries[k]['groups'][group].get('DSC_tumour_cases'))} / "
                 f"{fmt(summaries[k]['groups'][group].get('voxel_host.AUROC'))} / "
                 f"{fmt(summaries[k]['groups'][group].get('detection.AUROC'))}" for k in keys]
        return rows + ["| **mean** | " + " | ".join(cells) + " |", ""]

    L += ["### Seen tumour types (annotated in training)", ""] + tumour_rows(seen, "seen_tumours")
    L += ["### Zero-shot tumour types (never in training labels)", ""] + tumour_rows(zero_shot, "zero_shot_tumours")
    n_pos = [summaries[keys[0]]["per_class"][t]["detection"]["n_positive_cases"] for t in zero_shot + seen]
    L += [f"With {min(n_pos)}-{max(n_pos)} positive cases per type a case AUROC moves in steps of 1/(positives × "
          "negatives) and one mis-ranked case changes it by 0.1 or more: read these as a rough indication. The sealed "
          "benchmark's test-split table with seeds and confidence intervals is in docs/benchmarks.md.", ""]

    L += ["## Figures", ""]
    for k in keys:
        L += [f"Held-out cases, {labels[k]}: ![{k} slices]({figures[k]})", ""]
    L += ["Solid outlines: ground truth (tumours thick); dashed: prediction (nnU-Net's exported label map).", ""]
    for t in zero_shot + seen:
        L += [f"ROC, {t} ({'zero-shot' if t in zero_shot else 'seen'}): ![ROC {t}]({rocs[t]})", ""]
    L += ["## Files", "",
          "* `../evaluation/<model>/`: full evaluation of each model (summary.json, summary.md, per-type ROC plots); a "
          "baseline's is of its tumour-agnostic copy (`../predictions/<model>_tumour_agnostic/`).",
          "* `../predictions/`: nnUNetv2_predict outputs (label maps, `.npz` probabilities).",
          "* `../nnUNet_results/`: the models trained here; `../reference_results/`: the installed reference models; "
          "`../logs/`: the full output of every nnU-Net command.",
          "* `report.json`: the numbers of this page.", ""]
    (report_dir / "report.md").write_text("\n".join(L))
    data = {"settings": settings.to_dict(), "run": run_info, "phase_seconds": phase_seconds, "total_seconds": total,
            "phase_cpu_seconds": cpu, "models": {k: {"label": labels[k], "trainer": models[k].trainer,
                                                     "reference": models[k].reference} for k in keys},
            "training": trained, "prediction_seconds": pred_seconds,
            "summaries": {k: {x: summaries[k][x] for x in ("per_class", "groups")} for k in keys},
            "figures": {"slices": figures, "roc": rocs}, "slice_cases": cases}
    (report_dir / "report.json").write_text(json.dumps(json_safe(data), indent=2))
    return report_dir / "report.md"
