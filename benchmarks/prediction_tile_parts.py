"""Where a Stage 2 prediction tile spends its time, next to a plain nnU-Net tile of the same plan.

One sliding-window tile as nnU-Net's predictor runs it (eval mode, no deep supervision, no
gradient, batch 1), on the synthetic benchmark's classes (8 organs, 2 seen and 4 zero-shot tumour
types) and a plan made by nnU-Net's topology code for `--patch` at `--spacing` with U-Net width
`--features`.  The ZePT tile is split into its parts by timing wrappers around the network's
blocks (backbone, grouping, fundamental heads, host-organ regions, tumour decoder, tumour heads,
mask-feature adapter, ...); "rest" is the tile minus the named parts.  The plain tile and the ZePT
tile alternate repeat by repeat in one process, so that drift of the machine hits both alike.

The adapter row also times the adapter's former evaluation (its closing 1x1 conv run over the full
resolution features, then the head), which the network replaced by folding that conv into the head.

    python benchmarks/prediction_tile_parts.py                                 # realistic: 96 x 160 x 128 at 1 mm, width 16
    python benchmarks/prediction_tile_parts.py --patch 40 48 56 --spacing 6 6 6 --repeats 5   # the demo's tile
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
FUNCTIONS = ("run_backbone", "best_affinity_anomaly", "host_regions", "prompt_mask", "inject_anomaly")


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


def unfolded_adapter_seconds(net, x: torch.Tensor, timer: PartTimer, repeats: int) -> float:
    """The adapter as evaluated before the fold: its whole conv stack over the full-resolution features,
    then the head on the result (the decoder features and advanced queries are stand-ins of the right shape)."""
    feats = torch.randn(1, net.dec_channels[-1], *x.shape[2:], device=x.device)
    adv = torch.randn(1, net.n_tum, net.switches["hidden_dim"], device=x.device)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            timer.sync()
            t0 = time.perf_counter()
            net.adapter_head(adv, net.adapter(feats))
            timer.sync()
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch", type=int, nargs=3, default=[96, 160, 128])
    ap.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0])
    ap.add_argument("--features", type=int, default=16, help="U-Net width of the plan's first stage")
    ap.add_argument("--repeats", type=int, default=3, help="timed tiles per network, after one warm-up tile")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    from nnunetv2_zept.experiments.example_plans import make_plans, managers

    dev = torch.device(args.device)
    load_before = os.getloadavg()[0]
    pm, cm = managers(make_plans(args.patch, args.spacing, base_features=args.features))
    roles = synthetic_benchmark_roles()
    torch.manual_seed(0)
    x = torch.randn(1, 1, *cm.patch_size, device=dev)
    nets = {}
    for variant in ("plain", "zept_s2"):
        net, _ = build_variant_network(variant, pm, cm, roles)
        net = net.to(dev).eval()
        net.decoder.deep_supervision = False
        nets[variant] = net
    timer = PartTimer(dev)
    instrument(nets["zept_s2"], timer)
    tiles = {v: [] for v in nets}
    parts = collections.defaultdict(list)
    with torch.no_grad():
        for r in range(args.repeats + 1):
            for v, net in nets.items():
                timer.totals.clear()
                timer.sync()
                t0 = time.perf_counter()
                net(x)
                timer.sync()
                if r == 0:
                    continue                      # warm-up
                tiles[v].append(time.perf_counter() - t0)
                if v == "zept_s2":
                    for k, s in timer.totals.items():
                        parts[k].append(s)
    tile = {v: statistics.median(t) for v, t in tiles.items()}
    part = {k: statistics.median(t) for k, t in parts.items()}
    part["rest"] = tile["zept_s2"] - sum(part.values())
    unfolded = unfolded_adapter_seconds(nets["zept_s2"], x, timer, args.repeats)
    load_after = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    loaded = max(load_before, load_after) > cores
    print(f"Tile {list(cm.patch_size)} at {args.spacing} mm, U-Net width {args.features}, {args.device}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; median of {args.repeats} "
          f"tiles; load average before/after {load_before:.1f}/{load_after:.1f} on {cores} cores"
          + (" (LOADED: above the core count)" if loaded else ""))
    print()
    print("| part | s per tile | share of the ZePT overhead |")
    print("|---|---|---|")
    overhead = tile["zept_s2"] - tile["plain"]
    print(f"| plain nnU-Net tile | {tile['plain']:.3f} | |")
    print(f"| ZePT Stage 2 tile | {tile['zept_s2']:.3f} ({tile['zept_s2'] / tile['plain']:.2f}x plain) | |")
    print(f"| ZePT backbone (run_backbone) | {part.get('run_backbone', 0):.3f} | "
          f"{(part.get('run_backbone', 0) - tile['plain']) / overhead:+.0%} (minus the plain tile) |")
    for k, s in sorted(part.items(), key=lambda kv: -kv[1]):
        if k != "run_backbone":
            print(f"| {k} | {s:.3f} | {s / overhead:.0%} |")
    print(f"| adapter + adapter_head before the fold (1x1 conv over full resolution) | {unfolded:.3f} | |")
    if args.json:
        Path(args.json).write_text(json.dumps({"patch": list(cm.patch_size), "spacing": args.spacing,
                                               "features": args.features, "tile_s": tile, "parts_s": part,
                                               "adapter_unfolded_s": unfolded, "load": [load_before, load_after],
                                               "date": time.strftime("%Y-%m-%d %H:%M %Z")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
