"""Where do the seen tumour channels fire in tumour-free cases?  A listing over saved development
predictions of the sealed benchmark (no training, no test data).

For every tumour-free development case and every seen tumour type: the largest connected component
of the channel's mask p >= 0.5, its size, the reference labels inside it and in the one-voxel ring
around it, and its highest probability.  This is what decides the case scores of tumour-free cases
(their seen case scores saturate near 1) and so the seen case AUROC.

With `--hu`, also the median HU inside each component and, below the table, HU percentiles of
what the hypothesis compares: the training cases' seen tumour voxels of each type, and the voxels on
the boundary between each pair of touching organs in the listed cases (a voxel of one organ
whose 6-neighbourhood holds the other).

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


def hu_percentiles(values: np.ndarray) -> str:
    if values.size == 0:
        return "none"
    q = np.percentile(values, [5, 25, 50, 75, 95])
    return f"{values.size} voxels: " + " / ".join(f"{v:.0f}" for v in q)


def boundary(label: np.ndarray, a: int, b: int) -> np.ndarray:
    """Voxels of label a or b with a 6-neighbour of the other."""
    from scipy import ndimage

    grow = lambda m: ndimage.binary_dilation(m)      # noqa: E731  (6-connected by default)
    return ((label == a) & grow(label == b)) | ((label == b) & grow(label == a))


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
    ap.add_argument("--hu", action="store_true", help="add the HU comparison of the module doc")
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
    hu_col = " median HU |" if args.hu else ""
    print(f"| case | seen type | voxels | reference labels inside | ring around it | max p |{hu_col}\n"
          f"|---|---|---|---|---|---|{'---|' if args.hu else ''}")
    pairs = {("liver", "kidney_right"), ("spleen", "kidney_left"), ("liver", "spleen")}
    organ_value = {n: v for v, n in value_name.items()}
    at_boundary: dict = {pair: [] for pair in pairs if all(o in organ_value for o in pair)}
    for npz in sorted(pred.glob("*.npz")):
        case = npz.name[:-4]
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(folders["labels"] / (case + ending))))
        if np.isin(ref, tumour_values).any():
            continue
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(folders["images"] / (case + "_0000" + ending)))) \
            if args.hu else None
        for pair in at_boundary if args.hu else ():
            at_boundary[pair].append(image[boundary(ref, organ_value[pair[0]], organ_value[pair[1]])])
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

            hu = f" {float(np.median(image[comp])):.0f} |" if args.hu else ""
            print(f"| {case} | {names[t]} | {int(comp.sum())} | {labels(comp)} | {labels(ring)} | "
                  f"{float(probs[t][comp].max()):.3f} |{hu}")
    if args.hu:
        train = Path(bench.env["nnUNet_raw"]) / f"Dataset{zero_shot.DATASET_ID:03d}_{zero_shot.DATASET_NAME}"
        seen_hu = {t: [] for t in roles.seen_tumours}
        for lab_file in sorted((train / "labelsTr").glob("*" + ending)):
            ref = sitk.GetArrayFromImage(sitk.ReadImage(str(lab_file)))
            image = sitk.GetArrayFromImage(sitk.ReadImage(str(train / "imagesTr" / (lab_file.name[:-len(ending)]
                                                                                     + "_0000" + ending))))
            for t in roles.seen_tumours:
                seen_hu[t].append(image[ref == organ_value[names[t]]])
        print("\nHU percentiles 5 / 25 / 50 / 75 / 95:\n")
        for t, v in seen_hu.items():
            print(f"- {names[t]} voxels of the training cases: {hu_percentiles(np.concatenate(v))}")
        for (a, b), v in at_boundary.items():
            print(f"- {a}-{b} boundary in the listed cases: {hu_percentiles(np.concatenate(v) if v else np.zeros(0))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
