"""Statistics of the sealed zero-shot benchmark: per-run case data, and bootstrap confidence
intervals over cases for the mean over training seeds.

One run (a configuration trained with one seed, evaluated on one split) is stored as a small
JSON of its summary metrics plus an .npz of per-case arrays, enough to recompute every metric
on a resample of the cases:

    cases                [C]            case ids (the same order in every run of a split)
    organ_dsc            [C, O]         DSC per case and organ (NaN where undefined)
    <type>/score         [C]            tumour-presence score of that type per case
    <type>/present       [C]            whether the case holds that type (reference)
    <type>/dsc, /nsd     [C]            per-case DSC / NSD (NaN where the case has no such tumour)
    <type>/voxels        [C]            reference voxels of that type per case
    <type>/host, /body   [C, 2, B]      per-case voxel histograms (positives, negatives) of the type's
                                        score in the host region / CT body mask, B logit bins

Voxel histograms are coarsened from the evaluation's 10^4 bins to B bins (STORED_BINS, each
0.32 logit wide) to keep the committed files small; AUROC and FPR95 are exact for the coarse
bins (ties inside a bin count 1/2).  Point estimates and intervals in the tables both come from
the coarse bins, so an interval always holds its estimate; each run's JSON also keeps the
full-resolution values of the evaluation.

Bootstrap: the same B_resamples case resamples (drawn with replacement, stratified so that every
tumour type keeps its number of positive cases) are applied to every seed and every
configuration, so differences between configurations are paired.  For each resample the metric
is computed per seed and averaged over seeds; the 2.5th and 97.5th percentiles of that average
are the 95% interval.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

STORED_BINS = 200
RESAMPLES = 1000
MIN_LESION_VOXELS_3_ACROSS = 4.0 / 3.0 * np.pi * 1.5 ** 3     # a sphere of diameter 3 voxels: 14.1 voxels


def at_least_3_across(voxels: np.ndarray) -> np.ndarray:
    """Which lesions (given their voxel counts) are at least 3 voxels across, the size the
    DSC_3vox / NSD_3vox measures and the threshold study keep."""
    return np.asarray(voxels) >= MIN_LESION_VOXELS_3_ACROSS


# ------------------------------------------------------------------------------------ run data
def coarse_histogram(hist, bins: int = STORED_BINS) -> np.ndarray:
    """[2, bins] int64 (positives, negatives) of a RocHistogram (its n_bins must be a multiple of bins)."""
    n = hist.n_bins
    if n % bins:
        raise ValueError(f"{n} histogram bins cannot be grouped into {bins}")
    k = n // bins
    return np.stack([hist.positives.reshape(bins, k).sum(1), hist.negatives.reshape(bins, k).sum(1)])


def case_arrays(summary: dict, case_histograms: dict, organs: Sequence[str], tumours: Sequence[str]) -> Dict[str, np.ndarray]:
    """The per-case arrays of one run from `evaluate_folder`'s summary and its case histograms."""
    cases = list(summary["cases"])
    pc = summary["per_case"]
    out: Dict[str, np.ndarray] = {"cases": np.array(cases)}
    out["organ_dsc"] = np.array([[_num(pc[c].get(o, {}).get("DSC")) for o in organs] for c in cases], dtype=np.float64)
    for t in tumours:
        rows = [pc[c].get(t, {}) for c in cases]
        present = np.array([bool(r.get("tumour_present", r.get("n_reference_voxels", 0) > 0)) for r in rows])
        out[f"{t}/present"] = present
        out[f"{t}/score"] = np.array([_num(r.get("tumour_score")) for r in rows], dtype=np.float64)
        out[f"{t}/dsc"] = np.where(present, [_num(r.get("DSC")) for r in rows], np.nan)
        out[f"{t}/nsd"] = np.where(present, [_num(r.get("NSD")) for r in rows], np.nan)
        out[f"{t}/voxels"] = np.array([int(r.get("n_reference_voxels", 0)) for r in rows], dtype=np.int64)
        for region in ("host", "body"):
            hs = []
            for c in cases:
                h = case_histograms.get(c, {}).get(t)
                hs.append(coarse_histogram(h[region]) if h is not None else np.zeros((2, STORED_BINS), np.int64))
            out[f"{t}/{region}"] = np.stack(hs).astype(np.int64)
    return out


def _num(v) -> float:
    return float("nan") if v is None else float(v)


# ------------------------------------------------------------------------------------ metrics
def auroc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC of histogram pairs [..., B] (ties inside a bin count 1/2); NaN without positives or negatives."""
    pos = pos.astype(np.float64)
    neg = neg.astype(np.float64)
    above = np.cumsum(pos[..., ::-1], axis=-1)[..., ::-1] - pos          # positives in higher bins
    P, N = pos.sum(-1), neg.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((P > 0) & (N > 0), (neg * (above + 0.5 * pos)).sum(-1) / (P * N), np.nan)


def fpr_at_tpr_from_histograms(pos: np.ndarray, neg: np.ndarray, target: float = 0.95) -> np.ndarray:
    """FPR at the highest bin threshold where TPR >= target, for histogram pairs [..., B]."""
    pos = pos.astype(np.float64)
    neg = neg.astype(np.float64)
    tp = np.cumsum(pos[..., ::-1], axis=-1)
    fp = np.cumsum(neg[..., ::-1], axis=-1)
    P, N = tp[..., -1:], fp[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tp / P, fp / N
    k = np.argmax(tpr >= target - 1e-12, axis=-1)
    out = np.take_along_axis(fpr, k[..., None], axis=-1)[..., 0]
    return np.where((P[..., 0] > 0) & (N[..., 0] > 0), out, np.nan)


def dice_at_thresholds(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """DSC of the mask {score >= lower edge of bin b} for every bin b, from histogram pairs [..., B]
    of one case's voxels (positives = reference lesion): [..., B]; NaN without positives.
    Bin b = B/2 is the threshold 0.5 (the bins are symmetric in logit)."""
    pos = pos.astype(np.float64)
    neg = neg.astype(np.float64)
    tp = np.cumsum(pos[..., ::-1], axis=-1)[..., ::-1]
    fp = np.cumsum(neg[..., ::-1], axis=-1)[..., ::-1]
    P = pos.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(P > 0, 2 * tp / (P + tp + fp), np.nan)


def bin_lower_edges(bins: int = STORED_BINS) -> np.ndarray:
    """Probability at the lower edge of each stored bin (the evaluation's bins, equal in logit)."""
    from scipy.special import expit

    from nnunetv2_zept.evaluation.histogram_roc import LOGIT_RANGE

    return expit(np.linspace(-LOGIT_RANGE, LOGIT_RANGE, bins + 1)[:-1])


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Case AUROC for case weights [R, C] (multiplicities of a resample); NaN where a class is missing."""
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = labels.astype(bool), ~labels.astype(bool)
    greater = (s[:, None] > s[None, :]).astype(np.float64) + 0.5 * (s[:, None] == s[None, :])
    m = greater[np.ix_(pos, neg)]                                        # [P, N]
    wp, wn = weights[:, pos], weights[:, neg]
    num = np.einsum("rp,pn,rn->r", wp, m, wn)
    den = wp.sum(1) * wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean of per-case values [C] (NaN = not counted) under case weights [R, C]."""
    ok = ~np.isnan(values)
    w = weights[:, ok]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w.sum(1) > 0, (w * values[ok]).sum(1) / w.sum(1), np.nan)


def run_metrics(data: Dict[str, np.ndarray], tumours: Sequence[str], weights: np.ndarray) -> Dict[str, np.ndarray]:
    """Every metric of one run under case weights [R, C] -> {"<type>/<metric>": [R], "organ_DSC": [R]}."""
    out: Dict[str, np.ndarray] = {}
    organ = data["organ_dsc"]
    per_organ = np.stack([weighted_mean(organ[:, j], weights) for j in range(organ.shape[1])], axis=1)
    out["organ_DSC"] = np.nanmean(per_organ, axis=1) if organ.shape[1] else np.full(len(weights), np.nan)
    for t in tumours:
        out[f"{t}/case_AUROC"] = weighted_auroc(data[f"{t}/score"], data[f"{t}/present"], weights)
        out[f"{t}/DSC"] = weighted_mean(data[f"{t}/dsc"], weights)
        out[f"{t}/NSD"] = weighted_mean(data[f"{t}/nsd"], weights)
        big = at_least_3_across(data.get(f"{t}/voxels", np.full(len(data["cases"]), 10 ** 9)))
        out[f"{t}/DSC_3vox"] = weighted_mean(np.where(big, data[f"{t}/dsc"], np.nan), weights)
        out[f"{t}/NSD_3vox"] = weighted_mean(np.where(big, data[f"{t}/nsd"], np.nan), weights)
        for region in ("host", "body"):
            h = np.einsum("rc,cki->rki", weights, data[f"{t}/{region}"].astype(np.float64))
            out[f"{t}/voxel_AUROC_{region}"] = auroc_from_histograms(h[:, 0], h[:, 1])
            out[f"{t}/FPR95_{region}"] = fpr_at_tpr_from_histograms(h[:, 0], h[:, 1])
    return out


def group_mean(metrics: Dict[str, np.ndarray], types: Sequence[str], metric: str) -> np.ndarray:
    """[R] mean of one metric over several tumour types (NaN-aware) from run_metrics' output."""
    return np.nanmean(np.stack([metrics[f"{t}/{metric}"] for t in types]), axis=0)


def resample_weights(present: Dict[str, np.ndarray], n_cases: int, n: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[n + 1, C] case multiplicities: row 0 = every case once, then `n` stratified bootstrap
    resamples (cases of each tumour type and the tumour-free cases resampled within their stratum)."""
    rng = np.random.default_rng(seed)
    strata = np.full(n_cases, -1)
    for i, t in enumerate(sorted(present)):
        strata[np.asarray(present[t], dtype=bool) & (strata == -1)] = i
    w = np.zeros((n + 1, n_cases))
    w[0] = 1.0
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        draws = rng.integers(0, len(idx), size=(n, len(idx)))
        for r in range(n):
            np.add.at(w[r + 1], idx[draws[r]], 1.0)
    return w


def seed_mean_with_ci(per_seed: List[np.ndarray], level: float = 0.95) -> dict:
    """per_seed: [R+1] metric arrays (row 0 = all cases once) of each seed -> mean over seeds on all
    cases, its min-max over seeds, and the bootstrap interval of the seed mean."""
    arr = np.stack(per_seed)                                             # [S, R+1]
    full = arr[:, 0]
    with np.errstate(invalid="ignore"):
        boot = np.nanmean(arr[:, 1:], axis=0) if arr.shape[1] > 1 else np.array([])
    boot = boot[~np.isnan(boot)]
    lo, hi = (np.percentile(boot, [100 * (1 - level) / 2, 100 * (1 + level) / 2]) if boot.size else (np.nan, np.nan))
    ok = full[~np.isnan(full)]
    return {"mean": float(np.mean(ok)) if ok.size else float("nan"),
            "min": float(np.min(ok)) if ok.size else float("nan"),
            "max": float(np.max(ok)) if ok.size else float("nan"),
            "ci_low": float(lo), "ci_high": float(hi), "n_seeds": int(ok.size)}


def difference_with_ci(a: List[np.ndarray], b: List[np.ndarray], level: float = 0.95) -> dict:
    """Mean over seeds of a minus mean over seeds of b, with the paired bootstrap interval."""
    ma = np.nanmean(np.stack(a), axis=0)
    mb = np.nanmean(np.stack(b), axis=0)
    d = ma - mb
    boot = d[1:][~np.isnan(d[1:])]
    lo, hi = (np.percentile(boot, [100 * (1 - level) / 2, 100 * (1 + level) / 2]) if boot.size else (np.nan, np.nan))
    return {"difference": float(d[0]), "ci_low": float(lo), "ci_high": float(hi)}


def fmt_ci(s: Optional[dict], digits: int = 2) -> str:
    """'0.83 [0.77, 0.88] (0.80-0.86)': mean over seeds, bootstrap 95% CI, min-max over seeds."""
    if not s or s.get("mean") is None or math.isnan(s["mean"]):
        return "–"
    f = f"{{:.{digits}f}}"
    text = f.format(s["mean"])
    if not math.isnan(s.get("ci_low", float("nan"))):
        text += f" [{f.format(s['ci_low'])}, {f.format(s['ci_high'])}]"
    if s.get("n_seeds", 1) > 1:
        text += f" ({f.format(s['min'])}–{f.format(s['max'])})"
    return text
