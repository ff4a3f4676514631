"""The demo report: report.md with ZePT and the baseline side by side, a slice montage of held-out
cases and one ROC figure per tumour type."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional

from nnunetv2_zept.demo.figures import comparison_roc, held_out_montage, training_curves
from nnunetv2_zept.demo.settings import DemoSettings
from nnunetv2_zept.evaluation.report import json_safe, safe_filename

MODELS = {"zept": "ZePT", "baseline": "nnU-Net"}


def fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{float(v):.{digits}f}"


def _pair(summaries: dict, name: str, key: str) -> List[str]:
    out = []
    for model in MODELS:
        d = summaries[model]["per_class"][name]
        for part in key.split("."):
            d = d.get(part) if isinstance(d, dict) else None
        out.append(fmt(d))
    return out


def _best_marks(cells: List[str], higher_is_better: bool = True) -> List[str]:
    """Bold the better of the two model values (ties: neither)."""
    try:
        a, b = float(cells[0]), float(cells[1])
    except ValueError:
        return cells
    if a == b:
        return cells
    better = 0 if (a > b) == higher_is_better else 1
    return [f"**{c}**" if k == better else c for k, c in enumerate(cells)]


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
        what = f"{kind}{t}" if t else "tumour-free control"
        out.append({"case_id": c["case_id"], "type": t, "what": what})
    return out


def write_report(report_dir: Path, settings: DemoSettings, raw: Path, meta: dict, trained: Dict[str, dict],
                 evaluation: dict, phase_seconds: Dict[str, float], pred_seconds: Dict[str, float],
                 phase_started: float, t_start: float, run_info: dict,
                 phase_cpu_seconds: Optional[Dict[str, float]] = None) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    roles, names, summaries = evaluation["roles"], evaluation["names"], evaluation["summaries"]
    organs = [names[c] for c in roles.organs]
    seen = [names[c] for c in roles.seen_tumours]
    zero_shot = [names[c] for c in roles.zero_shot]
    label_ids = meta["label_ids"]
    label_names = {int(v): k for k, v in label_ids.items()}
    tumour_ids = [int(label_ids[t]) for t in seen + zero_shot]

    # ---- figures
    cases = choose_cases(meta, summaries["zept"], zero_shot, seen)
    for c in cases:
        score = ""
        if c["type"]:
            s = {m: summaries[m]["per_case"][c["case_id"]][c["type"]]["tumour_score"] for m in MODELS}
            score = f"; case score ZePT {s['zept']:.2f}, nnU-Net {s['baseline']:.2f}"
        c["caption"] = f"{c['case_id']}: {c['what']}{score}"
    figures = {}
    for model, title in (("zept", "ZePT"), ("baseline", "nnU-Net baseline")):
        png = report_dir / f"held_out_slices_{model}.png"
        held_out_montage(cases, raw, Path(evaluation["folders"][model]), label_names, tumour_ids, png,
                         f"Held-out cases: ground truth (solid, tumours thick) and {title} prediction (dashed)")
        figures[model] = png.name
    rocs = {}
    for t in zero_shot + seen:
        kind = "zero-shot" if t in zero_shot else "seen"
        labels = {"ZePT": evaluation["voxel_roc"]["zept"], "nnU-Net" + (" (tumour-agnostic)" if kind == "zero-shot" else ""):
                  evaluation["voxel_roc"]["baseline"]}
        case_curves = dict(zip(labels, (evaluation["case_roc"]["zept"][t], evaluation["case_roc"]["baseline"][t])))
        png = comparison_roc(t, kind, labels, case_curves, report_dir / f"roc_{safe_filename(t)}.png")
        rocs[t] = png.name
    curves = training_curves(trained, {"stage1": "ZePT Stage 1", "stage2": "ZePT Stage 2", "baseline": "nnU-Net baseline"},
                             report_dir / "training_curves.png").name

    # ---- text
    g = meta["generator"]
    phase_seconds = dict(phase_seconds)
    phase_seconds["writing the report"] = time.time() - phase_started
    total = time.time() - t_start
    L: List[str] = []
    L += ["# ZePT demo report", "",
          f"{run_info['date']} · `{run_info['command']}` · {run_info['cpu_count']} CPU cores"
          + (f" · GPU {run_info['cuda']}" if run_info.get("cuda") else "") + f" · device `{settings.device}` · "
          f"torch {run_info['torch']} · total wall time **{total / 60:.1f} min**", "",
          "Synthetic pan-tumour CT, ZePT (Stage 1 + Stage 2) against a plain nnU-Net trained on the same labels for "
          "the same number of steps. Everything was produced by the stock nnU-Net commands "
          "(`nnUNetv2_plan_and_preprocess`, `nnUNetv2_train`, `nnUNetv2_predict --save_probabilities`) and "
          "`nnunetv2_zept.evaluation.evaluate_folder`. How to read it: `docs/demo.md`.", ""]
    L += ["## Settings", "",
          "| | |", "|---|---|",
          f"| dataset | {g['num_train']} training + {g['num_test']} held-out cases, {' × '.join(map(str, g['shape_xyz']))} "
          f"voxels (x × y × z) at {g['spacing_xyz'][0]:g} mm, seed {g['seed']} |",
          f"| seen tumour types (in training labels) | {', '.join(seen)} |",
          f"| zero-shot tumour types (held-out cases only) | {', '.join(zero_shot)} |",
          f"| held-out cases | " + ", ".join(f"{t}: {sum(1 for c in meta['cases'] if c['split'] == 'test' and t in c['tumours'])}"
                                         for t in zero_shot + seen)
          + f", tumour-free: {sum(1 for c in meta['cases'] if c['split'] == 'test' and not c['tumours'])} |",
          f"| nnU-Net configuration | 3d_fullres, fold {settings.fold}, U-Net base features {settings.unet_features or 'as planned'}, "
          f"patch = whole case, batch 2, no mirroring |",
          f"| preset | `{settings.preset}` |", ""]
    L += ["| model | trainer | epochs × iterations | steps | s / step | training loss first → last epoch | training time |",
          "|---|---|---|---|---|---|---|"]
    for key, label in (("stage1", "ZePT Stage 1"), ("stage2", "ZePT Stage 2"), ("baseline", "nnU-Net baseline")):
        t = trained[key]
        loss = (f"{t['train_losses'][0]:.3f} → {t['train_losses'][-1]:.3f}" if t["train_losses"] else "–")
        L.append(f"| {label} | `{t['trainer']}` | {t['epochs']} × {t['iterations']} | {t['total_iterations']} | "
                 f"{fmt(t['seconds_per_iteration'], 2)} | {loss} | {t['seconds']:.0f} s |")
    L += ["", f"The baseline makes as many optimiser steps as Stage 1 and Stage 2 together "
              f"({trained['baseline']['total_iterations']} = {trained['stage1']['total_iterations']} + "
              f"{trained['stage2']['total_iterations']}), so both methods get the same training budget in steps. "
              "Seconds per step include nnU-Net's data augmentation and the epoch's validation batch.", "",
              f"Loss per epoch (validation runs in eval mode, where the ZePT losses have their mask term only): "
              f"![training curves]({curves})", ""]
    cpu = dict(phase_cpu_seconds or {})
    L += ["### Wall time per phase", "",
          "CPU time is user + system time of all processes of the phase; on a machine shared with other work "
          "the wall time is longer than on an idle one.", "",
          "| phase | wall time | CPU time |", "|---|---|---|"]
    for phase, sec in phase_seconds.items():
        extra = ""
        if phase == "predicting the held-out cases" and pred_seconds:
            extra = " (" + ", ".join(f"{MODELS[m]} {s:.0f} s" for m, s in pred_seconds.items()) + ")"
        L.append(f"| {phase} | {sec:.0f} s{extra} | {fmt(cpu.get(phase), 0)} s |")
    L.append(f"| **total** | **{total:.0f} s ({total / 60:.1f} min)** | {fmt(sum(cpu.values()) if cpu else None, 0)} s |")
    L.append("")

    L += ["## Organs (DSC)", "", "| organ | ZePT | nnU-Net |", "|---|---|---|"]
    for o in organs:
        L.append(f"| {o} | " + " | ".join(_best_marks(_pair(summaries, o, "DSC"))) + " |")
    gz, gb = summaries["zept"]["groups"]["organs"], summaries["baseline"]["groups"]["organs"]
    L += [f"| **mean** | " + " | ".join(_best_marks([fmt(gz["DSC"]), fmt(gb["DSC"])])) + " |", ""]

    def tumour_table(types, title, note):
        rows = ["### " + title, "", note, "",
                "| tumour type | cases +/− | DSC (tumour cases) ZePT | nnU-Net | voxel AUROC ZePT | nnU-Net | FPR95 ZePT | "
                "nnU-Net | case AUROC ZePT | nnU-Net |", "|---|---|---|---|---|---|---|---|---|---|"]
        for t in types:
            d = summaries["zept"]["per_class"][t]["detection"]
            cells = [f"{d['n_positive_cases']}/{d['n_negative_cases']}"]
            cells += _best_marks(_pair(summaries, t, "DSC_tumour_cases"))
            cells += _best_marks(_pair(summaries, t, "voxel_host.AUROC"))
            cells += _best_marks(_pair(summaries, t, "voxel_host.FPR95"), higher_is_better=False)
            cells += _best_marks(_pair(summaries, t, "detection.AUROC"))
            rows.append(f"| {t} | " + " | ".join(cells) + " |")
        gk = "zero_shot_tumours" if types is zero_shot else "seen_tumours"
        gm = [summaries[m]["groups"][gk] for m in MODELS]
        mean = [fmt(x.get("DSC_tumour_cases")) for x in gm], [fmt(x.get("voxel_host.AUROC")) for x in gm], \
            [fmt(x.get("voxel_host.FPR95")) for x in gm], [fmt(x.get("detection.AUROC")) for x in gm]
        rows.append("| **mean** | | " + " | ".join(_best_marks(mean[0]) + _best_marks(mean[1])
                                                  + _best_marks(mean[2], False) + _best_marks(mean[3])) + " |")
        return rows + [""]

    L += ["## Tumours", "",
          "Voxel AUROC and FPR95 (false positive rate at 95 % sensitivity) are pooled over all held-out cases, over "
          f"the voxels of the reference host organ(s) grown by {evaluation['score_settings'].host_margin_mm:g} mm. "
          "Case AUROC ranks the per-case tumour-presence score (`nnunetv2_zept.tumour_score`); negatives are the "
          "held-out cases without that type (tumour-free controls and cases with another type). Better value in "
          "bold. Whole-image voxel metrics, NSD and per-case values: `evaluation/<model>/summary.md`.", ""]
    L += tumour_table(seen, "Seen tumour types (annotated in training)", "Both models were trained on these.")
    L += tumour_table(zero_shot, "Zero-shot tumour types (never in training labels)",
                      "ZePT's zero-shot channels come from its advanced queries, prompted by the anomaly map and aligned "
                      "with each type's knowledge text. The plain nnU-Net's own zero-shot channels were trained on "
                      "negatives only, so for it every zero-shot channel is replaced by a **tumour-agnostic score**: per "
                      "voxel the highest probability of its seen tumour channels (any tumour it knows), restricted to the "
                      "type's host organ by the evaluation like ZePT's. Its DSC is that of its exported label map (its own "
                      "zero-shot channels, normally empty). ")
    n_pos = min(summaries["zept"]["per_class"][t]["detection"]["n_positive_cases"] for t in zero_shot + seen)
    L += [f"With {n_pos}-{max(summaries['zept']['per_class'][t]['detection']['n_positive_cases'] for t in zero_shot + seen)} "
          "positive cases per type, a case AUROC moves in steps of about 1/(positives × negatives) and one "
          "mis-ranked case changes it by 0.1 or more: read it as a rough indication. Larger held-out sets: "
          "`--num-test`.", ""]

    L += ["## Figures", "",
          f"Held-out cases, ZePT: ![ZePT slices]({figures['zept']})", "",
          f"Held-out cases, nnU-Net baseline: ![baseline slices]({figures['baseline']})", "",
          "Solid outlines: ground truth (tumours thick); dashed: prediction (nnU-Net's exported label map).", ""]
    for t in zero_shot + seen:
        L += [f"ROC, {t} ({'zero-shot' if t in zero_shot else 'seen'}): ![ROC {t}]({rocs[t]})", ""]
    L += ["## Files", "",
          "* `../evaluation/zept/`, `../evaluation/baseline/`: full evaluation of each model (summary.json, summary.md, "
          "per-type ROC plots); the baseline's is of its tumour-agnostic copy "
          "(`../predictions/baseline_tumour_agnostic/`).",
          "* `../predictions/`: nnUNetv2_predict outputs (label maps, `.npz` probabilities).",
          "* `../nnUNet_results/`: the trained models; `../logs/`: the full output of every nnU-Net command.",
          "* `report.json`: the numbers of this page.", ""]
    (report_dir / "report.md").write_text("\n".join(L))
    data = {"settings": settings.to_dict(), "run": run_info, "phase_seconds": phase_seconds, "total_seconds": total,
            "phase_cpu_seconds": cpu,
            "training": trained, "prediction_seconds": pred_seconds,
            "summaries": {m: {k: summaries[m][k] for k in ("per_class", "groups")} for m in MODELS},
            "figures": {"slices": figures, "roc": rocs}, "slice_cases": cases}
    (report_dir / "report.json").write_text(json.dumps(json_safe(data), indent=2))
    return report_dir / "report.md"
