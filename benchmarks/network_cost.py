"""Cost of the ZePT network vs the plain nnU-Net network of the SAME plan.

Measures parameter count, forward+backward time (train mode, deep supervision on) and peak
memory for:
  plain   - nnU-Net's planned U-Net (get_network_from_plans), all parameters trained
  zept_s1 - ZePT in Stage 1 as trained (Stage-2 parameters frozen)
  zept_s2 - ZePT in Stage 2 as trained (Stage-1 parameters frozen, backbone included)

Every measurement runs in a fresh subprocess (build, one warm-up step, `--iters` timed steps)
and the variants are interleaved repeat by repeat, so that drift of a shared machine hits all
of them alike; the report gives median and min-max over repeats.  Peak memory: on CUDA
torch.cuda.max_memory_allocated() minus the allocation before the step; on CPU the process's
peak RSS (getrusage ru_maxrss) minus its RSS right before the first step, which captures
everything torch's CPU allocator takes from the OS during forward+backward.

    python benchmarks/network_cost.py --patch 128 128 128 --batch 2 --repeats 3
    python benchmarks/network_cost.py --patch 64 64 64 --batch 2 --repeats 5 --device cuda
    python benchmarks/network_cost.py --patch 48 56 72 --spacing 1.5 1.5 1.5 --batch 1 --inference --iters 5
                                       # one sliding-window forward, as in nnUNetv2_predict
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

DATASET_JSON = {
    "labels": {"background": 0, "liver": [1, 2], "liver_tumour": 2, "spleen": 3, "kidney_right": [4, 7],
               "kidney_left": [5, 7], "pancreas": [6, 8], "kidney_tumour": 7, "pancreas_tumour": 8},
    "regions_class_order": [1, 2, 3, 4, 5, 6, 7, 8],
    "zept": {"organs": ["liver", "spleen", "kidney_right", "kidney_left", "pancreas"],
             "tumours": {"liver_tumour": {"host": ["liver"]},
                         "kidney_tumour": {"host": ["kidney_right", "kidney_left"]},
                         "pancreas_tumour": {"host": ["pancreas"], "zero_shot": True}}},
}
VARIANTS = ("plain", "zept_s1", "zept_s2")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_one(variant: str, args) -> dict:
    """Build one variant, run warm-up + timed fwd/bwd steps; returns params, time, peak memory."""
    import torch
    from bench_data import build_variant_network, forward_with_aux
    from nnunetv2_zept.experiments.example_plans import make_plans, managers
    from nnunetv2_zept.roles import roles_from_dataset_json

    torch.manual_seed(0)
    torch.set_num_threads(args.threads) if args.threads else None
    dev = torch.device(args.device)
    pm, cm = managers(make_plans(args.patch, args.spacing, args.arch))
    roles = roles_from_dataset_json(DATASET_JSON)
    net, trainable = build_variant_network(variant, pm, cm, roles)
    net = net.to(dev).train()
    x = torch.randn(args.batch, 1, *cm.patch_size, device=dev)
    n_params = sum(p.numel() for p in net.parameters())
    n_train = sum(p.numel() for p in trainable)
    if args.inference:
        # what nnU-Net's sliding window runs per window: eval mode, no deep supervision, no gradient
        net.eval()
        net.decoder.deep_supervision = False

    def step():
        if args.inference:
            with torch.no_grad(), torch.autocast(dev.type, enabled=(dev.type == "cuda")):
                net(x)
            return
        with torch.autocast(dev.type, enabled=(dev.type == "cuda")):
            outs, aux = forward_with_aux(net, x)
            loss = sum(o.float().mean() for o in outs)
            if "align_query" in aux:       # the alignment loss is part of the training step
                loss = loss + (aux["align_query"] @ aux["align_text"].T * aux["logit_scale"]).mean()
            if "background_logits" in aux:
                loss = loss + aux["background_logits"].mean()
        loss.backward()
        for p in trainable:
            p.grad = None

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    if dev.type == "cuda":
        torch.cuda.empty_cache()
        sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_bytes()
    t0 = time.perf_counter()
    step()                                  # warm-up; its peak is the step's peak memory
    sync()
    warm = time.perf_counter() - t0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = []
    for _ in range(args.iters):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return {"variant": variant, "params": n_params, "trainable": n_train,
            "time_s": statistics.median(times) if times else warm, "warmup_s": warm,
            "peak_mem_mb": peak / 2 ** 20, "patch": list(cm.patch_size), "n_stages": len(cm.network_arch_init_kwargs["features_per_stage"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch", type=int, nargs="+", default=[128, 128, 128])
    ap.add_argument("--spacing", type=float, nargs="+", default=None, help="default: 1 mm isotropic")
    ap.add_argument("--arch", choices=("plain", "resenc"), default="plain")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, default=1, help="timed steps per subprocess after one warm-up step; 0 = report the warm-up step's time "
                         "(for very slow CPU runs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--inference", action="store_true",
                    help="time the forward pass of prediction (eval mode, no deep supervision, no gradient) "
                         "instead of a training step")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.spacing is None:
        args.spacing = [1.0] * len(args.patch)
    if args._child:
        print("RESULT " + json.dumps(measure_one(args._child, args)), flush=True)
        return 0
    runs = {v: [] for v in args.variants}
    base_cmd = [sys.executable, os.path.abspath(__file__)] + [a for a in (argv if argv is not None else sys.argv[1:])
                                                              if a != "--json"]
    if args.json:   # drop the value that followed --json
        i = base_cmd.index(args.json) if args.json in base_cmd else None
        if i is not None:
            del base_cmd[i]
    for r in range(args.repeats):
        for v in args.variants:
            p = subprocess.run(base_cmd + ["--_child", v], capture_output=True, text=True)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if p.returncode or not line:
                sys.stderr.write(p.stdout + p.stderr)
                raise SystemExit(f"measurement of {v} failed (exit {p.returncode})")
            res = json.loads(line[0][7:])
            runs[v].append(res)
            print(f"repeat {r + 1}/{args.repeats} {v:8s} {res['time_s']:8.3f} s  {res['peak_mem_mb']:9.1f} MB", flush=True)

    def summary(v, key):
        vals = [x[key] for x in runs[v]]
        return statistics.median(vals), min(vals), max(vals)

    first = runs[args.variants[0]][0]
    report = {"device": args.device, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "patch": first["patch"], "batch": args.batch, "arch": args.arch, "n_stages": first["n_stages"],
              "repeats": args.repeats, "iters": args.iters, "variants": {}}
    print(f"\nplan: {args.arch} {first['n_stages']} stages, patch {first['patch']}, batch {args.batch}, device {args.device}")
    print(f"{'variant':8s} {'params':>12s} {'trainable':>12s} {'time s (median [min,max])':>30s} {'peak MB (median [min,max])':>32s}")
    for v in args.variants:
        t, m = summary(v, "time_s"), summary(v, "peak_mem_mb")
        report["variants"][v] = {"params": runs[v][0]["params"], "trainable": runs[v][0]["trainable"],
                                 "time_s": t, "peak_mem_mb": m}
        print(f"{v:8s} {runs[v][0]['params']:12,d} {runs[v][0]['trainable']:12,d} "
              f"{t[0]:10.3f} [{t[1]:.3f},{t[2]:.3f}] {m[0]:14.1f} [{m[1]:.1f},{m[2]:.1f}]")
    if "plain" in runs:
        for v in args.variants:
            if v != "plain":
                rt = report["variants"][v]["time_s"][0] / report["variants"]["plain"]["time_s"][0]
                rm = report["variants"][v]["peak_mem_mb"][0] / report["variants"]["plain"]["peak_mem_mb"][0]
                report["variants"][v]["ratio_time"], report["variants"][v]["ratio_mem"] = rt, rm
                print(f"{v}/plain: time x{rt:.3f} (target <= 1.25), peak memory x{rm:.3f} (target <= 1.2)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"report": report, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
