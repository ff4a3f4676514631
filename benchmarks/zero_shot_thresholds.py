"""Can a threshold delineate the zero-shot lesions?  A study on the development split.

For one configuration, from its committed development runs (the per-case voxel histograms of every
tumour channel in the CT body mask), over the cases whose lesion is at least 3 voxels across:

* DSC at nnU-Net's export threshold 0.5;
* the one global threshold that maximises the mean DSC over all development runs pooled, and the
  DSC there;
* leave one seed out: the threshold chosen on the other seeds' runs, scored on the left-out seed
  (does a threshold chosen on one model carry over to another training of it?);
* per-case oracle: every case at its own best threshold, an upper bound for any threshold rule,
  global or per case.  A low oracle says the channel's ranking of voxels inside a case, not its
  threshold, limits delineation.

The DSC is that of the channel's own mask {p >= t} inside the CT body mask.  The exported label
map can score lower where a region later in `regions_class_order` paints over the channel.  Only
development data is read; nothing here touches the test split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

import zero_shot_stats as stats

HALF = stats.STORED_BINS // 2          # bin whose lower edge is p = 0.5


def _dice_curves(run: dict, tumour: str) -> np.ndarray:
    """[C', B] DSC at every bin threshold for the run's cases of `tumour` at least 3 voxels across."""
    a = run["arrays"]
    keep = a[f"{tumour}/present"].astype(bool) & stats.at_least_3_across(a[f"{tumour}/voxels"])
    h = a[f"{tumour}/body"][keep]
    return stats.dice_at_thresholds(h[:, 0], h[:, 1])


def threshold_study(runs: List[dict], tumours: List[str]) -> Dict[str, dict]:
    """Per tumour type: the quantities of the module doc; DSC values are means over cases, then over seeds."""
    edges = stats.bin_lower_edges()
    out: Dict[str, dict] = {}
    for t in tumours:
        curves = [_dice_curves(r, t) for r in runs]
        if not all(len(c) for c in curves):
            continue
        per_run = np.stack([np.nanmean(c, axis=0) for c in curves])             # [S, B]
        best = int(np.nanargmax(per_run.mean(0)))
        loso = []
        if len(runs) > 1:
            for i in range(len(runs)):
                others = np.delete(per_run, i, axis=0).mean(0)
                loso.append(float(per_run[i, int(np.nanargmax(others))]))
        out[t] = {"n_cases": [int(len(c)) for c in curves],
                  "dsc_at_0.5": float(per_run[:, HALF].mean()),
                  "best_threshold": float(edges[best]),
                  "dsc_at_best": float(per_run[:, best].mean()),
                  "dsc_leave_one_seed_out": float(np.mean(loso)) if loso else float("nan"),
                  "dsc_oracle_per_case": float(np.mean([np.nanmean(np.nanmax(c, axis=1)) for c in curves])),
                  "seeds": [int(r["seed"]) for r in runs]}
    return out


def study_markdown(study: Dict[str, dict], roles: Dict[str, str], config: str, budget: str) -> str:
    lines = [f"## Threshold study: `{config}`, budget {budget}, development split", "",
             "Written by `python benchmarks/zero_shot.py thresholds`.  Cases with a lesion at least 3 voxels across; "
             "DSC of the channel's mask {p >= t} in the CT body mask, mean over cases, then over the seeds "
             f"{next(iter(study.values()))['seeds'] if study else []}.", "",
             "| tumour type | role | cases per seed | DSC at 0.5 | best global threshold | DSC there | "
             "DSC, threshold chosen on the other seeds | DSC, each case at its own best threshold |",
             "|---|---|---|---|---|---|---|---|"]
    for t, s in study.items():
        lines.append(f"| {t} | {roles.get(t, '?')} | {s['n_cases'][0]} | {s['dsc_at_0.5']:.3f} | {s['best_threshold']:.3g} | "
                     f"{s['dsc_at_best']:.3f} | {s['dsc_leave_one_seed_out']:.3f} | {s['dsc_oracle_per_case']:.3f} |")
    return "\n".join(lines) + "\n"


def write_threshold_study(budget_dir: Path, config: str, runs: List[dict], out_md: Path) -> str:
    if not runs:
        raise SystemExit(f"no development runs of {config!r} in {budget_dir / 'dev' / config}: "
                         f"run `python benchmarks/zero_shot.py dev --configs {config}` first")
    a = runs[0]["arrays"]
    tumours = sorted({k.split("/")[0] for k in a if "/" in k})
    roles = {t: v.get("role", "?") for t, v in runs[0]["full_resolution"]["per_class"].items()}
    text = study_markdown(threshold_study(runs, tumours), roles, config, budget_dir.name)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    return text
