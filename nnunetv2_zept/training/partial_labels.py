"""Which (case, channel) pairs carry a loss in a training batch."""
from typing import Iterable, Sequence

import torch

from nnunetv2_zept.roles import ClassRoles


def validity_mask(keys: Sequence[str], roles: ClassRoles, trained_channels: Iterable[int]) -> torch.Tensor:
    """[B, C] float mask: 1 where channel c is trained in this stage AND case b's source annotates it.

    Zero-shot tumour channels are never valid (they have no voxels in any training label).
    """
    trained = set(trained_channels)
    m = torch.zeros(len(keys), roles.num_channels)
    for b, key in enumerate(keys):
        for c in roles.annotated_channels(str(key)):
            if c in trained:
                m[b, c] = 1.0
    return m
