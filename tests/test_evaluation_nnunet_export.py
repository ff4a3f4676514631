"""The probability layout assumed by the evaluation is the one nnU-Net 2.8.1 really writes:
predictions exported by nnU-Net's own `export_prediction_from_logits` (with cropping and a
transposition to undo) line up voxel for voxel with the reference label files."""
import json

import numpy as np
import pytest
import torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.export_prediction import export_prediction_from_logits
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_zept.evaluation import evaluate_folder

from test_evaluation_folder import DATASET, reference, write_image

TRANSPOSE = [0, 2, 1]                       # nnU-Net axis order (z, x, y) during inference


def plans_for(spacing_transposed, patch):
    return {
        "dataset_name": "Dataset999_Synthetic", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
        "label_manager": "LabelManager", "transpose_forward": TRANSPOSE, "transpose_backward": TRANSPOSE,
        "configurations": {"3d_fullres": {
            "data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2, "patch_size": patch,
            "spacing": spacing_transposed, "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []},
            "batch_dice": True}},
    }


def test_nnunet_export_layout_matches_reference(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps(DATASET))
    rng = np.random.default_rng(0)
    for case, kind in (("E1", "liver"), ("E2", "pancreas"), ("E3", None)):
        lab = reference(kind, shift=1)
        write_image(lab, str(ref_dir / f"{case}.nii.gz"))
        _, props = SimpleITKIO().read_seg(str(ref_dir / f"{case}.nii.gz"))
        lab_t = lab.transpose(TRANSPOSE)
        bbox = [[1, 15], [1, 30], [2, 29]]          # crop in transposed order; all foreground inside
        crop = lab_t[tuple(slice(a, b) for a, b in bbox)]
        props.update({"shape_before_cropping": lab_t.shape, "bbox_used_for_cropping": bbox,
                      "shape_after_cropping_and_before_resampling": crop.shape})
        logits = []
        for name in ("liver", "liver_tumour", "spleen", "pancreas", "pancreas_tumour"):
            v = DATASET["labels"][name]
            inside = np.isin(crop, v if isinstance(v, list) else [v])
            logits.append(np.where(inside, 4.0, -4.0) + rng.normal(0, 0.5, crop.shape))
        logits = torch.from_numpy(np.stack(logits).astype(np.float32))
        pm = PlansManager(plans_for([props["spacing"][i] for i in TRANSPOSE], list(crop.shape)))
        export_prediction_from_logits(logits, props, pm.get_configuration("3d_fullres"), pm, DATASET,
                                      str(pred_dir / case), save_probabilities=True, num_threads_torch=1)
    summary = evaluate_folder(str(ref_dir), str(pred_dir), str(tmp_path / "dataset.json"))
    pc = summary["per_class"]
    for organ in ("liver", "spleen", "pancreas"):
        assert pc[organ]["DSC"] == 1.0 and pc[organ]["NSD"] == 1.0
    # the tumour probabilities line up with the reference tumours voxel for voxel
    assert summary["per_case"]["E1"]["liver_tumour"]["AUROC_body"] == 1.0
    assert summary["per_case"]["E2"]["pancreas_tumour"]["AUROC_body"] == 1.0
    assert pc["liver_tumour"]["detection"]["AUROC"] == 1.0 and pc["pancreas_tumour"]["detection"]["AUROC"] == 1.0
    assert pc["liver_tumour"]["DSC_tumour_cases"] == 1.0
