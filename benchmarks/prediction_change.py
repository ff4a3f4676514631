"""Before/after of a prediction-only change on the development split, with the same trained models.

A change that touches only what the network does in prediction (not what it learns) is measured
on the very models the zero-shot benchmark trained: their development-split predictions from
before the change are on disk, this script predicts the split again with the current code, scores
both with the benchmark's scoring and writes the paired comparison (benchmarks/zero_shot_compare.py:
difference of seed means with a paired bootstrap 95 % interval over cases).  Development split
only, like every choice of the benchmark.

    python benchmarks/prediction_change.py --name seen_restriction --config zept --seeds 0 1 2 \\
        --budget b2000 --before dev_retrained --work WORK

`--before` names the folder under WORK/predictions/<budget>/ that holds the earlier predictions
(`dev` for the models on record, `dev_retrained` for seeds a later session trained again); the new
ones go to WORK/predictions/<budget>/dev_<name>/ and the table to
results/zero_shot/<budget>/prediction_change_dev_<name>.md (`..._<name>_<config>.md` for a
configuration other than zept).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zero_shot  # noqa: E402
from zero_shot_compare import compare, compare_markdown  # noqa: E402


def scored_run(bench: "zero_shot.Bench", config: str, seed: int, pred: Path) -> dict:
    """A run record as zero_shot_compare reads it, from the predictions in `pred`."""
    summary, arrays = bench.score_predictions("dev", config, pred)
    return {"seed": seed, "arrays": arrays,
            "full_resolution": {"groups": summary["groups"],
                                "per_class": {k: zero_shot._slim(v) for k, v in summary["per_class"].items()}}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="what the change is called (folder and table names)")
    ap.add_argument("--config", default="zept")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", default="b2000", choices=sorted(zero_shot.BUDGETS))
    ap.add_argument("--before", default="dev_retrained", help="folder of the earlier development predictions")
    ap.add_argument("--work", required=True, help="the zero-shot benchmark's work folder (data, models, predictions)")
    ap.add_argument("--results", default=str(zero_shot.RESULTS))
    args = ap.parse_args(argv)

    bench = zero_shot.Bench(Path(args.work).resolve(), args.budget, results=Path(args.results))
    bench.prepare()
    root = bench.work / "predictions" / args.budget
    runs: dict = {"before": [], "after": []}
    for seed in args.seeds:
        before = root / args.before / args.config / f"seed{seed}"
        if not (before / "done").is_file():
            raise SystemExit(f"{args.config} seed {seed}: no finished earlier predictions in {before}; "
                             f"--before names the folder under {root} that holds them")
        trainer = zero_shot.trainers_of(args.config)[-1]
        if not (bench.fold_folder(seed, trainer) / "checkpoint_final.pth").is_file():
            raise SystemExit(f"{args.config} seed {seed}: no trained model in {bench.fold_folder(seed, trainer)}; "
                             f"a prediction-only change is measured on the models that made the earlier predictions")
        after = root / f"dev_{args.name}" / args.config / f"seed{seed}"
        env = dict(bench.env, nnUNet_results=str(bench.results_root(seed)))
        t0 = time.time()
        bench.predict_split("dev", args.config, seed, after, env, f"predict_dev_{args.name}_{args.config}.log",
                            f"predicting the development split with the current code ({args.name})")
        zero_shot.log(f"[{args.config} seed {seed}] predicted in {(time.time() - t0) / 60:.1f} min; scoring both")
        runs["before"].append(scored_run(bench, args.config, seed, before))
        runs["after"].append(scored_run(bench, args.config, seed, after))

    command = (f"python benchmarks/prediction_change.py --name {args.name} --config {args.config} --seeds "
               f"{' '.join(map(str, args.seeds))} --budget {args.budget} --before {args.before}")
    text = compare_markdown(compare(runs, "before", args.seeds), "before", args.seeds, args.budget, command)
    text = text.replace("## Paired comparison", f"## {args.name}: `{args.config}` predicted after the change against "
                                                 f"its own predictions from before; paired comparison", 1)
    suffix = "" if args.config == "zept" else f"_{args.config}"
    out = bench.results / f"prediction_change_dev_{args.name}{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + f"\nCommit {zero_shot._commit()}, {time.strftime('%Y-%m-%d %H:%M %Z')}.\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
