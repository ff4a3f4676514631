"""Object-aware feature grouping of the fundamental queries (GroupViT-style, docs/architecture.md).

One `GroupingBlock` per tapped level, applied coarse -> fine.  A block first lets the queries
read the level's tokens by cross-attention, then assigns every token (voxel) to exactly one
query: a softmax along the *query* axis, hard one-hot via Gumbel noise + straight-through
estimator in training, deterministic arg-max (still straight-through) in eval.  Each query then
takes the mean of the tokens assigned to it.  `mode="cross"` is the ablation without grouping
(plain cross-attention only).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .attention_blocks import CrossAttentionLayer, FeedForward


def hard_assignment(scores: torch.Tensor, training: bool, tau: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """scores [B, Q, L] (float32) -> (weights [B, Q, L], index [B, L]).

    weights are one-hot along Q in value and carry the gradient of the softmax along Q
    (straight-through).  Gumbel noise only in training, so eval is deterministic.
    """
    logits = scores
    if training:
        gumbel = -torch.empty_like(scores).exponential_().log()
        logits = (scores + gumbel) / tau
    soft = logits.softmax(dim=1)
    index = soft.argmax(dim=1)
    hard = torch.zeros_like(soft).scatter_(1, index.unsqueeze(1), 1.0)
    return hard - soft.detach() + soft, index


class GroupingBlock(nn.Module):
    """q [B, Q, D], tokens [B, L, D] -> refined q [B, Q, D].

    After forward, `last_assignment` holds the arg-max query of every token [B, L] (no grad), for
    inspection and tests; None in `mode="cross"`.
    """

    def __init__(self, dim: int, heads: int, mode: str = "group", ffn_mult: int = 4, assign_eps: float = 1.0):
        super().__init__()
        if mode not in ("group", "cross"):
            raise ValueError(f"grouping mode {mode!r}: use 'group' or 'cross'")
        self.mode = mode
        self.assign_eps = assign_eps
        self.cross = CrossAttentionLayer(dim, heads)
        self.cross_ffn = FeedForward(dim, ffn_mult * dim)
        if mode == "group":
            self.assign_q = nn.Linear(dim, dim)
            self.assign_k = nn.Linear(dim, dim)
            self.assign_v = nn.Linear(dim, dim)
            self.assign_out = nn.Linear(dim, dim)
            self.out_ffn = FeedForward(dim, ffn_mult * dim)
        self.last_assignment: Optional[torch.Tensor] = None

    def forward(self, q: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        q = self.cross_ffn(self.cross(q, tokens))
        if self.mode == "cross":
            self.last_assignment = None
            return q
        # The token keys and values k = W_k x + b_k, v = W_v x + b_v are never formed: with few
        # queries and many tokens, qa . k = (W_k^T qa) . x + qa . b_k and sum_l w_l v_l =
        # W_v (sum_l w_l x_l) + (sum_l w_l) b_v give the same numbers for a fraction of the work.
        # Scores, Gumbel softmax and the per-query normalisation run in fp32 (fp16 overflows there).
        qa = self.assign_q(q)                                                   # [B, Q, D]
        qk = torch.matmul(qa, self.assign_k.weight.to(qa.dtype))                # [B, Q, D]
        bias = torch.matmul(qa, self.assign_k.bias.to(qa.dtype)).unsqueeze(-1)  # [B, Q, 1]
        scores = torch.bmm(qk.to(tokens.dtype), tokens.transpose(1, 2))
        if scores.dtype in (torch.float16, torch.bfloat16):
            scores = scores.float()
        scores = (scores + bias.to(scores.dtype)) / math.sqrt(q.shape[-1])
        with torch.autocast(device_type=q.device.type, enabled=False):
            weights, index = hard_assignment(scores, self.training)
            weights = weights / (weights.sum(dim=-1, keepdim=True) + self.assign_eps)
        pooled = torch.bmm(weights.to(tokens.dtype), tokens)                    # [B, Q, D]
        values = (torch.nn.functional.linear(pooled, self.assign_v.weight.to(pooled.dtype))
                  + weights.sum(dim=-1, keepdim=True).to(pooled.dtype) * self.assign_v.bias.to(pooled.dtype))
        grouped = self.assign_out(values)
        self.last_assignment = index.detach()
        return self.out_ffn(q + grouped.to(q.dtype))
