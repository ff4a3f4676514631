"""Prediction for clinician-facing use (`nnunetv2_zept predict`, docs/prediction.md).

Modules (import what you need; only `predictor`, `export` and `runner` import torch/nnU-Net):
    inputs     reading image files and DICOM series (HU, geometry), input errors
    predictor  AnomalyMapPredictor: nnU-Net's predictor carrying the anomaly-map channel;
               model-folder checks (folds, checkpoint)
    export     logits -> label map / probabilities / anomaly map on the input's grid
    report     per-case JSON content: class volumes, tumour-presence scores, lesions
    dicom_seg  DICOM SEG referencing the input series
    runner     per-case orchestration, outputs, failure handling
"""
