"""Built-in knowledge texts (`texts.json` beside this file) and the lookup of a dataset's class
names in them.

Each built-in class has a canonical name (e.g. `kidney_tumour`), a kind (organ, tumour or
background) and a paragraph describing location and CT appearance (HU), shape and internal
structure / typical imaging signs.  Class names of real datasets resolve to a canonical name
through synonyms and normalisation (`knowledge.names`).  `dataset.json` may add or override a
text per class (`zept.texts.<class>` or `zept.tumours.<class>.text`, collected in
`ClassRoles.texts`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from nnunetv2_zept.knowledge.names import Key, candidate_keys, name_key, without_side
from nnunetv2_zept.roles import ZePTConfigError

TEXTS_FILE = Path(__file__).resolve().parent / "texts.json"
KINDS = ("organ", "tumour", "background")


class MissingKnowledgeTextError(ZePTConfigError):
    """A class has neither a built-in knowledge text nor one in dataset.json."""


@dataclass(frozen=True)
class KnowledgeEntry:
    canonical: str
    kind: str
    synonyms: Tuple[str, ...]
    text: str


@dataclass(frozen=True)
class KnowledgeTable:
    entries: Dict[str, KnowledgeEntry]
    by_key: Dict[Key, str]


def _load_table(path: Path) -> KnowledgeTable:
    data = json.loads(path.read_text(encoding="utf-8"))
    classes = data.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise ValueError(f"{path}: expected a non-empty `classes` object")
    entries, by_key = {}, {}
    for canonical, spec in classes.items():
        text, kind, synonyms = spec.get("text"), spec.get("kind"), spec.get("synonyms", [])
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}: class {canonical!r} has no text")
        if kind not in KINDS:
            raise ValueError(f"{path}: class {canonical!r} has kind {kind!r}, expected one of {KINDS}")
        entries[canonical] = KnowledgeEntry(canonical, kind, tuple(synonyms), text.strip())
        for phrase in (canonical, *synonyms):
            key = name_key(phrase)
            other = by_key.setdefault(key, canonical)
            if other != canonical:   # a phrase must never be claimed by two classes
                raise ValueError(f"{path}: synonym {phrase!r} of {canonical!r} collides with class {other!r}")
    return KnowledgeTable(entries, by_key)


@lru_cache(maxsize=1)
def builtin_table() -> KnowledgeTable:
    return _load_table(TEXTS_FILE)


def builtin_class_names() -> List[str]:
    return list(builtin_table().entries)


def builtin_entry(canonical: str) -> KnowledgeEntry:
    return builtin_table().entries[canonical]


def resolve_class_name(name: str) -> Optional[str]:
    """Canonical built-in class for a dataset class name, or None when nothing matches.

    Tries the literal words first, then organ adjectives as nouns ("renal mass" -> kidney
    tumour) and generic tumour words ("pancreas cancer" -> pancreatic tumour); a side word is
    dropped only for tumours, whose texts are not sided ("left kidney tumour" -> kidney tumour).
    """
    table = builtin_table()
    # "Postcava (IVC)": the name with and without its parenthesis, then the parenthesis alone
    variants = [name, re.sub(r"\(.*?\)", " ", name)] + re.findall(r"\((.*?)\)", name)
    keys = [k for v in variants for k in candidate_keys(v)]
    for key in keys:
        if key in table.by_key:
            return table.by_key[key]
    for key in keys:
        hit = table.by_key.get(without_side(key))
        if hit is not None and table.entries[hit].kind == "tumour":
            return hit
    return None


def _check_override(name: str, text) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ZePTConfigError(f"dataset.json zept.texts.{name} = {text!r}: must be a non-empty string. "
                              "Fix: write a knowledge paragraph (location and CT appearance, shape, "
                              "internal structure) or remove the key")
    return text.strip()


def text_for_class(name: str, overrides: Optional[Mapping[str, str]] = None) -> str:
    """Knowledge text for a dataset class: the dataset.json override if there is one (by exact
    class name, else by an override key naming the same built-in class), else the built-in text.

    Raises MissingKnowledgeTextError naming the class when neither exists; there is no fallback
    text, because a wrong or empty text silently degrades zero-shot segmentation.
    """
    overrides = dict(overrides or {})
    if name in overrides:
        return _check_override(name, overrides[name])
    canonical = resolve_class_name(name)
    if canonical is not None:
        for key, text in overrides.items():
            if resolve_class_name(key) == canonical:
                return _check_override(key, text)
        return builtin_entry(canonical).text
    raise MissingKnowledgeTextError(
        f"No knowledge text for class {name!r}: it matches none of the built-in classes and dataset.json "
        f"gives no text for it. Fix: add `zept.texts.{name}` to dataset.json, e.g. "
        f'"zept": {{"texts": {{"{name}": "<where it lies and its CT appearance in HU; its shape; its internal '
        f'structure or typical imaging signs>"}}}}, or rename the class to a built-in one '
        f"(see `nnunetv2_zept texts --list`). Built-in classes: {', '.join(builtin_class_names())}")


def describe_class(name: str, overrides: Optional[Mapping[str, str]] = None) -> Dict[str, Optional[str]]:
    """Where a class's text comes from: {"name", "canonical", "source", "text"} (for the CLI)."""
    overrides = dict(overrides or {})
    canonical = resolve_class_name(name)
    text = text_for_class(name, overrides)
    from_override = name in overrides or (canonical is not None and text != builtin_entry(canonical).text)
    return {"name": name, "canonical": canonical,
            "source": "dataset.json" if from_override else "built-in", "text": text}
