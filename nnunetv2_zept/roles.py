"""Class roles of a ZePT dataset: which output channels are organs, tumours, zero-shot tumours,
which organ hosts each tumour, and which classes each case source annotates.

Output channels are nnU-Net regions: one sigmoid channel per entry of `dataset.json["labels"]`
(background and ignore excluded), in that order.  The roles come from the optional `zept`
block of `dataset.json`:

    "zept": {
      "organs": ["liver", "spleen", "kidney_right", "kidney_left", "pancreas"],
      "tumours": {
        "liver_tumour":    {"host": ["liver"]},
        "kidney_tumour":   {"host": ["kidney_right", "kidney_left"]},
        "pancreas_tumour": {"host": ["pancreas"], "zero_shot": true,
                            "text": "optional knowledge text for this class"}
      },
      "texts":   {"liver": "optional knowledge text overriding the built-in one"},
      "sources": {
        "lits":  {"case_prefix": "LITS_", "annotates": ["liver", "liver_tumour"]},
        "kits":  {"cases": ["KITS_001", "KITS_002"], "annotates": ["kidney_right", "kidney_left", "kidney_tumour"]}
      },
      "test_sources": {
        "msd_lung": {"case_prefix": "lung_", "annotates": ["lung_tumour"]}
      }
    }

`test_sources` has the format of `sources` and describes held-out cases (imagesTs/labelsTs), which
may annotate zero-shot classes only; training never reads it, evaluation does.

Without the block, roles are read from class names (see `infer_roles`).  Every problem is
reported as a `ZePTConfigError` that names the key, the value and the fix.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

TUMOUR_WORDS = ("tumour", "tumor", "lesion", "cyst", "nodule", "cancer", "metastasis", "metastases",
                "carcinoma", "mass", "neoplasm")
IGNORED_LABEL_KEYS = ("background", "ignore")
# The one list of background tissue classes: the network's background queries (one per tissue, or
# the single catch-all one), their knowledge texts (zept.texts may override them) and their HU
# pseudo-labels all use these names.
BACKGROUND_TISSUES = ("air", "fat", "soft_tissue", "bone")
CATCH_ALL_BACKGROUND = "background_tissue"
BACKGROUND_TEXT_CLASSES = BACKGROUND_TISSUES + (CATCH_ALL_BACKGROUND,)


class ZePTConfigError(ValueError):
    """A dataset.json / zept block problem; the message says key, value and fix."""


def _err(key: str, value, problem: str, fix: str) -> ZePTConfigError:
    return ZePTConfigError(f"dataset.json {key} = {value!r}: {problem}. Fix: {fix}")


def channel_names(dataset_json: dict) -> List[str]:
    """Region/channel names in nnU-Net's output order (dataset.json `labels` order)."""
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise _err("labels", labels, "missing or empty", "add a `labels` dict as nnU-Net requires")
    return [k for k in labels.keys() if k not in IGNORED_LABEL_KEYS]


def is_region_based(dataset_json: dict) -> bool:
    # nnU-Net trains sigmoid regions only when some label lists two or more ids
    labels = dataset_json.get("labels", {})
    return any(isinstance(v, (list, tuple)) and len(v) > 1 for k, v in labels.items()
               if k not in IGNORED_LABEL_KEYS)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def looks_like_tumour(name: str) -> bool:
    words = _norm(name).split("_")
    return any(w.startswith(t) for w in words for t in TUMOUR_WORDS)


@dataclass
class CaseSource:
    name: str
    annotates: List[int]                   # channel indices
    case_prefix: Optional[str] = None
    cases: Optional[List[str]] = None

    def matches(self, case_id: str) -> bool:
        if self.cases is not None and case_id in self.cases:
            return True
        if self.case_prefix is not None and case_id.startswith(self.case_prefix):
            return True
        return False


@dataclass
class ClassRoles:
    """Roles of the output channels.  All indices are channel indices (0-based, regions order)."""

    names: List[str]
    organs: List[int]
    tumours: List[int]
    hosts: Dict[int, List[int]]            # tumour channel -> host organ channels
    zero_shot: List[int]
    texts: Dict[str, str] = field(default_factory=dict)   # class name -> knowledge text override
    sources: List[CaseSource] = field(default_factory=list)
    inferred: bool = False                 # True when read from class names (no zept block)
    # held-out cases (zept.test_sources): read by evaluation only, so not serialised with to_dict
    test_sources: List[CaseSource] = field(default_factory=list)

    @property
    def num_channels(self) -> int:
        return len(self.names)

    @property
    def seen_tumours(self) -> List[int]:
        return [t for t in self.tumours if t not in self.zero_shot]

    def default_annotated(self) -> List[int]:
        """Channels a case annotates when no source claims it: everything but zero-shot tumours."""
        return [c for c in range(self.num_channels) if c not in self.zero_shot]

    def annotated_channels(self, case_id: str) -> List[int]:
        for s in self.sources:
            if s.matches(case_id):
                return [c for c in s.annotates if c not in self.zero_shot]
        return self.default_annotated()

    def host_union_of(self, organ: int) -> List[int]:
        """Tumour channels hosted by `organ`."""
        return [t for t, hs in self.hosts.items() if organ in hs]

    # serialisation: the dict is stored in plans.json (network construction at prediction time)
    # and in checkpoints; it holds only JSON types.
    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "organs": list(self.organs),
            "tumours": list(self.tumours),
            "hosts": {str(k): list(v) for k, v in self.hosts.items()},
            "zero_shot": list(self.zero_shot),
            "texts": dict(self.texts),
            "sources": [{"name": s.name, "annotates": list(s.annotates), "case_prefix": s.case_prefix,
                         "cases": s.cases} for s in self.sources],
            "inferred": self.inferred,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ClassRoles":
        return cls(
            names=list(d["names"]), organs=list(d["organs"]), tumours=list(d["tumours"]),
            hosts={int(k): list(v) for k, v in d["hosts"].items()}, zero_shot=list(d["zero_shot"]),
            texts=dict(d.get("texts", {})),
            sources=[CaseSource(s["name"], list(s["annotates"]), s.get("case_prefix"), s.get("cases"))
                     for s in d.get("sources", [])],
            inferred=bool(d.get("inferred", False)),
        )

    def describe(self) -> str:
        lines = ["ZePT class roles" + (" (inferred from class names; add a `zept` block to dataset.json to "
                                       "set them explicitly)" if self.inferred else " (from dataset.json `zept`)")]
        lines.append("  organs:     " + ", ".join(self.names[c] for c in self.organs))
        for t in self.tumours:
            kind = "zero-shot" if t in self.zero_shot else "seen"
            hosts = ", ".join(self.names[h] for h in self.hosts.get(t, [])) or "(no host organ)"
            lines.append(f"  tumour:     {self.names[t]} [{kind}] in {hosts}")
        for s in self.sources:
            sel = f"prefix {s.case_prefix!r}" if s.case_prefix else f"{len(s.cases or [])} listed cases"
            lines.append(f"  source {s.name} ({sel}) annotates: " + ", ".join(self.names[c] for c in s.annotates))
        for s in self.test_sources:
            sel = f"prefix {s.case_prefix!r}" if s.case_prefix else f"{len(s.cases or [])} listed cases"
            lines.append(f"  test source {s.name} ({sel}) annotates: "
                         + ", ".join(self.names[c] for c in s.annotates))
        return "\n".join(lines)


def _index(names: Sequence[str], name, key: str) -> int:
    if not isinstance(name, str) or name not in names:
        raise _err(key, name, "is not a class of dataset.json `labels`",
                   f"use one of {list(names)} or add the class to `labels`")
    return names.index(name)


def _hosts_from_name(tumour_name: str, organ_names: Dict[int, str]) -> List[int]:
    """Host organs of a tumour named like `<organ>_tumour`: organs whose name shares the stem."""
    words = [w for w in _norm(tumour_name).split("_") if not any(w.startswith(t) for t in TUMOUR_WORDS)]
    sides = ("left", "right", "l", "r")
    stem_words = [w.rstrip("s") for w in words if w not in sides]
    hosts = []
    for c, organ in organ_names.items():
        organ_words = [w.rstrip("s") for w in _norm(organ).split("_") if w not in sides]
        if stem_words and all(any(ow.startswith(sw) or sw.startswith(ow) for ow in organ_words) for sw in stem_words):
            hosts.append(c)
    return hosts


def infer_roles(dataset_json: dict, present_channels: Optional[Iterable[int]] = None) -> ClassRoles:
    """Roles read from class names: a name with a tumour word (tumour, tumor, lesion, cyst,
    nodule, cancer, metastasis, ...) is a tumour hosted by the organs named by the rest of its
    name; everything else is an organ.  A tumour channel absent from `present_channels`
    (channels with voxels in some training label) is zero-shot."""
    names = channel_names(dataset_json)
    organs = [i for i, n in enumerate(names) if not looks_like_tumour(n)]
    tumours = [i for i, n in enumerate(names) if looks_like_tumour(n)]
    organ_names = {i: names[i] for i in organs}
    hosts = {t: _hosts_from_name(names[t], organ_names) for t in tumours}
    present = set(range(len(names))) if present_channels is None else set(present_channels)
    zero_shot = [t for t in tumours if t not in present]
    return ClassRoles(names, organs, tumours, hosts, zero_shot, inferred=True)


def parse_zept_block(dataset_json: dict) -> ClassRoles:
    """Roles from the `zept` block (validated; see module docstring for the format)."""
    names = channel_names(dataset_json)
    block = dataset_json["zept"]
    if not isinstance(block, dict):
        raise _err("zept", block, "must be an object", "see docs/dataset.md for the format")
    known = {"organs", "tumours", "texts", "sources", "test_sources", "text_encoder"}
    for k in block:
        if k not in known:
            raise _err(f"zept.{k}", block[k], "unknown key", f"use only {sorted(known)}")
    organ_list = block.get("organs")
    if not isinstance(organ_list, list) or not organ_list:
        raise _err("zept.organs", organ_list, "must be a non-empty list of class names",
                   "list the organ classes of `labels`")
    organs = [_index(names, o, "zept.organs[]") for o in organ_list]
    tumour_block = block.get("tumours", {})
    if not isinstance(tumour_block, dict):
        raise _err("zept.tumours", tumour_block, "must be an object {name: {host: [...]}}",
                   'write e.g. {"liver_tumour": {"host": ["liver"]}}')
    tumours, hosts, zero_shot = [], {}, []
    texts: Dict[str, str] = {}
    for tname, spec in tumour_block.items():
        t = _index(names, tname, "zept.tumours")
        if t in organs:
            raise _err(f"zept.tumours.{tname}", spec, "the class is also listed in zept.organs",
                       "list each class either as organ or as tumour")
        if not isinstance(spec, dict):
            raise _err(f"zept.tumours.{tname}", spec, "must be an object with a `host` list",
                       '{"host": ["<organ name>"]}')
        host = spec.get("host")
        if isinstance(host, str):
            host = [host]
        if not host:
            raise _err(f"zept.tumours.{tname}.host", host, "a tumour needs at least one host organ",
                       f"name its host organ(s) from zept.organs: {organ_list}")
        hidx = []
        for h in host:
            hi = _index(names, h, f"zept.tumours.{tname}.host[]")
            if hi not in organs:
                raise _err(f"zept.tumours.{tname}.host[]", h, "is not listed in zept.organs",
                           "add it to zept.organs or choose an organ as host")
            hidx.append(hi)
        for k in spec:
            if k not in ("host", "zero_shot", "text"):
                raise _err(f"zept.tumours.{tname}.{k}", spec[k], "unknown key", "use host, zero_shot, text")
        tumours.append(t)
        hosts[t] = hidx
        if not isinstance(spec.get("zero_shot", False), bool):
            raise _err(f"zept.tumours.{tname}.zero_shot", spec["zero_shot"], "must be true or false (a JSON boolean)",
                       "write true or false without quotes")
        if spec.get("zero_shot", False):
            zero_shot.append(t)
        if "text" in spec:
            if not isinstance(spec["text"], str) or not spec["text"].strip():
                raise _err(f"zept.tumours.{tname}.text", spec["text"], "must be a non-empty string",
                           "write a knowledge paragraph or drop the key")
            texts[tname] = spec["text"]
    unassigned = [n for i, n in enumerate(names) if i not in organs and i not in tumours]
    if unassigned:
        raise _err("zept", unassigned, "these classes of `labels` are neither in zept.organs nor in zept.tumours",
                   "give every class a role")
    for key in ("texts", "sources", "test_sources"):
        if key in block and not isinstance(block[key], dict):
            raise _err(f"zept.{key}", block[key], "must be an object keyed by name",
                       '{"<class name>": "<text>"}' if key == "texts" else '{"<source>": {"case_prefix": ..., "annotates": [...]}}')
    if "text_encoder" in block and (not isinstance(block["text_encoder"], str) or not block["text_encoder"].strip()):
        raise _err("zept.text_encoder", block["text_encoder"], "must be a non-empty encoder spec string",
                   'e.g. "minilm" or "open_clip:ViT-B-32:/path/to/open_clip_model.safetensors" (docs/knowledge.md)')
    for cname, text in (block.get("texts") or {}).items():
        # the background tissue queries have texts too, and may be overridden
        if cname not in BACKGROUND_TEXT_CLASSES:
            _index(names, cname, "zept.texts")
        if not isinstance(text, str) or not text.strip():
            raise _err(f"zept.texts.{cname}", text, "must be a non-empty string", "write a knowledge paragraph")
        texts[cname] = text
    sources = _parse_sources(block, "sources", names, zero_shot)
    test_sources = _parse_sources(block, "test_sources", names, zero_shot)
    return ClassRoles(names, organs, tumours, hosts, zero_shot, texts=texts, sources=sources,
                      test_sources=test_sources)


def _parse_sources(block: dict, key: str, names: Sequence[str], zero_shot: Sequence[int]) -> List[CaseSource]:
    """`zept.sources` (training cases) or `zept.test_sources` (held-out cases, which may annotate
    zero-shot classes only)."""
    sources = []
    for sname, spec in (block.get(key) or {}).items():
        if not isinstance(spec, dict):
            raise _err(f"zept.{key}.{sname}", spec, "must be an object", '{"case_prefix": "...", "annotates": [...]}')
        ann = spec.get("annotates")
        if not isinstance(ann, list) or not ann:
            raise _err(f"zept.{key}.{sname}.annotates", ann, "a case source must annotate at least one class",
                       "list the classes this source's labels contain, or remove the source")
        aidx = [_index(names, a, f"zept.{key}.{sname}.annotates[]") for a in ann]
        prefix, cases = spec.get("case_prefix"), spec.get("cases")
        if prefix is None and cases is None:
            raise _err(f"zept.{key}.{sname}", spec, "says neither `case_prefix` nor `cases`",
                       "add a case-id prefix or a list of case ids")
        for k in spec:
            if k not in ("annotates", "case_prefix", "cases"):
                raise _err(f"zept.{key}.{sname}.{k}", spec[k], "unknown key", "use annotates, case_prefix, cases")
        if key == "sources" and all(a in zero_shot for a in aidx):
            raise _err(f"zept.sources.{sname}.annotates", ann, "lists only zero-shot classes, so the source "
                       "annotates nothing that is trained", "list the classes its labels really contain, or "
                       "move the source to zept.test_sources if its cases are held-out test cases")
        sources.append(CaseSource(sname, aidx, prefix, list(cases) if cases is not None else None))
    return sources


def roles_from_dataset_json(dataset_json: dict, present_channels: Optional[Iterable[int]] = None) -> ClassRoles:
    """Validated roles: from the `zept` block if there is one, else inferred from class names.

    `present_channels`: channels that have voxels in at least one training label, when known.
    With a block, a zero-shot class found among them is an error; without one, the tumour
    channels missing from them become zero-shot.
    """
    if "zept" in dataset_json:
        roles = parse_zept_block(dataset_json)
        if present_channels is not None:
            present = set(present_channels)
            for z in roles.zero_shot:
                if z in present:
                    raise _err(f"zept.tumours.{roles.names[z]}.zero_shot", True,
                               "this zero-shot class has voxels in the training labels",
                               "remove its voxels from labelsTr (or relabel them as the host organ), "
                               "or declare the class as seen (zero_shot: false)")
    else:
        roles = infer_roles(dataset_json, present_channels)
    for t in roles.tumours:
        if not roles.hosts.get(t):
            raise _err(f"labels.{roles.names[t]}", roles.names[t],
                       "tumour class without a host organ (no organ class matches its name)",
                       'add a `zept` block with {"tumours": {"%s": {"host": ["<organ>"]}}}' % roles.names[t])
    if not roles.organs:
        raise _err("labels", roles.names, "no organ class", "a ZePT dataset needs at least one organ class")
    return roles


def check_region_based(dataset_json: dict) -> None:
    if not is_region_based(dataset_json):
        raise _err("labels", dataset_json.get("labels"),
                   "the dataset is not region-based (ZePT needs one sigmoid channel per class, organs "
                   "including their tumours)",
                   "convert it with `nnunetv2_zept convert -d <ID> -o <NEW_ID>` and plan/preprocess the new dataset")
