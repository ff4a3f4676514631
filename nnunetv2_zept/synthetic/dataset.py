"""Write a synthetic pan-tumour CT dataset in nnU-Net's raw format.

    DatasetXXX_Name/
      dataset.json        channel_names {"0": "CT"}, labels as regions, regions_class_order, zept block
      imagesTr/ labelsTr/ training cases (organs + seen tumour types only)
      imagesTs/ labelsTs/ held-out cases (seen and zero-shot types, plus tumour-free controls)
      cases.json          generator settings, label ids, per-case seed and tumour parameters

Label files hold one integer id per voxel: organs 1..8, then one id per tumour type.  In
dataset.json an organ's region is [organ id, ids of the tumour types it hosts] (an organ output
includes its tumours, as in the MSD benchmarks) and a tumour's region is its own id;
`regions_class_order` lets tumours paint over organs when nnU-Net exports a label map.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .anatomy import ORGANS
from .case import SyntheticCase, default_label_ids, make_case
from .tumours import DEFAULT_SEEN, DEFAULT_ZERO_SHOT, TUMOUR_TYPES, get_tumour_type

GENERATOR_VERSION = 1

# Presets: shape and spacing are (x, y, z), SimpleITK order.
PRESETS: Dict[str, dict] = {
    # ~194k voxels per case: nnU-Net plans one 3d_fullres patch covering the whole case, so the
    # CPU demo trains and predicts quickly; lesions below 3 voxels across are enlarged.
    "demo": dict(shape=(72, 56, 48), spacing=(5.0, 5.0, 5.0), min_lesion_diameter_mm=15.0,
                 num_train=24, num_test=12, z_centre_mm=0.0),
    # clinical abdominal CT sampling (0.8 mm in-plane, 2.5 mm slices), 160 mm from the lung
    # bases to the lower kidney poles; about 9 MB per case.
    "realistic": dict(shape=(440, 320, 64), spacing=(0.8, 0.8, 2.5), min_lesion_diameter_mm=5.0,
                      num_train=40, num_test=20, z_centre_mm=12.0),
}

MARKER_FILE = "cases.json"


def _case_seed(seed: int, split: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), split, index]).generate_state(1)[0])


def label_regions(label_ids: Dict[str, int], tumour_types: Sequence[str]) -> Tuple[Dict[str, object], List[int]]:
    """dataset.json `labels` (regions) and `regions_class_order` for the given label ids."""
    labels: Dict[str, object] = {"background": 0}
    order: List[int] = []
    for organ in ORGANS:
        hosted = [label_ids[t] for t in tumour_types if organ in get_tumour_type(t).hosts]
        labels[organ] = [label_ids[organ]] + hosted if hosted else label_ids[organ]
        order.append(label_ids[organ])
    for t in tumour_types:
        labels[t] = label_ids[t]
        order.append(label_ids[t])
    return labels, order


def zept_block(tumour_types: Sequence[str], zero_shot: Sequence[str]) -> dict:
    block = {
        "organs": list(ORGANS),
        "tumours": {t: ({"host": list(get_tumour_type(t).hosts), "zero_shot": True} if t in zero_shot
                        else {"host": list(get_tumour_type(t).hosts)}) for t in tumour_types},
    }
    texts = knowledge_texts(tumour_types)
    if texts:
        block["texts"] = texts
    return block


def knowledge_texts(tumour_types: Sequence[str]) -> Dict[str, str]:
    """`zept.texts` for the tumour types without a built-in knowledge text: the generator's own
    description of the type, so that every class of the dataset can be embedded."""
    from nnunetv2_zept.knowledge.texts import MissingKnowledgeTextError, text_for_class

    texts = {}
    for t in tumour_types:
        try:
            text_for_class(t)
        except MissingKnowledgeTextError:
            ttype = get_tumour_type(t)
            texts[t] = (f"A {t.replace('_', ' ')} lies in the {' or '.join(h.replace('_', ' ') for h in ttype.hosts)}. "
                        f"On CT it is a {ttype.description}.")
    return texts


def plan_cases(num_train: int, num_test: int, seed: int, seen: Sequence[str], zero_shot: Sequence[str],
               tumour_free_fraction: float, train_tumour_free_fraction: float) -> List[dict]:
    """Which tumour types each case gets.  Training cases get seen types only (1 or 2 types, or
    none); held-out cases are tumour-free controls or hold exactly one type, cycling through
    zero-shot types first so that each appears in some held-out case."""
    rng = np.random.default_rng([int(seed), 2])
    cases = []
    n_free_train = int(round(train_tumour_free_fraction * num_train)) if seen else num_train
    free_train = set(rng.permutation(num_train)[:n_free_train].tolist())
    for i in range(num_train):
        types: List[str] = []
        if i not in free_train:
            k = 1 if len(seen) == 1 or rng.random() < 0.6 else 2
            types = sorted(rng.choice(len(seen), size=k, replace=False).tolist())
            types = [seen[j] for j in types]
        cases.append({"split": "train", "index": i, "tumours": types})
    n_free_test = int(round(tumour_free_fraction * num_test))
    if tumour_free_fraction > 0 and num_test >= 2:
        n_free_test = max(n_free_test, 1)
    cycle = list(zero_shot) + [t for t in seen if t not in zero_shot]
    n_tumour_test = num_test - n_free_test
    if num_test and zero_shot and n_tumour_test < len(zero_shot):
        raise ValueError(f"num_test = {num_test} with tumour_free_fraction = {tumour_free_fraction} leaves "
                         f"{n_tumour_test} held-out tumour cases for {len(zero_shot)} zero-shot types "
                         f"{list(zero_shot)}; raise num_test to at least {len(zero_shot) + max(n_free_test, 1)}")
    plan = [[cycle[k % len(cycle)]] for k in range(n_tumour_test)] if cycle else [[] for _ in range(n_tumour_test)]
    plan += [[] for _ in range(n_free_test)]
    for j, k in enumerate(rng.permutation(num_test).tolist()):
        cases.append({"split": "test", "index": j, "tumours": plan[k]})
    return cases


def _check_types(seen: Sequence[str], zero_shot: Sequence[str]) -> None:
    for t in list(seen) + list(zero_shot):
        if t not in TUMOUR_TYPES:
            raise ValueError(f"unknown tumour type {t!r}; choose from {sorted(TUMOUR_TYPES)}")
    both = set(seen) & set(zero_shot)
    if both:
        raise ValueError(f"tumour types {sorted(both)} are listed both as seen and as zero-shot; a type is one or the other")
    if len(set(seen)) != len(seen) or len(set(zero_shot)) != len(zero_shot):
        raise ValueError(f"duplicate tumour types in seen={list(seen)} / zero_shot={list(zero_shot)}")


def _existing_dataset(raw_root: Path, dataset_id: int) -> Optional[Path]:
    for p in sorted(raw_root.glob(f"Dataset{dataset_id:03d}_*")):
        if p.is_dir():
            return p
    return None


def write_case(case: SyntheticCase, image_dir: Path, label_dir: Path, case_id: str, file_ending: str = ".nii.gz") -> None:
    import SimpleITK as sitk
    image, label = case.to_sitk()
    sitk.WriteImage(image, str(image_dir / f"{case_id}_0000{file_ending}"), True)
    sitk.WriteImage(label, str(label_dir / f"{case_id}{file_ending}"), True)


def _make_and_write(job: dict) -> dict:
    """Generate one planned case and write its files; returns its cases.json record.  A
    top-level function so that worker processes can run it."""
    case = make_case(job["seed"], job["shape"], job["spacing"], job["tumours"], job["label_ids"],
                     noise_hu=job["noise_hu"], min_lesion_diameter_mm=job["min_d"], deform_mm=job["deform_mm"],
                     z_centre_mm=job["z_centre_mm"])
    write_case(case, Path(job["image_dir"]), Path(job["label_dir"]), job["case_id"])
    return {"case_id": job["case_id"], "split": job["split"], "seed": case.seed, "tumours": job["tumours"],
            "tumour_free": not job["tumours"], "lesions": [asdict(l) for l in case.lesions], **case.params}


def make_synthetic_dataset(raw_root: Union[str, Path, None] = None, dataset_id: int = 990,
                           name: str = "ZePTSynthetic", num_train: Optional[int] = None,
                           num_test: Optional[int] = None, seed: int = 0, preset: str = "demo",
                           shape: Optional[Sequence[int]] = None, spacing: Optional[Sequence[float]] = None,
                           seen_tumours: Sequence[str] = DEFAULT_SEEN,
                           zero_shot_tumours: Sequence[str] = DEFAULT_ZERO_SHOT,
                           noise_hu: float = 15.0, tumour_free_fraction: float = 0.3,
                           train_tumour_free_fraction: float = 0.15,
                           min_lesion_diameter_mm: Optional[float] = None, deform_mm: float = 6.0,
                           overwrite: bool = False, num_processes: int = 1, verbose: bool = False) -> Path:
    """Generate `Dataset{dataset_id:03d}_{name}` under `raw_root` (default: $nnUNet_raw) and
    return its path.

    `preset` ("demo" or "realistic", see PRESETS) gives shape, spacing, minimum lesion diameter
    and case counts; explicit arguments override it.  `shape` and `spacing` are (x, y, z).
    Seen tumour types appear in training labels; zero-shot types only in held-out cases
    (imagesTs/labelsTs).  `tumour_free_fraction` of the held-out cases (at least one) and
    `train_tumour_free_fraction` of the training cases have no tumour.  The same arguments give
    identical files.  An existing dataset folder is replaced only with `overwrite=True`, and
    only if this generator made it.  `num_processes` > 1 generates cases in parallel (same files).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset = {preset!r}: unknown; choose one of {sorted(PRESETS)}")
    cfg = dict(PRESETS[preset])
    shape = tuple(int(v) for v in (shape if shape is not None else cfg["shape"]))
    spacing = tuple(float(v) for v in (spacing if spacing is not None else cfg["spacing"]))
    num_train = int(num_train if num_train is not None else cfg["num_train"])
    num_test = int(num_test if num_test is not None else cfg["num_test"])
    min_d = float(min_lesion_diameter_mm if min_lesion_diameter_mm is not None else cfg["min_lesion_diameter_mm"])
    seen, zero_shot = tuple(seen_tumours), tuple(zero_shot_tumours)
    _check_types(seen, zero_shot)
    if not (0 <= tumour_free_fraction < 1) or not (0 <= train_tumour_free_fraction <= 1):
        raise ValueError(f"tumour_free_fraction = {tumour_free_fraction}, train_tumour_free_fraction = "
                         f"{train_tumour_free_fraction}: fractions must lie in [0, 1) and [0, 1]")
    if num_train < 0 or num_test < 0 or num_train + num_test < 1:
        raise ValueError(f"num_train = {num_train}, num_test = {num_test}: need at least one case (num_train = 0 "
                         f"makes a held-out set only)")
    if not (1 <= int(dataset_id) <= 999):
        raise ValueError(f"dataset_id = {dataset_id}: nnU-Net dataset ids are 1-999")
    if not name or not all(c.isalnum() or c in "-" for c in name):
        raise ValueError(f"name = {name!r}: use letters, digits and '-' only (nnU-Net splits folder names at '_')")
    if raw_root is None:
        raw_root = os.environ.get("nnUNet_raw")
        if not raw_root:
            raise ValueError("raw_root not given and $nnUNet_raw is not set; pass raw_root= or export nnUNet_raw")
    raw_root = Path(raw_root)
    raw_root.mkdir(parents=True, exist_ok=True)
    target = raw_root / f"Dataset{int(dataset_id):03d}_{name}"
    existing = _existing_dataset(raw_root, int(dataset_id))
    if existing is not None:
        if existing != target:
            raise FileExistsError(f"{existing} already uses dataset id {dataset_id}; nnU-Net needs unique ids. "
                                  f"Choose another dataset_id (e.g. {int(dataset_id) + 1}).")
        if not overwrite:
            raise FileExistsError(f"{target} already exists; pass overwrite=True to regenerate it "
                                  f"(or choose another dataset_id)")
        if not (target / MARKER_FILE).is_file() or "generator" not in json.loads((target / MARKER_FILE).read_text()):
            raise FileExistsError(f"{target} exists and was not made by the synthetic generator (no {MARKER_FILE} "
                                  f"with a 'generator' entry); it is left untouched. Remove it yourself or "
                                  f"choose another dataset_id")

    tumour_types = list(seen) + list(zero_shot)
    label_ids = default_label_ids(tumour_types)
    labels, order = label_regions(label_ids, tumour_types)
    settings = {"version": GENERATOR_VERSION, "preset": preset, "seed": int(seed), "shape_xyz": list(shape),
                "spacing_xyz": list(spacing), "num_train": num_train, "num_test": num_test,
                "seen_tumours": list(seen), "zero_shot_tumours": list(zero_shot), "noise_hu": float(noise_hu),
                "tumour_free_fraction": float(tumour_free_fraction),
                "train_tumour_free_fraction": float(train_tumour_free_fraction),
                "min_lesion_diameter_mm": min_d, "deform_mm": float(deform_mm),
                "z_centre_mm": float(cfg["z_centre_mm"])}
    plan = plan_cases(num_train, num_test, seed, seen, zero_shot, tumour_free_fraction, train_tumour_free_fraction)

    tmp = raw_root / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    dirs = {k: tmp / k for k in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    for d in dirs.values():
        d.mkdir(parents=True)
    jobs = []
    for item in plan:
        split = item["split"]
        sub = "Tr" if split == "train" else "Ts"
        jobs.append({"seed": _case_seed(seed, 0 if split == "train" else 1, item["index"]),
                     "case_id": f"syn_{item['index'] + (0 if split == 'train' else num_train):04d}",
                     "split": split, "tumours": item["tumours"], "shape": shape, "spacing": spacing,
                     "label_ids": label_ids, "noise_hu": noise_hu, "min_d": min_d, "deform_mm": deform_mm,
                     "z_centre_mm": cfg["z_centre_mm"], "image_dir": str(dirs["images" + sub]),
                     "label_dir": str(dirs["labels" + sub])})
    t0 = time.time()
    try:
        if num_processes > 1:
            import multiprocessing
            with multiprocessing.get_context("spawn").Pool(int(num_processes)) as pool:
                records = pool.map(_make_and_write, jobs, chunksize=1)
        else:
            records = [_make_and_write(job) for job in jobs]
        if verbose:
            for r in records:
                print(f"{r['case_id']} ({r['split']}): {', '.join(r['tumours']) or 'tumour-free'}")
        dataset_json = {
            "name": name,
            "description": (f"Synthetic contrast-enhanced abdominal CT phantoms with organs and tumours "
                            f"(nnunetv2_zept generator v{GENERATOR_VERSION}, preset {preset}, seed {seed}); "
                            f"zero-shot tumour types occur only in imagesTs/labelsTs"),
            "reference": "nnunetv2_zept.synthetic (docs/synthetic-data.md)",
            "licence": "CC0-1.0 (procedurally generated)",
            "channel_names": {"0": "CT"},
            "labels": labels,
            "regions_class_order": order,
            "numTraining": num_train,
            "file_ending": ".nii.gz",
            "zept": zept_block(tumour_types, zero_shot),
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        meta = {"generator": settings, "label_ids": label_ids,
                "tumour_types": {t: get_tumour_type(t).to_dict() for t in tumour_types}, "cases": records}
        (tmp / MARKER_FILE).write_text(json.dumps(meta, indent=1))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if verbose:
        print(f"wrote {target} ({num_train} training, {num_test} held-out cases) in {time.time() - t0:.1f} s")
    return target
