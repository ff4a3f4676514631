"""Query-knowledge alignment head (docs/architecture.md).

Queries [B, Q, D] and text embeddings [Q, T] are projected into one A-dim space and
L2-normalised; the trainer's alignment loss compares them with logit_scale * cosine.  All of it
runs in float32 even under autocast: normalising fp16 vectors and exponentiating the
temperature are where mixed precision breaks.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

MAX_LOGIT_SCALE = 100.0


class AlignmentHead(nn.Module):
    """(queries [B, Q, D], texts [Q, T]) -> (query emb [B, Q, A], text emb [Q, A], logit_scale [])."""

    def __init__(self, dim: int, text_dim: int, align_dim: int = 256, init_temperature: float = 0.07):
        super().__init__()
        self.query_proj = nn.Linear(dim, align_dim)
        self.text_proj = nn.Linear(text_dim, align_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, queries: torch.Tensor, texts: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=queries.device.type, enabled=False):
            q = F.normalize(self.query_proj(queries.float()), dim=-1, eps=1e-6)
            t = F.normalize(self.text_proj(texts.float()), dim=-1, eps=1e-6)
            scale = self.log_scale.float().clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
        return q, t, scale
