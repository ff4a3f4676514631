"""Object-aware grouping: every voxel goes to exactly one query; Gumbel noise only in training."""
import torch

from nnunetv2_zept.architectures import build_zept_network, default_zept_config
from nnunetv2_zept.experiments.example_plans import example_roles, make_plans, managers
from nnunetv2_zept.architectures.grouping import GroupingBlock, hard_assignment


def test_hard_assignment_is_one_hot_over_queries_with_straight_through_gradient():
    torch.manual_seed(0)
    scores = torch.randn(2, 7, 500, requires_grad=True)
    for training in (True, False):
        w, idx = hard_assignment(scores, training)
        assert w.shape == (2, 7, 500) and idx.shape == (2, 500)
        torch.testing.assert_close(w.detach().sum(1), torch.ones(2, 500))
        assert ((w.detach() - 1).abs() < 1e-6).sum(1).eq(1).all(), "exactly one query per voxel"
        assert (w.detach().abs() < 1e-6).sum(1).eq(6).all()
        assert torch.equal(w.detach().argmax(1), idx)
    _, idx_eval = hard_assignment(scores, False)
    assert torch.equal(idx_eval, scores.detach().argmax(1)), "eval = plain arg-max, no noise"
    w, _ = hard_assignment(scores, True)
    (w * torch.randn_like(w)).sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0, "straight-through passes the softmax gradient"


def test_grouping_block_deterministic_in_eval_stochastic_in_training():
    torch.manual_seed(0)
    blk = GroupingBlock(32, 4)
    q, tok = torch.randn(2, 6, 32), torch.randn(2, 300, 32)
    blk.eval()
    a, b = blk(q, tok), blk(q, tok)
    ia = blk.last_assignment
    assert torch.equal(a, b) and ia.shape == (2, 300) and ia.min() >= 0 and ia.max() < 6
    blk.train()
    assigns = []
    for _ in range(3):
        blk(q, tok)
        assigns.append(blk.last_assignment)
    assert any(not torch.equal(assigns[0], x) for x in assigns[1:]), "Gumbel noise must change assignments in training"
    out = blk(q.requires_grad_(), tok)
    out.sum().backward()
    for n, p in blk.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert blk.assign_k.weight.grad.abs().sum() > 0


def test_cross_mode_has_no_assignment():
    blk = GroupingBlock(32, 4, mode="cross").eval()
    out = blk(torch.randn(1, 3, 32), torch.randn(1, 50, 32))
    assert out.shape == (1, 3, 32) and blk.last_assignment is None


def test_grouping_inside_the_network_assigns_every_voxel_of_every_level():
    pm, cm = managers(make_plans((32, 32, 32), (1, 1, 1), base_features=8))
    roles = example_roles()
    cfg = default_zept_config(roles, 16, hidden_dim=32, num_heads=4, min_level_downsampling=2)
    net = build_zept_network(pm, cm, 1, roles.num_channels, False, cfg).eval()
    assert len(net.tapped) == 2
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        y1 = net(x)
        a1 = [g.last_assignment.clone() for g in net.grouping]
        y2 = net(x)
    n_fund = net.fundamental_queries.shape[0]
    for g, k, a in zip(net.grouping, net.tapped, a1):
        n_vox = int(torch.tensor(net.dec_strides[k]).new_tensor(cm.patch_size).div(torch.tensor(net.dec_strides[k]),
                                                                                    rounding_mode="floor").prod())
        assert a.shape == (1, n_vox) and a.max() < n_fund
        assert torch.equal(a, g.last_assignment)
    assert torch.equal(y1, y2)


def _token_side_attention(m, q, kv, blocked):
    """Multi-head attention as defined: keys and values projected from every token."""
    b, nq, d = q.shape
    qh, kh, vh = m._split(m.q(q)), m._split(m.k(kv)), m._split(m.v(kv))
    s = qh @ kh.transpose(-1, -2) / (d // m.heads) ** 0.5
    if blocked is not None:
        bl = blocked[:, None, :].expand(b, nq, blocked.shape[-1])
        s = s.masked_fill((bl & ~bl.all(-1, keepdim=True))[:, None], float("-inf"))
    return m.out((s.softmax(-1) @ vh).transpose(1, 2).reshape(b, nq, d))


def test_query_side_attention_equals_the_token_side_definition():
    from nnunetv2_zept.architectures.attention_blocks import MultiHeadAttention

    torch.manual_seed(0)
    m = MultiHeadAttention(64, 8).double()
    q, kv = torch.randn(2, 5, 64, dtype=torch.float64), torch.randn(2, 300, 64, dtype=torch.float64)
    blocked = torch.rand(2, 300) > 0.5
    blocked[1] = True                                    # a fully blocked sample is unblocked everywhere
    assert m.heads * q.shape[1] < q.shape[2]             # the shapes take the query-side evaluation
    for bl in (None, blocked):
        torch.testing.assert_close(m(q, kv, bl), _token_side_attention(m, q, kv, bl), rtol=1e-12, atol=1e-12)
    # every parameter keeps a gradient (DDP without find_unused_parameters needs it)
    m(q, kv, blocked).sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_grouping_without_token_projections_equals_the_definition():
    torch.manual_seed(0)
    blk = GroupingBlock(32, 4).double().eval()
    q, tok = torch.randn(2, 6, 32, dtype=torch.float64), torch.randn(2, 300, 32, dtype=torch.float64)
    out = blk(q, tok)
    # the definition: keys and values projected from every token
    qc = blk.cross_ffn(blk.cross(q, tok))
    k, v, qa = blk.assign_k(tok), blk.assign_v(tok), blk.assign_q(qc)
    w, _ = hard_assignment(torch.bmm(qa, k.transpose(1, 2)) / 32 ** 0.5, False)
    w = w / (w.sum(-1, keepdim=True) + blk.assign_eps)
    ref = blk.out_ffn(qc + blk.assign_out(torch.bmm(w, v)))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
