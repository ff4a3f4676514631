"""Text embeddings of every query's knowledge text, for a training run."""
from typing import Callable, Optional

from nnunetv2_zept.roles import ClassRoles


def text_embeddings_for_training(roles: ClassRoles, switches: dict, cache_folder: Optional[str],
                                 dataset_json: dict, log: Callable = print):
    """Embeddings in the network's query order (organs, background tissues, tumours), computed
    once per dataset and cached next to the preprocessed data (`nnunetv2_zept.knowledge`)."""
    from nnunetv2_zept.architectures import query_class_names
    from nnunetv2_zept.knowledge import class_text_embeddings

    names = query_class_names({"roles": roles.to_dict(), "switches": switches})
    emb = class_text_embeddings(names, roles.texts, cache_folder=cache_folder, dataset_json=dataset_json)
    log(f"ZePT text embeddings: {len(names)} classes, encoder {emb.encoder}, {emb.embeddings.shape[1]}-d"
        + (" (from cache)" if getattr(emb, "from_cache", False) else ""))
    return emb
