"""NSD tolerances (mm) per class.

Defaults follow the Medical Segmentation Decathlon, which set one tolerance per task and used
it for every class of that task (so the liver tumour shares the liver's 7 mm):
liver 7, lung 2, pancreas 5, hepatic vessel 3, spleen 3, colon 4.  The class name decides
(case-insensitive word match, hepatic vessel tested before liver); every other class, organ or
tumour, gets DEFAULT_TOLERANCE_MM = 2 mm, the tightest MSD value, because small lesions and
thin organs (adrenal glands, vessels, ducts) need a tight tolerance for NSD to mean anything.
Users override any class with `name=mm`.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Sequence

DEFAULT_TOLERANCE_MM = 2.0

# (words that must all appear in the class name, tolerance); first match wins
MSD_TOLERANCES_MM = (
    (("hepatic", "vessel"), 3.0),
    (("liver",), 7.0),
    (("lung",), 2.0),
    (("pancreas",), 5.0),
    (("spleen",), 3.0),
    (("colon",), 4.0),
)


def _words(name: str):
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).split()


def default_tolerance(name: str, default_mm: float = DEFAULT_TOLERANCE_MM) -> float:
    words = _words(name)
    for keys, tol in MSD_TOLERANCES_MM:
        if all(any(w.startswith(k) for w in words) for k in keys):
            return tol
    return float(default_mm)


def resolve_tolerances(class_names: Sequence[str], overrides: Optional[Mapping[str, float]] = None,
                       default_mm: float = DEFAULT_TOLERANCE_MM) -> Dict[str, float]:
    """Tolerance (mm) for every class; `overrides` must name existing classes and be > 0."""
    overrides = dict(overrides or {})
    unknown = [k for k in overrides if k not in class_names]
    if unknown:
        raise ValueError(f"NSD tolerance given for unknown class(es) {unknown}; classes of dataset.json are "
                         f"{list(class_names)}")
    out = {}
    for name in class_names:
        tol = float(overrides[name]) if name in overrides else default_tolerance(name, default_mm)
        if not tol > 0:
            raise ValueError(f"NSD tolerance for {name!r} = {tol!r} mm: must be > 0")
        out[name] = tol
    return out


def parse_tolerance_args(items: Optional[Sequence[str]]) -> Dict[str, float]:
    """Parse CLI items like `liver=7` `pancreas_tumour=2.5`."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--tolerance {item!r}: write CLASS=MM, e.g. liver=7") from None
    return out
