"""Zero-shot labels in the outer shell of their host regions: where false and true positives lie, and
what lowering the shell's logits by a margin does, on saved development predictions.

The network's host region of a tumour type is its host organs (cavities filled) grown by
tumour_growth_mm.  Its outer shell is the part beyond the organ's closed outline
(`architectures.self_prompt.outer_shell`).  This script reads a configuration's saved development
probabilities (before the margin), counts the zero-shot voxels inside the closed outline, in the
shell and outside the region (false positives at p > 0.5, true positives, reference voxels), then
applies each margin to the zero-shot channels post hoc (`baseline_scores.lowered_by`; "cut" = the
floor, the shell cut off), repaints the label maps as nnU-Net does and scores every variant with the
benchmark's scoring, paired against the unchanged predictions.  Development split only: this is
how `tumour_shell_margin` was chosen (docs/benchmarks.md, "Zero-shot labels in the outer shell").

    python benchmarks/shell_margin_sweep.py --work WORK --budget b3000 --seeds 0 1 --margins 1 2 3 5 8 cut
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zero_shot  # noqa: E402
from prediction_change import scored_run  # noqa: E402
from zero_shot_compare import compare, compare_markdown  # noqa: E402

PLACES = ("closed outline", "outer shell", "outside")


def where_voxels(probs: np.ndarray, reference: np.ndarray, roles, spacing_zyx, growth_mm: float, label_of) -> dict:
    """{type: {"false positive" | "true positive" | "reference": counts per PLACES}} of one case."""
    from nnunetv2_zept.experiments.baseline_scores import zero_shot_regions

    regions, shells = zero_shot_regions(probs, roles, spacing_zyx, growth_mm, with_shells=True)
    out = {}
    for c, region, shell in zip(roles.zero_shot, regions, shells):
        place = np.full(region.shape, 2, np.int64)
        place[region] = 0
        place[shell] = 1
        ref, pos = reference == label_of[c], probs[c] > 0.5
        out[c] = {k: np.bincount(place[m], minlength=3) for k, m in
                  (("false positive", pos & ~ref), ("true positive", pos & ref), ("reference", ref))}
    return out


def with_margin(src: Path, dst: Path, dataset_json: dict, margin: float, growth_mm: float) -> None:
    """A copy of the prediction folder `src` with the zero-shot channels lowered by `margin` logits in
    their regions' outer shells (inf: set to the floor) and the label maps repainted."""
    import SimpleITK as sitk

    from nnunetv2_zept.experiments.baseline_scores import (FLOOR, lowered_by, paint_order, paint_regions,
                                                           zero_shot_regions)
    from nnunetv2_zept.roles import roles_from_dataset_json

    if (dst / "done").is_file():
        return
    roles, order = roles_from_dataset_json(dataset_json), paint_order(dataset_json)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    for npz in sorted(dst.glob("*.npz")):
        probs = np.load(npz)["probabilities"]
        label_file = dst / (npz.name[: -len(".npz")] + dataset_json.get("file_ending", ".nii.gz"))
        image = sitk.ReadImage(str(label_file))
        _, shells = zero_shot_regions(probs, roles, image.GetSpacing()[::-1], growth_mm, with_shells=True)
        for c, shell in zip(roles.zero_shot, shells):
            lowered = np.full_like(probs[c], FLOOR) if np.isinf(margin) else lowered_by(probs[c], margin)
            probs[c] = np.where(shell, lowered, probs[c])
        np.savez_compressed(npz, probabilities=probs)
        out = sitk.GetImageFromArray(paint_regions(probs, order, sitk.GetArrayFromImage(image).dtype))
        out.CopyInformation(image)
        sitk.WriteImage(out, str(label_file), True)
    (dst / "done").write_text("ok\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="the zero-shot benchmark's work folder")
    ap.add_argument("--budget", default="b3000", choices=sorted(zero_shot.BUDGETS))
    ap.add_argument("--config", default="zept")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--before", default="dev", help="folder under WORK/predictions/<budget>/ of predictions "
                                                     "made without the margin")
    ap.add_argument("--margins", nargs="+", default=["1", "2", "3", "5", "8", "cut"])
    ap.add_argument("--growth-mm", type=float, default=10.0, help="the models' tumour_growth_mm")
    args = ap.parse_args(argv)
    margins = [float("inf") if m == "cut" else float(m) for m in args.margins]

    import SimpleITK as sitk

    from nnunetv2_zept.roles import channel_names, roles_from_dataset_json

    bench = zero_shot.Bench(Path(args.work).resolve(), args.budget)
    bench.prepare()
    roles, names = roles_from_dataset_json(bench.dataset_json), channel_names(bench.dataset_json)
    labels = bench.dataset_json["labels"]
    label_of = {c: int(labels[names[c]] if not isinstance(labels[names[c]], list) else labels[names[c]][0])
                for c in roles.zero_shot}
    root = bench.work / "predictions" / args.budget
    counts = {c: {k: np.zeros(3, np.int64) for k in ("false positive", "true positive", "reference")}
              for c in roles.zero_shot}
    runs = {"before": []}
    for seed in args.seeds:
        src = root / args.before / args.config / f"seed{seed}"
        if not (src / "done").is_file():
            raise SystemExit(f"{args.config} seed {seed}: no finished predictions in {src}")
        for npz in sorted(src.glob("*.npz")):
            ref_file = bench.split_folders("dev")["labels"] / (npz.name[: -len(".npz")] + ".nii.gz")
            ref = sitk.ReadImage(str(ref_file))
            case = where_voxels(np.load(npz)["probabilities"], sitk.GetArrayFromImage(ref), roles,
                                ref.GetSpacing()[::-1], args.growth_mm, label_of)
            for c, d in case.items():
                for k, v in d.items():
                    counts[c][k] += v
        runs["before"].append(scored_run(bench, args.config, seed, src))
        for name, m in zip(args.margins, margins):
            dst = root / f"{args.before}_shell_sweep_{name}" / args.config / f"seed{seed}"
            with_margin(src, dst, bench.dataset_json, m, args.growth_mm)
            runs.setdefault(name, []).append(scored_run(bench, args.config, seed, dst))

    print(f"Zero-shot voxels by place, {args.config}, budget {args.budget}, development split, seeds {args.seeds} "
          f"(`{args.before}` predictions):\n")
    print("| type | voxels | " + " | ".join(PLACES) + " |\n|---|---|---|---|---|")
    for c in roles.zero_shot:
        for k, v in counts[c].items():
            print(f"| {names[c]} | {k} | " + " | ".join(str(int(x)) for x in v) + " |")
    command = (f"python benchmarks/shell_margin_sweep.py --budget {args.budget} --config {args.config} --seeds "
               f"{' '.join(map(str, args.seeds))} --before {args.before} --margins {' '.join(args.margins)}")
    print()
    print(compare_markdown(compare(runs, "before", args.seeds), "before", args.seeds, args.budget, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
