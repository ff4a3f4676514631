"""Should a seen tumour take precedence over a zero-shot type of the same organ?  Decided on the
development split of the sealed benchmark.

What it is about: nnU-Net paints region channels into the label map in channel order, later over
earlier, and the zero-shot types come after the seen ones.  In one ZePT development run (seed 1)
the liver-metastasis channel (zero-shot) reached p > 0.5 inside 9 of the 10 seen liver tumours and
painted over them: liver-tumour DSC 0.59 in its own channel, 0.39 in the label map.

The candidate rule: a zero-shot channel may not exceed 1 - p of the seen tumour channels that share
one of its host organs, p_zs' = min(p_zs, 1 - max p_seen), i.e. on logits l_zs' = min(l_zs, -l_seen):
where a seen tumour is predicted (p_seen > 0.5), the zero-shot type is not.  Elsewhere nothing
changes.  This script applies it to the saved development predictions of a ZePT run (the
probabilities of `zero_shot.py dev`; no training), evaluates both folders with the benchmark's own
evaluation and prints the paired differences with bootstrap 95 % intervals over cases.

The decision was fixed before anything was scored: adopt the rule if, on the development runs
given, the seen-tumour DSC (mean of the seen types) rises by at least 0.01 and neither the
zero-shot mean case AUROC nor the zero-shot mean voxel AUROC in the host falls by more than 0.01.

    python benchmarks/seen_precedence.py --work /work/bench/work --seeds 2
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Dict

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zero_shot  # noqa: E402
import zero_shot_stats as stats  # noqa: E402

METRICS = ("DSC", "case_AUROC", "voxel_AUROC_host", "voxel_AUROC_body")


def seen_precedence(probs: np.ndarray, roles) -> np.ndarray:
    """Region probabilities [C, *s] with every zero-shot channel capped at 1 - (highest seen tumour
    probability among the seen types that share a host organ with it); a copy."""
    out = probs.copy()
    for z in roles.zero_shot:
        rivals = [s for s in roles.seen_tumours if set(roles.hosts[s]) & set(roles.hosts[z])]
        if rivals:
            out[z] = np.minimum(out[z], 1.0 - probs[rivals].max(axis=0))
    return out


def precedence_copy(prediction: Path, output: Path, dataset_json: dict) -> int:
    """Copy an nnUNetv2_predict --save_probabilities folder with `seen_precedence` applied to every
    case's probabilities and the label maps repainted the way nnU-Net exports regions."""
    import SimpleITK as sitk

    from nnunetv2_zept.experiments.baseline_scores import PROBABILITY_KEY, paint_order, paint_regions
    from nnunetv2_zept.roles import roles_from_dataset_json

    roles = roles_from_dataset_json(dataset_json)
    ending = dataset_json.get("file_ending", ".nii.gz")
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    n = 0
    for npz in sorted(prediction.glob("*.npz")):
        label_file = prediction / (npz.name[:-4] + ending)
        with np.load(npz, allow_pickle=False) as f:
            probs = seen_precedence(np.asarray(f[PROBABILITY_KEY]), roles)
        np.savez_compressed(output / npz.name, **{PROBABILITY_KEY: probs})
        image = sitk.ReadImage(str(label_file))
        seg = sitk.GetImageFromArray(paint_regions(probs, paint_order(dataset_json),
                                                   sitk.GetArrayFromImage(image).dtype))
        seg.CopyInformation(image)
        sitk.WriteImage(seg, str(output / label_file.name), True)
        n += 1
    if n == 0:
        raise FileNotFoundError(f"no <case>.npz in {prediction}: run `zero_shot.py dev --configs zept` first")
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="the benchmark's work folder (holds the saved predictions)")
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--budget", default="b2000")
    ap.add_argument("--config", default="zept")
    ap.add_argument("--results", default=str(zero_shot.RESULTS),
                    help="the benchmark's result folder, whose saved evaluation of the original predictions is reused")
    ap.add_argument("--out", default=None, help="Markdown table (default <results>/<budget>/seen_precedence_dev.md)")
    args = ap.parse_args(argv)
    bench = zero_shot.Bench(Path(args.work).resolve(), args.budget, results=Path(args.results))
    folders = bench.split_folders("dev")
    per_seed: Dict[str, list] = {"off": [], "on": []}
    roles_of = None
    for seed in args.seeds:
        pred = bench.work / "predictions" / args.budget / "dev" / args.config / f"seed{seed}"
        if not (pred / "done").is_file():
            raise SystemExit(f"no saved development predictions in {pred}: run "
                             f"`python benchmarks/zero_shot.py dev --configs {args.config} --seeds {seed}` first")
        copy = pred.with_name(pred.name + "_seen_precedence")
        precedence_copy(pred, copy, bench.dataset_json)
        summary, arrays = zero_shot.evaluate_run(folders, copy, bench.dataset_json)
        per_seed["on"].append(arrays)
        roles_of = roles_of or {t: v["role"] for t, v in summary["per_class"].items() if "tumour" in v["role"]}
        saved = bench.run_file("dev", args.config, seed).with_suffix(".npz")
        if saved.is_file():      # the run's own evaluation of these predictions, as the benchmark stored it
            per_seed["off"].append(dict(np.load(saved, allow_pickle=False)))
        else:
            per_seed["off"].append(zero_shot.evaluate_run(folders, pred, bench.dataset_json)[1])
    seen = [t for t, r in roles_of.items() if r == "seen_tumour"]
    unseen = [t for t, r in roles_of.items() if r == "zero_shot_tumour"]
    a = per_seed["off"][0]
    weights = stats.resample_weights({t: a[f"{t}/present"] for t in seen + unseen}, len(a["cases"]))
    run = {k: [stats.run_metrics(x, seen + unseen, weights) for x in v] for k, v in per_seed.items()}
    rows = [f"# Seen-tumour precedence, `{args.config}`, budget {args.budget}, development split, seeds {args.seeds}",
            "", f"`python benchmarks/seen_precedence.py {' '.join(argv or sys.argv[1:])}`", "",
            "| measure | without | with | difference [95 % CI] |", "|---|---|---|---|"]
    checks = {}
    for label, types, m in [("seen DSC", seen, "DSC")] + [(f"zero-shot {m}", unseen, m) for m in METRICS] + \
            [(f"{t} {m}", [t], m) for t in seen + unseen for m in ("DSC", "case_AUROC")]:
        off = [stats.group_mean(x, types, m) for x in run["off"]]
        on = [stats.group_mean(x, types, m) for x in run["on"]]
        d = stats.difference_with_ci(on, off)
        checks[label] = d["difference"]
        rows.append(f"| {label} | {np.mean([x[0] for x in off]):.3f} | {np.mean([x[0] for x in on]):.3f} | "
                    f"{d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] |")
    adopt = (checks["seen DSC"] >= 0.01 and checks["zero-shot case_AUROC"] >= -0.01
             and checks["zero-shot voxel_AUROC_host"] >= -0.01)
    rows += ["", f"Decision rule (fixed before scoring): seen DSC +0.01 or more, zero-shot case AUROC and voxel "
                 f"AUROC (host) each no more than 0.01 lower: **{'adopt' if adopt else 'do not adopt'}**."]
    text = "\n".join(rows) + "\n"
    out = Path(args.out) if args.out else bench.results / "seen_precedence_dev.md"
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
