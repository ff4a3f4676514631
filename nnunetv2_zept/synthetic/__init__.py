"""Synthetic pan-tumour abdominal CT in nnU-Net raw format (see docs/synthetic-data.md).

    from nnunetv2_zept.synthetic import make_synthetic_dataset
    path = make_synthetic_dataset("/data/nnUNet_raw", dataset_id=990, preset="demo", seed=0)
"""
from .anatomy import ORGAN_IDS, ORGANS
from .case import SyntheticCase, default_label_ids, make_case
from .dataset import PRESETS, label_regions, make_synthetic_dataset, plan_cases, zept_block
from .tumours import DEFAULT_SEEN, DEFAULT_ZERO_SHOT, TUMOUR_TYPES, TumourType


def slice_figure(*args, **kwargs):
    """See `nnunetv2_zept.synthetic.figures.slice_figure` (imported lazily: matplotlib)."""
    from .figures import slice_figure as _sf
    return _sf(*args, **kwargs)


__all__ = ["make_synthetic_dataset", "make_case", "SyntheticCase", "PRESETS", "ORGANS", "ORGAN_IDS",
           "TUMOUR_TYPES", "TumourType", "DEFAULT_SEEN", "DEFAULT_ZERO_SHOT", "default_label_ids",
           "label_regions", "zept_block", "plan_cases", "slice_figure"]
