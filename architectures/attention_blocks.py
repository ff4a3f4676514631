"""Attention building blocks shared by the grouping blocks and the tumour decoder.

All layers are post-norm (Mask2Former / ZePT style: x = LN(x + f(x))) and use
`F.scaled_dot_product_attention`, which picks a memory-efficient kernel and never materialises
the [B, heads, Q, L] attention matrix for the large token counts of the finest level.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Multi-head attention of queries q [B, Q, D] over keys/values kv [B, L, D] -> [B, Q, D].

    blocked: optional bool [B, Q, L] or [B, L] (True = this key may not be attended to).  Rows that
    are blocked everywhere are unblocked here as a last guard (Mask2Former does the same), so
    softmax never sees an all -inf row.

    Two exact evaluations of the same function.  With many keys and few queries (ZePT's case: a
    few dozen queries over thousands of voxel tokens) projecting every token into keys and values
    costs 2 L D^2, far more than the attention itself.  Since no non-linearity sits between the
    projections and the attention, the key projection can move to the query side
    (q_h . W_k,h x = (W_k,h^T q_h) . x) and the value projection behind the weighted sum
    (sum_l a_l W_v,h x_l = W_v,h sum_l a_l x_l): 2 H Q L D + O(Q D^2) instead.  The cheaper
    evaluation is chosen from the shapes; both give the same result up to rounding.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden width {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, blocked: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, nq, d = q.shape
        mask = None
        if blocked is not None:
            if blocked.dim() == 2:
                blocked = blocked[:, None, :].expand(b, nq, blocked.shape[-1])
            full = blocked.all(dim=-1, keepdim=True)
            allowed = ~(blocked & ~full)
            mask = allowed[:, None]                       # [B, 1, Q, L], broadcast over heads
        if self.heads * nq < d and kv.shape[1] > nq:
            y = self._attend_query_side(q, kv, mask)
        else:
            qh, kh, vh = self._split(self.q(q)), self._split(self.k(kv)), self._split(self.v(kv))
            y = F.scaled_dot_product_attention(qh, kh.to(qh.dtype), vh.to(qh.dtype), attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, nq, d))

    def _attend_query_side(self, q: torch.Tensor, kv: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The attention with the key and value projections moved off the tokens -> [B, H, Q, d_h]."""
        b, nq, d = q.shape
        h, dh = self.heads, d // self.heads
        qh = self._split(self.q(q))                                               # [B, H, Q, dh]
        wk = self.k.weight.view(h, dh, d)
        qk = torch.einsum("bhqe,hed->bhqd", qh, wk.to(qh.dtype))                  # [B, H, Q, D]
        # q_h . b_k,h is the same for every key (softmax ignores it), kept so that b_k stays in the graph
        q_bias = (qh * self.k.bias.view(h, dh).to(qh.dtype)[None, :, None, :]).sum(-1, keepdim=True)
        x = kv[:, None].to(qk.dtype)                                              # [B, 1, L, D]
        scores = torch.matmul(qk, x.transpose(-1, -2)) + q_bias
        if scores.dtype in (torch.float16, torch.bfloat16):
            scores = scores.float()                       # softmax in fp32 under autocast
        scores = scores * dh ** -0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        attn = scores.softmax(dim=-1)
        ctx = torch.matmul(attn.to(x.dtype), x)                                   # [B, H, Q, D]
        wv = self.v.weight.view(h, dh, d)
        return (torch.einsum("bhqd,hed->bhqe", ctx, wv.to(ctx.dtype))
                + self.v.bias.view(h, dh).to(ctx.dtype)[None, :, None, :])     # rows of attn sum to 1


class FeedForward(nn.Module):
    """x [B, Q, D] -> LN(x + W2 act(W1 x))."""

    def __init__(self, dim: int, hidden: int, act: type = nn.GELU):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), act(), nn.Linear(hidden, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.net(x))


class SelfAttentionLayer(nn.Module):
    """Queries attend to each other: x [B, Q, D] -> LN(x + MHA(x, x))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.attn(x, x))


class CrossAttentionLayer(nn.Module):
    """Queries read image tokens: q [B, Q, D], tokens [B, L, D] -> LN(q + MHA(q, tokens, blocked))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, q: torch.Tensor, tokens: torch.Tensor, blocked: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.norm(q + self.attn(q, tokens, blocked))
