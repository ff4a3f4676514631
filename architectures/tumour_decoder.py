"""Advanced (tumour) query decoder, Mask2Former style (docs/architecture.md).

One `TumourDecoderLayer` per tapped level: self-attention over all queries (fundamental +
advanced), masked cross-attention for the advanced queries only (the self-prompt decides which
tokens they may see), FFN over all queries; post-norm.  After the layers a `CrossQueryBlock`
(self-attention + FFN over all queries) lets tumour queries compare themselves with the final
organ and tissue queries.  Query order in the concatenation: fundamental first, then advanced.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from .attention_blocks import CrossAttentionLayer, FeedForward, SelfAttentionLayer


class TumourDecoderLayer(nn.Module):
    """fund [B, Qf, D], adv [B, Qa, D], tokens [B, L, D], blocked [B, L] | None -> (fund, adv)."""

    def __init__(self, dim: int, heads: int, ffn_hidden: int):
        super().__init__()
        self.self_attn = SelfAttentionLayer(dim, heads)
        self.cross_attn = CrossAttentionLayer(dim, heads)
        self.ffn = FeedForward(dim, ffn_hidden, act=nn.ReLU)

    def forward(self, fund: torch.Tensor, adv: torch.Tensor, tokens: torch.Tensor,
                blocked: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        nf = fund.shape[1]
        allq = self.self_attn(torch.cat([fund, adv], dim=1))
        fund, adv = allq[:, :nf], allq[:, nf:]
        adv = self.cross_attn(adv, tokens, blocked)
        allq = self.ffn(torch.cat([fund, adv], dim=1))
        return allq[:, :nf], allq[:, nf:]


class CrossQueryBlock(nn.Module):
    """Final interaction of tumour queries with the organ/tissue queries -> adv [B, Qa, D]."""

    def __init__(self, dim: int, heads: int, ffn_hidden: int):
        super().__init__()
        self.self_attn = SelfAttentionLayer(dim, heads)
        self.ffn = FeedForward(dim, ffn_hidden, act=nn.ReLU)

    def forward(self, fund: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        nf = fund.shape[1]
        return self.ffn(self.self_attn(torch.cat([fund, adv], dim=1)))[:, nf:]


class TumourDecoder(nn.Module):
    """Runs one layer per level in `order` ("fine_to_coarse" as in [C], or "coarse_to_fine" as in [R]).

    tokens / blocked are given coarse -> fine (blocked entries may be None = unmasked).
    Returns the final advanced queries [B, Qa, D].
    """

    def __init__(self, dim: int, heads: int, ffn_hidden: int, num_levels: int, order: str = "fine_to_coarse"):
        super().__init__()
        if order not in ("fine_to_coarse", "coarse_to_fine"):
            raise ValueError(f"tumour_decoder_order={order!r}: use 'fine_to_coarse' or 'coarse_to_fine'")
        self.order = order
        self.layers = nn.ModuleList(TumourDecoderLayer(dim, heads, ffn_hidden) for _ in range(num_levels))
        self.final = CrossQueryBlock(dim, heads, ffn_hidden)

    def forward(self, fund: torch.Tensor, adv: torch.Tensor, tokens: Sequence[torch.Tensor],
                blocked: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
        idx = list(range(len(tokens)))
        if self.order == "fine_to_coarse":
            idx = idx[::-1]
        for layer, i in zip(self.layers, idx):
            fund, adv = layer(fund, adv, tokens[i], blocked[i])
        return self.final(fund, adv)
