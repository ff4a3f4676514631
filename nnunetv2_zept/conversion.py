"""Turn a plain multi-label nnU-Net raw dataset into a ZePT region dataset (a NEW dataset folder).

Source: one integer label per structure, tumours as their own labels (MSD style, or a merged
dataset such as liver=1, liver_tumour=2, kidney=3, kidney_tumour=4).

Target (`$nnUNet_raw/DatasetNNN_Name`):
* `labels` become regions, organs first, then tumours, then new zero-shot tumours:
  organ region = [organ id] + ids of the tumours it hosts alone (MSD convention: liver = liver +
  liver tumour); tumour region = [its id]; a zero-shot class that is not a source label gets the
  next unused id, which never occurs in the training labels.
* `regions_class_order` = each region's own id, in that order, so tumours paint over organs.
* the `zept` block (roles inferred from class names, or given explicitly) is validated with
  `roles_from_dataset_json` against the label ids that actually occur in labelsTr.
* label files are copied byte for byte (region definitions live in dataset.json); images are
  hard-linked when the file system allows it, else copied.  The source is never written to.

A tumour with several host organs (e.g. `kidney_tumour` in kidney_left and kidney_right) is NOT
merged into its hosts' regions: its voxels cannot be attributed to a side without changing the
label files, and merging it into both would teach each side's channel the other side's tumour.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from nnunetv2_zept.input_checks import InputCheckError, path_problem, read_json
from nnunetv2_zept.roles import (IGNORED_LABEL_KEYS, ClassRoles, check_region_based,
                                 infer_roles, roles_from_dataset_json)

CONVERTED_FOLDERS = ("imagesTr", "imagesTs")       # hard-linked (large, never rewritten by us)
COPIED_FOLDERS = ("labelsTr", "labelsTs")          # copied (small; users may edit them later)
DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


class ConversionError(ValueError):
    """A problem with the source dataset or the convert options; the message says what and how to fix it."""


def _fail(problem: str, fix: str) -> ConversionError:
    return ConversionError(f"{problem}. Fix: {fix}")


# ----------------------------------------------------------------------------------------------
# locating datasets

def raw_root_from_env() -> Path:
    raw = os.environ.get("nnUNet_raw")
    if not raw:
        raise _fail("the environment variable nnUNet_raw is not set",
                    "export nnUNet_raw=/path/to/nnUNet_raw (the folder that holds the DatasetNNN_Name folders)")
    if not Path(raw).is_dir():
        raise _fail(f"nnUNet_raw={raw} is not a directory", "point nnUNet_raw at your nnU-Net raw data folder")
    return Path(raw)


def find_raw_dataset(dataset: Union[int, str], raw_root: Path) -> Path:
    """The source folder for `-d`: a dataset id (3), a full name (Dataset003_Liver) or the name part (Liver)."""
    raw_root = Path(raw_root)
    folders = sorted(p.name for p in raw_root.iterdir() if p.is_dir() and p.name.startswith("Dataset"))
    text = str(dataset)
    if text.isdigit():
        hits = [f for f in folders if f.startswith("Dataset%03d_" % int(text))]
    elif text.startswith("Dataset"):
        hits = [f for f in folders if f == text]
    else:
        hits = [f for f in folders if f.split("_", 1)[-1] == text]
    if not hits:
        shown = ", ".join(folders[:30]) or "(none)"
        raise _fail(f"no dataset {text!r} in nnUNet_raw={raw_root} (found: {shown})",
                    "pass -d with an existing dataset id or name, or set nnUNet_raw to the right folder")
    if len(hits) > 1:
        raise _fail(f"dataset {text!r} is ambiguous in {raw_root}: {hits}", "pass the full folder name with -d")
    return raw_root / hits[0]


def dataset_id_in_use(dataset_id: int) -> List[str]:
    """Folders of nnUNet_raw/_preprocessed/_results that already use this dataset id."""
    prefix = "Dataset%03d_" % dataset_id
    used = []
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        root = os.environ.get(var)
        if root and Path(root).is_dir():
            used += [f"{var}/{p.name}" for p in Path(root).iterdir() if p.name.startswith(prefix)]
    return used


def target_folder_name(target_id: int, name: str) -> str:
    if not DATASET_NAME_RE.match(name):
        raise _fail(f"--name {name!r} is not a valid dataset name",
                    "use letters, digits, '_' and '-' only, e.g. --name LiverKidneyZePT")
    return "Dataset%03d_%s" % (target_id, name)


# ----------------------------------------------------------------------------------------------
# reading label ids

def case_ids(labels_dir: Path, file_ending: str) -> List[str]:
    return sorted(p.name[: -len(file_ending)] for p in labels_dir.iterdir()
                  if p.is_file() and p.name.endswith(file_ending))


def scan_label_ids(labels_dir: Path, dataset_json: dict, log: Callable[[str], None] = print) -> Dict[str, List[int]]:
    """Label ids that occur in each label file (case id -> sorted ids), read with nnU-Net's reader."""
    import numpy as np
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    ending = dataset_json["file_ending"]
    cases = case_ids(labels_dir, ending)
    if not cases:
        raise _fail(f"{labels_dir} has no label files ending in {ending!r}",
                    "check `file_ending` in dataset.json and the labelsTr folder")
    log(f"reading {len(cases)} label files of {labels_dir.parent.name} to find which classes occur")
    rw = determine_reader_writer_from_dataset_json(dataset_json, str(labels_dir / (cases[0] + ending)),
                                                   verbose=False)()
    found = {}
    for c in cases:
        seg, _ = rw.read_seg(str(labels_dir / (c + ending)))
        found[c] = [int(v) for v in np.unique(seg)]
    return found


# ----------------------------------------------------------------------------------------------
# building the new dataset.json

@dataclass
class CaseSourceSpec:
    """`--case-source NAME PREFIX CLASS [CLASS ...]`: cases whose id starts with PREFIX annotate only CLASSes."""
    name: str
    case_prefix: str
    annotates: List[str]


@dataclass
class ConversionOptions:
    zero_shot: List[str] = field(default_factory=list)                 # extra/declared zero-shot tumours
    texts: Dict[str, str] = field(default_factory=dict)               # class -> knowledge text
    hosts: Dict[str, List[str]] = field(default_factory=dict)         # tumour -> host organs
    roles_override: Optional[dict] = None                             # a `zept` block (partial)
    case_sources: List[CaseSourceSpec] = field(default_factory=list)


def load_roles_override(path: Union[str, Path]) -> dict:
    """A JSON file holding a `zept` block, either bare or as {"zept": {...}}."""
    try:
        data = read_json(str(path), "--roles file")
    except InputCheckError as e:
        raise ConversionError(f"{e} (a JSON file with a `zept` block, see docs/dataset.md)") from None
    if isinstance(data, dict) and "zept" in data:
        data = data["zept"]
    if not isinstance(data, dict):
        raise _fail(f"--roles file {path} holds {type(data).__name__}, not an object",
                    'write {"zept": {"organs": [...], "tumours": {...}}} (see docs/dataset.md)')
    return data


def _source_labels(source_json: dict) -> Tuple[Dict[str, int], Optional[int]]:
    labels = source_json.get("labels")
    if not isinstance(labels, dict) or "background" not in labels:
        raise _fail(f"source dataset.json `labels` = {labels!r} is missing or has no background",
                    "the source must be a valid nnU-Net dataset with labels {\"background\": 0, ...}")
    plain = {}
    for k, v in labels.items():
        if k in IGNORED_LABEL_KEYS:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise _fail(f"source label {k!r} = {v!r} is not an integer",
                        "convert only plain label datasets (one integer id per class)")
        plain[k] = v
    if not plain:
        raise _fail("the source dataset has no foreground labels", "add the classes to `labels`")
    return plain, labels.get("ignore")


def _merge_override(inferred: dict, override: dict) -> dict:
    """Override semantics: `organs` replaces; `texts`/`sources` entries replace the entry of that
    name; a `tumours` entry is merged key by key into the inferred one (so {"text": ...} keeps the
    inferred host)."""
    block = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
             for k, v in inferred.items()}
    for key, value in override.items():
        if key in ("tumours", "texts", "sources") and isinstance(value, dict):
            target = block.setdefault(key, {})
            if key == "tumours":
                # a class named as tumour is no longer an organ
                block["organs"] = [o for o in block.get("organs", []) if o not in value]
                for tname, spec in value.items():
                    old = target.get(tname)
                    target[tname] = {**old, **spec} if isinstance(old, dict) and isinstance(spec, dict) else spec
            else:
                target.update(value)
        else:
            block[key] = value
            if key == "organs" and isinstance(value, list):
                block["tumours"] = {t: s for t, s in block.get("tumours", {}).items() if t not in value}
    return block


def build_zept_dataset_json(source_json: dict, options: ConversionOptions,
                            present_ids: Optional[Iterable[int]] = None,
                            case_list: Optional[Sequence[str]] = None,
                            log: Callable[[str], None] = print) -> Tuple[dict, ClassRoles]:
    """The target dataset.json (regions, regions_class_order, zept block) and its validated roles.

    `present_ids`: label ids that occur in labelsTr (None: unknown, zero-shot checks skipped).
    `case_list`: training case ids (None: case-source prefixes are not checked)."""
    # lists in `labels` are what makes nnU-Net train regions (a stray regions_class_order alone does not)
    has_regions = any(isinstance(v, (list, tuple)) for v in (source_json.get("labels") or {}).values())
    if "zept" in source_json or has_regions:
        raise _fail("the source dataset is already region-based"
                    + (" and has a `zept` block" if "zept" in source_json else ""),
                    "use it directly (the trainers read its `zept` block, or infer roles from names); to add or "
                    "edit roles, edit the `zept` block of its dataset.json by hand (see docs/dataset.md)")
    if "dataset" in source_json:
        raise _fail("the source dataset.json lists its files in a `dataset` key",
                    "convert a dataset in the imagesTr/labelsTr layout (copy the files there first)")
    ids, ignore = _source_labels(source_json)
    names = list(ids)

    # 1. roles inferred from the source names, with the single-organ fallback for bare tumour names
    inferred = infer_roles({"labels": {"background": 0, **ids}})
    organs = [names[i] for i in inferred.organs]
    tumours: Dict[str, dict] = {}
    for t in inferred.tumours:
        hosts = [names[h] for h in inferred.hosts[t]]
        if not hosts and len(organs) == 1:
            hosts = list(organs)      # "cancer" in an MSD task with one organ
            log(f"note: tumour class {names[t]!r} names no organ; hosted by the only organ {organs[0]!r}")
        tumours[names[t]] = {"host": hosts}
    block = {"organs": organs, "tumours": tumours}

    # 2. explicit roles: --roles file, then --host / --zero-shot / --text / --case-source
    if options.roles_override:
        block = _merge_override(block, options.roles_override)
    for tname, hosts in options.hosts.items():
        if tname in block.get("organs", []):
            block["organs"] = [o for o in block["organs"] if o != tname]
        block.setdefault("tumours", {}).setdefault(tname, {})["host"] = list(hosts)
    for zname in options.zero_shot:
        if zname in IGNORED_LABEL_KEYS:
            raise _fail(f"--zero-shot {zname!r} is a reserved label name", "choose another class name")
        if zname in block.get("organs", []):
            raise _fail(f"--zero-shot {zname!r} is an organ class of the source",
                        "only tumour classes can be zero-shot; name a tumour class, e.g. pancreas_tumour")
        spec = block.setdefault("tumours", {}).setdefault(zname, {})
        spec["zero_shot"] = True
        if not spec.get("host"):
            guess = infer_roles({"labels": {"background": 0, **{o: 1 for o in block.get("organs", [])},
                                            zname: 2}})
            spec["host"] = [guess.names[h] for h in guess.hosts.get(len(guess.names) - 1, [])]
    for cname, text in options.texts.items():
        if isinstance((block.get("tumours") or {}).get(cname), dict):
            block["tumours"][cname]["text"] = text
        else:
            block.setdefault("texts", {})[cname] = text
    for cs in options.case_sources:
        block.setdefault("sources", {})[cs.name] = {"case_prefix": cs.case_prefix, "annotates": list(cs.annotates)}

    # 3. new classes: zero-shot tumours that are not source labels get the next unused ids
    tumour_block = block.get("tumours", {}) or {}
    for tname, spec in tumour_block.items():
        if not isinstance(spec, dict):
            continue      # reported by the zept-block validation below, with key and fix
        if not spec.get("host"):
            raise _fail(f"tumour class {tname!r} has no host organ (no organ class matches its name; "
                        f"organs: {block.get('organs')})",
                        f"pass --host {tname} <ORGAN> [<ORGAN> ...] naming organ classes of the source, or a "
                        f'--roles JSON file with {{"zept": {{"tumours": {{"{tname}": {{"host": ["<ORGAN>"]}}}}}}}}')
    new = [t for t, s in tumour_block.items() if t not in ids]
    for t in new:
        if not (isinstance(tumour_block[t], dict) and tumour_block[t].get("zero_shot")):
            raise _fail(f"tumour class {t!r} is not a label of the source dataset (labels: {names})",
                        "a class that is not in the source labels can only be added as zero-shot "
                        "(--zero-shot, or \"zero_shot\": true in the --roles file); otherwise fix the name")
    if new and ignore is not None:
        raise _fail(f"the source has an ignore label ({ignore}) and new zero-shot classes {new} need label ids "
                    "above the existing ones, where nnU-Net requires the ignore label to be the highest",
                    "relabel the ignore voxels of the source to max id + 1 + number of new classes and convert "
                    "again, or declare the zero-shot classes in a dataset without an ignore label")
    next_id = max(ids.values()) + 1
    all_ids = dict(ids)
    for t in new:
        all_ids[t] = next_id
        next_id += 1

    # 4. regions: organs first, then tumours (seen in source order, then new ones), so tumours paint last
    organ_order = [o for o in names if o in (block.get("organs") or [])]
    organ_order += [o for o in (block.get("organs") or []) if o not in organ_order]   # unknown: reported below
    tumour_order = [t for t in names if t in tumour_block] + new
    unassigned = [n for n in names if n not in organ_order and n not in tumour_order]
    labels: Dict[str, Union[int, List[int]]] = {"background": 0}
    hosted: Dict[str, List[int]] = {o: [] for o in organ_order}
    for t in tumour_order:
        hosts = tumour_block[t].get("host") if isinstance(tumour_block[t], dict) else None
        hosts = [hosts] if isinstance(hosts, str) else (hosts or [])
        if len(hosts) == 1 and hosts[0] in hosted:
            hosted[hosts[0]].append(all_ids[t])
        elif len(hosts) > 1:
            log(f"note: tumour {t!r} has {len(hosts)} host organs {hosts}; its voxels stay out of their organ "
                f"regions (split it into one label per side to merge them)")
    for o in organ_order + unassigned:
        if o not in all_ids:
            continue          # unknown organ name: the zept validation names it
        region = [all_ids[o]] + hosted.get(o, [])
        labels[o] = region if len(region) > 1 else all_ids[o]
    for t in tumour_order:
        labels[t] = all_ids[t]
    if not any(isinstance(v, list) for v in labels.values()) and organ_order and organ_order[0] in ids:
        # nnU-Net switches to sigmoid regions only when some region lists more than one id
        first = organ_order[0]
        labels[first] = [all_ids[first], all_ids[first]]
        log(f"note: no organ region contains a tumour; region {first!r} is written as {labels[first]} so that "
            "nnU-Net trains sigmoid regions (it does so only when some region lists two ids)")
    if ignore is not None:
        labels["ignore"] = ignore
    regions_class_order = [all_ids[n] for n in labels if n not in IGNORED_LABEL_KEYS]

    target = {k: v for k, v in source_json.items() if k not in ("labels", "regions_class_order", "zept")}
    target["labels"] = labels
    target["regions_class_order"] = regions_class_order
    target["zept"] = {k: v for k, v in block.items() if v or k in ("organs", "tumours")}

    # 5. validation (same code the trainers run), plus what only the converter can check
    present_channels = None
    if present_ids is not None:
        present = set(present_ids)
        declared = set(all_ids.values()) | {0} | ({ignore} if ignore is not None else set())
        unknown = sorted(present - declared)
        if unknown:
            raise _fail(f"labelsTr contains label ids {unknown} that the source dataset.json does not declare "
                        f"(labels: {ids})", "add these classes to the source `labels`, or fix the label files")
        present_channels = []
        for c, n in enumerate(k for k in labels if k not in IGNORED_LABEL_KEYS):
            region = labels[n] if isinstance(labels[n], list) else [labels[n]]
            if present & set(region):
                present_channels.append(c)
    roles = roles_from_dataset_json(target, present_channels)
    check_region_based(target)
    for s in roles.sources:
        zs = [roles.names[c] for c in s.annotates if c in roles.zero_shot]
        if zs:
            raise _fail(f"case source {s.name!r} annotates the zero-shot classes {zs}",
                        "zero-shot classes never have training labels: remove them from the source's classes, "
                        "or do not declare them zero-shot")
    if case_list is not None:
        for s in roles.sources:
            if not any(s.matches(c) for c in case_list):
                raise _fail(f"case source {s.name!r} (prefix {s.case_prefix!r}) matches none of the "
                            f"{len(case_list)} training cases (e.g. {list(case_list[:3])})",
                            "use the prefix the case ids of that source start with, as in labelsTr file names")
    return target, roles


def _note_unannotated_voxels(found: Dict[str, List[int]], dataset_json: dict, roles: ClassRoles,
                             log: Callable[[str], None]) -> None:
    """Voxels of a class that the case's source does not annotate are never trained on: say so."""
    own_id = {n: (v[0] if isinstance(v, list) else v) for n, v in dataset_json["labels"].items()}
    id_to_channel = {own_id[n]: c for c, n in enumerate(roles.names)}
    for s in roles.sources:
        unused: Dict[str, int] = {}
        for case, ids in found.items():
            if not s.matches(case):
                continue
            for i in ids:
                c = id_to_channel.get(i)
                if c is not None and c not in s.annotates:
                    unused[roles.names[c]] = unused.get(roles.names[c], 0) + 1
        for cname, n in unused.items():
            log(f"note: {n} case(s) of source {s.name!r} contain {cname!r}, which the source does not annotate; "
                f"those voxels get no loss on that channel (add {cname!r} to the source's classes if they are real)")


# ----------------------------------------------------------------------------------------------
# writing the new dataset

@dataclass
class ConversionResult:
    folder: Path
    dataset_json: dict
    roles: ClassRoles
    linked: int = 0
    copied: int = 0
    labels_copied: int = 0


def _link_or_copy(src: Path, dst: Path) -> bool:
    """Hard link when possible (same file system, links allowed); True if linked."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copy2(src, dst)
        return False


@contextmanager
def staged_dataset_folder(dst: Path, error: Callable[[str, str], Exception]):
    """A hidden sibling of `dst` to write a new dataset into: renamed to `dst` when the block succeeds,
    removed when it fails, so no half-written dataset is ever visible in nnUNet_raw."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        yield tmp
        if dst.exists():
            raise error(f"{dst} appeared while it was being written", "choose another id with -o")
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def region_table(dataset_json: dict, roles: ClassRoles) -> str:
    labels = {k: v for k, v in dataset_json["labels"].items() if k not in IGNORED_LABEL_KEYS}
    lines = ["  ch  class                         label ids        painted as"]
    for c, (name, region) in enumerate(labels.items()):
        kind = ("organ" if c in roles.organs else "zero-shot tumour" if c in roles.zero_shot else "tumour")
        ids = region if isinstance(region, list) else [region]
        lines.append(f"  {c:<3d} {name:<29s} {str(sorted(set(ids))):<16s} {dataset_json['regions_class_order'][c]}"
                     f"  ({kind})")
    return "\n".join(lines)


def convert_dataset(source: Union[int, str], target_id: int, name: Optional[str] = None,
                    options: Optional[ConversionOptions] = None, raw_root: Optional[Path] = None,
                    log: Callable[[str], None] = print) -> ConversionResult:
    """Write `$nnUNet_raw/Dataset{target_id:03d}_{name}` as the ZePT region version of `source`."""
    options = options or ConversionOptions()
    raw_root = Path(raw_root) if raw_root is not None else raw_root_from_env()
    src = find_raw_dataset(source, raw_root)
    if not isinstance(target_id, int) or target_id < 1:
        raise _fail(f"-o {target_id!r} is not a positive dataset id", "pass an unused id such as -o 503")
    name = name or (src.name.split("_", 1)[1] + "ZePT")
    folder_name = target_folder_name(target_id, name)
    dst = raw_root / folder_name
    used = dataset_id_in_use(target_id) + ([f"nnUNet_raw/{folder_name}"] if dst.exists() else [])
    if used:
        raise _fail(f"target dataset id {target_id} is already used ({', '.join(sorted(set(used)))}); "
                    "convert never overwrites a dataset", "choose an unused id with -o")
    problem = path_problem(str(src / "dataset.json"), "the source dataset.json")
    if problem:
        raise _fail(problem, "the source must be an nnU-Net raw dataset with a readable dataset.json")
    try:
        source_json = read_json(str(src / "dataset.json"), "the source dataset.json")
    except InputCheckError as e:
        raise ConversionError(str(e)) from None
    if not isinstance(source_json, dict):
        raise _fail(f"{src / 'dataset.json'} holds {type(source_json).__name__}, not an object",
                    "fix the source dataset.json (nnU-Net format)")
    for key in ("labels", "file_ending", "channel_names"):
        if key not in source_json:
            raise _fail(f"{src / 'dataset.json'} has no `{key}`", "fix the source dataset.json (nnU-Net format)")
    if not (src / "labelsTr").is_dir():
        raise _fail(f"{src} has no labelsTr folder", "the source must be an nnU-Net raw dataset with labelsTr")

    found = scan_label_ids(src / "labelsTr", source_json, log)
    present = set().union(*found.values())
    target_json, roles = build_zept_dataset_json(source_json, options, present, sorted(found), log)
    _note_unannotated_voxels(found, target_json, roles, log)

    with staged_dataset_folder(dst, _fail) as tmp:
        result = ConversionResult(tmp, target_json, roles)
        for sub in CONVERTED_FOLDERS + COPIED_FOLDERS:
            if not (src / sub).is_dir():
                continue
            (tmp / sub).mkdir()
            for f in sorted((src / sub).iterdir()):
                if not f.is_file():
                    continue
                if sub in COPIED_FOLDERS:
                    shutil.copy2(f, tmp / sub / f.name)
                    result.labels_copied += 1
                elif _link_or_copy(f, tmp / sub / f.name):
                    result.linked += 1
                else:
                    result.copied += 1
        (tmp / "dataset.json").write_text(json.dumps(target_json, indent=2) + "\n")
        # re-read what was written: the trainer will see exactly this file
        written = json.loads((tmp / "dataset.json").read_text())
        n = len([k for k in written["labels"] if k not in IGNORED_LABEL_KEYS])
        present_channels = [c for c, k in enumerate(k for k in written["labels"] if k not in IGNORED_LABEL_KEYS)
                            if present & set(written["labels"][k] if isinstance(written["labels"][k], list)
                                             else [written["labels"][k]])]
        assert len(written["regions_class_order"]) == n
        roles_from_dataset_json(written, present_channels)
    result.folder = dst
    return result
