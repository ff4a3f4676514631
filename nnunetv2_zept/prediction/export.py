"""From the predictor's logits (preprocessed space) to arrays and images in the INPUT's geometry.

The label map and the per-class probabilities come from nnU-Net's own
`convert_predicted_logits_to_segmentation_with_correct_shape` (resampling, sigmoid/softmax,
`regions_class_order` painting, crop reversal, transpose), so they are exactly what
`nnUNetv2_predict` exports.  The anomaly channel goes through the same steps in the same
order (probability resampling of the logit, sigmoid, crop reversal with 0 outside the crop,
transpose back).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import SimpleITK as sitk
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager


@dataclass
class PredictionArrays:
    """Arrays in the input's voxel grid, numpy order (z, y, x)."""

    segmentation: np.ndarray              # [z, y, x] uint8/uint16 label map (nnU-Net export)
    probabilities: np.ndarray             # [C, z, y, x] float32, one per output channel
    channel_names: List[str]              # names of the probability channels
    anomaly: Optional[np.ndarray] = None  # [z, y, x] float32 in [0, 1], or None


def probability_channel_names(label_manager: LabelManager, dataset_json: dict) -> List[str]:
    """Names of the probability channels nnU-Net returns: regions in `labels` order (no
    background), or, for softmax models, every label sorted by value (background first)."""
    labels = dataset_json["labels"]
    if label_manager.has_regions:
        return [k for k in labels if k not in ("background", "ignore")]
    by_value = {}
    for name, value in labels.items():
        if name == "ignore":
            continue
        by_value[int(value if not isinstance(value, (list, tuple)) else value[0])] = name
    return [by_value[v] for v in label_manager.all_labels]


def _resample_to_original_grid(logits: torch.Tensor, plans_manager: PlansManager,
                               configuration_manager: ConfigurationManager, properties: dict):
    """Same resampling call as nnU-Net's export (logits of the preprocessed grid -> cropped input grid)."""
    spacing_transposed = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    shape = properties["shape_after_cropping_and_before_resampling"]
    current_spacing = configuration_manager.spacing if len(configuration_manager.spacing) == len(shape) else \
        [spacing_transposed[0], *configuration_manager.spacing]
    return configuration_manager.resampling_fn_probabilities(logits, shape, current_spacing, spacing_transposed)


def anomaly_logit_to_input_grid(anomaly_logit: torch.Tensor, plans_manager: PlansManager,
                                configuration_manager: ConfigurationManager, properties: dict) -> np.ndarray:
    """[1, *preprocessed shape] logit -> [z, y, x] float32 anomaly score in [0, 1] on the input grid."""
    resampled = _resample_to_original_grid(anomaly_logit, plans_manager, configuration_manager, properties)
    resampled = torch.as_tensor(np.asarray(resampled) if not isinstance(resampled, torch.Tensor) else resampled)
    score = torch.sigmoid(resampled.float()).numpy()
    full = np.zeros((1, *properties["shape_before_cropping"]), dtype=np.float32)
    full = insert_crop_into_image(full, score, properties["bbox_used_for_cropping"])
    return np.ascontiguousarray(full[0].transpose(plans_manager.transpose_backward))


def logits_to_input_grid(logits: torch.Tensor, with_anomaly: bool, plans_manager: PlansManager,
                         configuration_manager: ConfigurationManager, label_manager: LabelManager,
                         dataset_json: dict, properties: dict) -> PredictionArrays:
    """Split off the anomaly channel (last) and bring everything to the input's voxel grid."""
    heads = label_manager.num_segmentation_heads
    expected = heads + int(with_anomaly)
    if logits.shape[0] != expected:
        raise RuntimeError(f"logits have {logits.shape[0]} channels, expected {expected}")
    seg_logits = logits[:heads]
    segmentation, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
        seg_logits, plans_manager, configuration_manager, label_manager, properties, return_probabilities=True)
    anomaly = None
    if with_anomaly:
        anomaly = anomaly_logit_to_input_grid(logits[heads:], plans_manager, configuration_manager, properties)
    return PredictionArrays(segmentation=np.asarray(segmentation),
                            probabilities=np.asarray(probabilities, dtype=np.float32),
                            channel_names=probability_channel_names(label_manager, dataset_json),
                            anomaly=anomaly)


def image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A SimpleITK image of `array` ([z, y, x]) with exactly the reference's geometry."""
    img = sitk.GetImageFromArray(array)
    img.CopyInformation(reference)
    return img


def label_map_image(segmentation: np.ndarray, reference: sitk.Image) -> sitk.Image:
    # nnU-Net's SimpleITKIO.write_seg dtype rule
    dtype = np.uint8 if segmentation.max(initial=0) < 255 else np.uint16
    return image_like(segmentation.astype(dtype, copy=False), reference)


def write_image(image: sitk.Image, path: str) -> None:
    sitk.WriteImage(image, path, True)
