"""Medical knowledge texts, text encoders and the per-dataset embedding cache.

This package is imported by the network and the trainers; it stays import-light (no torch at
import time).  Names:

    BACKGROUND_TISSUES        background tissue classes of the network's background queries
    CATCH_ALL_BACKGROUND      the single background class (background_queries == "one")
    resolve_class_name(name)  -> canonical built-in class or None
    text_for_class(name, overrides)            -> knowledge text (error if none)
    class_text_embeddings(class_names, overrides, cache_folder, encoder_spec) -> TextEmbeddings
    dataset_text_classes(roles)                -> classes encoded for a dataset
"""
from typing import List

from nnunetv2_zept.roles import BACKGROUND_TISSUES, CATCH_ALL_BACKGROUND

_LAZY = {
    "resolve_class_name": "nnunetv2_zept.knowledge.texts",
    "text_for_class": "nnunetv2_zept.knowledge.texts",
    "builtin_class_names": "nnunetv2_zept.knowledge.texts",
    "MissingKnowledgeTextError": "nnunetv2_zept.knowledge.texts",
    "class_text_embeddings": "nnunetv2_zept.knowledge.cache",
    "TextEmbeddings": "nnunetv2_zept.knowledge.cache",
    "get_text_encoder": "nnunetv2_zept.knowledge.selection",
    "resolve_encoder_spec": "nnunetv2_zept.knowledge.selection",
    "ENV_VAR": "nnunetv2_zept.knowledge.selection",
    "DATASET_JSON_KEY": "nnunetv2_zept.knowledge.selection",
    "TextEncoder": "nnunetv2_zept.knowledge.encoders",
    "TextEncoderError": "nnunetv2_zept.knowledge.encoders",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nnunetv2_zept.knowledge' has no attribute {name!r}")


def dataset_text_classes(roles, include_catch_all: bool = True) -> List[str]:
    """Classes whose texts are encoded for a dataset, in the network's query order: organ
    channels, background tissues, tumour channels, then the catch-all background (used only
    when the network has one background query)."""
    from nnunetv2_zept.roles import query_classes

    names = query_classes(roles, BACKGROUND_TISSUES)
    if include_catch_all:
        names.append(CATCH_ALL_BACKGROUND)
    return names


__all__ = ["BACKGROUND_TISSUES", "CATCH_ALL_BACKGROUND", "dataset_text_classes", *_LAZY]
