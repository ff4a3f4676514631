"""Organ DSC two ways on saved development predictions: the organ's region as the benchmark scores it
(nnU-Net's region convention: the organ together with its tumour labels) and the organ's own label
alone (tumour labels count as neither organ).

The two differ where a tumour label is painted next to its host organ: a zero-shot tumour channel
that fires in the grown shell around an organ adds those voxels to the organ's region and lowers its
region DSC, while the organ channel, the part Stage 1 learns, may be right.  Development split only.

    python benchmarks/organ_labels.py --work WORK --budget b3000 --configs zept nnunet_adamw --seeds 0
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


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return float("nan") if s == 0 else 2.0 * int((a & b).sum()) / s


def organ_dice(prediction: Path, labels: Path, organs: Dict[str, List[int]]) -> Dict[str, Dict[str, float]]:
    """{organ: {"region": mean DSC of the label set, "label": mean DSC of the organ's own label}} over the
    cases of `prediction`; organs maps a name to its region's label values, its own label first."""
    import SimpleITK as sitk

    per = {o: {"region": [], "label": []} for o in organs}
    for f in sorted(prediction.glob("*.nii.gz")):
        p = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
        r = sitk.GetArrayFromImage(sitk.ReadImage(str(labels / f.name)))
        for o, values in organs.items():
            per[o]["region"].append(dice(np.isin(p, values), np.isin(r, values)))
            per[o]["label"].append(dice(p == values[0], r == values[0]))
    return {o: {k: float(np.nanmean(v)) for k, v in d.items()} for o, d in per.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--budget", default="b3000", choices=sorted(zero_shot.BUDGETS))
    ap.add_argument("--configs", nargs="+", default=["zept", "nnunet_adamw"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--predictions", default="dev", help="folder under WORK/predictions/<budget>/")
    args = ap.parse_args(argv)
    bench = zero_shot.Bench(Path(args.work).resolve(), args.budget)
    bench.prepare()
    from nnunetv2_zept.roles import channel_names, roles_from_dataset_json

    labels = bench.dataset_json["labels"]
    names = channel_names(bench.dataset_json)
    organs = {}
    for c in roles_from_dataset_json(bench.dataset_json).organs:
        v = labels[names[c]]
        organs[names[c]] = [int(x) for x in (v if isinstance(v, list) else [v])]
    rows = []
    for config in args.configs:
        for seed in args.seeds:
            pred = bench.work / "predictions" / args.budget / args.predictions / config / f"seed{seed}"
            if not (pred / "done").is_file():
                print(f"skipping {config} seed {seed}: no finished predictions in {pred}")
                continue
            d = organ_dice(pred, bench.split_folders("dev")["labels"], organs)
            for kind in ("region", "label"):
                vals = [d[o][kind] for o in organs]
                rows.append(f"| {config} | {seed} | {kind} | {np.mean(vals):.3f} | "
                            + " | ".join(f"{v:.2f}" for v in vals) + " |")
    head = ["| configuration | seed | organ as | mean | " + " | ".join(organs) + " |",
            "|---|---|---|---|" + "---|" * len(organs)]
    print(f"Organ DSC on the development split, budget {args.budget} (`{args.predictions}` predictions):\n")
    print("\n".join(head + rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
