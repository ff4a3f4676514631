"""Realistic nnU-Net plans dicts for tests and benchmarks, made the way nnU-Net's planner makes them.

The network topology (kernel sizes, strides, number of stages, patch size rounding) comes from
nnU-Net's own `get_pool_and_conv_props` with the planner's constants, and the architecture
kwargs are laid out exactly as `ExperimentPlanner.get_plans_for_configuration` (PlainConvUNet)
and `ResEncUNetPlanner` (ResidualEncoderUNet) write them into plans.json.  Only the patch
size is chosen by the caller instead of being derived from a GPU memory target, so that tests
and benchmarks can use small or fixed patches.
"""
from __future__ import annotations

from typing import Sequence, Tuple

from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
_MIN_EDGE = 4                      # ExperimentPlanner.UNet_featuremap_min_edge_length
_PLAIN_BLOCKS = 2                  # ExperimentPlanner.UNet_blocks_per_stage_encoder/decoder
_RESENC_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)


def make_configuration(patch_size: Sequence[int], spacing: Sequence[float], arch: str = "plain",
                       base_features: int = 32, max_features: int | None = None,
                       batch_size: int = 2) -> dict:
    """One plans.json configuration (e.g. "3d_fullres") for `patch_size` at `spacing`.

    arch: "plain" (PlainConvUNet) or "resenc" (ResidualEncoderUNet).  The patch size is rounded
    by nnU-Net's topology code exactly as the planner would round it.
    """
    if arch not in ("plain", "resenc"):
        raise ValueError(f"arch={arch!r}: use 'plain' or 'resenc'")
    dim = len(spacing)
    if dim not in (2, 3) or len(patch_size) != dim:
        raise ValueError(f"patch_size {tuple(patch_size)} and spacing {tuple(spacing)} must both have 2 or 3 entries")
    _, strides, kernels, patch, _ = get_pool_and_conv_props(list(spacing), list(patch_size), _MIN_EDGE, 999999)
    n = len(strides)
    if max_features is None:
        max_features = 512 if dim == 2 else 320
    feats = [min(max_features, base_features * 2 ** i) for i in range(n)]
    conv = "torch.nn.modules.conv.Conv%dd" % dim
    norm = "torch.nn.modules.instancenorm.InstanceNorm%dd" % dim
    kwargs = {
        "n_stages": n, "features_per_stage": feats, "conv_op": conv,
        "kernel_sizes": [list(k) for k in kernels], "strides": [list(s) for s in strides],
    }
    if arch == "plain":
        kwargs.update({"n_conv_per_stage": [_PLAIN_BLOCKS] * n, "n_conv_per_stage_decoder": [_PLAIN_BLOCKS] * (n - 1)})
        cls = PLAIN
    else:
        kwargs.update({"n_blocks_per_stage": list(_RESENC_BLOCKS[:n]), "n_conv_per_stage_decoder": [1] * (n - 1)})
        cls = RESENC
    kwargs.update({"conv_bias": True, "norm_op": norm, "norm_op_kwargs": {"eps": 1e-5, "affine": True},
                   "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                   "nonlin_kwargs": {"inplace": True}})
    return {
        "data_identifier": "nnUNetPlans_%dd_fullres" % dim, "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch_size, "patch_size": [int(p) for p in patch], "median_image_size_in_voxels": [int(p) * 2 for p in patch],
        "spacing": [float(s) for s in spacing], "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False], "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {"network_class_name": cls, "arch_kwargs": kwargs,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": True,
    }


def make_plans(patch_size: Sequence[int], spacing: Sequence[float], arch: str = "plain",
               configuration: str = "3d_fullres", **kw) -> dict:
    """A whole plans dict holding one configuration (for `PlansManager(plans)`)."""
    return {
        "dataset_name": "Dataset999_ZePTExample", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [float(s) for s in spacing],
        "original_median_shape_after_transp": [int(p) * 2 for p in patch_size],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(range(len(spacing))),
        "transpose_backward": list(range(len(spacing))),
        "configurations": {configuration: make_configuration(patch_size, spacing, arch, **kw)},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"max": 3000.0, "mean": 50.0, "median": 60.0, "min": -1024.0,
                                                              "percentile_00_5": -1000.0, "percentile_99_5": 1500.0, "std": 200.0}},
    }


def managers(plans: dict, configuration: str = "3d_fullres") -> Tuple[object, object]:
    """(PlansManager, ConfigurationManager) as the trainer and predictor get them."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    pm = PlansManager(plans)
    return pm, pm.get_configuration(configuration)


# A small abdominal label set in the project's region convention (organs include their tumours),
# used by tests and the benchmark: 3 organs, one seen and one zero-shot tumour.
EXAMPLE_DATASET_JSON = {
    "labels": {"background": 0, "liver": [1, 2], "liver_tumour": 2, "kidney": [3, 4], "kidney_cyst": 4,
               "spleen": 5},
    "regions_class_order": [1, 2, 3, 4, 5],
    "zept": {"organs": ["liver", "kidney", "spleen"],
             "tumours": {"liver_tumour": {"host": ["liver"]},
                         "kidney_cyst": {"host": ["kidney"], "zero_shot": True}}},
}


def example_roles():
    """ClassRoles of EXAMPLE_DATASET_JSON (channels: liver, liver_tumour, kidney, kidney_cyst, spleen)."""
    from nnunetv2_zept.roles import roles_from_dataset_json
    return roles_from_dataset_json(EXAMPLE_DATASET_JSON)
