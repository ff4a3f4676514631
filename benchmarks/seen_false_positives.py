"""Where do the seen tumour channels fire in tumour-free cases?  A listing over saved development
predictions of the sealed benchmark (no training, no test data).

For every tumour-free development case and every seen tumour type: the largest connected component
of the channel's mask p >= 0.5, its size, the reference labels inside it and in the one-voxel ring
around it, and its highest probability.  This is what decides the case scores of tumour-free cases
(their seen case scores saturate near 1) and so the seen case AUROC.

    python benchmarks/seen_false_positives.py --work /work/bench/work --seed 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zero_shot  # noqa: E402


def largest_component(mask: np.ndarray):
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    return lab == int(np.argmax(sizes)) + 1


def main(argv=None) -> int:
    import SimpleITK as sitk
    from scipy import ndimage

    from nnunetv2_zept.experiments.baseline_scores import PROBABILITY_KEY
    from nnunetv2_zept.roles import channel_names, roles_from_dataset_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--config", default="zept")
    ap.add_argument("--budget", default="b2000")
    args = ap.parse_args(argv)
    bench = zero_shot.Bench(Path(args.work).resolve(), args.budget)
    folders = bench.split_folders("dev")
    pred = bench.work / "predictions" / args.budget / "dev" / args.config / f"seed{args.seed}"
    if not (pred / "done").is_file():
        raise SystemExit(f"no saved development predictions in {pred}")
    dj = bench.dataset_json
    roles = roles_from_dataset_json(dj)
    names = channel_names(dj)
    value_name = {(v if isinstance(v, int) else v[0]): n for n, v in dj["labels"].items()}
    tumour_values = [v for v, n in value_name.items() if n in {names[t] for t in roles.tumours}]
    ending = dj.get("file_ending", ".nii.gz")
    print("| case | seen type | voxels | reference labels inside | ring around it | max p |\n|---|---|---|---|---|---|")
    for npz in sorted(pred.glob("*.npz")):
        case = npz.name[:-4]
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(folders["labels"] / (case + ending))))
        if np.isin(ref, tumour_values).any():
            continue
        with np.load(npz, allow_pickle=False) as f:
            probs = f[PROBABILITY_KEY]
        for t in roles.seen_tumours:
            comp = largest_component(probs[t] >= 0.5)
            if comp is None:
                print(f"| {case} | {names[t]} | 0 | | | |")
                continue
            ring = ndimage.binary_dilation(comp) & ~comp

            def labels(m):
                v, c = np.unique(ref[m], return_counts=True)
                return ", ".join(f"{value_name.get(int(a), a)} {int(b)}" for a, b in zip(v, c))

            print(f"| {case} | {names[t]} | {int(comp.sum())} | {labels(comp)} | {labels(ring)} | "
                  f"{float(probs[t][comp].max()):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
