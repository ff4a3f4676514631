"""The shared class vocabulary of a merge: which class each label of each input dataset becomes.

A vocabulary class is a canonical class of the built-in knowledge table (`knowledge/texts.json`:
`liver`, `kidney_right`, `pancreatic_tumour`, ...) or a new name that a user's mapping file
introduces.  A label of an input is resolved, first match wins, by

1. the mapping file entry of that input (by label name or label id; `null` drops the label);
2. the built-in map of a recognised public dataset (MSD tasks, KiTS), whose generic names
   ("cancer", "Tumour", "tumor") mean a different class in each task;
3. the mapping file's `"*"` entry (applies to every input);
4. the knowledge table's names and synonyms ("left_kidney", "Head_of_femur_L", "intestine");
5. a generic tumour word ("tumor", "cancer", "lesion") in an input with exactly one organ: a
   tumour of that organ ("liver" + "tumor" -> liver_tumour).

Anything else "maps to nothing" and is reported, with the mapping-file line that fixes it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from nnunetv2_zept.knowledge.texts import builtin_class_names, builtin_entry, resolve_class_name
from nnunetv2_zept.roles import looks_like_tumour

Target = Optional[str]          # a vocabulary class, or None: the label is dropped


class MergeError(ValueError):
    """A problem with the inputs or options of a merge; the message says what and how to fix it."""


def merge_error(problem: str, fix: str) -> MergeError:
    return MergeError(f"{problem}. Fix: {fix}")


def _norm_label(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", str(name).lower()).strip()


def _norm_dataset(name: str) -> str:
    """`Dataset008_HepaticVessel`, `Task08_HepaticVessel`, `HepaticVessel` -> `hepaticvessel`."""
    name = re.sub(r"^(dataset\d+_|task\d+_)", "", str(name).strip().lower())
    return re.sub(r"[^a-z0-9]+", "", name)


@dataclass(frozen=True)
class BuiltinMap:
    """Label names (and, for nnU-Net's region-based conversions, label ids) of one public dataset."""

    key: str
    title: str
    dataset_names: Tuple[str, ...]          # normalised with _norm_dataset
    labels: Mapping[str, str]               # normalised label name -> vocabulary class
    ids: Mapping[int, str] = None           # label id -> class, for region-based versions

    def by_name(self, label_names: Sequence[str]) -> Optional[Dict[str, str]]:
        """The classes of these label names, or None when some name is not in this map."""
        out = {}
        for n in label_names:
            hit = self.labels.get(_norm_label(n))
            if hit is None:
                return None
            out[n] = hit
        return out


BUILTIN_MAPS: Dict[str, BuiltinMap] = {m.key: m for m in [
    BuiltinMap("msd_liver", "MSD Task03 Liver", ("liver", "task03liver", "msdliver"),
               {"liver": "liver", "cancer": "liver_tumour"}),
    BuiltinMap("msd_lung", "MSD Task06 Lung", ("lung", "task06lung", "msdlung"),
               {"cancer": "lung_tumour"}),
    BuiltinMap("msd_pancreas", "MSD Task07 Pancreas", ("pancreas", "task07pancreas", "msdpancreas"),
               {"pancreas": "pancreas", "cancer": "pancreatic_tumour"}),
    BuiltinMap("msd_hepatic_vessel", "MSD Task08 Hepatic Vessel",
               ("hepaticvessel", "hepaticvessels", "task08hepaticvessel", "msdhepaticvessel"),
               {"vessel": "hepatic_vessels", "tumour": "hepatic_vessel_tumour", "tumor": "hepatic_vessel_tumour"}),
    BuiltinMap("msd_spleen", "MSD Task09 Spleen", ("spleen", "task09spleen", "msdspleen"),
               {"spleen": "spleen"}),
    BuiltinMap("msd_colon", "MSD Task10 Colon", ("colon", "task10colon", "msdcolon"),
               {"colon cancer primaries": "colon_tumour", "cancer": "colon_tumour"}),
    # KiTS19/21/23 label files: 1 kidney, 2 tumour, 3 cyst.  nnU-Net's own KiTS23 conversion
    # (Dataset220) names regions instead ("kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2), so its
    # ids are mapped directly.
    BuiltinMap("kits", "KiTS19/21/23", ("kits", "kits19", "kits2019", "kits21", "kits2021", "kits23", "kits2023"),
               {"kidney": "kidney", "tumor": "kidney_tumour", "tumour": "kidney_tumour", "cyst": "kidney_cyst"},
               ids={1: "kidney", 2: "kidney_tumour", 3: "kidney_cyst"}),
]}

# Organs that public datasets annotate either as one label or as one label per side.  When the
# vocabulary holds the sided classes, the one-label version is split by side voxel by voxel.
SIDED_FAMILIES: Dict[str, Tuple[str, str]] = {
    "kidney": ("kidney_right", "kidney_left"),
    "lungs": ("lung_right", "lung_left"),
    "adrenal_gland": ("adrenal_gland_right", "adrenal_gland_left"),
}
SIDE_OF = {c: side for pair in SIDED_FAMILIES.values() for c, side in zip(pair, ("right", "left"))}
UNSIDED_OF = {c: u for u, pair in SIDED_FAMILIES.items() for c in pair}

# Host organs of the built-in tumour classes, alternatives in order of preference: the first one
# whose organs are all in the vocabulary is used.  MSD's hepatic-vessel tumours are liver tumours
# next to vessels, and the hepatic vessels are rarely an annotated training class.
TUMOUR_HOSTS: Dict[str, Tuple[Tuple[str, ...], ...]] = {
    "liver_tumour": (("liver",),), "liver_metastasis": (("liver",),), "liver_cyst": (("liver",),),
    "liver_hemangioma": (("liver",),),
    "hepatic_vessel_tumour": (("liver",), ("hepatic_vessels",)),
    "kidney_tumour": (("kidney_right", "kidney_left"), ("kidney",)),
    "kidney_cyst": (("kidney_right", "kidney_left"), ("kidney",)),
    "pancreatic_tumour": (("pancreas",),), "pancreatic_cyst": (("pancreas",),),
    "lung_tumour": (("lung_right", "lung_left"), ("lungs",)),
    "colon_tumour": (("colon",),),
    "spleen_lesion": (("spleen",),), "spleen_cyst": (("spleen",),),
    "adrenal_tumour": (("adrenal_gland_right", "adrenal_gland_left"), ("adrenal_gland",)),
    "bladder_tumour": (("bladder",),), "gallbladder_cancer": (("gallbladder",),),
    "gastric_cancer": (("stomach",),), "oesophageal_cancer": (("oesophagus",),),
}

# label names that say "a lesion" without saying of which organ ("cancer" in MSD, "tumor" in KiTS)
GENERIC_TUMOUR_LABELS = ("tumour", "tumor", "tumours", "tumors", "cancer", "lesion", "lesions", "mass",
                         "carcinoma", "neoplasm", "malignancy", "cyst", "cysts", "nodule", "nodules",
                         "metastasis", "metastases")


def class_kind(name: str) -> str:
    """"organ", "tumour" or "background" (the network's background tissue classes)."""
    if name in builtin_class_names():
        return builtin_entry(name).kind
    return "tumour" if looks_like_tumour(name) else "organ"


def vocabulary_order(names: Sequence[str]) -> List[str]:
    """Built-in classes in the knowledge table's order, then new names alphabetically: the same
    classes always give the same channel order."""
    builtin = builtin_class_names()
    known = [n for n in builtin if n in names]
    return known + sorted(n for n in set(names) if n not in builtin)


def canonical_target(target: str) -> str:
    """A mapping-file target: a built-in class or one of its synonyms (-> canonical name), or a
    new class name kept as written."""
    hit = resolve_class_name(target)
    if hit is not None and builtin_entry(hit).kind != "background" and _norm_label(target) in (
            _norm_label(hit), *(_norm_label(s) for s in builtin_entry(hit).synonyms)):
        return hit
    return target


# ----------------------------------------------------------------------------------------------
# mapping file

def load_mapping_file(path: Union[str, Path]) -> dict:
    """`{"<input>": {"<label name or id>": "<class>" | null}, "<input>": "<built-in map>", "*": {...}}`."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise merge_error(f"mapping file {path} does not exist", "pass the path of a JSON mapping file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise merge_error(f"mapping file {path} cannot be read ({e})", "pass a readable JSON file") from None
    except json.JSONDecodeError as e:
        raise merge_error(f"mapping file {path} is not valid JSON ({e})", "fix the JSON syntax") from None
    if not isinstance(data, dict):
        raise merge_error(f"mapping file {path} holds {type(data).__name__}, not an object",
                          'write {"Dataset011_WORD": {"intestine": "small_bowel", "adrenal": null}} '
                          "(see docs/dataset.md, merging)")
    for key, value in data.items():
        if isinstance(value, str):
            if value not in BUILTIN_MAPS or key == "*":
                raise merge_error(f"mapping file {path}: entry {key!r} = {value!r} is not a built-in map",
                                  f"name one of {sorted(BUILTIN_MAPS)}, or map the labels one by one")
        elif isinstance(value, dict):
            for label, target in value.items():
                if target is not None and (not isinstance(target, str) or not target.strip()):
                    raise merge_error(f"mapping file {path}: {key!r} -> {label!r} = {target!r} is not a class name",
                                      "map each label to a class name (a string) or to null to drop it")
        else:
            raise merge_error(f"mapping file {path}: entry {key!r} = {value!r} must be an object of "
                              "label -> class, or the name of a built-in map",
                              f'e.g. "{key}": {{"tumor": "liver_tumour"}}')
    return data


# ----------------------------------------------------------------------------------------------
# resolving the labels of one input

@dataclass
class LabelResolution:
    target: Target          # vocabulary class, or None (dropped)
    how: str                # where the answer came from, for the plan printout


def recognise_builtin(folder_name: str, json_name: Optional[str], label_names: Sequence[str],
                      label_ids: Sequence[int], region_based: bool) -> Optional[BuiltinMap]:
    names = {_norm_dataset(folder_name)} | ({_norm_dataset(json_name)} if json_name else set())
    for m in BUILTIN_MAPS.values():
        if not names & set(m.dataset_names):
            continue
        if not region_based and m.by_name(label_names) is not None:
            return m
        if region_based and m.ids and all(i in m.ids for i in label_ids):
            return m
    return None


def resolve_input_labels(input_name: str, atomic: Mapping[int, str], region_based: bool,
                         own_entry: Optional[Union[dict, str]], star_entry: Optional[dict],
                         builtin: Optional[BuiltinMap]) -> Tuple[Dict[int, LabelResolution], List[str]]:
    """Vocabulary class of each atomic label id of one input, and the problems (one line each).

    `atomic`: label id -> its label name (None for an id no label names alone: region-based inputs)."""
    if isinstance(own_entry, str):
        builtin, own_entry = BUILTIN_MAPS[own_entry], None
    own = dict(own_entry or {})
    star = dict(star_entry or {})
    used_own = set()
    out: Dict[int, LabelResolution] = {}
    problems: List[str] = []

    def from_entry(entry: dict, i: int, name: Optional[str]):
        for key in ((name,) if name is not None else ()) + (str(i),):
            if key in entry:
                return key, entry[key]
        return None, None

    unresolved: List[int] = []
    for i, name in atomic.items():
        key, target = from_entry(own, i, name)
        if key is not None:
            used_own.add(key)
            out[i] = LabelResolution(canonical_target(target) if target else None, "mapping file")
            continue
        if builtin is not None:
            hit = (builtin.ids or {}).get(i) if region_based else builtin.labels.get(_norm_label(name or ""))
            if hit is not None:
                out[i] = LabelResolution(hit, f"built-in map {builtin.key}")
                continue
        key, target = from_entry(star, i, name)
        if key is not None:
            out[i] = LabelResolution(canonical_target(target) if target else None, 'mapping file "*"')
            continue
        hit = resolve_class_name(name) if name else None
        if hit is not None and builtin_entry(hit).kind != "background" and not _is_generic(name):
            out[i] = LabelResolution(hit, "knowledge table")
            continue
        if hit is not None and builtin_entry(hit).kind == "background":
            problems.append(f"{input_name}: label {name!r} (id {i}) is the network's background tissue class "
                            f"{hit!r}, not an annotated structure; drop it with "
                            f'{{"{input_name}": {{"{name}": null}}}} in the mapping file')
            continue
        unresolved.append(i)

    # a bare tumour word in an input with one organ: a tumour of that organ
    organs = sorted({r.target for r in out.values() if r.target and class_kind(r.target) == "organ"})
    for i in unresolved:
        name = atomic[i]
        if name and _is_generic(name) and len(organs) == 1:
            hit = resolve_class_name(f"{organs[0].replace('_', ' ')} {name}")
            if hit is not None and builtin_entry(hit).kind == "tumour":
                out[i] = LabelResolution(hit, f"tumour word in an input whose only organ is {organs[0]}")
                continue
        shown = repr(name) if name else f"id {i} (no label names it alone)"
        problems.append(f"{input_name}: label {shown} maps to no class; add "
                        f'"{input_name}": {{"{name if name else i}": "<class>"}} to the mapping file '
                        "(a built-in class such as liver_tumour, a new class name, or null to drop it)")
    for key in own:
        if key not in used_own:
            problems.append(f"{input_name}: the mapping file maps label {key!r}, which this input does not have "
                            f"(labels: {sorted(n for n in atomic.values() if n)}); fix the label name")
    for i, r in out.items():
        if r.target and class_kind(r.target) == "background":
            problems.append(f"{input_name}: label {atomic[i]!r} is mapped to the background tissue class "
                            f"{r.target!r}, which the network derives from HU; map it to null instead")
    return out, problems


def _is_generic(name: str) -> bool:
    return _norm_label(name) in GENERIC_TUMOUR_LABELS
