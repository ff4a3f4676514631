"""Voxel-level ROC statistics with bounded memory: fixed-bin score histograms.

Why hand-written instead of `sklearn.metrics.roc_curve`: sklearn sorts every score, so pooling
the voxels of all test cases (10^8 to 10^10 float scores) would not fit in memory.  Here each
case adds its voxels to two integer histograms (positives, negatives) over [0, 1]; the memory
is `2 * n_bins` counters whatever the number of voxels and cases, and per-case and pooled
curves come from the same code.

Resolution: scores are binned by their logit log(p / (1 - p)) into `n_bins` equal bins over
[-LOGIT_RANGE, LOGIT_RANGE] (default 10^4 bins of 0.0064 logits).  Bins equal in probability
would throw away exactly the scores that matter for a rare class: a network's tumour
probabilities inside a host organ are mostly far below 10^-4, and 10^4 equal bins over [0, 1]
put all of them into the first bin, which turns any ranking there into a tie (AUROC 0.5).  In
logit space every decade of probability between 10^-13 and 1 - 10^-13 gets about 360 bins.
The curve has one point per bin edge, the exact ROC of the score rounded down to its bin, so
the only approximation is inside a bin:
* AUROC: pairs (positive, negative) in the same bin count 1/2 each, so
  |AUROC_hist - AUROC_exact| <= 0.5 * sum_b pos_b * neg_b / (P * N)  (`auroc_error_bound`).
* FPR95: the threshold is the lower edge of the highest bin at which TPR >= 0.95, so
  FPR95_exact <= FPR95_hist <= FPR95_exact + neg_{b*} / N  (`fpr_error_bound`).
Scores at or beyond the range (0 and 1 included) go into the first/last bin.  The bins depend
only on the score's order, so AUROC and FPR95 are those of the probabilities themselves.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy.special import expit, logit

DEFAULT_BINS = 10_000
LOGIT_RANGE = 32.0          # beyond the networks' logit clamp (30): a clamped logit keeps its own bin; also
                            # the bisection range of the tumour-presence score
_CHUNK_VOXELS = 1 << 22     # voxels binned per step: bounds the temporaries to a few tens of MB


class RocHistogram:
    """Counts of positive and negative voxels per score bin (bins equal in logit, see the module doc)."""

    def __init__(self, n_bins: int = DEFAULT_BINS):
        if int(n_bins) < 2:
            raise ValueError(f"n_bins = {n_bins!r}: need at least 2 bins (10^4 or more recommended)")
        self.n_bins = int(n_bins)
        self.positives = np.zeros(self.n_bins, dtype=np.int64)
        self.negatives = np.zeros(self.n_bins, dtype=np.int64)

    # ---------------------------------------------------------------- filling
    def _bin(self, scores: np.ndarray) -> np.ndarray:
        z = logit(np.clip(scores.astype(np.float64, copy=False), 0.0, 1.0))   # -inf at 0, +inf at 1: clipped below
        idx = np.floor((z + LOGIT_RANGE) * (self.n_bins / (2 * LOGIT_RANGE)))
        np.clip(idx, 0, self.n_bins - 1, out=idx)
        return idx.astype(np.int64)

    def bin_edges(self) -> np.ndarray:
        """Lower probability edge of every bin, increasing (0 for the first bin, which takes
        everything below it), and 1 as the last entry: n_bins + 1 values."""
        edges = expit(np.linspace(-LOGIT_RANGE, LOGIT_RANGE, self.n_bins + 1))
        edges[0], edges[-1] = 0.0, 1.0
        return edges

    def add(self, scores: np.ndarray, labels: np.ndarray, region: Optional[np.ndarray] = None) -> "RocHistogram":
        """Add voxels: `labels` (bool, same shape as `scores`) marks positives; only voxels in
        `region` (bool, same shape) are counted when it is given.  Works slab by slab along the
        first axis so that no full-volume temporary array is made."""
        if scores.shape != labels.shape or (region is not None and region.shape != scores.shape):
            raise ValueError(f"shapes differ: scores {scores.shape}, labels {labels.shape}"
                             + ("" if region is None else f", region {region.shape}"))
        if scores.ndim == 0 or scores.size == 0:
            return self
        per_slab = max(int(np.prod(scores.shape[1:])), 1)
        step = max(_CHUNK_VOXELS // per_slab, 1)
        for start in range(0, scores.shape[0], step):
            sl = slice(start, start + step)
            s, lab = scores[sl], labels[sl].astype(bool, copy=False)
            if region is not None:
                keep = region[sl].astype(bool, copy=False)
                s, lab = s[keep], lab[keep]
            else:
                s, lab = s.ravel(), lab.ravel()
            if s.size == 0:
                continue
            b = self._bin(s)
            self.positives += np.bincount(b[lab], minlength=self.n_bins)
            self.negatives += np.bincount(b[~lab], minlength=self.n_bins)
        return self

    def __iadd__(self, other: "RocHistogram") -> "RocHistogram":
        if other.n_bins != self.n_bins:
            raise ValueError(f"cannot add histograms with {other.n_bins} and {self.n_bins} bins")
        self.positives += other.positives
        self.negatives += other.negatives
        return self

    # ---------------------------------------------------------------- statistics
    @property
    def n_positive(self) -> int:
        return int(self.positives.sum())

    @property
    def n_negative(self) -> int:
        return int(self.negatives.sum())

    def roc_curve(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fpr, tpr, thresholds), thresholds decreasing from above 1 to 0 like sklearn's:
        point k predicts 'positive' for scores in bins >= the bin whose lower edge is thresholds[k].
        NaN arrays when there are no positives or no negatives."""
        P, N = self.n_positive, self.n_negative
        edges = self.bin_edges()[::-1]                                               # 1.0 ... 0.0
        if P == 0 or N == 0:
            nan = np.full(self.n_bins + 1, np.nan)
            return nan, nan.copy(), edges
        # cumulative counts from the top bin down; first point (threshold above every score) is 0
        tp = np.concatenate([[0], np.cumsum(self.positives[::-1])])
        fp = np.concatenate([[0], np.cumsum(self.negatives[::-1])])
        thresholds = np.concatenate([[np.inf], edges[1:]])
        return fp / N, tp / P, thresholds

    def auroc(self) -> float:
        """Area under the histogram ROC (= trapezoid rule over its points), computed in exact
        integer arithmetic: sum_b neg_b * (positives in higher bins + pos_b / 2) / (P * N)."""
        P, N = self.n_positive, self.n_negative
        if P == 0 or N == 0:
            return float("nan")
        pos = self.positives.astype(object)      # Python ints: products exceed int64 for 10^10 voxels
        neg = self.negatives.astype(object)
        above = np.concatenate([np.cumsum(self.positives[::-1])[::-1][1:], [0]]).astype(object)
        twice = 2 * int(np.dot(neg, above)) + int(np.dot(neg, pos))
        return twice / (2 * P * N)

    def fpr_at_tpr(self, target_tpr: float = 0.95) -> float:
        """FPR at the highest threshold where TPR reaches `target_tpr` (FPR95 for 0.95)."""
        fpr, tpr, _ = self.roc_curve()
        if np.isnan(fpr[0]):
            return float("nan")
        k = int(np.searchsorted(tpr, target_tpr - 1e-12, side="left"))
        return float(fpr[min(k, len(fpr) - 1)])

    def auroc_error_bound(self) -> float:
        """Largest possible |AUROC_hist - AUROC_exact| from ties inside bins."""
        P, N = self.n_positive, self.n_negative
        if P == 0 or N == 0:
            return float("nan")
        return float(0.5 * np.dot(self.positives.astype(np.float64), self.negatives) / (P * float(N)))

    def fpr_error_bound(self, target_tpr: float = 0.95) -> float:
        """Largest possible FPR95_hist - FPR95_exact (negatives in the bin of the threshold)."""
        fpr, tpr, _ = self.roc_curve()
        if np.isnan(fpr[0]):
            return float("nan")
        k = int(np.searchsorted(tpr, target_tpr - 1e-12, side="left"))
        if k == 0:
            return 0.0
        return float(self.negatives[self.n_bins - k] / self.n_negative)

    def summary(self, target_tpr: float = 0.95) -> dict:
        return {"AUROC": self.auroc(), "FPR95": self.fpr_at_tpr(target_tpr),
                "AUROC_error_bound": self.auroc_error_bound(), "FPR95_error_bound": self.fpr_error_bound(target_tpr),
                "n_positive_voxels": self.n_positive, "n_negative_voxels": self.n_negative}
