"""Mask heads: class logits as dot products of projected queries with per-voxel features.

A query n at decoder level j gives the logit map <W_j(q_n), f_j(x)> / sqrt(C_j) + b_j(q_n):
a dynamic 1x1 convolution whose weights come from the query, exactly the role nnU-Net's seg
layers play.  The queries are projected into each level's channel space (instead of projecting
every voxel into the query space) so the per-voxel cost is one C_j-dim dot product per query
and no extra full-resolution feature map is stored.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from .self_prompt import LOGIT_CLAMP


class QueryLevelHead(nn.Module):
    """queries [B, Q, D], features [B, C, *s] -> logits [B, Q, *s] (float32)."""

    def __init__(self, dim: int, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.weight = nn.Linear(dim, channels)
        self.bias = nn.Linear(dim, 1)
        self.scale = 1.0 / math.sqrt(channels)

    def forward(self, queries: torch.Tensor, features: torch.Tensor,
                channel_map: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """channel_map: optional (M [C, C_f], m [C]): the head reads the features M f + m (a 1x1
        convolution of features [B, C_f, *s]) without forming them: the map is folded into the
        projected queries, <w, M f + m> = <M^T w, f> + <w, m>, which saves a full-resolution pass."""
        b = features.shape[0]
        qn = self.norm(queries)
        w = self.weight(qn) * self.scale                                   # [B, Q, C]
        bias = self.bias(qn)                                               # [B, Q, 1]
        if channel_map is not None:
            m_weight, m_bias = channel_map
            bias = bias + torch.matmul(w, m_bias.to(w.dtype)).unsqueeze(-1)
            w = torch.matmul(w, m_weight.to(w.dtype))                      # [B, Q, C_f]
        c = features.shape[1]
        if features.dtype == torch.float32:
            # the bias rides along in the matrix product (one pass over the full-resolution logits)
            logits = torch.baddbmm(bias.float(), w.float(), features.reshape(b, c, -1))
        else:
            logits = torch.bmm(w.to(features.dtype), features.reshape(b, c, -1))  # fp32 accumulate in bmm
            logits = logits.float() + bias.float()
        return logits.view(b, -1, *features.shape[2:])


class MultiLevelMaskHead(nn.Module):
    """One QueryLevelHead per decoder level (coarse -> fine, the last at full resolution)."""

    def __init__(self, dim: int, level_channels: Sequence[int]):
        super().__init__()
        self.levels = nn.ModuleList(QueryLevelHead(dim, c) for c in level_channels)

    def forward(self, level: int, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.levels[level](queries, features)


class MaskFeatureAdapter(nn.Module):
    """Stage-2 adapter on the frozen full-resolution mask features: [B, C, *s] -> [B, H, *s].

    A small trainable conv (kernel `kernel`, then GELU and a 1x1 conv) lets the tumour head use
    feature combinations the frozen Stage-1 features do not offer linearly (docs/architecture.md,
    decision D5).  It is only run in Stage 2.
    """

    def __init__(self, conv_op: type, channels: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.net = nn.Sequential(conv_op(channels, hidden, kernel, 1, kernel // 2), nn.GELU(),
                                 conv_op(hidden, hidden, 1, 1, 0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    @property
    def reach(self) -> int:
        """How many voxels away per axis an output voxel still reads its input (the kernel's half-width)."""
        return int(self.net[0].kernel_size[0]) // 2

    def hidden(self, features: torch.Tensor) -> torch.Tensor:
        """[B, C, *s] -> the features before the closing 1x1 conv [B, H, *s]."""
        return self.net[1](self.net[0](features))

    def output_map(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The closing 1x1 conv as (weight [H, H], bias [H]), for QueryLevelHead's channel_map:
        forward(f) == that map applied to hidden(f)."""
        conv = self.net[2]
        return conv.weight.flatten(1), conv.bias


def inject_anomaly(tumour_logits: torch.Tensor, anomaly_logit: torch.Tensor) -> torch.Tensor:
    """tumour_logits [B, T, *s] + calibrated anomaly logit [B, 1, *s] (the [R] injection), float32."""
    return tumour_logits.float() + anomaly_logit.float()


def host_residual(query_term: torch.Tensor, host_logit: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """query_term [B, *s] with its least-squares fit on host_logit [B, *s] taken out, per sample over
    region (bool [B, *s]): q - beta * (h - mean h), beta = cov(q, h) / var(h) over the region, so that
    inside the region the result has q's mean and no linear correlation with the host organ's logit
    (float32).  A sample whose region has fewer than two voxels or a constant host logit is unchanged.

    Why: a zero-shot query is aligned to a text it was never trained to segment, and on the
    development split one seed's lung-nodule query followed the lung channel, which turned the
    anomaly's ranking of the nodules (voxel AUROC 0.99) into 0.59 (docs/benchmarks.md, "A zero-shot
    query term that follows its organ")."""
    q, h = query_term.float(), host_logit.float()
    w = region.to(q.dtype)
    dims = tuple(range(1, q.dim()))
    n = w.sum(dims, keepdim=True)
    mean_h = (h * w).sum(dims, keepdim=True) / n.clamp_min(1.0)
    mean_q = (q * w).sum(dims, keepdim=True) / n.clamp_min(1.0)
    hc = (h - mean_h) * w
    var = (hc * hc).sum(dims, keepdim=True)
    cov = (hc * (q - mean_q)).sum(dims, keepdim=True)
    beta = torch.where((n >= 2) & (var > 1e-6 * n), cov / var.clamp_min(1e-12), torch.zeros_like(var))
    return q - beta * (h - mean_h)


def restrict(logits: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Logits outside `region` (bool, broadcastable) set to the most negative logit (no gradient there)."""
    return torch.where(region, logits, logits.new_full((), -LOGIT_CLAMP))
