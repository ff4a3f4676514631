"""Choosing the tumour-presence score's grid rules on the development split of the sealed benchmark.

The score (nnunetv2_zept/tumour_score.py) is defined in mm; on a coarse grid (the benchmark's
6 mm) a 50 mm^3 minimum lesion is less than one voxel, a 5 mm margin grows nothing and the 2 mm
organ-surface band is empty.  This
script re-scores the saved development-split predictions of the benchmark (benchmarks/zero_shot.py
dev; no training, no prediction) under candidate rules and writes the case AUROC of every tumour
type per rule, so that the rule is chosen on development data only.

The choice, fixed before any rule was scored: the rule with the highest mean case AUROC over all
tumour types (seen and zero-shot) of ZePT (the first configuration), mean over its seeds; a rule
within 0.005 of the best that comes earlier in CANDIDATES (fewer minimums) wins.
Every candidate changes the score only on grids coarser than the score's mm settings (50 mm^3,
5 mm), so whatever is chosen leaves the score at clinical spacings as it is.

    python benchmarks/score_rules.py --configs zept nnunet_adamw --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zero_shot  # noqa: E402

CANDIDATES = {
    "mm only (min 1 voxel, no margin or band minimum)": dict(),
    "lesion >= 2 voxels": dict(min_lesion_voxels=2),
    "lesion >= 4 voxels": dict(min_lesion_voxels=4),
    "margin >= 1 voxel": dict(min_margin_voxels=1),
    "band >= 1 voxel": dict(min_boundary_voxels=1),
    "band >= 1 voxel, margin >= 1 voxel": dict(min_boundary_voxels=1, min_margin_voxels=1),
    "lesion >= 2 voxels, band >= 1 voxel, margin >= 1 voxel": dict(min_lesion_voxels=2, min_boundary_voxels=1,
                                                                   min_margin_voxels=1),
    "lesion >= 4 voxels, band >= 1 voxel, margin >= 1 voxel": dict(min_lesion_voxels=4, min_boundary_voxels=1,
                                                                   min_margin_voxels=1),
}


def case_scores(pred: Path, labels: Path, dataset_json: dict, settings) -> Dict[str, tuple]:
    """{tumour name: (scores, present)} over the cases of a prediction folder."""
    import SimpleITK as sitk

    from nnunetv2_zept.roles import channel_names, roles_from_dataset_json
    from nnunetv2_zept.tumour_score import host_mask_from_probabilities, tumour_presence_score

    roles = roles_from_dataset_json(dataset_json)
    names = channel_names(dataset_json)
    ids = {n: (v if isinstance(v, list) else [v]) for n, v in dataset_json["labels"].items()}
    out: Dict[str, tuple] = {names[t]: ([], []) for t in roles.tumours}
    for npz in sorted(pred.glob("*.npz")):
        image = sitk.ReadImage(str(labels / (npz.name[:-4] + dataset_json.get("file_ending", ".nii.gz"))))
        ref, spacing = sitk.GetArrayFromImage(image), image.GetSpacing()[::-1]
        with np.load(npz) as f:
            p = f["probabilities"]
        for t in roles.tumours:
            host = host_mask_from_probabilities([p[h] for h in roles.hosts[t]], settings.host_threshold)
            out[names[t]][0].append(tumour_presence_score(p[t], host, spacing, settings))
            out[names[t]][1].append(bool(np.isin(ref, ids[names[t]][:1]).any()))
    return out


def main(argv=None) -> int:
    from sklearn.metrics import roc_auc_score

    from nnunetv2_zept.tumour_score import TumourScoreSettings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["zept", "nnunet_adamw"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", default="b2000")
    ap.add_argument("--work", default="/tmp/zept_zero_shot")
    ap.add_argument("--out", default=str(zero_shot.RESULTS / "score_rules_dev.md"))
    args = ap.parse_args(argv)
    bench = zero_shot.Bench(Path(args.work).resolve(), args.budget)
    folders = bench.split_folders("dev")
    rows: List[str] = []
    table: Dict[str, Dict[str, list]] = {}
    for label, kw in CANDIDATES.items():
        settings = TumourScoreSettings(**kw)
        for config in args.configs:
            for seed in args.seeds:
                pred = bench.work / "predictions" / args.budget / "dev" / config / f"seed{seed}"
                if config in zero_shot.BASELINES:
                    pred = pred.with_name(pred.name + "_tumour_agnostic")
                if not pred.is_dir():
                    continue
                for t, (scores, present) in case_scores(pred, folders["labels"], bench.dataset_json, settings).items():
                    table.setdefault(f"{label}|{config}", {}).setdefault(t, []).append(roc_auc_score(present, scores))
    types = sorted({t for v in table.values() for t in v})
    rows = ["# Tumour-score grid rules on the development split", "",
            f"`python benchmarks/score_rules.py {' '.join(argv or sys.argv[1:])}`", "",
            "Case AUROC per tumour type, mean over the seeds found (re-scored saved predictions of "
            f"budget {args.budget}; no test data).", "",
            "| rule | configuration | " + " | ".join(types) + " | mean |", "|---" * (len(types) + 3) + "|"]
    for key, per_type in table.items():
        label, config = key.split("|")
        means = [float(np.mean(per_type[t])) if t in per_type else float("nan") for t in types]
        rows.append(f"| {label} | {config} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {np.nanmean(means):.3f} |")
    first = args.configs[0]
    means = {label: float(np.nanmean([np.mean(v) for v in table[f"{label}|{first}"].values()]))
             for label in CANDIDATES if f"{label}|{first}" in table}
    if means:
        best = max(means.values())
        chosen = next(label for label in CANDIDATES if label in means and means[label] >= best - 0.005)
        rows += ["", f"Chosen (highest mean case AUROC of {first}, ties within 0.005 to the simpler rule): "
                     f"**{chosen}** ({CANDIDATES[chosen]}), mean {means[chosen]:.3f}."]
    text = "\n".join(rows) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
