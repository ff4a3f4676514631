"""Which output channels have voxels in the training labels (to validate zero-shot classes)."""
import os
from typing import List

from batchgenerators.utilities.file_and_folder_operations import load_pickle


def present_channels(preprocessed_config_folder: str, label_manager) -> List[int]:
    """Channels (regions, in output order) with at least one voxel in some preprocessed case.

    Uses the foreground locations nnU-Net's preprocessor already stores in each case's
    properties file, so no segmentation has to be read.
    """
    regions = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    keys = [tuple(r) if isinstance(r, (list, tuple)) else r for r in regions]
    present = set()
    for f in sorted(os.listdir(preprocessed_config_folder)):
        if not f.endswith(".pkl"):
            continue
        locs = load_pickle(os.path.join(preprocessed_config_folder, f)).get("class_locations", {})
        for i, k in enumerate(keys):
            v = locs.get(k)
            if v is None and isinstance(k, tuple) and len(k) == 1:
                v = locs.get(k[0])
            if v is not None and len(v) > 0:
                present.add(i)
        if len(present) == len(keys):
            break
    return sorted(present)
