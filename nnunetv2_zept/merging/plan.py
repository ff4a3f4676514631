"""The plan of a merge: classes, label ids and regions of the new dataset, one case source per
input, and for every input label the merged id it becomes.  Building the plan reads everything
and writes nothing; every problem is found here, before any file is written."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from nnunetv2_zept.conversion import dataset_id_in_use, raw_root_from_env, target_folder_name
from nnunetv2_zept.merging.inputs import (CaseScan, InputDataset, locate_input, read_input, run_jobs,
                                          scan_case)
from nnunetv2_zept.merging.vocabulary import (BUILTIN_MAPS, SIDE_OF, SIDED_FAMILIES, TUMOUR_HOSTS, UNSIDED_OF,
                                              LabelResolution, MergeError, canonical_target, class_kind,
                                              load_mapping_file, merge_error, recognise_builtin,
                                              resolve_input_labels, vocabulary_order)
from nnunetv2_zept.roles import check_region_based, infer_roles, roles_from_dataset_json

ZERO_SHOT_VOXEL_MODES = ("error", "host")
LINK_MODES = ("auto", "hard", "symbolic", "copy")


@dataclass
class MergeOptions:
    inputs: Sequence[str]
    target_id: int
    name: str
    test_inputs: Sequence[str] = ()
    zero_shot: Sequence[str] = ()
    mapping_file: Optional[str] = None
    hosts: Dict[str, List[str]] = field(default_factory=dict)
    texts: Dict[str, str] = field(default_factory=dict)
    zero_shot_voxels: str = "error"
    prefix_case_ids: bool = False
    link: str = "auto"
    num_processes: int = 1
    orientation: Optional[str] = None   # write every case in this axis orientation (e.g. "LPS")


@dataclass
class SourcePlan:
    """One input dataset as a case source of the merged dataset."""

    name: str
    input: InputDataset
    test: bool
    builtin: Optional[str]
    resolution: Dict[int, LabelResolution]
    annotates: List[str] = field(default_factory=list)
    case_ids: Dict[str, str] = field(default_factory=dict)        # input case id -> merged case id
    selector: Dict[str, object] = field(default_factory=dict)     # {"case_prefix": ...} or {"cases": [...]}
    lut: Dict[int, int] = field(default_factory=dict)             # input id -> merged id
    sided: Dict[int, Tuple[str, int, int]] = field(default_factory=dict)   # input id -> (family, right, left)
    side_evidence: Dict[int, Tuple[str, str]] = field(default_factory=dict)  # input id -> (family, side)
    notes: List[str] = field(default_factory=list)
    scans: Dict[str, CaseScan] = field(default_factory=dict)
    reorient: Set[str] = field(default_factory=set)               # input case ids written reoriented


@dataclass
class MergePlan:
    options: MergeOptions
    raw_root: Path
    folder: Path
    sources: List[SourcePlan]
    channels: List[str]
    kinds: Dict[str, str]
    hosts: Dict[str, List[str]]
    zero_shot: List[str]
    ids: Dict[str, Dict[str, int]]     # class -> {"": id} or {"right": id, "left": id[, "unknown": id]}
    regions: Dict[str, List[int]]
    dataset_json: dict
    dropped: Dict[str, List[str]]      # class -> inputs whose labels of it are dropped (test-only organs)
    notes: List[str] = field(default_factory=list)
    orientations: Dict[str, int] = field(default_factory=dict)   # orientation -> number of input cases

    @property
    def training_sources(self) -> List[SourcePlan]:
        return [s for s in self.sources if not s.test]

    @property
    def test_sources(self) -> List[SourcePlan]:
        return [s for s in self.sources if s.test]

    def zero_shot_ids(self) -> Set[int]:
        return {i for c in self.zero_shot for i in self.ids[c].values()}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "source"


def _input_keys(inp: InputDataset, source: str) -> Set[str]:
    keys = {inp.name, inp.name_part, source, str(inp.folder)}
    if inp.dataset_id is not None:
        keys |= {str(inp.dataset_id), "%03d" % inp.dataset_id}
    return keys


# ----------------------------------------------------------------------------------------------

def build_plan(options: MergeOptions, raw_root: Optional[Path] = None, scan: bool = True,
               log: Callable[[str], None] = print) -> MergePlan:
    """Read the inputs and decide everything; raises MergeError (nothing is written)."""
    _check_options(options)
    if raw_root is None:
        raw_root = raw_root_from_env() if os.environ.get("nnUNet_raw") else None
        if raw_root is None:
            raise merge_error("the environment variable nnUNet_raw is not set",
                              "export nnUNet_raw=/path/to/nnUNet_raw (the merged dataset is written there)")
    raw_root = Path(raw_root)
    folder = raw_root / target_folder_name(options.target_id, options.name)
    used = dataset_id_in_use(options.target_id) + ([f"nnUNet_raw/{folder.name}"] if folder.exists() else [])
    if used:
        raise merge_error(f"output dataset id {options.target_id} is already used ({', '.join(sorted(set(used)))}); "
                          "merge never overwrites a dataset", "choose an unused id with -o")

    sources = _read_sources(options, raw_root)
    mapping = load_mapping_file(options.mapping_file) if options.mapping_file else {}
    mapping_notes = _resolve_labels(sources, mapping)
    mapping_notes += _check_compatible(sources)

    # vocabulary: classes each input annotates, sides, zero-shot types, what is dropped
    annotated = {s.name: {r.target for r in s.resolution.values() if r.target} for s in sources}
    sided_families = {u for u, pair in SIDED_FAMILIES.items()
                      if any(c in pair for cls in annotated.values() for c in cls)}

    def expand(classes: Set[str]) -> Set[str]:
        out = set()
        for c in classes:
            out |= set(SIDED_FAMILIES[c]) if c in sided_families else {c}
        return out

    train_classes = set().union(*[expand(annotated[s.name]) for s in sources if not s.test]) if any(
        not s.test for s in sources) else set()
    test_classes = set().union(*[expand(annotated[s.name]) for s in sources if s.test]) if any(
        s.test for s in sources) else set()
    zero_shot = _zero_shot_classes(options, train_classes, test_classes)
    vocab = train_classes | set(zero_shot)
    dropped = {}
    for c in sorted(test_classes - vocab):
        dropped[c] = [s.input.name for s in sources if s.test and c in expand(annotated[s.name])]
    kinds = {c: class_kind(c) for c in vocab}
    organs = [c for c in vocabulary_order(list(vocab)) if kinds[c] == "organ"]
    if not organs:
        raise merge_error("the training inputs annotate no organ class", "a ZePT dataset needs organs: add an "
                          "organ dataset (e.g. a multi-organ set) to the inputs")
    tumours = [c for c in vocabulary_order(list(vocab)) if kinds[c] == "tumour"]
    hosts = {t: _hosts_of(t, organs, options) for t in tumours}
    seen = [t for t in tumours if t not in zero_shot]
    channels = organs + seen + [t for t in tumours if t in zero_shot]

    # label ids: organs, then tumours (one id per side for tumours of a sided organ pair)
    sided_tumour = {t: u for t in tumours for u, pair in SIDED_FAMILIES.items() if tuple(hosts[t]) == pair}
    needs_unknown = _tumours_needing_unknown_side(sources, annotated, sided_tumour)
    ids: Dict[str, Dict[str, int]] = {}
    nxt = 1
    for c in channels:
        if c in sided_tumour:
            sides = ["right", "left"] + (["unknown"] if c in needs_unknown else [])
            ids[c] = {}
            for side in sides:
                ids[c][side] = nxt
                nxt += 1
        else:
            ids[c] = {"": nxt}
            nxt += 1
    regions, order, notes = _regions(channels, kinds, hosts, ids, sided_tumour)

    for s in sources:
        _lookup(s, annotated[s.name], sided_families, sided_tumour, vocab, zero_shot, hosts, ids, options)
    _assign_case_ids(sources, options)
    plan = MergePlan(options, raw_root, folder, sources, channels, kinds, hosts, zero_shot, ids, regions, {},
                     dropped, notes + mapping_notes)
    if scan:
        _scan(plan, log)
    plan.dataset_json = _dataset_json(plan, order)
    _validate(plan)
    return plan


def _check_options(o: MergeOptions) -> None:
    if not o.inputs or len(o.inputs) < 1:
        raise merge_error("no input datasets given", "list the datasets to merge with -i")
    if isinstance(o.target_id, bool) or not isinstance(o.target_id, int) or not 1 <= o.target_id <= 999:
        raise merge_error(f"-o {o.target_id!r} is not a dataset id between 1 and 999", "pass an unused id, e.g. -o 600")
    if o.zero_shot_voxels not in ZERO_SHOT_VOXEL_MODES:
        raise merge_error(f"--zero-shot-voxels {o.zero_shot_voxels!r} is not a mode", f"use one of {ZERO_SHOT_VOXEL_MODES}")
    if o.link not in LINK_MODES:
        raise merge_error(f"--link {o.link!r} is not a mode", f"use one of {LINK_MODES}")
    if o.num_processes < 1:
        raise merge_error(f"-np {o.num_processes} must be at least 1", "pass -np 1 or more")
    if o.orientation is not None and not _valid_orientation(o.orientation):
        raise merge_error(f"--orientation {o.orientation!r} is not an axis orientation",
                          "give three letters, one of L/R, one of A/P, one of S/I, e.g. LPS (SimpleITK's identity "
                          "direction) or RAS")


def _valid_orientation(code: str) -> bool:
    return (isinstance(code, str) and len(code) == 3 and
            sorted(next((a for a in ("LR", "AP", "SI") if c in a), "?") for c in code.upper()) == ["AP", "LR", "SI"])


def _read_sources(options: MergeOptions, raw_root: Path) -> List[SourcePlan]:
    folders = [locate_input(str(spec), raw_root) for spec in options.inputs]
    seen: Dict[Path, str] = {}
    for spec, f in zip(options.inputs, folders):
        if f in seen:
            raise merge_error(f"inputs {seen[f]!r} and {spec!r} are the same dataset ({f.name})", "list each input once")
        seen[f] = str(spec)
    test_folders = set()
    for spec in options.test_inputs:
        f = locate_input(str(spec), raw_root)
        if f not in seen:
            raise merge_error(f"--test {spec!r} ({f.name}) is not among the inputs",
                              "list the zero-shot test datasets among the inputs too")
        test_folders.add(f)
    sources, names = [], set()
    for f in folders:
        inp = read_input(f)
        builtin = recognise_builtin(inp.name, inp.dataset_json.get("name"), [n for n in inp.atomic.values() if n],
                                    list(inp.atomic), inp.region_based)
        name = builtin.key if builtin else _slug(inp.name_part)
        base, k = name, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        sources.append(SourcePlan(name, inp, f in test_folders, builtin.key if builtin else None, {}))
    if all(s.test for s in sources):
        raise merge_error("every input is a --test input, so nothing is left to train on",
                          "list the training datasets among the inputs without --test")
    return sources


def _resolve_labels(sources: List[SourcePlan], mapping: dict) -> List[str]:
    """Resolve every input label (raises on problems); returns notes on unused mapping entries."""
    entries, notes = {}, []
    for key in mapping:
        if key == "*":
            continue
        hits = [s for s in sources if key in _input_keys(s.input, s.name)]
        if not hits:
            # one mapping file may serve several merges; a misspelt input key still shows up here
            notes.append(f"mapping-file entry {key!r} names none of the inputs and is not used")
            continue
        if len(hits) > 1:
            raise merge_error(f"mapping-file entry {key!r} names several inputs "
                              f"({', '.join(s.input.name for s in hits)})", "use the full folder name")
        if hits[0].name in entries:
            raise merge_error(f"the mapping file has two entries for input {hits[0].input.name}",
                              "merge them into one entry")
        entries[hits[0].name] = mapping[key]
    problems: List[str] = []
    for s in sources:
        own = entries.get(s.name)
        if isinstance(own, str):
            s.builtin = own
        builtin = BUILTIN_MAPS.get(s.builtin) if s.builtin else None
        s.resolution, p = resolve_input_labels(s.input.name, s.input.atomic, s.input.region_based, own,
                                               mapping.get("*"), builtin)
        problems += p
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise MergeError(f"{len(problems)} label problem(s): " + " | ".join(problems[:3]) + more)
    # one name, one meaning: a bare tumour word read through each input's only organ must not mean
    # different classes in different inputs without the mapping file saying so
    guessed: Dict[str, Dict[str, str]] = {}
    for s in sources:
        for i, r in s.resolution.items():
            if r.how.startswith("tumour word"):
                guessed.setdefault(s.input.atomic[i].lower(), {})[s.input.name] = r.target
    for name, by_input in guessed.items():
        if len(set(by_input.values())) > 1:
            meanings = ", ".join(f"{t} in {inp}" for inp, t in by_input.items())
            example = ", ".join(f'"{inp}": {{"{name}": "{t}"}}' for inp, t in list(by_input.items())[:2])
            raise merge_error(f"inputs give the label name {name!r} different meanings ({meanings}), read from "
                              "each input's only organ", f"say so explicitly in the mapping file: {{{example}}}")
    return notes


def _check_compatible(sources: List[SourcePlan]) -> List[str]:
    """Same channels and file format everywhere; returns notes."""
    first = sources[0].input
    for s in sources[1:]:
        inp = s.input
        a = {k: v.casefold() for k, v in first.channel_names.items()}
        b = {k: v.casefold() for k, v in inp.channel_names.items()}
        if a != b:
            raise merge_error(f"inputs {first.name} and {inp.name} have different channel names / modalities "
                              f"({first.channel_names} vs {inp.channel_names})",
                              "merge only datasets with the same channels (e.g. all {\"0\": \"CT\"})")
        if inp.file_ending != first.file_ending:
            raise merge_error(f"inputs {first.name} and {inp.name} have different file endings "
                              f"({first.file_ending!r} vs {inp.file_ending!r})",
                              "convert one of them so that all inputs use the same file format")
    # nnU-Net's own KiTS23 conversion asks for NibabelIOWithReorient because its files store the axes in
    # another order; the merge brings every case into one orientation instead (see _scan)
    return [f"{s.input.name} asks nnU-Net for the image reader {s.input.dataset_json['overwrite_image_reader_writer']}"
            "; the merged dataset reads every case with nnU-Net's default reader, in the one orientation the merge "
            "checks" for s in sources if s.input.dataset_json.get("overwrite_image_reader_writer")]


def _zero_shot_classes(options: MergeOptions, train: Set[str], test: Set[str]) -> List[str]:
    declared = []
    for name in options.zero_shot:
        c = canonical_target(name)
        kind = class_kind(c)
        if kind != "tumour":
            raise merge_error(f"--zero-shot {name!r} is {'an organ' if kind == 'organ' else 'a background'} class",
                              "only tumour types can be zero-shot; name a tumour class, e.g. pancreatic_tumour")
        declared.append(c)
    auto = [c for c in test - train if class_kind(c) == "tumour"]
    return sorted(set(declared) | set(auto))


def _hosts_of(tumour: str, organs: List[str], options: MergeOptions) -> List[str]:
    given = {canonical_target(k): v for k, v in options.hosts.items()}
    if tumour in given:
        hs = [canonical_target(h) for h in given[tumour]]
        bad = [h for h in hs if h not in organs]
        if bad:
            raise merge_error(f"--host {tumour} names {bad}, which are not organ classes of the merged dataset "
                              f"(organs: {organs})", "name organ classes that a training input annotates")
        pair = next((p for p in SIDED_FAMILIES.values() if set(p) == set(hs) and len(hs) == 2), None)
        return list(pair) if pair else hs
    for alternative in TUMOUR_HOSTS.get(tumour, ()):
        if all(h in organs for h in alternative):
            return list(alternative)
    roles = infer_roles({"labels": {"background": 0, **{o: k + 1 for k, o in enumerate(organs)},
                                    tumour: len(organs) + 1}})
    hs = [roles.names[h] for h in roles.hosts.get(len(organs), [])]
    if not hs:
        raise merge_error(f"tumour class {tumour!r} has no host organ among the organs that the training inputs "
                          f"annotate ({', '.join(organs)})", f"add a training input that annotates its organ, or pass "
                          f"--host {tumour} ORGAN [ORGAN ...]")
    return hs


def _tumours_needing_unknown_side(sources, annotated, sided_tumour) -> Set[str]:
    """Sided tumours that some input annotates without any organ of the family: their side is unknown."""
    out = set()
    for s in sources:
        for t, u in sided_tumour.items():
            family = {u, *SIDED_FAMILIES[u]}
            if t in annotated[s.name] and not family & annotated[s.name]:
                out.add(t)
    return out


def _regions(channels, kinds, hosts, ids, sided_tumour):
    notes = []
    regions: Dict[str, List[int]] = {}
    for c in channels:
        if kinds[c] != "organ":
            continue
        region = [ids[c][""]]
        for t in channels:
            if kinds[t] != "tumour" or c not in hosts[t]:
                continue
            if t in sided_tumour:
                region.append(ids[t][SIDE_OF[c]])
            elif len(hosts[t]) == 1:
                region += list(ids[t].values())
        regions[c] = region
    for t in channels:
        if kinds[t] == "tumour":
            regions[t] = list(ids[t].values())
            if len(hosts[t]) > 1 and t not in sided_tumour:
                notes.append(f"tumour {t!r} has {len(hosts[t])} host organs {hosts[t]} that are no left/right "
                             "pair; its voxels stay out of their organ regions")
    order = [ids[c][""] if "" in ids[c] else ids[c]["right"] for c in channels]
    if not any(len(set(r)) > 1 for r in regions.values()):
        first = channels[0]
        regions[first] = [regions[first][0], regions[first][0]]
        notes.append(f"no organ region contains a tumour; region {first!r} is written as {regions[first]} so that "
                     "nnU-Net trains sigmoid regions (it does so only when some region lists two ids)")
    return regions, order, notes


def _lookup(s: SourcePlan, classes: Set[str], sided_families, sided_tumour, vocab, zero_shot, hosts, ids,
            options) -> None:
    """Merged id (or side split) of every label id of this input, and the classes it annotates."""
    family_annotated = {u for u, pair in SIDED_FAMILIES.items() if ({u, *pair} & classes)}
    annotates: Set[str] = set()
    for i, r in sorted(s.resolution.items()):
        c = r.target
        label = s.input.atomic[i] or f"id {i}"
        if c is None:
            s.lut[i] = 0
            s.notes.append(f"label {label!r} dropped ({r.how}): written as background, not annotated")
            continue
        if c in sided_families:                                    # e.g. "kidney" -> right / left
            right, left = SIDED_FAMILIES[c]
            s.sided[i] = (c, ids[right][""], ids[left][""])
            annotates |= {right, left}
            s.notes.append(f"label {label!r} ({c}) is split by side into {right} / {left}")
            continue
        if c not in vocab:
            s.lut[i] = 0
            s.notes.append(f"label {label!r} ({c}) dropped: no training input annotates {c}")
            continue
        if c in zero_shot and not s.test:
            host = hosts[c]
            if options.zero_shot_voxels == "host":
                if c in sided_tumour and sided_tumour[c] in family_annotated:
                    u = sided_tumour[c]
                    s.sided[i] = (u, ids[SIDED_FAMILIES[u][0]][""], ids[SIDED_FAMILIES[u][1]][""])
                elif len(host) == 1 and host[0] in classes:
                    s.lut[i] = ids[host[0]][""]
                else:
                    raise merge_error(f"zero-shot type {c!r} of training input {s.input.name} cannot be given to its "
                                      f"host {host}: the input does not annotate it",
                                      f"list {s.input.name} under --test, or do not declare {c} zero-shot")
                s.notes.append(f"label {label!r} ({c}, zero-shot): its voxels are relabelled as the host organ "
                               f"{'/'.join(host)}")
            else:
                s.lut[i] = ids[c][next(iter(ids[c]))]     # checked against the scan: must have no voxels
            continue
        if c in sided_tumour:
            u = sided_tumour[c]
            if u in family_annotated:
                s.sided[i] = (u, ids[c]["right"], ids[c]["left"])
                s.notes.append(f"label {label!r} ({c}) is split by side with its host organs")
            else:
                s.lut[i] = ids[c]["unknown"]
                s.notes.append(f"label {label!r} ({c}): the input annotates no {u} organ, so the side is unknown "
                               f"(id {ids[c]['unknown']}, in the {c} region only)")
            annotates.add(c)
            continue
        s.lut[i] = ids[c][""]
        if c in SIDE_OF:
            s.side_evidence[i] = (UNSIDED_OF[c], SIDE_OF[c])
        annotates.add(c)
    # an input that annotates sided organs decides the side of its sided tumours' components
    for i, (fam, side) in list(s.side_evidence.items()):
        if not any(f == fam for f, _, _ in s.sided.values()):
            del s.side_evidence[i]
    if not s.test:
        annotates -= set(zero_shot)
    s.annotates = [c for c in _channel_sorted(annotates, vocab, zero_shot)]
    if not s.annotates:
        raise merge_error(f"input {s.input.name} annotates no class that can be "
                          f"{'evaluated' if s.test else 'trained'} (its classes: {sorted(classes)})",
                          "list it under --test if it holds zero-shot test cases" if not s.test else
                          "remove it from the inputs, or add a training input that annotates its classes")


def _channel_sorted(classes, vocab, zero_shot):
    order = vocabulary_order(list(vocab))
    organs = [c for c in order if class_kind(c) == "organ"]
    tumours = [c for c in order if class_kind(c) == "tumour"]
    ch = organs + [t for t in tumours if t not in zero_shot] + [t for t in tumours if t in zero_shot]
    return [c for c in ch if c in classes]


def _assign_case_ids(sources: List[SourcePlan], options: MergeOptions) -> None:
    owner: Dict[str, str] = {}
    dups = []
    for s in sources:
        for case in s.input.cases:
            new = f"{s.name}_{case.case_id}" if options.prefix_case_ids else case.case_id
            s.case_ids[case.case_id] = new
            if new in owner:
                dups.append((new, owner[new], s.input.name))
            owner[new] = s.input.name
    if dups:
        shown = "; ".join(f"{c!r} in {a} and {b}" for c, a, b in dups[:3])
        raise merge_error(f"{len(dups)} case id(s) occur in more than one input ({shown})",
                          "pass --prefix-case-ids to prefix every case id with its source name")
    others = {s.input.name: [c for c in owner if owner[c] != s.input.name] for s in sources}
    for s in sources:
        mine = sorted(s.case_ids.values())
        common = os.path.commonprefix(mine)
        # a readable prefix ("liver_" rather than "liver_1") when it still belongs to this input alone
        candidates = [f"{s.name}_"] if options.prefix_case_ids else [common[: m.end()] for m in
                                                                     re.finditer(r"[_\-.]", common)][::-1] + [common]
        prefix = next((p for p in candidates if p and not any(c.startswith(p) for c in others[s.input.name])), None)
        s.selector = {"case_prefix": prefix} if prefix else {"cases": mine}


def _scan(plan: MergePlan, log) -> None:
    jobs, where = [], []
    for s in plan.sources:
        for case in s.input.cases:
            jobs.append((case.case_id, str(case.label), [str(p) for p in case.images]))
            where.append(s)
    log(f"checking geometry and label ids of {len(jobs)} case(s) in {len(plan.sources)} input(s)")
    results = run_jobs(scan_case, jobs, plan.options.num_processes, chunksize=4)
    errors = []
    for (case_id, _, _), s, r in zip(jobs, where, results):
        s.scans[case_id] = r
        if r.error:
            errors.append(f"{s.input.name}, case {case_id!r}: {r.error}")
            continue
        unknown = sorted(set(r.voxels) - {0} - set(s.input.atomic))
        if unknown:
            errors.append(f"{s.input.name}, case {case_id!r}: label ids {unknown} are not in its dataset.json `labels`")
    if errors:
        raise merge_error(f"{len(errors)} case(s) cannot be merged: " + " | ".join(errors[:3])
                          + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""),
                          "fix those files (image and label must share size, spacing, origin and direction; "
                          "label ids must be declared), or remove the cases from their input")
    _orientations(plan)
    zs = set(plan.zero_shot)
    for s in plan.training_sources:
        for i, r in s.resolution.items():
            if r.target not in zs or i in s.sided or s.lut.get(i, 0) == 0 or plan.options.zero_shot_voxels == "host":
                continue
            cases = [c for c, sc in s.scans.items() if sc.voxels.get(i)]
            if cases:
                raise merge_error(
                    f"zero-shot type {r.target!r} has voxels in {len(cases)} training case(s) of {s.input.name} "
                    f"(label {s.input.atomic[i]!r}, e.g. {cases[:3]}); a zero-shot type must never be trained on",
                    f"list {s.input.name} under --test to hold its cases out, or pass --zero-shot-voxels host "
                    "to relabel those voxels as their host organ")
            s.lut[i] = 0


def _orientations(plan: MergePlan) -> None:
    """One network must see one orientation: ZePT trains without mirroring, so left and right must stay
    on their side of the array.  Mixed orientations stop the merge unless --orientation says which one
    every case is written in."""
    by: Dict[str, Dict[str, int]] = {}
    for s in plan.sources:
        for sc in s.scans.values():
            by.setdefault(sc.orientation, {}).setdefault(s.input.name, 0)
            by[sc.orientation][s.input.name] += 1
    plan.orientations = {o: sum(v.values()) for o, v in by.items()}
    target = plan.options.orientation.upper() if plan.options.orientation else None
    if target is None and len(by) > 1:
        shown = "; ".join(f"{o}: {sum(v.values())} case(s) of {', '.join(sorted(v))}" for o, v in sorted(by.items()))
        common = max(plan.orientations, key=plan.orientations.get)
        raise merge_error(f"the input cases are stored in {len(by)} axis orientations ({shown}); ZePT trains without "
                          "mirroring, so every case must reach the network in one orientation",
                          f"pass --orientation {common} to write the other cases reoriented (lossless copies; "
                          "the rest stay links)")
    if target is not None:
        for s in plan.sources:
            s.reorient = {c for c, sc in s.scans.items() if sc.orientation != target}


def _dataset_json(plan: MergePlan, order: List[int]) -> dict:
    o = plan.options
    first = plan.sources[0].input
    labels = {"background": 0}
    for c in plan.channels:
        r = plan.regions[c]
        labels[c] = r if len(r) > 1 else r[0]
    tumours = {}
    for c in plan.channels:
        if plan.kinds[c] != "tumour":
            continue
        spec = {"host": list(plan.hosts[c])}
        if c in plan.zero_shot:
            spec["zero_shot"] = True
        tumours[c] = spec
    texts = {}
    for c, text in o.texts.items():
        name = canonical_target(c)
        if name not in plan.channels:
            raise merge_error(f"--text {c!r}: no class {name!r} in the merged dataset ({', '.join(plan.channels)})",
                              "name a class of the merged dataset")
        if name in tumours:
            tumours[name]["text"] = text
        else:
            texts[name] = text
    zept = {"organs": [c for c in plan.channels if plan.kinds[c] == "organ"], "tumours": tumours}
    if texts:
        zept["texts"] = texts
    zept["sources"] = {s.name: {**s.selector, "annotates": list(s.annotates)} for s in plan.training_sources}
    if plan.test_sources:
        zept["test_sources"] = {s.name: {**s.selector, "annotates": list(s.annotates)} for s in plan.test_sources}
    n_train = sum(len(s.input.cases) for s in plan.training_sources)
    description = "ZePT union of " + ", ".join(
        f"{s.input.name}{' (zero-shot test cases)' if s.test else ''}" for s in plan.sources)
    return {"name": o.name, "description": description + " (nnunetv2_zept merge; provenance in merge.json)",
            "channel_names": dict(first.channel_names), "file_ending": first.file_ending, "labels": labels,
            "regions_class_order": order, "numTraining": n_train, "zept": zept}


def _validate(plan: MergePlan) -> None:
    from nnunetv2_zept.knowledge.texts import MissingKnowledgeTextError, text_for_class

    dj = plan.dataset_json
    present_ids = set()          # merged ids that the training label files will hold
    for s in plan.training_sources:
        found = set().union(*[set(sc.voxels) for sc in s.scans.values()]) if s.scans else set(s.input.atomic)
        for i in found - {0}:
            if i in s.sided:
                present_ids |= set(s.sided[i][1:])
            elif s.lut.get(i):
                present_ids.add(s.lut[i])
    present = [k for k, c in enumerate(plan.channels) if set(plan.regions[c]) & present_ids]
    roles = roles_from_dataset_json(dj, present)
    check_region_based(dj)
    overrides = dict(dj["zept"].get("texts", {}))
    overrides.update({t: s["text"] for t, s in dj["zept"]["tumours"].items() if "text" in s})
    missing = []
    for c in roles.names:
        try:
            text_for_class(c, overrides)
        except MissingKnowledgeTextError:
            missing.append(c)
    if missing:
        raise merge_error(f"class(es) {missing} have no built-in knowledge text",
                          f"pass --text {missing[0]} \"<where it lies, its CT appearance in HU, its shape>\" "
                          "for each (see docs/knowledge.md)")


# ----------------------------------------------------------------------------------------------
# the printout of --dry-run (and of a real run)

def describe_plan(plan: MergePlan) -> str:
    lines = [f"merge plan for {plan.folder}", "", "inputs:"]
    for s in plan.sources:
        n = len(s.input.cases)
        role = "test " if s.test else "train"
        lines.append(f"  {s.name:<20s} {s.input.name:<28s} {role} {n:>5d} case(s)  -> "
                     f"{'imagesTs/labelsTs' if s.test else 'imagesTr/labelsTr'}")
        for i, r in sorted(s.resolution.items()):
            shown = s.input.atomic[i] or f"id {i}"
            lines.append(f"      {shown!r:<30s} -> {r.target or 'dropped'}   ({r.how})")
        sel = (f"case_prefix {s.selector['case_prefix']!r}" if "case_prefix" in s.selector
               else f"{len(s.selector['cases'])} listed cases")
        lines.append(f"      source ({sel}) annotates: {', '.join(s.annotates)}")
        for note in s.notes:
            lines.append(f"      note: {note}")
        if s.input.unlabelled_images:
            lines.append(f"      note: {s.input.unlabelled_images} imagesTr case(s) without a label file are not merged")
        if s.input.test_images_skipped:
            lines.append(f"      note: the input's own imagesTs ({s.input.test_images_skipped} file(s), no labels) "
                         "is not merged")
    lines += ["", "classes (one sigmoid channel each; later rows paint over earlier ones):",
              "  ch  class                      kind              host                       region ids     "
              "annotated by"]
    for k, c in enumerate(plan.channels):
        kind = "organ" if plan.kinds[c] == "organ" else (
            "zero-shot tumour" if c in plan.zero_shot else "seen tumour")
        by = [s.name + (" (test)" if s.test else "") for s in plan.sources if c in s.annotates]
        host = "/".join(plan.hosts.get(c, [])) or "-"
        lines.append(f"  {k:<3d} {c:<26s} {kind:<17s} {host:<26s} {str(plan.regions[c]):<14s} "
                     f"{', '.join(by) or '-'}")
    n_train = sum(len(s.input.cases) for s in plan.training_sources)
    n_test = sum(len(s.input.cases) for s in plan.test_sources)
    lines += ["", f"cases: {n_train} training (imagesTr/labelsTr), {n_test} zero-shot test (imagesTs/labelsTs)"]
    held = []
    for c in plan.zero_shot:
        srcs = [s.name for s in plan.test_sources if c in s.annotates]
        held.append(f"{c} (test cases: {', '.join(srcs) or 'none; declared for prediction only'})")
    lines.append("held out as zero-shot: " + ("; ".join(held) if held else "nothing"))
    shown = ", ".join(f"{n} {o}" for o, n in sorted(plan.orientations.items()))
    n_re = sum(len(s.reorient) for s in plan.sources)
    lines.append(f"orientation of the input cases: {shown}" + (
        f"; {n_re} case(s) are written reoriented to {plan.options.orientation} (copies, not links)" if n_re else ""))
    if plan.options.zero_shot_voxels == "host":
        lines.append("zero-shot voxels in training inputs: relabelled as their host organ (--zero-shot-voxels host)")
    for c, inputs in plan.dropped.items():
        lines.append(f"dropped: {c} (annotated only by test input(s) {', '.join(inputs)}; written as background there)")
    for note in plan.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
