"""How fast the ZePT Stage 1 network learns organs, side by side with plain nnU-Net.

Same tiny problem (the test suite's 32^3 phantoms: liver, two kidneys), same plan, same organ
loss (`stage1_loss`), in one process; prints organ Dice on two held-out cases (eval mode) every
10 steps.  Measured 2026-11-28 on the shared 2-core CPU, 40 steps: plain nnU-Net (SGD 1e-2)
liver Dice 0.88; ZePT Stage 1 (AdamW 1e-3) between 0.0 and 0.54.  This gap is the open problem
behind the demo's untrained ZePT models (docs/benchmarks.md).

    python benchmarks/stage1_learning_speed.py --model zept --optimizer adamw --lr 1e-3 --steps 40
    python benchmarks/stage1_learning_speed.py --model plain --optimizer sgd --lr 1e-2 --steps 40
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import tiny_dataset  # noqa: E402

from nnunetv2_zept.architectures import build_zept_network, default_zept_config  # noqa: E402
from nnunetv2_zept.architectures.backbone_taps import build_planned_unet  # noqa: E402
from nnunetv2_zept.architectures.config import background_names  # noqa: E402
from nnunetv2_zept.experiments.example_plans import make_plans, managers  # noqa: E402
from nnunetv2_zept.losses.stage_losses import stage1_loss  # noqa: E402
from nnunetv2_zept.roles import roles_from_dataset_json  # noqa: E402
from bench_data import forward_with_aux  # noqa: E402

REGIONS = [[1, 4], [2], [3, 5], [4], [5]]


def data():
    rng = np.random.RandomState(0)
    cases = [tiny_dataset.make_case(rng, liver_tumour=(i % 2 == 0)) for i in range(8)]
    x = torch.tensor(np.stack([(c[0] - 100) / 80 for c in cases]))[:, None].float()
    seg = np.stack([c[1] for c in cases])
    y = torch.tensor(np.stack([np.isin(seg, r) for r in REGIONS], 1)).float()
    return x, y


def pyramid(y, n):
    out = [y]
    for _ in range(n - 1):
        out.append(torch.nn.functional.interpolate(out[-1], scale_factor=0.5, mode="nearest"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("zept", "plain"), default="zept")
    ap.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--background-weight", type=float, default=0.1)
    ap.add_argument("--switches", default="{}", help='network switches as JSON, e.g. \'{"grouping": false}\'')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    roles = roles_from_dataset_json(tiny_dataset.dataset_json(8))
    x_all, y_all = data()
    plans = make_plans((32, 32, 32), (1.5, 1.5, 1.5))
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    props.update({"mean": 100.0, "std": 80.0, "percentile_00_5": -1000.0, "percentile_99_5": 500.0})
    pm, cm = managers(plans)
    cfg = default_zept_config(roles, 16, **json.loads(a.switches))
    if a.model == "zept":
        net = build_zept_network(pm, cm, 1, 5, True, cfg)
        net.set_text_embeddings(torch.nn.functional.normalize(torch.randn(len(cfg["query_classes"]), 16), dim=1))
        net.set_stage(1)
        params = list(net.stage1_parameters())
        for p in net.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
    else:
        net = build_planned_unet(cm, 1, 5, True)
        params = list(net.parameters())
    opt = (torch.optim.AdamW(params, lr=a.lr, weight_decay=1e-4) if a.optimizer == "adamw" else
           torch.optim.SGD(params, lr=a.lr, momentum=0.99, nesterov=True, weight_decay=3e-5))
    t0 = time.time()
    for it in range(a.steps):
        net.train()
        idx = torch.randint(0, 6, (2,))
        x, y = x_all[idx], y_all[idx]
        outs, aux = forward_with_aux(net, x)
        loss = stage1_loss(outs, pyramid(y, len(outs)), ["c", "c"], x, aux, roles,
                           background_names(cfg["switches"]), props, background_weight=a.background_weight)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 12)
        opt.step()
        if (it + 1) % 10 == 0 or it == a.steps - 1:
            net.eval()
            if hasattr(net, "decoder"):
                net.decoder.deep_supervision = False
            with torch.no_grad():
                o = net(x_all[6:8])
            net.decoder.deep_supervision = True
            p = torch.sigmoid(o) > 0.5
            t = y_all[6:8] > 0
            dice = [float(2 * (p[:, c] & t[:, c]).sum() / (p[:, c].sum() + t[:, c].sum() + 1e-6)) for c in range(3)]
            print(f"{a.model} {a.optimizer} lr={a.lr:g} step {it + 1}: loss {loss.item():.3f} organ Dice "
                  f"(liver, kidney_right, kidney_left) {np.round(dice, 3).tolist()}  {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
