"""Class-name normalisation: turns the many spellings real datasets use ("Kidney Tumor",
"kidney_right", "R kidney", "lung nodules", "Gall Bladder", "esophagus") into a comparable key.

A key is the set of normalised words of a name, so word order, case, separators, British or
American spelling, plural and the left/right abbreviations do not matter.  Resolution against
the built-in table happens in `knowledge.texts`; this module only knows words.
"""
from __future__ import annotations

import re
from typing import FrozenSet, Iterable, List

Key = FrozenSet[str]

STOPWORDS = frozenset({"of", "the", "and", "with", "in", "a", "an", "to"})

# one spelling per word: American -> British, abbreviations -> words, plural forms that the
# generic plural rule gets wrong
WORD_MAP = {
    "tumor": "tumour", "tumors": "tumour", "tumours": "tumour",
    "esophagus": "oesophagus", "esophageal": "oesophageal", "oesophagi": "oesophagus",
    "coeliac": "celiac",
    "metastases": "metastasis", "metastatic": "metastasis", "mets": "metastasis",
    "carcinomas": "carcinoma", "neoplasms": "neoplasm", "masses": "mass", "lesions": "lesion",
    "cancers": "cancer", "cysts": "cyst", "nodules": "nodule",
    "l": "left", "lt": "left", "lft": "left", "sinister": "left",
    "r": "right", "rt": "right", "rgt": "right", "dexter": "right",
    "haemorrhagic": "hemorrhagic",
}
SIDE_WORDS = frozenset({"left", "right"})

# words after which the plural rule must not strip a trailing "s"
_NO_SINGULAR_ENDINGS = ("ss", "us", "is", "as", "ys", "os")

# adjective -> organ noun; applied only when the literal name has no match
ADJECTIVE_TO_ORGAN = {
    "renal": "kidney", "hepatic": "liver", "pancreatic": "pancreas", "pulmonary": "lung",
    "splenic": "spleen", "gastric": "stomach", "oesophageal": "oesophagus", "colonic": "colon",
    "colorectal": "colon", "vesical": "bladder", "suprarenal": "adrenal", "prostatic": "prostate",
    "duodenal": "duodenum", "rectal": "rectum", "cystic": "cyst",
}

# generic words for "a tumour of this organ"; applied only when the literal name has no match.
# cyst, nodule and metastasis are deliberately absent: they are different classes.
GENERIC_TUMOUR_WORDS = frozenset({"tumour", "lesion", "cancer", "carcinoma", "neoplasm", "mass",
                                  "malignancy", "neoplasia", "adenocarcinoma"})


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith(_NO_SINGULAR_ENDINGS):
        return word[:-1]
    return word


def words_of(name: str) -> List[str]:
    """Normalised words of a class name, in order."""
    if not isinstance(name, str):
        raise TypeError(f"class name must be a string, got {type(name).__name__}: {name!r}")
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)          # camelCase -> camel Case
    spaced = re.sub(r"[^a-z0-9]+", " ", spaced.lower())
    spaced = re.sub(r"\bgall bladder\b", "gallbladder", spaced)
    words = []
    for w in spaced.split():
        w = WORD_MAP.get(w, w)
        w = WORD_MAP.get(_singular(w), _singular(w))
        if w not in STOPWORDS:
            words.append(w)
    return words


def name_key(name: str) -> Key:
    return frozenset(words_of(name))


def _replace(key: Key, mapping) -> Key:
    return frozenset(mapping.get(w, w) for w in key)


def candidate_keys(name: str) -> Iterable[Key]:
    """Keys to try for `name`, from literal to increasingly generous: literal words, organ
    adjectives as nouns ("renal" -> "kidney"), generic tumour words as "tumour"."""
    key = name_key(name)
    yield key
    adj = _replace(key, ADJECTIVE_TO_ORGAN)
    yield adj
    to_tumour = {w: "tumour" for w in GENERIC_TUMOUR_WORDS}
    yield _replace(key, to_tumour)
    yield _replace(adj, to_tumour)


def without_side(key: Key) -> Key:
    return frozenset(w for w in key if w not in SIDE_WORDS)
