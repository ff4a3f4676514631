"""Writing an evaluation summary: summary.json, summary.md and one ROC figure per tumour type."""
from __future__ import annotations

import json
import math
import os
import re
from typing import Optional

import numpy as np


def json_safe(obj):
    """NaN/inf -> null and numpy scalars -> Python, so summary.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def summary_markdown(summary: dict) -> str:
    pc, groups, st = summary["per_class"], summary["groups"], summary["settings"]
    lines = ["# Evaluation summary", "",
             f"{len(summary['cases'])} cases. DSC: NaN (shown –) when reference and prediction are both empty, "
             "left out of means. NSD at the tolerance shown. Voxel AUROC/FPR95 from score histograms with "
             f"{st['n_bins']} bins equal in logit (width {st['histogram_logit_bin_width']:g}); 'pooled' = all voxels of all cases, "
             "'case mean' = mean of per-case values. Detection = case-level AUROC of the tumour-presence score "
             "(tumour-free cases are negatives).", ""]
    organs = [n for n, e in pc.items() if e["role"] == "organ"]
    if organs:
        lines += ["## Organs", "", "| class | cases | DSC | NSD | tolerance (mm) |", "|---|---|---|---|---|"]
        for n in organs:
            e = pc[n]
            lines.append(f"| {n} | {e['n_cases']} | {_fmt(e['DSC'])} | {_fmt(e['NSD'])} | {_fmt(e['NSD_tolerance_mm'], 1)} |")
        lines.append("")
    tumours = [n for n, e in pc.items() if e["role"] != "organ"]
    if tumours:
        lines += ["## Tumours", "",
                  "| class | kind | cases (with tumour) | DSC | DSC tumour cases | NSD (tol mm) | AUROC body pooled / "
                  "case mean | FPR95 body | AUROC host pooled / case mean | FPR95 host | detection AUROC (pos/neg) "
                  "| sens / spec at threshold |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for n in tumours:
            e = pc[n]
            vb, vh, d = e["voxel_body"], e["voxel_host"], e["detection"]
            kind = "zero-shot" if e["role"] == "zero_shot_tumour" else "seen"
            lines.append(
                f"| {n} | {kind} | {e['n_cases']} ({e['n_cases_with_reference']}) | {_fmt(e['DSC'])} | "
                f"{_fmt(e['DSC_tumour_cases'])} | {_fmt(e['NSD'])} ({_fmt(e['NSD_tolerance_mm'], 1)}) | "
                f"{_fmt(vb['AUROC'])} / {_fmt(vb['AUROC_case_mean'])} | {_fmt(vb['FPR95'])} | "
                f"{_fmt(vh['AUROC'])} / {_fmt(vh['AUROC_case_mean'])} | {_fmt(vh['FPR95'])} | "
                f"{_fmt(d['AUROC'])} ({d['n_positive_cases']}/{d['n_negative_cases']}) | "
                f"{_fmt(d['sensitivity'], 2)} / {_fmt(d['specificity'], 2)} |")
        lines.append("")
    lines += ["## Group means (mean over the classes of each group)", ""]
    for title, keys in (("organs", ["DSC", "NSD"]), ("seen_tumours", None), ("zero_shot_tumours", None)):
        e = groups.get(title)
        if not e or not e["classes"]:
            continue
        keys = keys or [k for k in e if k != "classes"]
        lines += [f"**{title}** ({', '.join(e['classes'])})", "",
                  "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
                  "| " + " | ".join(_fmt(e[k]) for k in keys) + " |", ""]
    if summary.get("unpredicted_reference_cases"):
        lines += [f"Reference cases without prediction (not evaluated): {', '.join(summary['unpredicted_reference_cases'])}", ""]
    return "\n".join(lines)


def plot_roc(name: str, curve: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    kind = "zero-shot" if curve["zero_shot"] else "seen"
    for key, style in (("body", "-"), ("host", "--")):
        fpr, tpr = curve[key]
        if fpr is not None and not np.isnan(fpr[0]):
            auc = float(np.trapezoid(tpr, fpr))
            axes[0].plot(fpr, tpr, style, label=f"{key} region (AUROC {auc:.3f})")
    axes[0].set_title(f"{name} ({kind}): voxel ROC, pooled")
    axes[0].set_xscale("symlog", linthresh=1e-3)
    axes[0].set_xlabel("false positive rate (linear below 1e-3, log above)")
    axes[1].set_xlabel("false positive rate (cases)")
    if curve["case"] is not None:
        fpr, tpr = curve["case"]
        axes[1].plot(fpr, tpr, "-o", ms=3, label=f"AUROC {float(np.trapezoid(tpr, fpr)):.3f}")
    else:
        axes[1].text(0.5, 0.5, "needs cases with and\nwithout this tumour", ha="center", va="center")
    axes[1].set_title(f"{name}: case-level detection ROC")
    for ax in axes:
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set_ylabel("true positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(summary: dict, output_folder: str, curves: Optional[dict] = None) -> None:
    """Write summary.json, summary.md and roc_<tumour>.png (listed in summary["roc_plots"])."""
    os.makedirs(output_folder, exist_ok=True)
    summary["roc_plots"] = []
    for name, curve in (curves or {}).items():
        path = os.path.join(output_folder, f"roc_{safe_filename(name)}.png")
        plot_roc(name, curve, path)
        summary["roc_plots"].append(os.path.basename(path))
    with open(os.path.join(output_folder, "summary.json"), "w") as f:
        json.dump(json_safe(summary), f, indent=2, allow_nan=False)
    with open(os.path.join(output_folder, "summary.md"), "w") as f:
        f.write(summary_markdown(summary))
