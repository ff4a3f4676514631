"""Axial-slice figures of a CT with organ / tumour outlines (for reports and visual checks)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np


def _default_slices(label: np.ndarray, n: int) -> list:
    """`n` axial slices spread over the labelled z-range, preferring slices with tumour-like
    (high id) labels when there are any."""
    z_any = np.where(label.reshape(label.shape[0], -1).max(axis=1) > 0)[0]
    if z_any.size == 0:
        return list(np.linspace(0, label.shape[0] - 1, n).round().astype(int))
    picks = list(np.linspace(z_any[0], z_any[-1], n + 2)[1:-1].round().astype(int))
    return sorted(set(int(v) for v in picks))


def slice_figure(image: np.ndarray, label: Optional[np.ndarray], out_png: Union[str, Path],
                 slices: Optional[Sequence[int]] = None, n_slices: int = 4,
                 window: Tuple[float, float] = (-160.0, 240.0),
                 label_names: Optional[Dict[int, str]] = None,
                 highlight: Optional[Sequence[int]] = None,
                 spacing_xyz: Optional[Sequence[float]] = None,
                 title: Optional[str] = None,
                 prediction: Optional[np.ndarray] = None) -> Path:
    """Write a PNG of axial slices of `image` (HU, array [z, y, x] as from
    `SimpleITK.GetArrayFromImage`) with the outline of every label of `label` (same shape).

    `highlight`: label ids drawn thick (e.g. tumour ids); `label_names`: legend entries;
    `prediction`: optional second label map drawn dashed on the same slices.  Slices are
    displayed in radiological convention (patient's right on the image's left) for an LPS
    identity-direction image, with the aspect ratio of `spacing_xyz`.  Returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"slice_figure: image must be a 3D array [z, y, x], got shape {image.shape}")
    if label is not None and np.asarray(label).shape != image.shape:
        raise ValueError(f"slice_figure: label shape {np.asarray(label).shape} differs from image shape "
                         f"{image.shape}; pass the label of the same case")
    lab = np.zeros(image.shape, dtype=np.int16) if label is None else np.asarray(label)
    if slices is None:
        slices = _default_slices(lab, n_slices)
    ids = [int(v) for v in np.unique(lab) if v != 0]
    cmap = plt.get_cmap("tab20")
    colours = {i: cmap((k * 2) % 20 if k < 10 else (k * 2 + 1) % 20) for k, i in enumerate(ids)}
    highlight = set(highlight or [])
    aspect = 1.0
    if spacing_xyz is not None:
        aspect = float(spacing_xyz[1]) / float(spacing_xyz[0])
    fig, axs = plt.subplots(1, len(slices), figsize=(3.2 * len(slices), 3.4), squeeze=False)
    for ax, z in zip(axs[0], slices):
        ax.imshow(image[z], cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect,
                  interpolation="nearest")
        for i in ids:
            m = lab[z] == i
            if m.any():
                ax.contour(m.astype(float), levels=[0.5], colors=[colours[i]],
                           linewidths=2.0 if i in highlight else 0.9)
            if prediction is not None:
                pm = np.asarray(prediction)[z] == i
                if pm.any():
                    ax.contour(pm.astype(float), levels=[0.5], colors=[colours[i]], linewidths=0.9,
                               linestyles="dashed")
        ax.set_title(f"z = {z}", fontsize=8)
        ax.set_axis_off()
    if label_names:
        handles = [Line2D([0], [0], color=colours[i], lw=2 if i in highlight else 1,
                          label=label_names.get(i, str(i))) for i in ids]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08 if label_names else 0, 1, 0.95 if title else 1))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
