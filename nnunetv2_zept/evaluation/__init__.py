"""Evaluation of ZePT predictions: DSC, NSD, voxel AUROC/FPR95 and case-level detection.

`evaluate_folder` is imported lazily so that `nnunetv2_zept.tumour_score` can use the mask
helpers of this package without a circular import.
"""

__all__ = ["evaluate_folder", "RocHistogram", "dice", "normalised_surface_distance"]


def __getattr__(name):
    if name == "evaluate_folder":
        from nnunetv2_zept.evaluation.folder_evaluation import evaluate_folder
        return evaluate_folder
    if name == "RocHistogram":
        from nnunetv2_zept.evaluation.histogram_roc import RocHistogram
        return RocHistogram
    if name in ("dice", "normalised_surface_distance"):
        from nnunetv2_zept.evaluation import overlap
        return getattr(overlap, name)
    raise AttributeError(f"module 'nnunetv2_zept.evaluation' has no attribute {name!r}")
