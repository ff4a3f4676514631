"""Query-knowledge alignment loss and its relation matrix."""
import math

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_zept.knowledge import BACKGROUND_TISSUES
from nnunetv2_zept.losses.alignment import alignment_loss, build_relation_matrix
from nnunetv2_zept.roles import roles_from_dataset_json

DATASET_JSON = {
    "labels": {"background": 0, "liver": [1, 5], "kidney_right": [2, 6], "kidney_left": [3, 7], "pancreas": [4, 8],
               "liver_tumour": 5, "kidney_tumour": [6, 7], "pancreas_tumour": 8},
    "zept": {"organs": ["liver", "kidney_right", "kidney_left", "pancreas"],
             "tumours": {"liver_tumour": {"host": ["liver"]},
                         "kidney_tumour": {"host": ["kidney_right", "kidney_left"]},
                         "pancreas_tumour": {"host": ["pancreas"], "zero_shot": True}}},
}
ROLES = roles_from_dataset_json(DATASET_JSON)
QUERIES = ["liver", "kidney_right", "kidney_left", "pancreas", *BACKGROUND_TISSUES,
           "liver_tumour", "kidney_tumour", "pancreas_tumour"]


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_relation_matrix_from_roles():
    rel = build_relation_matrix(ROLES, QUERIES)
    q = {n: i for i, n in enumerate(QUERIES)}
    assert rel.dtype == torch.bool and rel.shape == (len(QUERIES), len(QUERIES))
    assert torch.equal(rel, rel.T) and bool(rel.diagonal().all())
    assert rel[q["liver_tumour"], q["liver"]] and rel[q["kidney_tumour"], q["kidney_left"]]
    assert rel[q["kidney_tumour"], q["kidney_right"]] and rel[q["pancreas_tumour"], q["pancreas"]]
    assert rel[q["liver_tumour"], q["pancreas_tumour"]]                          # tumour-tumour block
    assert not rel[q["liver_tumour"], q["pancreas"]] and not rel[q["liver"], q["kidney_left"]]
    for t in BACKGROUND_TISSUES:                                                  # background: itself only
        assert rel[q[t]].sum() == 1
    flat = build_relation_matrix(ROLES, QUERIES, organ_tumour=False, tumour_tumour=False)
    assert torch.equal(flat, torch.eye(len(QUERIES), dtype=torch.bool))


def test_identity_loss_matches_cross_entropy():
    z, k = _unit(3, 5, 8, seed=1), _unit(5, 8, seed=2)
    s = torch.tensor(10.0)
    logits = s * torch.einsum("bqa,ka->bqk", z, k)
    target = torch.arange(5).repeat(3)
    expected = 0.5 * (F.cross_entropy(logits.reshape(-1, 5), target)
                      + F.cross_entropy(logits.transpose(1, 2).reshape(-1, 5), target))
    assert torch.allclose(alignment_loss(z, k, s), expected, atol=1e-5)


def test_multi_positive_rows_are_averaged_not_summed():
    z, k = _unit(1, 3, 4, seed=3), _unit(3, 4, seed=4)
    rel = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    s = 5.0
    logp = F.log_softmax(s * z[0] @ k.T, dim=-1)
    logp_t = F.log_softmax(s * k @ z[0].T, dim=-1)
    row = lambda lp: torch.stack([-(lp[0, :2]).mean(), -(lp[1, :2]).mean(), -lp[2, 2]]).mean()
    expected = 0.5 * (row(logp) + row(logp_t))
    assert torch.allclose(alignment_loss(z, k, torch.tensor(s), relation=rel), expected, atol=1e-5)


def test_symmetric_in_queries_and_texts():
    z, k = _unit(1, 6, 8, seed=5), _unit(6, 8, seed=6)
    rel = build_relation_matrix(ROLES, QUERIES)[:6, :6]
    s = torch.tensor(14.0)
    a = alignment_loss(z, k, s, relation=rel)
    b = alignment_loss(k.unsqueeze(0), z[0], s, relation=rel)
    assert torch.allclose(a, b, atol=1e-6)


def test_lowest_when_queries_equal_their_texts():
    q = 10
    k = _unit(q, 32, seed=7)
    s = torch.tensor(20.0)
    matched = alignment_loss(k.unsqueeze(0).repeat(2, 1, 1), k, s)
    for seed in range(5):
        perm = torch.randperm(q, generator=torch.Generator().manual_seed(seed))
        if torch.equal(perm, torch.arange(q)):
            continue
        assert alignment_loss(k[perm].unsqueeze(0), k, s) > matched
        noisy = F.normalize(k + 0.5 * _unit(q, 32, seed=100 + seed), dim=-1)
        assert alignment_loss(noisy.unsqueeze(0), k, s) > matched
    assert alignment_loss(_unit(2, q, 32, seed=9), k, s) > matched
    assert matched < 0.05


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_float32_under_autocast(dtype):
    z = _unit(2, len(QUERIES), 16, seed=10).requires_grad_(True)
    k = _unit(len(QUERIES), 16, seed=11)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    rel = build_relation_matrix(ROLES, QUERIES)
    with torch.autocast("cpu", dtype=dtype):
        proj = torch.nn.Linear(16, 16)(z.to(dtype))      # half-precision input, as from an autocast head
        loss = alignment_loss(proj, k.to(dtype), log_scale.exp(), relation=rel)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(log_scale.grad) and log_scale.grad != 0
    ref = alignment_loss(F.normalize(proj.float(), dim=-1), k, log_scale.exp(), relation=rel)
    assert torch.allclose(loss, ref, rtol=2e-2)


def test_mask_drops_queries_as_rows_and_candidates():
    rel = build_relation_matrix(ROLES, QUERIES)
    n = len(QUERIES)
    z = _unit(2, n, 8, seed=12).requires_grad_(True)
    k = _unit(n, 8, seed=13)
    keep = torch.ones(n, dtype=torch.bool)
    keep[QUERIES.index("pancreas_tumour")] = False
    masked = alignment_loss(z, k, torch.tensor(10.0), relation=rel, query_mask=keep)
    sub = alignment_loss(z[:, keep], k[keep], torch.tensor(10.0), relation=rel[keep][:, keep])
    assert torch.allclose(masked, sub, atol=1e-6)
    masked.backward()
    assert z.grad[:, ~keep].abs().max() == 0
    # per-sample masks: a sample whose classes are all masked contributes nothing
    per_sample = torch.stack([keep, torch.zeros(n, dtype=torch.bool)])
    only_first = alignment_loss(z[:1].detach(), k, torch.tensor(10.0), relation=rel, query_mask=keep)
    assert torch.allclose(alignment_loss(z.detach(), k, torch.tensor(10.0), relation=rel, query_mask=per_sample),
                          only_first, atol=1e-6)


def test_class_weights_and_temperature_clamp():
    n = 5
    z, k = _unit(1, n, 8, seed=14), _unit(n, 8, seed=15)
    w = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
    weighted = alignment_loss(z, k, torch.tensor(10.0), class_weights=w)
    keep = w > 0
    # weight 0 removes the row (its text stays a candidate, unlike the mask)
    assert not torch.allclose(weighted, alignment_loss(z[:, keep], k[keep], torch.tensor(10.0)))
    assert torch.allclose(alignment_loss(z, k, torch.tensor(10.0), class_weights=2 * w), weighted)
    assert torch.allclose(alignment_loss(z, k, torch.tensor(1e6)), alignment_loss(z, k, torch.tensor(100.0)))
    with pytest.raises(ValueError, match="query_emb"):
        alignment_loss(z, k[:3], torch.tensor(1.0))


@pytest.fixture
def one_thread():
    # tiny tensors: thread start-up dominates, and the 2-core CI box is shared
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_hierarchical_targets_train_towards_alignment(one_thread):
    torch.manual_seed(0)
    rel = build_relation_matrix(ROLES, QUERIES)
    before = rel.clone()

    def loss_fn(q, k, s):
        return alignment_loss(q, k, s, rel)
    k = _unit(len(QUERIES), 16, seed=16)
    q = torch.nn.Parameter(torch.randn(1, len(QUERIES), 16))
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    opt = torch.optim.Adam([q, log_scale], lr=0.05)
    start = loss_fn(q, k, log_scale.exp()).item()
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn(q, k, log_scale.exp().clamp(max=100))
        loss.backward()
        opt.step()
    assert loss.item() < start
    # after training each query is closest to its own text among non-related classes
    sim = F.normalize(q.detach()[0], dim=-1) @ k.T
    assert (sim.argmax(1) == torch.arange(len(QUERIES))).float().mean() > 0.6
    assert torch.equal(rel, before)                        # the caller's matrix is never changed
