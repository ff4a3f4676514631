"""Data-set helpers shared by the benchmarks: the synthetic data set with a knowledge text for
every class, so that the ZePT trainers can embed them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List


def add_missing_texts(dataset_json_path: Path) -> List[str]:
    """Give every class without a built-in knowledge text a `zept.texts` entry (tumours: the
    synthetic generator's description of the type; organs: a generic sentence).  Returns the
    names it added; a file needing nothing is left unchanged."""
    from nnunetv2_zept.knowledge.texts import MissingKnowledgeTextError, text_for_class
    from nnunetv2_zept.synthetic import TUMOUR_TYPES

    dj = json.loads(dataset_json_path.read_text())
    zept = dj.setdefault("zept", {})
    texts = zept.setdefault("texts", {})
    added = []
    for name in dj["labels"]:
        if name in ("background", "ignore"):
            continue
        try:
            text_for_class(name, texts)
        except MissingKnowledgeTextError:
            if name in TUMOUR_TYPES:
                hosts = ", ".join(TUMOUR_TYPES[name].hosts)
                texts[name] = f"A lesion in the {hosts} on contrast-enhanced CT: {TUMOUR_TYPES[name].description}."
            else:
                texts[name] = f"The {name.replace('_', ' ')}, an organ seen on contrast-enhanced abdominal CT."
            added.append(name)
    if added:
        dataset_json_path.write_text(json.dumps(dj, indent=2))
    return added
