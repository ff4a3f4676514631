"""Query-knowledge alignment loss (docs/architecture.md, docs/training.md).

Symmetric InfoNCE between the projected class queries of each sample and the projected
knowledge-text embeddings of the same classes:

    logits[b, i, j] = s * <z_bi, k_j>          z: queries [B, Q, A], k: texts [Q, A], both L2-normalised,
                                               s = logit_scale = exp(learnable log temperature) <= 100
    L_q2t = mean_{b, i}  sum_j -T[i, j] log softmax_j(logits[b, i, :])     (query i -> its texts)
    L_t2q = mean_{b, j}  sum_i -T[j, i] log softmax_i(logits[b, :, j])     (text j -> its queries)
    L     = (L_q2t + L_t2q) / 2

T is a row-stochastic target matrix: the identity, or (hierarchical, switch
`alignment_targets`) a soft multi-positive matrix built from a boolean relation matrix R
(organ-tumour and tumour-tumour relations, `build_relation_matrix`),
normalised per row, so that every class row carries the same total weight whatever its number
of positives (the released ZePT code sums the positives' log-probabilities and reuses one target
tensor for two losses; neither is done here).  Rows may be weighted per class; masked queries
(classes not used) are dropped as rows and as candidates.  Everything is computed in float32,
also under autocast.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

_MASKED_LOGIT = -1e4   # finite: exp() underflows to 0 in float32, and 0 * it stays 0 (no NaN)


def build_relation_matrix(roles, query_names: Sequence[str], organ_tumour: bool = True,
                          tumour_tumour: bool = True) -> torch.Tensor:
    """Boolean [Q, Q] positives for the hierarchical targets, in query order.

    roles: ClassRoles; query_names: the network's query classes (channel names of `roles` plus
    background tissue names, which relate only to themselves).  True on the diagonal; between
    a tumour and each of its host organs (organ_tumour); between every two tumour classes
    (tumour_tumour, ZePT's tumour-tumour block); between queries that resolve to the same
    built-in knowledge class (they share a text, so they cannot be told apart by it)."""
    from nnunetv2_zept.knowledge.texts import resolve_class_name

    q = len(query_names)
    rel = torch.eye(q, dtype=torch.bool)
    channel = {n: i for i, n in enumerate(roles.names)}
    pos = {}   # channel index -> query index
    for qi, n in enumerate(query_names):
        if n in channel:
            pos[channel[n]] = qi
    tumours = [pos[t] for t in roles.tumours if t in pos]
    if organ_tumour:
        for t, hosts in roles.hosts.items():
            for h in hosts:
                if t in pos and h in pos:
                    rel[pos[t], pos[h]] = rel[pos[h], pos[t]] = True
    if tumour_tumour:
        for a in tumours:
            for b in tumours:
                rel[a, b] = True
    canon = [resolve_class_name(n) for n in query_names]
    for a in range(q):
        for b in range(q):
            if canon[a] is not None and canon[a] == canon[b]:
                rel[a, b] = True
    return rel


def _masked_soft_ce(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                    row_weights: torch.Tensor) -> torch.Tensor:
    """Per-row soft cross-entropy over valid candidates, weighted mean over valid rows.

    logits [B, R, C]; targets [R, C] or [B, R, C] (unnormalised non-negative); valid [B, R, C]
    bool (row r and candidate c both usable); row_weights [R]."""
    logits = logits.masked_fill(~valid, _MASKED_LOGIT)
    t = targets.expand_as(logits) * valid
    row_sum = t.sum(-1)
    t = t / row_sum.clamp_min(1e-12).unsqueeze(-1)           # re-normalise after masking
    ce = -(t * F.log_softmax(logits, dim=-1)).sum(-1)        # [B, R]
    w = row_weights.unsqueeze(0) * (row_sum > 0) * valid.any(-1)
    return (ce * w).sum() / w.sum().clamp_min(1e-12)


def alignment_loss(query_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale,
                   relation: Optional[torch.Tensor] = None, query_mask: Optional[torch.Tensor] = None,
                   class_weights: Optional[torch.Tensor] = None, max_logit_scale: float = 100.0) -> torch.Tensor:
    """Symmetric InfoNCE between queries and their knowledge texts (float32 scalar).

    query_emb: [B, Q, A] (or [Q, A]); text_emb: [Q, A]; both are L2-normalised here again.
    logit_scale: scalar tensor s (the inverse temperature, e.g. exp(log_scale)); clamped to
        [0, max_logit_scale], gradient flows to it.
    relation: [Q, Q] positives (bool or non-negative weights); None = identity (one positive per
        class).  Rows are normalised after masking, so the targets of each row sum to 1.
    query_mask: [Q] or [B, Q] bool, True = the class takes part (row and candidate).
    class_weights: [Q] non-negative weight per class row (default 1); the loss is a weighted
        mean, so weights only set relative importance.
    """
    if query_emb.ndim == 2:
        query_emb = query_emb.unsqueeze(0)
    if query_emb.ndim != 3 or text_emb.ndim != 2 or query_emb.shape[1:] != text_emb.shape:
        raise ValueError(f"expected query_emb [B, Q, A] and text_emb [Q, A], got {tuple(query_emb.shape)} "
                         f"and {tuple(text_emb.shape)}")
    b, q, _ = query_emb.shape
    device = query_emb.device
    with torch.autocast(device_type=device.type, enabled=False):
        z = F.normalize(query_emb.float(), dim=-1, eps=1e-6)
        k = F.normalize(text_emb.float().to(device), dim=-1, eps=1e-6)
        scale = torch.as_tensor(logit_scale, device=device).float().clamp(0.0, max_logit_scale)
        logits = scale * torch.einsum("bqa,ka->bqk", z, k)                  # [B, Q(query), Q(text)]

        rel = torch.eye(q, device=device) if relation is None else relation.to(device=device, dtype=torch.float32)
        if rel.shape != (q, q):
            raise ValueError(f"relation must be [Q, Q] = {(q, q)}, got {tuple(rel.shape)}")
        if torch.any(rel < 0):
            raise ValueError("relation must be non-negative")
        rel = rel.clone()   # never alias the caller's matrix (both directions use their own targets)

        if query_mask is None:
            keep = torch.ones(b, q, dtype=torch.bool, device=device)
        else:
            keep = query_mask.to(device=device, dtype=torch.bool)
            keep = keep.expand(b, q) if keep.ndim == 1 else keep
            if keep.shape != (b, q):
                raise ValueError(f"query_mask must be [Q] or [B, Q], got {tuple(query_mask.shape)}")
        valid = keep.unsqueeze(2) & keep.unsqueeze(1)                       # [B, Q, Q]

        w = torch.ones(q, device=device) if class_weights is None else class_weights.to(device).float()
        if w.shape != (q,) or torch.any(w < 0):
            raise ValueError(f"class_weights must be non-negative [Q] = [{q}], got {tuple(w.shape)}")

        l_q2t = _masked_soft_ce(logits, rel, valid, w)
        l_t2q = _masked_soft_ce(logits.transpose(1, 2), rel.transpose(0, 1).clone(), valid.transpose(1, 2), w)
        return 0.5 * (l_q2t + l_t2q)
