"""Where a Stage 2 prediction tile spends its time, next to a plain nnU-Net tile of the same plan.

Sliding-window tiles as nnU-Net's predictor runs them (eval mode, no deep supervision, no
gradient, batch 1) over one synthetic case of `--shape` voxels at `--spacing` mm (the generator's
demo anatomy, the benchmark's classes: 8 organs, 2 seen and 4 zero-shot tumour types), with a plan
made by nnU-Net's topology code for `--patch` and U-Net width `--features`.  `--tiles` tiles are
taken evenly from nnU-Net's sliding-window grid (step 0.5); the plain and the ZePT network run
each tile in turn, so that drift of the machine hits both alike.

The networks have random weights; the ZePT network's organ logits are replaced by the case's
ground-truth organ masks (+8 inside, -8 outside, at each decoder level), so that the host-organ
regions and the prompts have the extent they have with a trained model (the replaced head still
runs, and is timed).  The ZePT tile is split into its parts by timing wrappers around the
network's blocks (backbone, grouping, fundamental heads, host-organ regions, tumour decoder, tumour
heads, mask-feature adapter, ...); "rest" is the tile minus the named parts.

The ZePT tile is also timed with each prediction switch of SWITCHED_OFF off in turn:
`seen_restriction` (seen tumour channels over the whole tile, the adapter over every voxel) and
`zero_shot_host_residual` (the zero-shot query terms added as they are), both prediction before
2026-12-03.  Rows below time a part's former evaluations on the same tiles: the adapter over the
whole tile, with its closing 1x1 conv run separately (before 2026-12-02) and folded into the head
(2026-12-02), and the host-organ regions with cavity filling and dilation over the whole tile (now
inside the organs' bounding box).

    python benchmarks/prediction_tile_parts.py        # the realistic case: 300 x 300 x 200 at 1 mm, patch 96 x 160 x 128, width 16
    python benchmarks/prediction_tile_parts.py --shape 72 56 48 --spacing 6 6 6 --patch 40 48 56 --tiles 4   # a quick look
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_data import build_variant_network  # noqa: E402

# the network attributes and module-level functions of architectures.zept_network that are timed
MODULES = ("token_proj", "grouping", "fundamental_head", "calibration", "tumour_decoder", "tumour_head", "adapter",
           "adapter_head")
FUNCTIONS = ("run_backbone", "best_affinity_anomaly", "host_regions", "outer_shell", "prompt_mask", "inject_anomaly",
             "host_residual")
# prediction switches that are also timed off, on the same tiles: {switch: (key in tile_s, row label)}
SWITCHED_OFF = {
    "seen_restriction": ("zept_s2_unrestricted", "seen_restriction off (before 2026-12-03)"),
    "zero_shot_host_residual": ("zept_s2_no_host_residual", "zero_shot_host_residual off (before 2026-12-03)"),
}


def synthetic_benchmark_roles():
    """The class roles of benchmarks/zero_shot.py's synthetic data (generator defaults)."""
    from nnunetv2_zept.roles import roles_from_dataset_json
    from nnunetv2_zept.synthetic.anatomy import ORGANS
    from nnunetv2_zept.synthetic.dataset import default_label_ids, label_regions, zept_block
    from nnunetv2_zept.synthetic.tumours import DEFAULT_SEEN, DEFAULT_ZERO_SHOT

    types = list(DEFAULT_SEEN) + list(DEFAULT_ZERO_SHOT)
    labels, order = label_regions(default_label_ids(types), types)
    block = zept_block(types, DEFAULT_ZERO_SHOT)
    block.pop("texts", None)
    roles = roles_from_dataset_json({"labels": labels, "regions_class_order": order, "zept": block})
    assert len(roles.organs) == len(ORGANS)
    return roles


class PartTimer:
    """Wall time per named part of one forward pass (CPU: ops are synchronous; CUDA: synchronised)."""

    def __init__(self, device: torch.device):
        self.totals = collections.defaultdict(float)
        self.device = device

    def wrap(self, name, fn):
        def timed(*a, **k):
            self.sync()
            t0 = time.perf_counter()
            out = fn(*a, **k)
            self.sync()
            self.totals[name] += time.perf_counter() - t0
            return out
        return timed

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def instrument(net, timer: PartTimer):
    import nnunetv2_zept.architectures.zept_network as zn

    for name in FUNCTIONS:
        setattr(zn, name, timer.wrap(name, getattr(zn, name)))
    for name in MODULES:
        mod = getattr(net, name, None)
        if mod is None:
            continue
        for m in (mod if isinstance(mod, torch.nn.ModuleList) else [mod]):
            m.forward = timer.wrap(name, m.forward)
    if getattr(net, "adapter", None) is not None:
        net.adapter.hidden = timer.wrap("adapter", net.adapter.hidden)     # the network calls hidden(), not forward()
    net._assemble = timer.wrap("assemble", net._assemble)


ORGAN_LOGIT = 8.0


def case_tiles(shape_xyz, spacing_xyz, patch, count: int):
    """(CT tiles [1, 1, *patch] scaled to about unit variance, organ id tiles [*patch]) of one synthetic
    case with every tumour type, `count` tiles evenly from nnU-Net's sliding-window grid."""
    import numpy as np
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
    from nnunetv2_zept.synthetic.case import default_label_ids, make_case
    from nnunetv2_zept.synthetic.tumours import DEFAULT_SEEN, DEFAULT_ZERO_SHOT

    types = list(DEFAULT_SEEN) + list(DEFAULT_ZERO_SHOT)
    case = make_case(7, tuple(shape_xyz), tuple(spacing_xyz), tumours=types, label_ids=default_label_ids(types))
    image, organs = case.image.astype(np.float32), case.organ_before_tumours
    if any(i < p_ for i, p_ in zip(image.shape, patch)):
        raise SystemExit(f"the case ({image.shape}, z y x) is smaller than the patch {tuple(patch)}: give a larger --shape")
    steps = compute_steps_for_sliding_window(image.shape, tuple(patch), 0.5)
    grid = [(z, y, x) for z in steps[0] for y in steps[1] for x in steps[2]]
    picked = [grid[int(i)] for i in np.linspace(0, len(grid) - 1, min(count, len(grid))).round()]
    tiles = []
    for corner in picked:
        sl = tuple(slice(c, c + p_) for c, p_ in zip(corner, patch))
        ct = torch.from_numpy((np.clip(image[sl], -1000, 1000) - 40.0) / 200.0)[None, None]
        tiles.append((ct, torch.from_numpy(organs[sl].astype(np.int64))))
    return tiles, len(grid)


def organ_logits_per_level(net, organ_ids: torch.Tensor, organ_label_ids) -> dict:
    """{decoder level: [1, N_org, *s_level]} +-ORGAN_LOGIT from the ground-truth organ masks."""
    masks = torch.stack([organ_ids == i for i in organ_label_ids]).float()[None]        # [1, N_org, *patch]
    out = {}
    for k, stride in enumerate(net.dec_strides):
        m = torch.nn.functional.avg_pool3d(masks, kernel_size=stride, stride=stride) if any(s > 1 for s in stride) else masks
        out[k] = torch.where(m > 0.5, ORGAN_LOGIT, -ORGAN_LOGIT)
    return out


def use_ground_truth_organs(net, state: dict) -> None:
    """The fundamental head's organ rows come from state["organs"][level] (the head still runs)."""
    head = net.fundamental_head
    forward = head.forward

    def patched(level, queries, features):
        out = forward(level, queries, features)
        out[:, :net.n_org] = state["organs"][level].to(out.dtype)
        return out
    head.forward = patched


def former_parts_seconds(net, x: torch.Tensor, organs: dict, timer: PartTimer) -> dict:
    """The adapter and the host-organ regions as evaluated before this version, on this tile."""
    from nnunetv2_zept.architectures import self_prompt
    from nnunetv2_zept.binary_masks import _fill_holes_in_box

    out = {}
    feats = torch.randn(1, net.dec_channels[-1], *x.shape[2:], device=x.device)
    adv = torch.randn(1, net.n_tum, net.switches["hidden_dim"], device=x.device)
    timer.sync()
    t0 = time.perf_counter()
    net.adapter_head(adv, net.adapter(feats))
    timer.sync()
    out["adapter_unfolded"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    net.adapter_head(adv, net.adapter.hidden(feats), net.adapter.output_map())
    timer.sync()
    out["adapter_whole_tile"] = time.perf_counter() - t0
    # the regions the eval forward asks for at full resolution: each zero-shot type's host set (+ all hosts
    # for the prompts at the tapped levels, cheap there); whole-tile cavity filling and dilation
    sets = sorted({tuple(net._region_sets[z]) for z in net.zero_shot_pos})
    organs_needed = sorted({o for hs in sets for o in hs})
    radius = self_prompt.level_radius(float(net.switches["organ_growth_mm"]), net.spacing, net.dec_strides[net.full])
    t0 = time.perf_counter()
    m = (organs[net.full][:, organs_needed] > 0).numpy()
    filled = m.copy()
    for c in range(m.shape[1]):
        if m[0, c].any():
            filled[0, c] = _fill_holes_in_box(m[0, c])
    self_prompt._dilate_in_box(torch.from_numpy(filled), radius)
    out["host_regions_whole_tile"] = time.perf_counter() - t0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[300, 300, 200], help="case size x y z in voxels")
    ap.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0], help="voxel spacing x y z in mm")
    ap.add_argument("--patch", type=int, nargs=3, default=[96, 160, 128], help="tile z y x (nnU-Net's order)")
    ap.add_argument("--features", type=int, default=16, help="U-Net width of the plan's first stage")
    ap.add_argument("--tiles", type=int, default=6, help="tiles timed per network, after one warm-up tile")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    from nnunetv2_zept.experiments.example_plans import make_plans, managers
    from nnunetv2_zept.synthetic.case import default_label_ids
    from nnunetv2_zept.synthetic.tumours import DEFAULT_SEEN, DEFAULT_ZERO_SHOT

    dev = torch.device("cpu")
    load_before = os.getloadavg()[0]
    t_start = time.time()
    spacing_zyx = list(args.spacing[::-1])
    pm, cm = managers(make_plans(args.patch, spacing_zyx, base_features=args.features))
    patch = list(cm.patch_size)
    roles = synthetic_benchmark_roles()
    torch.manual_seed(0)
    nets = {}
    for variant in ("plain", "zept_s2"):
        net, _ = build_variant_network(variant, pm, cm, roles)
        net.eval()
        net.decoder.deep_supervision = False
        nets[variant] = net
    zept = nets["zept_s2"]
    zept.spacing = tuple(float(v) for v in spacing_zyx)
    ids = default_label_ids(list(DEFAULT_SEEN) + list(DEFAULT_ZERO_SHOT))
    organ_label_ids = [ids[n] for n in [roles.names[c] for c in roles.organs]]
    state = {}
    use_ground_truth_organs(zept, state)
    timer = PartTimer(dev)
    instrument(zept, timer)
    tiles, n_grid = case_tiles(args.shape, args.spacing, patch, args.tiles + 1)
    times = {v: [] for v in list(nets) + [key for key, _ in SWITCHED_OFF.values()]}
    parts = []                 # per tile: {part: s}; a part a tile does not run (no seen host: no adapter) counts 0
    former = collections.defaultdict(list)
    organ_share = []
    with torch.no_grad():
        for i, (x, organ_ids) in enumerate(tiles):
            state["organs"] = organ_logits_per_level(zept, organ_ids, organ_label_ids)
            for v, net in nets.items():
                timer.totals.clear()
                t0 = time.perf_counter()
                net(x)
                if i == 0:
                    continue                      # warm-up
                times[v].append(time.perf_counter() - t0)
                if v == "zept_s2":
                    parts.append(dict(timer.totals))
                    for switch, (key, _) in SWITCHED_OFF.items():
                        default, zept.switches[switch] = zept.switches[switch], False
                        t0 = time.perf_counter()
                        net(x)
                        times[key].append(time.perf_counter() - t0)
                        zept.switches[switch] = default
            if i:
                organ_share.append(float((organ_ids > 0).float().mean()))
                for k, sec in former_parts_seconds(zept, x, state["organs"], timer).items():
                    former[k].append(sec)
    tile = {v: statistics.median(t) for v, t in times.items()}
    part = {k: statistics.median(p.get(k, 0.0) for p in parts) for k in set().union(*parts)}
    part["rest"] = tile["zept_s2"] - sum(part.values())
    before = {k: statistics.median(t) for k, t in former.items()}
    load_after = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    loaded = max(load_before, load_after) > cores
    overhead = tile["zept_s2"] - tile["plain"]
    lines = [f"Case {args.shape[0]} x {args.shape[1]} x {args.shape[2]} voxels at {args.spacing} mm (x y z), tile {patch} "
             f"(z y x), U-Net width {args.features}; {len(times['plain'])} of the {n_grid} sliding-window tiles (organs fill "
             f"{statistics.median(organ_share):.0%} of a tile, median), median per tile; CPU, {torch.get_num_threads()} threads; "
             f"{time.strftime('%Y-%m-%d %H:%M %Z')}; load average before/after {load_before:.1f}/{load_after:.1f} on {cores} "
             f"cores" + (" (LOADED: above the core count)" if loaded else "") + f"; {(time.time() - t_start) / 60:.1f} min.", "",
             "| part | s per tile | share of the ZePT overhead |", "|---|---|---|",
             f"| plain nnU-Net tile | {tile['plain']:.3f} | |",
             f"| ZePT Stage 2 tile | {tile['zept_s2']:.3f} ({tile['zept_s2'] / tile['plain']:.2f}x plain) | 100% |",
             *[f"| ZePT Stage 2 tile, {label} | {tile[key]:.3f} ({tile[key] / tile['plain']:.2f}x plain) | |"
               for key, label in SWITCHED_OFF.values()],
             f"| ZePT backbone (run_backbone) | {part.get('run_backbone', 0):.3f} | "
             f"{(part.get('run_backbone', 0) - tile['plain']) / overhead:.0%} (its excess over the plain tile) |"]
    for k, sec in sorted(part.items(), key=lambda kv: -kv[1]):
        if k != "run_backbone":
            lines.append(f"| {k} | {sec:.3f} | {sec / overhead:.0%} |")
    now_adapter = part.get('adapter', 0) + part.get('adapter_head', 0)
    lines += ["", "Former evaluations of two parts, on the same tiles:", "", "| part | former s per tile | now s per tile |",
              "|---|---|---|",
              f"| adapter + adapter_head over the whole tile, 1x1 conv over full resolution, then the head (before "
              f"2026-12-02) | {before['adapter_unfolded']:.3f} | {now_adapter:.3f} (over the seen hosts' box) |",
              f"| adapter + adapter_head over the whole tile, 1x1 conv folded into the head (2026-12-02) | "
              f"{before['adapter_whole_tile']:.3f} | {now_adapter:.3f} (over the seen hosts' box) |",
              f"| host-organ regions at full resolution (cavity filling and dilation over the whole tile) | "
              f"{before['host_regions_whole_tile']:.3f} | {part.get('host_regions', 0):.3f} (all levels) |"]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": args.shape, "spacing": args.spacing, "patch": patch,
                                               "features": args.features, "tile_s": tile, "parts_s": part,
                                               "former_s": before, "load": [load_before, load_after],
                                               "date": time.strftime("%Y-%m-%d %H:%M %Z")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
