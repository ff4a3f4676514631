"""Writing a merge plan: images linked, label maps remapped (and split by side where the plan says
so), dataset.json and merge.json; all in a hidden folder that is renamed into place at the end."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np

from nnunetv2_zept.conversion import staged_dataset_folder
from nnunetv2_zept.merging.inputs import run_jobs
from nnunetv2_zept.merging.plan import MergePlan, describe_plan
from nnunetv2_zept.merging.vocabulary import merge_error


@dataclass
class MergeResult:
    folder: Path
    plan: MergePlan
    links: Dict[str, int]          # "hard" / "symbolic" / "copy" -> image files
    side_split_cases: int


def link_file(src: Path, dst: Path, mode: str) -> str:
    """Hard link, else symbolic link, else copy (`mode` "auto"); the source is only ever read."""
    real = os.path.realpath(src)
    if mode in ("auto", "hard"):
        try:
            os.link(real, dst)
            return "hard"
        except OSError:
            if mode == "hard":
                raise
    if mode in ("auto", "symbolic"):
        try:
            os.symlink(real, dst)
            return "symbolic"
        except OSError:
            if mode == "symbolic":
                raise
    shutil.copy2(real, dst)
    return "copy"


def _physical_x(image, index_zyx) -> float:
    """LPS x (mm; larger = patient's left) of a continuous array index (z, y, x)."""
    z, y, x = (float(v) for v in index_zyx)
    return float(image.TransformContinuousIndexToPhysicalPoint((x, y, z))[0])


def _split_by_side(arr: np.ndarray, out: np.ndarray, sided: Dict[int, Tuple[str, int, int]],
                   evidence: Dict[int, Tuple[str, str]], label_image, ct_path: str) -> None:
    """Write right/left ids for the voxels of unsided labels (e.g. KiTS "kidney", its tumour and cyst).

    Per connected component (26-neighbourhood) of the family's voxels: the side of the sided organ
    voxels it holds, if any; else the side of its centroid against the body's midline (x centroid
    of the CT body mask), in physical LPS coordinates, so any image orientation works."""
    import SimpleITK as sitk
    from scipy import ndimage

    from nnunetv2_zept.evaluation.mask_ops import STRUCTURE_26, body_mask_from_ct

    midline = None
    for family in sorted({f for f, _, _ in sided.values()}):
        ids = [i for i, (f, _, _) in sided.items() if f == family]
        ev = {i: side for i, (f, side) in evidence.items() if f == family}
        mask = np.isin(arr, ids + list(ev))
        comps, n = ndimage.label(mask, structure=STRUCTURE_26)
        if n == 0:
            continue
        centroids = ndimage.center_of_mass(mask, comps, range(1, n + 1))
        for k, box in enumerate(ndimage.find_objects(comps), start=1):
            comp = comps[box] == k
            a, o = arr[box], out[box]
            votes = {"right": 0, "left": 0}
            for i, side in ev.items():
                votes[side] += int(np.count_nonzero(comp & (a == i)))
            if votes["right"] != votes["left"]:
                side = max(votes, key=votes.get)
            else:
                if midline is None:
                    ct = sitk.ReadImage(ct_path)
                    body = body_mask_from_ct(sitk.GetArrayViewFromImage(ct))
                    if not body.any():
                        raise ValueError(f"no body found in {ct_path} (no voxel above -500 HU) to tell left from right")
                    midline = _physical_x(label_image, ndimage.center_of_mass(body))
                side = "left" if _physical_x(label_image, centroids[k - 1]) > midline else "right"
            for i in ids:
                _, right, left = sided[i]
                o[comp & (a == i)] = right if side == "right" else left


def write_case(job: dict) -> dict:
    """Link the images and write the remapped label of one case (a top-level function for pools)."""
    import SimpleITK as sitk

    links = []
    for src, dst in zip(job["images"], job["image_targets"]):
        if job["orientation"]:
            # a permutation / flip of the voxel grid: lossless, and the physical geometry is unchanged
            sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(src), job["orientation"]), dst, True)
            links.append("reoriented copy")
        else:
            links.append(link_file(Path(src), Path(dst), job["link"]))
    label = sitk.ReadImage(job["label"])
    arr = sitk.GetArrayFromImage(label)
    if not np.issubdtype(arr.dtype, np.integer):
        arr = np.rint(arr).astype(np.int64)
    lut = np.zeros(max(int(arr.max()) + 1, max(job["lut"], default=0) + 1), dtype=np.int64)
    for i, v in job["lut"].items():
        lut[i] = v
    out = lut[arr] if arr.size else arr.astype(np.int64)
    sided = {int(i): tuple(v) for i, v in job["sided"].items()}
    split = bool(sided) and bool(np.isin(arr, list(sided)).any())
    if split:
        _split_by_side(arr, out, sided, {int(i): tuple(v) for i, v in job["evidence"].items()}, label,
                       job["images"][0])
    bad = sorted(set(np.unique(out).tolist()) & set(job["forbidden"]))
    if bad:
        return {"error": f"case {job['case_id']!r}: zero-shot label ids {bad} would be written into training labels",
                "links": links}
    dtype = np.uint8 if out.max(initial=0) < 256 else np.uint16
    img = sitk.GetImageFromArray(out.astype(dtype))
    img.CopyInformation(label)
    if job["orientation"]:
        img = sitk.DICOMOrient(img, job["orientation"])
    sitk.WriteImage(img, job["label_target"], True)
    return {"error": None, "links": links, "split": split}


def write_plan(plan: MergePlan, log: Callable[[str], None] = print) -> MergeResult:
    """Write the merged dataset described by `plan` into nnUNet_raw (never over an existing one)."""
    o = plan.options
    dst = plan.folder
    if dst.exists():
        raise merge_error(f"{dst} exists", "choose an unused id with -o")
    with staged_dataset_folder(dst, merge_error) as tmp:
        jobs = []
        forbidden_train = sorted(plan.zero_shot_ids())
        for s in plan.sources:
            sub = "Ts" if s.test else "Tr"
            for d in (f"images{sub}", f"labels{sub}"):
                (tmp / d).mkdir(exist_ok=True)
            for case in s.input.cases:
                new = s.case_ids[case.case_id]
                ending = s.input.file_ending
                jobs.append({
                    "case_id": new, "images": [str(p) for p in case.images], "label": str(case.label),
                    "image_targets": [str(tmp / f"images{sub}" / f"{new}_{c:04d}{ending}")
                                      for c in range(len(case.images))],
                    "label_target": str(tmp / f"labels{sub}" / f"{new}{ending}"),
                    "lut": {int(k): int(v) for k, v in s.lut.items()},
                    "sided": {int(k): list(v) for k, v in s.sided.items()},
                    "evidence": {int(k): list(v) for k, v in s.side_evidence.items()},
                    "forbidden": [] if s.test else forbidden_train, "link": o.link,
                    "orientation": o.orientation.upper() if case.case_id in s.reorient else None})
        log(f"writing {len(jobs)} case(s) into {dst.name}")
        results = run_jobs(write_case, jobs, o.num_processes)
        errors = [r["error"] for r in results if r["error"]]
        if errors:
            raise merge_error(errors[0], "this is a bug in the merge plan; please report it with the command")
        links: Dict[str, int] = {}
        for r in results:
            for kind in r["links"]:
                links[kind] = links.get(kind, 0) + 1
        (tmp / "dataset.json").write_text(json.dumps(plan.dataset_json, indent=2) + "\n")
        (tmp / "merge.json").write_text(json.dumps(provenance(plan), indent=2) + "\n")
    return MergeResult(dst, plan, links, sum(1 for r in results if r.get("split")))


def provenance(plan: MergePlan) -> dict:
    """merge.json: where every case and label of the merged dataset came from."""
    o = plan.options
    return {
        "tool": "nnunetv2_zept merge",
        "options": {"inputs": [str(i) for i in o.inputs], "test_inputs": [str(i) for i in o.test_inputs],
                    "zero_shot": list(o.zero_shot), "mapping_file": o.mapping_file, "hosts": o.hosts,
                    "zero_shot_voxels": o.zero_shot_voxels, "prefix_case_ids": o.prefix_case_ids,
                    "orientation": o.orientation},
        "label_ids": {c: plan.ids[c] for c in plan.channels},
        "sources": [{
            "name": s.name, "input": str(s.input.folder), "test": s.test, "builtin_map": s.builtin,
            "labels": {str(i): {"name": s.input.atomic[i], "class": r.target, "how": r.how}
                       for i, r in sorted(s.resolution.items())},
            "lut": {str(k): v for k, v in sorted(s.lut.items())},
            "split_by_side": {str(k): list(v) for k, v in sorted(s.sided.items())},
            "notes": s.notes,
            "reoriented_cases": sorted(s.case_ids[c] for c in s.reorient),
            "cases": {new: old for old, new in sorted(s.case_ids.items())},
        } for s in plan.sources],
        "plan": describe_plan(plan).splitlines(),
    }
