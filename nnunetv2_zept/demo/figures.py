"""Figures of the demo report: axial slices of held-out cases with ground truth and predicted
outlines, and ROC curves of ZePT and the baseline on the same axes."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from nnunetv2_zept.evaluation.histogram_roc import RocHistogram
from nnunetv2_zept.evaluation.mask_ops import within_mm

PROBABILITY_KEY = "probabilities"


def _save(fig, out_png: Path) -> Path:
    """Writes the figure (its folder made if needed) and frees it; pyplot keeps every open figure."""
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def read_label(path: Path) -> Tuple[np.ndarray, Tuple[float, float, float], Tuple[float, float, float]]:
    """Label map [z, y, x], spacing (z, y, x) and spacing (x, y, z) of a label image."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    sp = tuple(float(s) for s in img.GetSpacing())
    return sitk.GetArrayFromImage(img), sp[::-1], sp


def read_image(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def tumour_slices(label: np.ndarray, tumour_ids: Sequence[int], n: int = 3) -> List[int]:
    """`n` axial slices: the one with the largest tumour area, and others spread over the
    tumour's z-range (over the labelled range for a tumour-free case)."""
    mask = np.isin(label, list(tumour_ids)) if tumour_ids else np.zeros(label.shape, dtype=bool)
    area = mask.reshape(mask.shape[0], -1).sum(axis=1)
    if area.max() == 0:
        zs = np.where(label.reshape(label.shape[0], -1).max(axis=1) > 0)[0]
        lo, hi = (int(zs[0]), int(zs[-1])) if zs.size else (0, label.shape[0] - 1)
        return sorted(set(np.linspace(lo, hi, n + 2)[1:-1].round().astype(int).tolist()))
    best = int(area.argmax())
    zs = np.where(area > 0)[0]
    picks = {best}
    for z in np.linspace(zs[0], zs[-1], n).round().astype(int):
        if len(picks) >= n:
            break
        picks.add(int(z))
    return sorted(picks)


def held_out_montage(cases: Sequence[dict], raw_folder: Path, prediction_folder: Path, label_names: Dict[int, str],
                     tumour_ids: Sequence[int], out_png: Path, title: str, file_ending: str = ".nii.gz") -> Path:
    """One PNG with a row of axial slices per case: CT, ground-truth outlines (solid; tumours
    thick) and predicted outlines (dashed).  `cases`: dicts with "case_id" and "caption"."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from nnunetv2_zept.synthetic import slice_figure

    out_png = Path(out_png)
    rows = []
    tmp_dir = out_png.parent / ".montage_rows"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    try:
        for k, case in enumerate(cases):
            cid = case["case_id"]
            image = read_image(raw_folder / "imagesTs" / f"{cid}_0000{file_ending}")
            ref, _, spacing_xyz = read_label(raw_folder / "labelsTs" / f"{cid}{file_ending}")
            pred, _, _ = read_label(prediction_folder / f"{cid}{file_ending}")
            present = [int(i) for i in np.unique(ref) if i in tumour_ids]
            slices = tumour_slices(ref, present, 3)
            row_png = slice_figure(image, ref, tmp_dir / f"{k}.png", slices=slices, label_names=label_names,
                                   highlight=list(tumour_ids), spacing_xyz=spacing_xyz, title=case["caption"],
                                   prediction=pred)
            rows.append(plt.imread(str(row_png)))
    finally:
        for f in tmp_dir.glob("*.png"):
            f.unlink()
        tmp_dir.rmdir()
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=1.0) for r in rows]
    montage = np.concatenate(padded, axis=0)
    h, w = montage.shape[:2]
    fig = plt.figure(figsize=(w / 110, h / 110 + 0.45))
    ax = fig.add_axes((0, 0, 1, h / (h + 0.45 * 110)))
    ax.imshow(montage)
    ax.set_axis_off()
    fig.suptitle(title, fontsize=10, y=0.995)
    return _save(fig, out_png)


# ---------------------------------------------------------------------------- ROC curves
class VoxelRocCurves:
    """Pooled voxel ROC histograms of one model for each tumour type, in two regions: the whole
    image ("body", as the evaluation's body AUROC) and the reference host organ(s) with the
    tumour, grown by `host_margin_mm` ("host", as the evaluation's host AUROC)."""

    def __init__(self, n_bins: int = 2000):
        self.n_bins = n_bins
        self.hist: Dict[str, Dict[str, RocHistogram]] = {}

    def add_case(self, probabilities: np.ndarray, reference: np.ndarray, spacing_zyx, tumours: Dict[str, Tuple[int, int]],
                 host_ids: Dict[str, List[int]], host_margin_mm: float) -> None:
        """tumours: name -> (probability channel, label id); host_ids: name -> label ids of its hosts."""
        for name, (channel, label_id) in tumours.items():
            p = probabilities[channel]
            ref_t = reference == label_id
            host = ref_t | np.isin(reference, host_ids[name])
            region = within_mm(host, spacing_zyx, host_margin_mm)
            h = self.hist.setdefault(name, {"body": RocHistogram(self.n_bins), "host": RocHistogram(self.n_bins)})
            h["body"].add(p, ref_t)
            h["host"].add(p, ref_t, region=region)

    def curve(self, name: str, region: str):
        fpr, tpr, _ = self.hist[name][region].roc_curve()
        return fpr, tpr, self.hist[name][region].auroc()


def case_roc(scores: Sequence[float], labels: Sequence[int]):
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(set(labels)) < 2:
        return None
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr, float(roc_auc_score(labels, scores))


def comparison_roc(name: str, kind: str, voxel: Dict[str, VoxelRocCurves], cases: Dict[str, Optional[tuple]],
                   out_png: Path) -> Path:
    """Voxel ROC (body and host region) and case-level detection ROC of each model on the same axes.
    `voxel`/`cases`: model label -> curves (case curve None when it cannot be computed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    styles = {0: ("tab:red", "-"), 1: ("tab:blue", "--"), 2: ("tab:green", ":"), 3: ("tab:purple", "-.")}
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for k, (model, curves) in enumerate(voxel.items()):
        colour, ls = styles[k % 4]
        for ax, region in zip(axes[:2], ("body", "host")):
            fpr, tpr, auc = curves.curve(name, region)
            if np.all(np.isfinite(fpr)):
                ax.plot(fpr, tpr, ls, color=colour, label=f"{model} (AUROC {auc:.3f})")
    for k, (model, c) in enumerate(cases.items()):
        colour, ls = styles[k % 4]
        if c is not None:
            fpr, tpr, auc = c
            axes[2].plot(fpr, tpr, ls, color=colour, marker="o", ms=3, label=f"{model} (AUROC {auc:.3f})")
    axes[0].set_title(f"{name} ({kind}): voxels, whole image", fontsize=9)
    axes[1].set_title(f"{name}: voxels, host organ + margin", fontsize=9)
    axes[2].set_title(f"{name}: case-level detection", fontsize=9)
    for ax in axes[:2]:
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_xlabel("false positive rate (linear below 1e-3)")
    axes[2].set_xlabel("false positive rate (held-out cases without this type)")
    for ax in axes:
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.axhline(0.95, color="grey", lw=0.5, ls="--")
        ax.set_ylabel("true positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=7)
        else:
            ax.text(0.5, 0.5, "not computable\n(needs positives and negatives)", ha="center", va="center", fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)


def training_curves(trained: Dict[str, dict], titles: Dict[str, str], out_png: Path) -> Path:
    """Loss per epoch of each training (one panel each) against optimiser steps: nnU-Net's training
    and validation loss and, for the ZePT stages, each term of the loss (`... loss parts:` lines).
    Validation runs in eval mode, where the ZePT losses have their mask term only."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(titles), figsize=(4.6 * len(titles), 3.8), squeeze=False)
    for ax, (key, title) in zip(axes[0], titles.items()):
        t = trained[key]
        steps_per_epoch = t["iterations"]

        def plot(values, label, **style):
            if values:
                x = [(i + 1) * steps_per_epoch for i in range(len(values))]
                ax.plot(x, values, marker="o", ms=3, label=label, **style)
        plot(t["train_losses"], "training loss (total)", color="tab:blue", lw=2)
        plot(t["val_losses"], "validation loss", color="tab:red", lw=2)
        for split, ls in (("train", "--"), ("val", ":")):
            for name, values in (t.get("loss_parts") or {}).get(split, {}).items():
                plot(values, f"{split}: {name}", ls=ls, lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimiser step (end of epoch)")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out_png)
