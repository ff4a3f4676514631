"""What Stage 1's synthetic lesions cost per training batch at the demo's patch, and what they look
like to the other organs.

Builds batches of 2 tumour-free phantoms of the demo's grid (64 x 48 x 40 voxels of 6 mm, the
patch nnU-Net plans for it; `--spacing 1.5` for a finer grid of the same voxel count), normalised
like nnU-Net's CTNormalization with statistics of their labelled voxels, with the demo's hosts
(liver, spleen, kidneys, pancreas, lung; stomach and aorta host nothing), and times
LesionSynthesiser on them, after one warm-up batch that builds the textures (once per trainer).

    python benchmarks/lesion_batches.py --threads 1 --batches 200
    python benchmarks/lesion_batches.py --threads 1 --batches 200 --recipe hypodense
    python benchmarks/lesion_batches.py --threads 1 --batches 100 --probability 1
"""
import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from nnunetv2_zept.roles import ClassRoles
from nnunetv2_zept.synthetic import ORGANS, make_case
from nnunetv2_zept.training.background_tissue import hu_from_normalised, normalised_from_hu
from nnunetv2_zept.training.lesion_recipes import HypodenseLesionRecipe, LesionCurriculum
from nnunetv2_zept.training.synthetic_lesions import LesionSynthesiser

HOSTS = ("liver", "spleen", "kidney_right", "kidney_left", "pancreas", "lung")


def batches(n_cases: int, spacing: float, shape_xyz=(64, 48, 40)):
    cases = [make_case(seed, shape_xyz, (spacing,) * 3) for seed in range(n_cases)]
    hu = np.stack([c.image for c in cases]).astype(np.float32)
    lab = np.stack([c.label for c in cases])
    fg = hu[lab > 0]
    props = {"mean": float(fg.mean()), "std": float(fg.std()), "percentile_00_5": float(np.percentile(fg, 0.5)),
             "percentile_99_5": float(np.percentile(fg, 99.5))}
    organs = torch.tensor(np.stack([lab == i + 1 for i in range(len(ORGANS))], 1)).float()
    tumours = torch.zeros((len(cases), len(HOSTS)) + organs.shape[2:])
    targets = torch.cat([organs, tumours], 1)
    data = normalised_from_hu(torch.tensor(hu)[:, None], props)
    return data, targets, props


def pyramid(y, n=5):
    """nnU-Net's deep-supervision targets: each level from full resolution, nearest-exact."""
    interpolate = torch.nn.functional.interpolate
    return [y] + [interpolate(y, size=[round(s / 2 ** k) for s in y.shape[2:]], mode="nearest-exact") for k in range(1, n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", choices=("curriculum", "hypodense"), default="curriculum")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--spacing", type=float, default=6.0)
    ap.add_argument("--probability", type=float, default=None, help="override the recipe's per-sample probability")
    ap.add_argument("--kinds", default="", help="comma list of curriculum kinds (default: all)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    names = list(ORGANS) + [f"{h}_lesion" for h in HOSTS]
    n_org = len(ORGANS)
    roles = ClassRoles(names=names, organs=list(range(n_org)), tumours=list(range(n_org, len(names))),
                       hosts={n_org + i: [ORGANS.index(h)] for i, h in enumerate(HOSTS)}, zero_shot=[])
    data, targets, props = batches(8, a.spacing)
    recipe = LesionCurriculum() if a.recipe == "curriculum" else HypodenseLesionRecipe()
    if a.probability is not None:
        recipe = replace(recipe, probability=a.probability)
    if a.kinds:
        recipe = replace(recipe, kinds=tuple((k, 1.0) for k in a.kinds.split(",")))
    syn = LesionSynthesiser(recipe, roles, (a.spacing,) * 3, props)
    g = torch.Generator().manual_seed(0)
    pick = torch.Generator().manual_seed(1)
    syn(data[:2], pyramid(targets[:2]), g)                 # textures are built once, like at trainer start
    times, cpu, counts = [], [], []
    looks = {o: [0, 0] for o in ORGANS}          # lookalike voxels, the organ's own voxels
    shares, clipped = [], [0, 0]
    for _ in range(a.batches):
        idx = torch.randint(len(data), (2,), generator=pick)
        x, y = data[idx], pyramid(targets[idx])
        t0, c0 = time.perf_counter(), time.process_time()
        new_x, new_y, pasted = syn(x, y, g)
        times.append(1000.0 * (time.perf_counter() - t0))
        cpu.append(1000.0 * (time.process_time() - c0))
        counts.append(pasted.count)
        lookalikes(x, y[0], new_x, new_y[0], props, n_org, looks, shares, clipped)
    times = np.array(times)
    print(json.dumps({"recipe": a.recipe, "probability": recipe.probability, "spacing_mm": a.spacing,
                      "patch_zyx": list(data.shape[2:]), "batch": 2, "threads": a.threads, "batches": a.batches,
                      "lesions_per_batch": round(float(np.mean(counts)), 2),
                      "ms_per_batch_mean": round(float(times.mean()), 2),
                      "ms_per_batch_median": round(float(np.median(times)), 2),
                      "ms_per_batch_p95": round(float(np.percentile(times, 95)), 2),
                      # CPU time of this process: what the batch costs on a machine that others share
                      "cpu_ms_per_batch_mean": round(float(np.mean(cpu)), 2),
                      "ms_per_lesion": round(float(times.sum() / max(sum(counts), 1)), 2),
                      "lesion_share_of_host_mean": round(float(np.mean(shares)), 3) if shares else None,
                      "clipped_share_of_pasted_voxels": round(clipped[0] / max(clipped[1], 1), 3),
                      "lookalike_voxels_per_batch": {o: round(v[0] / a.batches, 1) for o, v in looks.items()},
                      "lookalike_per_own_voxel": {o: round(v[0] / max(v[1], 1), 3) for o, v in looks.items()}}))


def lookalikes(x, y, new_x, new_y, props, n_org, looks, shares, clipped):
    """Adds this batch's counts (see the module docstring) to `looks`, `shares` and `clipped`."""
    hu, new_hu = hu_from_normalised(x[:, 0], props), hu_from_normalised(new_x[:, 0], props)
    lo, hi = float(props["percentile_00_5"]), float(props["percentile_99_5"])
    for b in range(x.shape[0]):
        pasted = (new_y[b, n_org:] > y[b, n_org:]).any(0)
        if not pasted.any():
            continue
        values = new_hu[b][pasted]
        clipped[0] += int(((values <= lo + 1e-3) | (values >= hi - 1e-3)).sum())
        clipped[1] += int(values.numel())
        for i, h in enumerate(HOSTS):
            lesion = (new_y[b, n_org + i] > y[b, n_org + i])
            if lesion.any():
                shares.append(float(lesion.sum()) / float((y[b, ORGANS.index(h)] > 0).sum()))
        for o, name in enumerate(ORGANS):
            own = y[b, o] > 0
            if int(own.sum()) < 20:
                continue
            p5, p95 = torch.quantile(hu[b][own], torch.tensor([0.05, 0.95])).tolist()
            looks[name][0] += int((pasted & ~own & (new_hu[b] >= p5) & (new_hu[b] <= p95)).sum())
            looks[name][1] += int(own.sum())


if __name__ == "__main__":
    main()
