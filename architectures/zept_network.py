r"""ZePTNetwork: nnU-Net's planned U-Net + fundamental/advanced queries (docs/architecture.md).

Data flow (details in docs/architecture.md):

    x -> encoder -> skips ----------------------------------------------+ (tokens of tapped levels)
               \-> decoder (every stage kept) -> decoder_outs[k] -------+
    fundamental queries --GroupingBlock per tapped level (coarse->fine)--> q_fund
    per level k: fundamental logits = head_k(q, decoder_outs[k])  (organ + tissue affinities)
                 anomaly l_k = calibrated(-max over queries)      -> prompts (tapped levels)
    Stage 1: tumour channels = l_k restricted to dilated host organs
    Stage 2: advanced queries -> TumourDecoder(masked by prompts) -> tumour head (+ adapter at
             full res, seen channels only by default) + l_k (anomaly injection); zero-shot
             channels restricted to host organs
    output channels in dataset.json order; deep supervision: one output per decoder stage.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, NamedTuple, Optional, Union

import numpy as np
import torch
from torch import nn

from nnunetv2_zept.roles import ZePTConfigError

from .alignment_head import AlignmentHead
from .backbone_taps import build_planned_unet, run_backbone, stage_strides, take_encoder_decoder
from .config import BACKGROUND_TISSUES, default_zept_config, query_class_names, resolve_config
from .grouping import GroupingBlock
from .heads import MaskFeatureAdapter, MultiLevelMaskHead, QueryLevelHead, host_residual, inject_anomaly, restrict
from .self_prompt import (LOGIT_CLAMP, AnomalyCalibration, best_affinity_anomaly, host_regions, level_radius, outer_shell,
                          prompt_mask, spatial_box)
from .tumour_decoder import TumourDecoder

__all__ = ["ZePTNetwork", "ZePTOutput", "build_zept_network", "default_zept_config", "query_class_names",
           "unwrap_network"]

# parameters whose names start with these belong to Stage 1 (backbone, grouping, fundamental
# queries, organ/tissue head); everything else is Stage 2.
STAGE1_PREFIXES = ("encoder.", "decoder.", "token_proj.", "fundamental_queries", "grouping.", "fundamental_head.")


def select_levels(level_shapes: List[tuple], max_levels: int, max_tokens: int, min_downsampling: int) -> List[int]:
    """Decoder levels (indices, coarse -> fine) used for grouping, prompts and the tumour decoder.

    Candidates are all decoder stage outputs except the full-resolution one that, at the plan's
    patch, have at most `max_tokens` voxels and at most 1 / min_downsampling**dim of the
    full-resolution voxels (on average at least /min_downsampling per axis: /4 keeps a 128^3
    patch's /4 level, 32^3 tokens, but not a 64^3 patch's /2 level, whose tokens would cost more
    memory than the U-Net level itself).  The finest `max_levels` candidates are taken; the
    coarsest level is always allowed so that every plan has at least one.
    """
    full = int(np.prod(level_shapes[-1]))
    limit = min(max_tokens, full / float(min_downsampling) ** len(level_shapes[-1]))
    cand = [k for k, s in enumerate(level_shapes[:-1]) if int(np.prod(s)) <= limit]
    if not cand:
        cand = [0]
    return cand[-max_levels:]


class ZePTNetwork(nn.Module):
    """forward(x [B, C_in, *patch]) -> logits [B, C_out, *patch] (or a deep-supervision list)."""

    def __init__(self, unet: nn.Module, patch_size, num_output_channels: int, zept_config: dict,
                 spacing=None):
        """spacing: the plan's voxel spacing in mm, in patch axis order (organ-region growth is in mm);
        None means 1 mm."""
        super().__init__()
        roles, text_dim, sw, names = resolve_config(zept_config)
        if roles.num_channels != num_output_channels:
            raise ZePTConfigError(
                f"the network has {num_output_channels} output channels but zept_config roles name "
                f"{roles.num_channels} classes {roles.names}. Fix: build zept_config from the same dataset.json")
        self.zept_config = {"roles": roles.to_dict(), "text_dim": text_dim, "switches": sw, "query_classes": names}
        self.switches = sw
        self.roles = roles
        self.spacing = tuple(float(v) for v in (spacing if spacing is not None else [1.0] * len(patch_size)))
        if len(self.spacing) != len(patch_size):
            raise ZePTConfigError(f"spacing {self.spacing} does not match the {len(patch_size)}D patch {tuple(patch_size)}")
        self.encoder, self.decoder = take_encoder_decoder(unet)
        n_stages = len(self.encoder.output_channels)
        if n_stages < 3:
            raise ZePTConfigError(f"the plan's U-Net has {n_stages} stages; ZePT needs at least 3 "
                                  f"(re-plan with a larger patch size)")
        strides = stage_strides(self.encoder)
        self.n_dec = n_stages - 1
        self.dec_channels = [int(self.encoder.output_channels[-(k + 2)]) for k in range(self.n_dec)]
        self.dec_strides = [strides[-(k + 2)] for k in range(self.n_dec)]
        shapes = [tuple(int(p) // s for p, s in zip(patch_size, st)) for st in self.dec_strides]
        self.tapped = select_levels(shapes, sw["max_levels"], sw["max_tokens_per_level"], sw["min_level_downsampling"])
        self.full = self.n_dec - 1

        # query bookkeeping: fundamental rows = organs, tissues (+ tumours when not disentangled)
        self.n_org, self.n_bg, self.n_tum = len(roles.organs), len(BACKGROUND_TISSUES[sw["background_queries"]]), len(roles.tumours)
        n_fund = self.n_org + self.n_bg + (0 if sw["disentangled"] else self.n_tum)
        self.anomaly_rows = slice(0, self.n_org + self.n_bg)      # organ and tissue queries (a view, no copy)
        organ_pos = {c: i for i, c in enumerate(roles.organs)}
        self.host_sets = [[organ_pos[h] for h in roles.hosts[t]] for t in roles.tumours]
        all_hosts = sorted({h for hs in self.host_sets for h in hs}) or list(range(self.n_org))
        self.zero_shot_pos = [i for i, t in enumerate(roles.tumours) if t in roles.zero_shot]
        order = list(roles.organs) + list(roles.tumours)
        self.register_buffer("channel_order", torch.tensor(np.argsort(order), dtype=torch.long), persistent=False)
        self.register_buffer("organ_channels", torch.tensor(list(roles.organs), dtype=torch.long), persistent=False)
        self.register_buffer("tumour_channels", torch.tensor(list(roles.tumours), dtype=torch.long), persistent=False)
        self._region_sets = self.host_sets + [all_hosts]

        d, heads = sw["hidden_dim"], sw["num_heads"]
        conv_op = self.encoder.conv_op
        # ---- Stage 1 ----
        self.token_proj = nn.ModuleList(nn.Sequential(nn.Linear(self.dec_channels[k], d), nn.LayerNorm(d))
                                        for k in self.tapped)
        self.fundamental_queries = nn.Parameter(torch.randn(n_fund, d) * 0.02)
        self.grouping = nn.ModuleList(GroupingBlock(d, heads, "group" if sw["grouping"] else "cross", sw["grouping_ffn_mult"])
                                      for _ in self.tapped)
        self.fundamental_head = MultiLevelMaskHead(d, self.dec_channels)
        self.calibration = AnomalyCalibration(self.n_dec, sw["anomaly_calibration"], sw["calibration_momentum"])
        # ---- Stage 2 ----
        if sw["disentangled"] and self.n_tum:
            self.advanced_queries = nn.Parameter(torch.randn(self.n_tum, d) * 0.02)
        if self.n_tum:
            self.tumour_decoder = TumourDecoder(d, heads, sw["tumour_ffn_hidden"], len(self.tapped), sw["tumour_decoder_order"])
            self.tumour_head = MultiLevelMaskHead(d, self.dec_channels)
            self.adapter = MaskFeatureAdapter(conv_op, self.dec_channels[-1], sw["adapter_channels"], sw["adapter_kernel"])
            self.adapter_head = QueryLevelHead(d, sw["adapter_channels"])
            gate = torch.ones(self.n_tum)
            if not sw["zero_shot_adapter"]:
                gate[self.zero_shot_pos] = 0.0
            self.register_buffer("adapter_gate", gate, persistent=False)
            self.adapter_gated = [i for i in range(self.n_tum) if gate[i] != 0]
        if sw["alignment"]:
            self.alignment_head = AlignmentHead(d, text_dim, sw["align_dim"])
        # ---- state ----
        self.register_buffer("text_embeddings", torch.zeros(len(names), text_dim))
        self.register_buffer("stage", torch.tensor(1, dtype=torch.long))
        # prediction only (nnunetv2_zept predict): the eval forward appends the anomaly logit as a last channel
        self.return_anomaly_map = False

    # ------------------------------------------------------------------ public helpers
    @property
    def query_class_names(self) -> List[str]:
        return list(self.zept_config["query_classes"])

    def set_stage(self, stage: int) -> None:
        if stage not in (1, 2):
            raise ValueError(f"stage={stage!r}: ZePT has stages 1 and 2")
        self.stage.fill_(int(stage))

    @torch.no_grad()
    def set_text_embeddings(self, t: torch.Tensor) -> None:
        """t [Q_text, text_dim] in query_class_names order."""
        t = torch.as_tensor(t)
        if tuple(t.shape) != tuple(self.text_embeddings.shape):
            raise ValueError(f"text embeddings of shape {tuple(t.shape)}; expected {tuple(self.text_embeddings.shape)} "
                             f"= (one row per query class {self.query_class_names}, text_dim). Fix: encode exactly "
                             f"network.query_class_names with the text encoder named in the config")
        if not torch.isfinite(t).all():
            raise ValueError("text embeddings contain NaN or inf")
        self.text_embeddings.copy_(t.to(self.text_embeddings))

    def stage1_parameters(self) -> Iterator[nn.Parameter]:
        return (p for n, p in self.named_parameters() if n.startswith(STAGE1_PREFIXES))

    def stage2_parameters(self) -> Iterator[nn.Parameter]:
        return (p for n, p in self.named_parameters() if not n.startswith(STAGE1_PREFIXES))

    # ------------------------------------------------------------------ forward
    def _assemble(self, organ: torch.Tensor, tumour: Optional[torch.Tensor]) -> torch.Tensor:
        """Organ and tumour logits in dataset.json order, clamped (every part is already finite; the
        clamp keeps fp16 blending in nnU-Net's predictor safe)."""
        if torch.is_grad_enabled():
            parts = [organ.float()] + ([tumour.float()] if tumour is not None else [])
            return torch.cat(parts, dim=1).index_select(1, self.channel_order).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        # prediction: write each part once into place (no concatenated copy to reorder)
        out = organ.new_empty((organ.shape[0], self.roles.num_channels) + tuple(organ.shape[2:]), dtype=torch.float32)
        out.index_copy_(1, self.organ_channels, organ.float())
        if tumour is not None:
            out.index_copy_(1, self.tumour_channels, tumour.float())
        return out.clamp_(-LOGIT_CLAMP, LOGIT_CLAMP)

    def _stage1_part_trains(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.stage1_parameters())

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        """x [B, C_in, *patch] -> logits [B, C_out, *patch] in dataset.json order, or with deep
        supervision a list of such tensors at nnU-Net's scales (full resolution first): exactly
        what nnU-Net's predictor and sliding window expect.

        with_aux=True returns `ZePTOutput(logits, aux)` instead, with the extra terms the stage
        losses need (aux keys: see `ZePTOutput`).  The trainers call it this way in training and
        validation alike, so both compute the same loss terms.

        In training mode only what the current stage trains is computed: Stage 1 leaves its
        (untrained) tumour channels at the clamp value -30 and skips the prompts, host-organ
        regions and alignment; Stage 2 runs the frozen Stage 1 part without autograd and leaves
        its (untrained) zero-shot channels unrestricted.  In eval mode every channel is complete.
        """
        sw = self.switches
        ds = bool(getattr(self.decoder, "deep_supervision", False))
        stage = int(self.stage)
        training = self.training
        b = x.shape[0]
        levels = list(range(self.n_dec)) if ds else sorted(set(self.tapped) | {self.full})
        # only the levels that are returned get tumour channels; the other tapped levels only
        # feed the prompts (prediction: the full-resolution level alone)
        out_levels = list(range(self.n_dec)) if ds else [self.full]
        # the frozen Stage 1 part needs no autograd graph in Stage 2 (no gradient can reach it)
        with torch.set_grad_enabled(self._stage1_part_trains()):
            taps = run_backbone(self.encoder, self.decoder, x)
            dec = taps.decoder_outs
            # fundamental queries, grouped coarse -> fine; per-level affinities with the queries of that level
            q = self.fundamental_queries.unsqueeze(0).expand(b, -1, -1)
            tokens, fund_logits = {}, {}
            for i, k in enumerate(self.tapped):
                tokens[k] = self.token_proj[i](taps.skips[-(k + 2)].flatten(2).transpose(1, 2))
                q = self.grouping[i](q, tokens[k])
                fund_logits[k] = self.fundamental_head(k, q, dec[k])
            for k in levels:
                if k not in fund_logits:
                    fund_logits[k] = self.fundamental_head(k, q, dec[k])
            q_fund = q
            # calibrated anomaly per level; its statistics are gathered while Stage 1 trains
            update = training and stage == 1 and sw["anomaly_calibration"] == "calibrated"
            anomaly = {}
            for k in levels:
                a = best_affinity_anomaly(fund_logits[k][:, self.anomaly_rows])
                if update:
                    self.calibration.update(k, a)
                anomaly[k] = self.calibration(k, a)

        tumour_channels = self.n_tum and not (training and stage == 1)
        prompts_needed = sw["self_prompt"] and stage == 2 and self.n_tum
        # eval: the channels held to their host organs' regions (Stage 1: all; Stage 2: the zero-shot
        # ones, and the seen ones too with seen_restriction); training restricts nothing
        if training:
            restricted = []
        elif stage == 1 or sw["seen_restriction"]:
            restricted = list(range(self.n_tum))
        else:
            restricted = self.zero_shot_pos
        regions, shells = {}, {}
        if sw["organ_restriction"] and self.n_tum:
            for k in levels:
                # tumour outputs: grown by tumour_growth_mm; prompts and the anomaly map: by organ_growth_mm
                need = {i: sw["tumour_growth_mm"] for i in restricted} if k in out_levels else {}
                if (prompts_needed and k in self.tapped) or (k == self.full and self.return_anomaly_map):
                    need[self.n_tum] = sw["organ_growth_mm"]
                regions[k] = {}
                for mm in set(need.values()):
                    regions[k].update(self._host_regions(k, fund_logits[k][:, :self.n_org],
                                                         [i for i, g in need.items() if g == mm], mm))
                if restricted and k in out_levels and sw["tumour_shell_margin"] > 0:
                    shells[k] = self._outer_shells(k, regions[k], restricted, sw["tumour_growth_mm"],
                                                   fund_logits[k].dtype)
        prompts = {}
        if prompts_needed:
            for k in self.tapped:
                reg = regions[k].get(self.n_tum) if k in regions else None
                prompts[k] = prompt_mask(anomaly[k], sw["prompt_threshold"], reg)

        # tumour channels
        tumour = {}
        adv = None
        if self.n_tum and not tumour_channels:
            for k in out_levels:
                tumour[k] = anomaly[k].new_full((b, self.n_tum, *anomaly[k].shape[2:]), -LOGIT_CLAMP)
        elif tumour_channels and stage == 1:
            for k in out_levels:
                t = anomaly[k].expand(-1, self.n_tum, *anomaly[k].shape[2:])
                tumour[k] = self._held_to_hosts(t.clone(), regions.get(k), shells.get(k), restricted)
        elif tumour_channels:
            fund_ctx = q_fund[:, :self.n_org + self.n_bg]
            adv0 = (self.advanced_queries.unsqueeze(0).expand(b, -1, -1) if sw["disentangled"]
                    else q_fund[:, self.n_org + self.n_bg:])
            adv = self.tumour_decoder(fund_ctx, adv0, [tokens[k] for k in self.tapped],
                                      [prompts.get(k) for k in self.tapped])
            for k in out_levels:
                t = self.tumour_head(k, adv, dec[k])
                if k == self.full:
                    t = self._add_adapter_term(t, adv, dec[k], regions.get(k), restricted)
                if sw["zero_shot_host_residual"] and not training and regions.get(k):
                    t = self._zero_shot_host_residual(t, fund_logits[k][:, :self.n_org], regions[k])
                if sw["anomaly_injection"]:
                    t = inject_anomaly(t, anomaly[k])
                tumour[k] = self._held_to_hosts(t, regions.get(k), shells.get(k), restricted)

        outs = {k: self._assemble(fund_logits[k][:, :self.n_org], tumour.get(k)) for k in out_levels}
        logits = [outs[k] for k in out_levels][::-1] if ds else outs[self.full]
        if not ds and self.return_anomaly_map:
            amap = anomaly[self.full]
            if regions.get(self.full):
                amap = restrict(amap, regions[self.full][self.n_tum])
            logits = torch.cat([logits, amap.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)], dim=1)
        if not with_aux:
            return logits
        return ZePTOutput(logits, self._aux(stage, q_fund, adv, fund_logits, anomaly, prompts))

    def _add_adapter_term(self, t: torch.Tensor, adv: torch.Tensor, features: torch.Tensor,
                          regions: Optional[Dict[int, torch.Tensor]], restricted: List[int]) -> torch.Tensor:
        """t [B, T, *s] + the adapter term on the channels its gate opens (float32).

        When every such channel is restricted afterwards, the term only matters inside the union of
        their regions: the adapter's convolution then runs over that union's bounding box (with the
        kernel's reach of real neighbours around it, so the values inside are those of the whole-tile
        pass) and not at all on a tile without those organs."""
        head_map = self.adapter.output_map()
        box = None
        if regions and self.adapter_gated and all(i in restricted for i in self.adapter_gated):
            union = regions[self.adapter_gated[0]]
            for i in self.adapter_gated[1:]:
                union = union | regions[i]
            box = spatial_box(union)
            if box is None:
                return t
        if box is None:
            # the adapter's closing 1x1 conv folded into the head (one full-resolution pass less)
            gate = self.adapter_gate.view(1, -1, *[1] * (features.dim() - 2))
            return torch.addcmul(t, self.adapter_head(adv, self.adapter.hidden(features), head_map), gate)
        reach = self.adapter.reach
        outer = tuple(slice(max(a.start - reach, 0), min(a.stop + reach, n)) for a, n in zip(box, features.shape[2:]))
        inner = tuple(slice(a.start - o.start, a.stop - o.start) for a, o in zip(box, outer))
        # the head reads only the gated queries and the whole crop (slicing its few logit channels,
        # not the wider hidden features, so that nothing is copied); the gate of a gated channel is 1
        gated = self.adapter_gated
        term = self.adapter_head(adv[:, gated], self.adapter.hidden(features[(..., *outer)]), head_map)
        for j, i in enumerate(gated):
            t[:, i][(..., *box)].add_(term[:, j][(..., *inner)])
        return t

    def _zero_shot_host_residual(self, t: torch.Tensor, organ_logits: torch.Tensor,
                                 regions: Dict[int, torch.Tensor]) -> torch.Tensor:
        """t [B, T, *s] (float32) with each zero-shot channel's query term replaced by its residual
        on the logit of its host organ (the best of its hosts), fitted over the channel's region."""
        t = t.float()
        for z in self.zero_shot_pos:
            if z in regions:
                host = organ_logits[:, self.host_sets[z]].float().clamp(-LOGIT_CLAMP, LOGIT_CLAMP).amax(1)
                t[:, z] = host_residual(t[:, z], host, regions[z][:, 0])
        return t

    def _held_to_hosts(self, t: torch.Tensor, regions: Optional[Dict[int, torch.Tensor]],
                       shells: Optional[Dict[int, Optional[tuple]]], restricted: List[int]) -> torch.Tensor:
        """t [B, T, *s] (a fresh tensor, changed in place) with each restricted channel at the floor
        logit outside its host region and lowered by tumour_shell_margin in the region's outer shell.

        The shell is the rim of other tissue around the organ (beyond its closed outline): an
        organ-relative anomaly fires on it, and on the development split nearly all zero-shot false
        positive voxels lay there while the tumours lay inside the closed outline.  The margin asks for
        more evidence there without cutting the shell off, so that a tumour bulging out of its organ
        still ranks above the rest of the body (docs/architecture.md, D10)."""
        if not restricted or not regions:
            return t
        for z in restricted:
            channel = t.select(1, z)
            channel.masked_fill_(~regions[z][:, 0], -LOGIT_CLAMP)
            if shells and shells.get(z) is not None:
                box, penalty = shells[z]
                # the floor is restored by _assemble's clamp
                channel[(slice(None), *box)].sub_(penalty[:, 0])
        return t

    def _outer_shells(self, level: int, regions: Dict[int, torch.Tensor], which: List[int],
                      growth_mm: float, dtype: torch.dtype) -> Dict[int, Optional[tuple]]:
        """{channel: (box, float [B, 1, *box]) or None}: tumour_shell_margin on the outer shell
        (self_prompt.outer_shell) of each channel's host region, 0 elsewhere, inside the region's box
        grown by the radius (None: no region in the tile); computed once per distinct host set."""
        r = level_radius(float(growth_mm), self.spacing, self.dec_strides[level])
        margin = float(self.switches["tumour_shell_margin"])
        per_set: Dict[tuple, Optional[tuple]] = {}
        out = {}
        for i in which:
            u = tuple(self._region_sets[i])
            if u not in per_set:
                box = spatial_box(regions[i], r)
                per_set[u] = None if box is None else (
                    box, outer_shell(regions[i][(..., *box)], r).to(dtype) * margin)
            out[i] = per_set[u]
        return out

    def _host_regions(self, level: int, organ_logits: torch.Tensor, which, growth_mm: float) -> Dict[int, torch.Tensor]:
        """{region set index: bool [B, 1, *s]} for the sets `which` (index n_tum = all hosts), the
        organs grown by growth_mm."""
        if not which:
            return {}
        which = sorted(which)
        unique = sorted({tuple(self._region_sets[i]) for i in which})
        r = level_radius(float(growth_mm), self.spacing, self.dec_strides[level])
        masks = host_regions(organ_logits, [list(u) for u in unique], r)
        col = {u: j for j, u in enumerate(unique)}
        return {i: masks[:, col[tuple(self._region_sets[i])]].unsqueeze(1) for i in which}

    def _aux(self, stage, q_fund, adv, fund_logits, anomaly, prompts) -> Dict[str, object]:
        """The loss terms' inputs of this stage (see ZePTOutput)."""
        sw = self.switches
        aux: Dict[str, object] = {}
        if sw["alignment"] and stage == 2:
            tum = adv
            if tum is None and self.n_tum:
                tum = (self.advanced_queries.unsqueeze(0).expand(q_fund.shape[0], -1, -1) if sw["disentangled"]
                       else q_fund[:, self.n_org + self.n_bg:])
            qs = q_fund[:, :self.n_org + self.n_bg]
            if tum is not None:
                qs = torch.cat([qs, tum], dim=1)
            aux["align_query"], aux["align_text"], aux["logit_scale"] = self.alignment_head(qs, self.text_embeddings)
        if self.n_bg and stage == 1:
            aux["background_logits"] = fund_logits[self.full][:, self.n_org:self.n_org + self.n_bg].clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        aux["anomaly"] = torch.sigmoid(anomaly[self.full].clamp(-15.0, 15.0))   # stays inside (0, 1) in fp32
        aux["prompt_masks"] = [prompts[k] for k in self.tapped if k in prompts]
        return aux


class ZePTOutput(NamedTuple):
    """What `ZePTNetwork.forward(x, with_aux=True)` returns.

    logits: as forward without aux (a tensor, or the deep-supervision list).
    aux:    align_query [B, Q, A], align_text [Q, A], logit_scale [] (Stage 2, alignment on);
            background_logits [B, K, *patch] (Stage 1, background queries on);
            anomaly [B, 1, *patch] calibrated anomaly probability at full resolution;
            prompt_masks [B, L_k] bool per tapped level, True = blocked (Stage 2, self-prompt on).
    """
    logits: Union[torch.Tensor, List[torch.Tensor]]
    aux: Dict[str, object]


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module that owns the parameters and attributes (strips torch.compile and DDP wrappers)."""
    while True:
        if hasattr(network, "_orig_mod"):
            network = network._orig_mod
        elif isinstance(network, torch.nn.parallel.DistributedDataParallel):
            network = network.module
        else:
            return network


def build_zept_network(plans_manager, configuration_manager, num_input_channels: int, num_output_channels: int,
                       enable_deep_supervision: bool, zept_config: dict) -> ZePTNetwork:
    """The ZePT network on the plan's U-Net (signature of the network contract)."""
    del plans_manager  # the configuration manager carries everything the network needs
    unet = build_planned_unet(configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision)
    return ZePTNetwork(unet, configuration_manager.patch_size, num_output_channels, zept_config,
                       configuration_manager.spacing)
