"""Which part of a zero-shot channel ranks its lesions: Stage 1's anomaly or Stage 2's query term?
A development-only study over trained models of the sealed benchmark (no training, no test data).

A zero-shot tumour channel's logit is the sum of two parts (architectures/heads.py, inject_anomaly):
the query term of its tumour query (Stage 2's mask head, aligned to the type's text) and the
calibrated anomaly logit (Stage 1's organ and background queries: minus the best affinity).  Stage 1
is frozen in Stage 2, so the anomaly is Stage 1's alone.  The prediction folders of the benchmark
hold only the sum; this study predicts the development cases of each zero-shot type again with
the plugin's `predict` (its anomaly map, the benchmark's sliding window without mirroring) and
splits the channel's logit into anomaly + query term.

Per type and seed, over the voxels of the benchmark's host region (the reference host organ with
the lesion, grown by the voxel metric's host margin) in the cases that hold the type: the voxel
AUROC (lesion against the rest of the region, voxels pooled over cases) of the anomaly, of the
query term and of the channel (their sum); each part's median on lesion and on non-lesion voxels;
and the correlation of the query term with the host organ channel's logit (does the zero-shot
query look for its organ, or for what is not its organ?).  The channel's AUROC is also computed
from the benchmark's own saved predictions of the same voxels, as a check that the re-prediction
is the benchmark's model and grid.  Voxels where
the channel or the anomaly is held at the floor logit (outside their regions) are left out of the
parts' columns and counted; in the region's outer shell the query term includes the shell margin.

With --rules it prints instead the same voxel AUROC for candidate rules that combine the two parts
(how the query term may enter the channel), each computed per case over the channel's own region
(where neither part is at the floor), as the network would at prediction:

    sum           anomaly + query term (the prediction before 2026-12-03)
    anomaly       the anomaly alone
    floor_q25/med/q75   anomaly + max(query term, its 25th percentile / median / 75th percentile)
    agree         anomaly + query term where the two correlate positively over the region, else the anomaly
    corr_weight   anomaly + max(correlation, 0) * query term
    host_resid    anomaly + query term minus its least-squares fit on the host organ's logit
    host_resid_pos  the same where that fit's slope is positive, else the sum
    host_resid_centred  anomaly + query term minus slope * (host logit - its mean over the region):
                  the residual with the query term's mean kept (the switch zero_shot_host_residual)

In this analysis the query term in the outer shell includes the shell margin; the switch fits the
query term before the margin is applied.  The split into parts assumes a channel that is their plain
sum: study models whose plans.json stores zero_shot_host_residual false (the ablation's `zept` models,
trained while it was off by default, or nnUNetTrainerZePTStage2_noHostResidualQuery); with it on, the
"query term" read here is already the residual.

    python benchmarks/zero_shot_channel_parts.py --work /work/bench/work --budget b3000 --seeds 0 1
    python benchmarks/zero_shot_channel_parts.py --work /work/bench/work --budget b3000 --seeds 0 1 --rules
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zero_shot  # noqa: E402

FLOOR_LOGIT = -29.0      # the restriction's floor is -30 (architectures/heads.py); blending keeps it below this


def logit(p: np.ndarray) -> np.ndarray:
    """Logit of stored probabilities, clipped so that 0 and 1 stay finite."""
    from scipy.special import logit as _logit

    return _logit(np.clip(p.astype(np.float64), 1e-15, 1 - 1e-15))


def predict_parts(bench: "zero_shot.Bench", config: str, seed: int, cases: List[str], out: Path) -> Path:
    """The plugin's predict (anomaly map and per-class probabilities) of `cases`, once."""
    if (out / "done").is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    images = bench.split_folders("dev")["images"]
    ending = bench.dataset_json.get("file_ending", ".nii.gz")
    model = bench.fold_folder(seed, zero_shot.trainers_of(config)[-1]).parent
    cmd = [sys.executable, "-m", "nnunetv2_zept.cli", "predict", "-m", str(model), "-f", zero_shot.FOLD,
           "--disable_tta", "--save_probabilities", "-device", bench.device, "-o", str(out),
           "-i", *[str(images / f"{c}_0000{ending}") for c in cases]]
    subprocess.run(cmd, env=bench.env, check=True, stdout=subprocess.DEVNULL)
    (out / "done").write_text("ok\n")
    return out


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, scores))


RULES = ("sum", "anomaly", "floor_q25", "floor_med", "floor_q75", "agree", "corr_weight", "host_resid",
         "host_resid_pos", "host_resid_centred")


def combined(rule: str, a: np.ndarray, q: np.ndarray, host: np.ndarray) -> np.ndarray:
    """One case's channel under `rule` from its anomaly a, query term q and host organ logit, all over
    the channel's region (1-D arrays)."""
    if rule == "sum":
        return a + q
    if rule == "anomaly":
        return a
    if rule.startswith("floor_"):
        return a + np.maximum(q, np.percentile(q, {"floor_q25": 25, "floor_med": 50, "floor_q75": 75}[rule]))
    r_qa = np.corrcoef(q, a)[0, 1]
    if rule == "agree":
        return a + (q if r_qa >= 0 else 0.0)
    if rule == "corr_weight":
        return a + max(r_qa, 0.0) * q
    if rule == "host_resid_centred":
        # the switch's own function (architectures/heads.py), over the whole region as one sample
        import torch

        from nnunetv2_zept.architectures.heads import host_residual

        q64, h64 = torch.from_numpy(q)[None], torch.from_numpy(host)[None]
        return a + host_residual(q64, h64, torch.ones_like(q64, dtype=torch.bool))[0].double().numpy()
    hc = host - host.mean()
    beta = float(np.mean((q - q.mean()) * hc) / max(np.mean(hc * hc), 1e-12))
    if rule == "host_resid":
        return a + q - beta * host
    return a + q - max(beta, 0.0) * host       # host_resid_pos


def main(argv=None) -> int:
    import SimpleITK as sitk

    from nnunetv2_zept.evaluation.mask_ops import within_mm
    from nnunetv2_zept.experiments.baseline_scores import PROBABILITY_KEY
    from nnunetv2_zept.prediction_files import case_output_files
    from nnunetv2_zept.roles import channel_names, roles_from_dataset_json
    from nnunetv2_zept.tumour_score import TumourScoreSettings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--config", default="zept")
    ap.add_argument("--budget", default="b3000")
    ap.add_argument("--types", nargs="+", default=None, help="zero-shot types (default: every one)")
    ap.add_argument("--rules", action="store_true", help="voxel AUROC of candidate combination rules instead")
    args = ap.parse_args(argv)
    bench = zero_shot.Bench(Path(args.work).resolve(), args.budget)
    folders = bench.split_folders("dev")
    dj = bench.dataset_json
    roles = roles_from_dataset_json(dj)
    names = channel_names(dj)
    ids = {n: set(v if isinstance(v, list) else [v]) for n, v in dj["labels"].items()}
    ending = dj.get("file_ending", ".nii.gz")
    margin = TumourScoreSettings().host_margin_mm
    types = [t for t in roles.zero_shot if args.types is None or names[t] in args.types]

    labels: Dict[str, tuple] = {}
    for p in sorted(folders["labels"].glob(f"*{ending}")):
        img = sitk.ReadImage(str(p))
        labels[p.name[:-len(ending)]] = (sitk.GetArrayFromImage(img), tuple(img.GetSpacing())[::-1])
    if args.rules:
        print(f"# zero-shot channel combination rules, development split, {args.config}, budget {args.budget}\n")
        print("Voxel AUROC in the host region (lesion against the rest, voxels pooled over the cases of the type).\n")
        print("| type | seed | " + " | ".join(RULES) + " |")
        print("|---|---|" + "---|" * len(RULES))
    else:
        print(f"# zero-shot channel parts, development split, {args.config}, budget {args.budget}\n")
        print("| type | seed | cases | AUROC anomaly | AUROC query term | AUROC channel | AUROC saved prediction "
          "| anomaly median lesion / rest | query term median lesion / rest | correlation query term, host organ "
          "| voxels left out |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in types:
        tname = names[t]
        lesion_ids = ids[tname]
        host_ids = set().union(*(ids[names[h]] for h in roles.hosts[t]))
        cases = [c for c, (lab, _) in labels.items() if np.isin(lab, list(lesion_ids)).any()]
        for seed in args.seeds:
            out = predict_parts(bench, args.config, seed, cases,
                                bench.work / "predictions" / args.budget / "dev_channel_parts" / args.config /
                                f"seed{seed}" / tname)
            saved = bench.work / "predictions" / args.budget / "dev" / args.config / f"seed{seed}"
            cols = {k: [] for k in ("anomaly", "channel", "host", "saved", "lesion", "kept")}
            ruled = {r: [] for r in RULES}
            for c in cases:
                lab, spacing = labels[c]
                lesion = np.isin(lab, list(lesion_ids))
                region = within_mm(np.isin(lab, list(host_ids)) | lesion, spacing, margin)
                files = case_output_files(str(out), c)
                a = logit(sitk.GetArrayFromImage(sitk.ReadImage(files["anomaly_map"])))
                probs = np.load(files["probabilities_npz"])[PROBABILITY_KEY]
                ch = logit(probs[t])
                host = logit(np.max([probs[h] for h in roles.hosts[t]], axis=0))
                cols["lesion"].append(lesion[region])
                if args.rules:
                    live = (a > FLOOR_LOGIT) & (ch > FLOOR_LOGIT)          # the channel's own region
                    for r in RULES:
                        v = ch.copy()
                        v[live] = combined(r, a[live], ch[live] - a[live], host[live])
                        ruled[r].append(v[region])
                    continue
                sv = np.load(saved / f"{c}.npz")[PROBABILITY_KEY][t]
                cols["anomaly"].append(a[region])
                cols["channel"].append(ch[region])
                cols["host"].append(host[region])
                cols["saved"].append(sv[region])
                cols["kept"].append((a[region] > FLOOR_LOGIT) & (ch[region] > FLOOR_LOGIT))
            if args.rules:
                les = np.concatenate(cols["lesion"])
                print(f"| {tname} | {seed} | " + " | ".join(f"{auroc(np.concatenate(ruled[r]), les):.3f}" for r in RULES)
                      + " |", flush=True)
                continue
            a, ch, host, sv, les, kept = (np.concatenate(cols[k]) for k in ("anomaly", "channel", "host", "saved",
                                                                             "lesion", "kept"))
            q = ch - a
            ak, qk, lk = a[kept], q[kept], les[kept]
            med = lambda v, m: f"{np.median(v[m]):.2f}" if m.any() else "-"   # noqa: E731
            print(f"| {tname} | {seed} | {len(cases)} | {auroc(ak, lk):.3f} | {auroc(qk, lk):.3f} | {auroc(ch, les):.3f} "
                  f"| {auroc(sv, les):.3f} | {med(ak, lk)} / {med(ak, ~lk)} | {med(qk, lk)} / {med(qk, ~lk)} "
                  f"| {np.corrcoef(qk, host[kept])[0, 1]:+.2f} | {int((~kept).sum())} of {kept.size} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
