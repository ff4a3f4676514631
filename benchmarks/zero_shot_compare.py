"""Paired comparison of configurations: `python benchmarks/zero_shot.py compare --configs REF VARIANT
[VARIANT ...] [--seeds ...] [--split test]`.

The before/after measurement of one change (an ablation switch, a lesion curriculum): each variant
against the reference configuration on the training seeds both have, with the paired bootstrap 95 %
interval over cases of the difference of seed means (the same case resamples for both, so case
difficulty cancels).  On the development split a comparison is how a change is chosen.  With
--split test it only reads runs that `test` has already scored (and recorded): it reports the
paired difference of a choice made before, and scores nothing.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

import zero_shot_stats as stats

ROWS = (("organ DSC", None, "organ_DSC"),
        ("zero-shot case AUROC", "zero_shot_tumour", "case_AUROC"),
        ("zero-shot voxel AUROC (host)", "zero_shot_tumour", "voxel_AUROC_host"),
        ("zero-shot FPR95 (body)", "zero_shot_tumour", "FPR95_body"),
        ("zero-shot DSC", "zero_shot_tumour", "DSC"),
        ("seen case AUROC", "seen_tumour", "case_AUROC"),
        ("seen DSC", "seen_tumour", "DSC"))
PER_TYPE = ("case_AUROC", "DSC")


REPO = Path(__file__).resolve().parent.parent
# the code that turns saved predictions into a run's stored per-case arrays; runs scored by commits
# that differ here are not comparable (the tumour score's grid rules moved case AUROC by up to 0.17)
SCORING_PATHS = ("nnunetv2_zept/tumour_score.py", "nnunetv2_zept/evaluation",
                 "nnunetv2_zept/experiments/baseline_scores.py")


def scoring_mismatch(runs: Dict[str, List[dict]]) -> Optional[str]:
    """None if every run was scored by the same scoring code, else what differs."""
    commits = sorted({str(r.get("commit", "?")) for rs in runs.values() for r in rs})
    if len(commits) == 1:
        return None
    for other in commits[1:]:
        try:
            same = subprocess.run(["git", "diff", "--quiet", commits[0], other, "--", *SCORING_PATHS],
                                  cwd=REPO, capture_output=True).returncode == 0
        except OSError:
            same = False
        if not same:
            by = {c: sorted({str(r.get("commit", "?")) for r in rs}) for c, rs in runs.items()}
            return (f"runs scored by commits whose scoring code differs or cannot be checked ({commits[0]} vs {other}; "
                    f"{by}): evaluate them again with one commit (`zero_shot.py re-evaluate`) or train them again")
    return None


def training_cpu_mismatch(runs: Dict[str, List[dict]]) -> Optional[str]:
    """None unless the trainings of one seed ran on different CPU types (a seed reproduces its run
    on one CPU type only, so the difference would mix the change with the CPU's rounding).
    Trainings recorded before the CPU type was (no "cpu") are not checked."""
    by_seed: Dict[int, Dict[str, str]] = {}
    for c, rs in runs.items():
        for r in rs:
            for trainer, t in r.get("training", {}).items():
                if t.get("cpu"):
                    by_seed.setdefault(int(r["seed"]), {})[f"{c}: {trainer}"] = t["cpu"]
    for seed, cpus in sorted(by_seed.items()):
        if len(set(cpus.values())) > 1:
            listed = "; ".join(f"{k} on {v}" for k, v in sorted(cpus.items()))
            return (f"seed {seed} was trained on different CPU types ({listed}): train the reference and the "
                    f"variant of one seed on one CPU type (a fresh --work folder retrains both)")
    return None


def shared_seeds(runs: Dict[str, List[dict]], wanted: Sequence[int] = ()) -> List[int]:
    common = set.intersection(*(set(int(r["seed"]) for r in rs) for rs in runs.values()))
    if wanted:
        common &= set(wanted)
    return sorted(common)


def compare(runs: Dict[str, List[dict]], reference: str, seeds: Sequence[int],
            resamples: int = stats.RESAMPLES) -> Dict[str, Dict[str, dict]]:
    """{variant: {row label: {"reference", "variant", "difference", "ci_low", "ci_high"}}}; `runs`
    maps each configuration to its runs of one split (benchmarks/zero_shot.py load_runs)."""
    picked = {c: sorted((r for r in rs if int(r["seed"]) in seeds), key=lambda r: r["seed"]) for c, rs in runs.items()}
    first = picked[reference][0]
    a = first["arrays"]
    for c, rs in picked.items():
        if any(not np.array_equal(r["arrays"]["cases"], a["cases"]) for r in rs):
            raise SystemExit(f"{c}: its cases differ from {reference}'s; both must come from one benchmark split")
    tumours = sorted({k.split("/")[0] for k in a if "/" in k})
    role = {t: first["full_resolution"]["per_class"].get(t, {}).get("role", "?") for t in tumours}
    weights = stats.resample_weights({t: a[f"{t}/present"] for t in tumours}, len(a["cases"]), resamples)
    metrics = {c: [stats.run_metrics(r["arrays"], tumours, weights) for r in rs] for c, rs in picked.items()}

    def values(c: str, members: Optional[Sequence[str]], m: str) -> List[np.ndarray]:
        if members is None:
            return [s[m] for s in metrics[c]]
        return [stats.group_mean(s, members, m) for s in metrics[c]]

    rows = [(label, [t for t in tumours if role[t] == r] if r else None, m) for label, r, m in ROWS]
    rows = [row for row in rows if row[1] is None or row[1]]
    rows += [(f"{t} {m}", [t], m) for t in tumours for m in PER_TYPE]
    out: Dict[str, Dict[str, dict]] = {}
    for variant in picked:
        if variant == reference:
            continue
        out[variant] = {}
        for label, members, m in rows:
            ref, var = values(reference, members, m), values(variant, members, m)
            d = stats.difference_with_ci(var, ref)
            d.update(reference=float(np.nanmean([x[0] for x in ref])), variant=float(np.nanmean([x[0] for x in var])))
            out[variant][label] = d
    return out


SPLIT_NAMES = {"dev": "development", "test": "test"}


def compare_markdown(result: Dict[str, Dict[str, dict]], reference: str, seeds: Sequence[int], budget: str,
                     command: str, split: str = "dev") -> str:
    name = SPLIT_NAMES[split]
    lines = [f"## Paired comparison against `{reference}`, budget {budget}, {name} split, seeds {list(seeds)}", "",
             f"Written by `{command}`.  Each cell: value on all {name} cases, mean over the seeds; "
             "difference = variant minus reference with its paired bootstrap 95 % interval over cases.", ""]
    for variant, rows in result.items():
        lines += [f"### `{variant}`", "", f"| measure | `{reference}` | `{variant}` | difference [95 % CI] |",
                  "|---|---|---|---|"]
        for label, d in rows.items():
            lines.append(f"| {label} | {d['reference']:.3f} | {d['variant']:.3f} | "
                         f"{d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] |")
        lines.append("")
    return "\n".join(lines)


def write_comparison(budget_dir: Path, runs: Dict[str, List[dict]], wanted_seeds: Sequence[int], out_md: Path,
                     command: str, split: str = "dev") -> str:
    reference = next(iter(runs))
    name = SPLIT_NAMES[split]
    for c, rs in runs.items():
        if not rs:
            raise SystemExit(f"no {name} runs of {c!r} in {budget_dir / split / c}: "
                             f"run `python benchmarks/zero_shot.py {split} --configs {c}` first")
    seeds = shared_seeds(runs, wanted_seeds)
    if not seeds:
        have = {c: sorted(int(r["seed"]) for r in rs) for c, rs in runs.items()}
        raise SystemExit(f"compare needs seeds every configuration has run on the {name} split; they have {have}")
    picked = {c: [r for r in rs if int(r["seed"]) in seeds] for c, rs in runs.items()}
    problem = scoring_mismatch(picked) or training_cpu_mismatch(picked)
    if problem:
        raise SystemExit(problem)
    text = compare_markdown(compare(picked, reference, seeds), reference, seeds, budget_dir.name, command, split)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    return text
