"""How fast the ZePT Stage 1 network learns organs, side by side with plain nnU-Net, with or without
synthetic lesions.

Same tiny problem (the test suite's 32^3 phantoms at 1.5 mm: liver 100 HU, two kidneys 180 HU),
same plan, same organ loss (`stage1_loss`), in one process; prints organ Dice on two held-out cases
(eval mode) every 10 steps.  Measured 2026-11-28 on the shared 2-core CPU, 40 steps: plain nnU-Net
(SGD 1e-2) liver Dice 0.88; ZePT Stage 1 (AdamW 1e-3) between 0.0 and 0.54.

--lesions pastes Stage 1's synthetic lesions into the training batches exactly as the trainer does
(LesionSynthesiser, label weights into stage1_loss): `generic` (the curriculum, default of
nnUNetTrainerZePTStage1), `hypodense` (the earlier recipe) or `none`.  --lesion-labels,
--lesion-kinds and --max-organ-fraction change the curriculum, to find out what costs organ
learning.  --window foreground normalises like nnU-Net's CTNormalization: clipped to the 0.5 and
99.5 percentiles of the labelled voxels (here about 40 and 205 HU), so bright lesions clip at
the kidneys' brightness, as they do in a real plan.  At the end (ZePT only) it pastes generic lesions
into the held-out cases and reports how much of them the organ channels claim (probability > 0.5:
the host, any other organ) and the voxel AUROC of the anomaly map, lesion against healthy host
tissue, at every evaluation from --lesion-metrics-from on, and their means (organ channels of this
tiny problem switch on and off between evaluations, with or without lesions, so a single
evaluation says little); `--json` writes the curves and these numbers.

    python benchmarks/stage1_learning_speed.py --model zept --optimizer adamw --lr 1e-3 --steps 40
    python benchmarks/stage1_learning_speed.py --model plain --optimizer sgd --lr 1e-2 --steps 40
    python benchmarks/stage1_learning_speed.py --steps 150 --threads 1 --window foreground --lesions generic --seed 1
"""
import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from nnunetv2_zept.architectures import build_zept_network, default_zept_config
from nnunetv2_zept.architectures.backbone_taps import build_planned_unet
from nnunetv2_zept.architectures.config import background_names
from nnunetv2_zept.experiments import tiny_phantoms as tiny_dataset
from nnunetv2_zept.experiments.example_plans import make_plans, managers
from nnunetv2_zept.losses.stage_losses import stage1_loss
from nnunetv2_zept.roles import roles_from_dataset_json
from nnunetv2_zept.training.background_tissue import normalised_from_hu
from nnunetv2_zept.training.lesion_recipes import HypodenseLesionRecipe, LesionCurriculum
from nnunetv2_zept.training.synthetic_lesions import LesionSynthesiser

from bench_data import forward_with_aux

REGIONS = [[1, 4], [2], [3, 5], [4], [5]]
SPACING = (1.5, 1.5, 1.5)
HOST_MARKERS = {0: 3, 1: 4, 2: 4}       # organ channel -> tumour channel that marks its lesions


def cases():
    rng = np.random.RandomState(0)
    made = [tiny_dataset.make_case(rng, liver_tumour=(i % 2 == 0)) for i in range(8)]
    hu = torch.tensor(np.stack([c[0] for c in made]))[:, None].float()
    seg = np.stack([c[1] for c in made])
    y = torch.tensor(np.stack([np.isin(seg, r) for r in REGIONS], 1)).float()
    return hu, y


def intensity_properties(hu, y, window):
    if window == "fixed":
        return {"mean": 100.0, "std": 80.0, "percentile_00_5": -1000.0, "percentile_99_5": 500.0}
    # nnU-Net's fingerprint: statistics of the labelled (foreground) voxels of the training cases
    fg = hu[:6, 0][y[:6].amax(1) > 0].numpy()
    return {"mean": float(fg.mean()), "std": float(fg.std()), "percentile_00_5": float(np.percentile(fg, 0.5)),
            "percentile_99_5": float(np.percentile(fg, 99.5))}


def pyramid(y, n=5):
    """nnU-Net's deep-supervision targets: each level from full resolution, nearest-exact."""
    interpolate = torch.nn.functional.interpolate
    return [y] + [interpolate(y, size=[round(s / 2 ** k) for s in y.shape[2:]], mode="nearest-exact") for k in range(1, n)]


def recipe_from_args(a):
    if a.lesions == "none":
        return None
    if a.lesions == "hypodense":
        return HypodenseLesionRecipe()
    r = LesionCurriculum(lesion_labels=a.lesion_labels)
    if a.lesion_kinds:
        r = replace(r, kinds=tuple((k, 1.0) for k in a.lesion_kinds.split(",")))
    if a.max_organ_fraction is not None:
        r = replace(r, max_organ_fraction=a.max_organ_fraction)
    return r


def auroc(pos, neg):
    from sklearn.metrics import roc_auc_score
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


@torch.no_grad()
def lesion_metrics(net, x_eval, y_eval, roles, props):
    """Generic lesions pasted into the held-out cases (fixed seed, the same for every run): which
    share of their voxels each organ channel claims, and the anomaly map's voxel AUROC."""
    syn = LesionSynthesiser(LesionCurriculum(probability=1.0, max_lesions=3, mass_effect_probability=0.0),
                            roles, SPACING, props)
    x_l, y_l, _ = syn(x_eval.repeat(4, 1, 1, 1, 1), [y_eval.repeat(4, 1, 1, 1, 1)], torch.Generator().manual_seed(1234))
    y_l = y_l[0]
    out = forward_eval(net, x_l, anomaly=True)
    prob = torch.sigmoid(out[:, :3])
    anomaly = out[:, -1]
    pasted = (y_l[:, 3:] > 0) & ~(y_eval.repeat(4, 1, 1, 1, 1)[:, 3:] > 0)    # [B, 2] marker channels
    res = {"host_claims": [], "other_claims": [], "pos": [], "neg": []}
    for organ, marker in HOST_MARKERS.items():
        lesion = pasted[:, marker - 3] & (y_l[:, organ] > 0)
        healthy = (y_l[:, organ] > 0) & ~(y_l[:, 3:] > 0).any(1)
        others = [o for o in range(3) if o != organ]
        res["host_claims"].append((prob[:, organ][lesion] > 0.5).float())
        res["other_claims"].append((prob[:, others].amax(1)[lesion] > 0.5).float())
        res["pos"].append(anomaly[lesion])
        res["neg"].append(anomaly[healthy])
    cat = {k: torch.cat(v).numpy() for k, v in res.items()}
    # the annotated (hypo-attenuating) liver tumour of held-out case 6, unchanged
    tumour = y_eval[0, 3] > 0
    liver = (y_eval[0, 0] > 0) & ~tumour
    out = forward_eval(net, x_eval[:1], anomaly=True)[0]
    return {"lesion_voxels": int(len(cat["pos"])), "host_claims": round(float(cat["host_claims"].mean()), 3),
            "other_claims": round(float(cat["other_claims"].mean()), 3),
            "anomaly_auroc": round(auroc(cat["pos"], cat["neg"]), 3),
            "annotated_tumour_liver_claims": round(float((torch.sigmoid(out[0][tumour]) > 0.5).float().mean()), 3),
            "annotated_tumour_anomaly_auroc": round(auroc(out[-1][tumour].numpy(), out[-1][liver].numpy()), 3)}


@torch.no_grad()
def forward_eval(net, x, anomaly=False):
    """Full-resolution logits in eval mode (plus the anomaly map as the last channel)."""
    net.eval()
    net.decoder.deep_supervision = False
    if anomaly:
        net.return_anomaly_map = True
    out = net(x)
    net.return_anomaly_map = False
    net.decoder.deep_supervision = True
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("zept", "plain"), default="zept")
    ap.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--background-weight", type=float, default=0.1)
    ap.add_argument("--switches", default="{}", help='network switches as JSON, e.g. \'{"grouping": false}\'')
    ap.add_argument("--window", choices=("fixed", "foreground"), default="fixed")
    ap.add_argument("--lesions", choices=("none", "generic", "hypodense"), default="none")
    ap.add_argument("--lesion-labels", choices=("host_only", "all_negative"), default="host_only")
    ap.add_argument("--lesion-kinds", default="", help="comma list of curriculum kinds (default: all)")
    ap.add_argument("--max-organ-fraction", type=float, default=None)
    ap.add_argument("--lesion-metrics-from", type=int, default=50,
                    help="score the held-out lesions at every evaluation from this step on (and average)")
    ap.add_argument("--json", default=None, help="write curves and lesion metrics to this file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    roles = roles_from_dataset_json(tiny_dataset.dataset_json(8))
    hu_all, y_all = cases()
    plans = make_plans((32, 32, 32), SPACING)
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    props.update(intensity_properties(hu_all, y_all, a.window))
    x_all = normalised_from_hu(hu_all, props)
    recipe = recipe_from_args(a)
    synthesiser = None if recipe is None else LesionSynthesiser(recipe, roles, SPACING, props)
    lesion_rng = torch.Generator().manual_seed(1000 + a.seed)
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
    net.eval()
    with torch.no_grad():
        levels = len(net(x_all[:1]))          # deep-supervision outputs
    t0, paste_s, curve = time.time(), 0.0, []
    for it in range(a.steps):
        net.train()
        idx = torch.randint(0, 6, (2,))
        x, y = x_all[idx], pyramid(y_all[idx], levels)
        pasted = None
        if synthesiser is not None:
            t1 = time.time()
            x, y, pasted = synthesiser(x, y, lesion_rng)
            paste_s += time.time() - t1
        outs, aux = forward_with_aux(net, x)
        loss = stage1_loss(outs, y, ["c", "c"], x, aux, roles, background_names(cfg["switches"]), props,
                           background_weight=a.background_weight,
                           organ_weights=None if pasted is None else pasted.organ_weights,
                           tissue_weight=None if pasted is None else pasted.tissue_weight)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 12)
        opt.step()
        if (it + 1) % 10 == 0 or it == a.steps - 1:
            p = torch.sigmoid(forward_eval(net, x_all[6:8])) > 0.5
            t = y_all[6:8] > 0
            dice = [float(2 * (p[:, c] & t[:, c]).sum() / (p[:, c].sum() + t[:, c].sum() + 1e-6)) for c in range(3)]
            point = {"step": it + 1, "loss": round(loss.item(), 4), "dice": [round(d, 3) for d in dice]}
            if a.model == "zept" and it + 1 >= a.lesion_metrics_from:
                point["lesions_held_out"] = lesion_metrics(net, x_all[6:8], y_all[6:8], roles, props)
            curve.append(point)
            print(f"{a.model} {a.optimizer} lr={a.lr:g} lesions={a.lesions} step {it + 1}: loss {loss.item():.3f} "
                  f"organ Dice (liver, kidney_right, kidney_left) {np.round(dice, 3).tolist()}  "
                  f"{time.time() - t0:.0f}s", flush=True)
    late = [c for c in curve if c["step"] >= a.lesion_metrics_from]
    result = {"args": vars(a), "props": props, "curve": curve,
              "paste_ms_per_batch": 1000.0 * paste_s / a.steps,
              # organ channels can flip on and off between evaluations: means over the later ones
              "late_mean_dice": np.mean([c["dice"] for c in late], 0).round(3).tolist() if late else None}
    if a.model == "zept" and late:
        keys = late[0]["lesions_held_out"].keys()
        result["lesions_held_out_mean"] = {k: round(float(np.nanmean([c["lesions_held_out"][k] for c in late])), 3)
                                           for k in keys}
        print("held-out pasted lesions (mean over evaluations from step "
              f"{a.lesion_metrics_from}):", json.dumps(result["lesions_held_out_mean"]), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
