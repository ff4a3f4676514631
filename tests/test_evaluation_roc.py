"""Histogram ROC: AUROC / FPR95 against sklearn, resolution bounds, pooling, slab-wise filling."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from nnunetv2_zept.evaluation.histogram_roc import RocHistogram


def exact_fpr95(labels, scores):
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, 0.95, side="left")])


def test_random_score_gives_auroc_near_half():
    rng = np.random.default_rng(0)
    scores = rng.random(400_000)
    labels = rng.random(400_000) < 0.1
    h = RocHistogram().add(scores, labels)
    assert h.auroc() == pytest.approx(0.5, abs=0.01)
    assert h.fpr_at_tpr(0.95) == pytest.approx(0.95, abs=0.01)


def test_perfect_score_gives_auroc_one_and_fpr95_zero():
    rng = np.random.default_rng(1)
    pos = rng.uniform(0.6, 1.0, 1000)
    neg = rng.uniform(0.0, 0.4, 5000)
    h = RocHistogram().add(np.concatenate([pos, neg]), np.r_[np.ones(1000, bool), np.zeros(5000, bool)])
    assert h.auroc() == 1.0
    assert h.fpr_at_tpr(0.95) == 0.0
    inverted = RocHistogram().add(np.concatenate([neg, pos]), np.r_[np.ones(5000, bool), np.zeros(1000, bool)])
    assert inverted.auroc() == 0.0 and inverted.fpr_at_tpr(0.95) == 1.0


@pytest.mark.parametrize("seed", [2, 3])
def test_histogram_matches_sklearn_within_stated_bounds(seed):
    rng = np.random.default_rng(seed)
    n = 200_000
    labels = rng.random(n) < 0.05
    scores = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * labels - 2.0)))
    h = RocHistogram(10_000).add(scores, labels)
    auc_exact = roc_auc_score(labels, scores)
    assert abs(h.auroc() - auc_exact) <= h.auroc_error_bound() + 1e-12
    assert abs(h.auroc() - auc_exact) < 1e-3
    f_exact = exact_fpr95(labels, scores)
    f_hist = h.fpr_at_tpr(0.95)
    assert f_exact - 1e-12 <= f_hist <= f_exact + h.fpr_error_bound() + 1e-12
    assert abs(f_hist - f_exact) < 2e-3
    # coarse bins: larger but still bounded error
    coarse = RocHistogram(20).add(scores, labels)
    assert abs(coarse.auroc() - auc_exact) <= coarse.auroc_error_bound() + 1e-12
    assert coarse.auroc_error_bound() > h.auroc_error_bound()


def test_tied_scores_match_sklearn_exactly():
    """Scores with few distinct values, each in its own bin: the histogram is then the exact ROC,
    ties counted 1/2 like sklearn."""
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 8, 5000) / 8.0
    labels = rng.random(5000) < 0.2 + 0.5 * scores
    h = RocHistogram().add(scores, labels)
    assert h.auroc_error_bound() > 0        # the ties are real ties ...
    assert h.auroc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)   # ... and counted like sklearn's


@pytest.mark.parametrize("scale", [1e-3, 1e-7, 1e-11])
def test_tiny_probabilities_keep_their_ranking(scale):
    """A rare class's probabilities sit far below any fixed probability bin width; binned by
    logit they keep their order (bins of width 1e-4 in probability made this AUROC 0.5)."""
    rng = np.random.default_rng(6)
    n = 100_000
    labels = rng.random(n) < 0.02
    scores = scale * np.exp(rng.normal(size=n) + 1.2 * labels)
    h = RocHistogram().add(scores.astype(np.float32), labels)
    exact = roc_auc_score(labels, scores.astype(np.float32))
    assert exact > 0.75
    assert h.auroc() == pytest.approx(exact, abs=1e-3)
    assert abs(h.fpr_at_tpr(0.95) - exact_fpr95(labels, scores.astype(np.float32))) < 2e-3


def test_bin_edges_are_probabilities_and_thresholds_decrease():
    h = RocHistogram(100).add(np.array([0.0, 1e-20, 0.3, 0.7, 1.0, 1.5, -0.2]),
                              np.array([False, False, True, True, True, True, False]))
    edges = h.bin_edges()
    assert edges[0] == 0.0 and edges[-1] == 1.0 and np.all(np.diff(edges) > 0)
    assert edges[50] == pytest.approx(0.5)
    assert h.negatives[0] == 3 and h.positives[-1] == 2     # 0, 1e-20 and -0.2 in the first bin; 1 and 1.5 in the last
    _, _, thr = h.roc_curve()
    assert thr[0] == np.inf and np.all(np.diff(thr[1:]) < 0) and thr[-1] == 0.0
    assert h.auroc() == 1.0


def test_pooling_and_slabwise_region_filling():
    rng = np.random.default_rng(5)
    vols = [rng.random((12, 40, 50)).astype(np.float32) for _ in range(3)]
    labs = [rng.random(v.shape) < 0.2 * v for v in vols]
    regs = [rng.random(v.shape) < 0.7 for v in vols]
    pooled = RocHistogram(1000)
    for v, l, r in zip(vols, labs, regs):
        pooled += RocHistogram(1000).add(v, l, region=r)
    flat = RocHistogram(1000).add(np.concatenate([v[r] for v, r in zip(vols, regs)]),
                                  np.concatenate([l[r] for l, r in zip(labs, regs)]))
    assert np.array_equal(pooled.positives, flat.positives) and np.array_equal(pooled.negatives, flat.negatives)
    assert pooled.n_positive + pooled.n_negative == sum(int(r.sum()) for r in regs)


def test_degenerate_cases_are_nan_and_bad_input_is_named():
    h = RocHistogram(100).add(np.array([0.2, 0.7]), np.array([False, False]))
    assert np.isnan(h.auroc()) and np.isnan(h.fpr_at_tpr())
    with pytest.raises(ValueError, match="shapes differ"):
        RocHistogram(100).add(np.zeros(3), np.zeros(4, bool))
    with pytest.raises(ValueError, match="n_bins"):
        RocHistogram(1)
    with pytest.raises(ValueError, match="cannot add"):
        RocHistogram(10).__iadd__(RocHistogram(20))
