"""Predict a list of inputs with one loaded model; one failing input never stops the others.

Per case (files named after the case id, in the output folder):
    <case>.nii.gz                   label map, nnU-Net export, input geometry
    <case>_anomaly.nii.gz           anomaly map in [0, 1], input geometry (ZePT models only)
    <case>.json                     tumour-presence scores, lesions, class volumes, provenance
    <case>_probabilities/<c>.nii.gz per-class probabilities (--save_probabilities) and
    <case>.npz + <case>.pkl         the same in nnU-Net's format (for nnUNetv2_ensemble)
    <case>_seg.dcm                  DICOM SEG referencing the input series (--dicom-seg, DICOM inputs)
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import time
import traceback
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunetv2_zept._version import __version__
from nnunetv2_zept.prediction.export import (PredictionArrays, image_like, label_map_image, logits_to_input_grid,
                                             write_image)
from nnunetv2_zept.prediction.inputs import InputSpec, LoadedCase, PredictInputError, load_case
from nnunetv2_zept.prediction.predictor import AnomalyMapPredictor
from nnunetv2_zept.prediction.report import (anomaly_findings, class_volumes, roles_for_model, tumour_findings)
from nnunetv2_zept.prediction_files import case_output_files
from nnunetv2_zept.tumour_score import TumourScoreSettings

# readers whose arrays are reoriented before prediction; the same is done here
REORIENTING_READERS = {"SimpleITKIOWithReorient": "RAS"}


@dataclass
class PredictOptions:
    output_folder: str
    save_probabilities: bool = False
    dicom_seg: bool = False
    overwrite: bool = False
    score_settings: TumourScoreSettings = field(default_factory=TumourScoreSettings)


def output_files(case_id: str, options: PredictOptions, with_anomaly: bool, is_dicom: bool) -> dict:
    """The files this run writes for the case."""
    return case_output_files(options.output_folder, case_id, anomaly=with_anomaly,
                             probabilities=options.save_probabilities, dicom_seg=options.dicom_seg and is_dicom)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def input_collision(files: dict, inputs: Sequence[InputSpec]) -> Optional[str]:
    """Why writing `files` would touch an input (the file itself, through a symbolic or hard
    link, or a file inside an input DICOM folder), or None."""
    for out in files.values():
        real_out = os.path.realpath(out)
        for spec in inputs:
            real_in = os.path.realpath(spec.path)
            if spec.kind == "dicom":
                hit = _inside(real_out, real_in)
                what = "lies inside the input DICOM folder"
            else:
                hit = real_out == real_in or _inside(real_in, real_out) or (
                    os.path.exists(out) and os.path.exists(spec.path) and os.path.samefile(out, spec.path))
                what = "is the input file itself (same file, or a link to it)"
            if hit:
                return (f"output {out} {what} {spec.path}; refusing to write it, --overwrite or not. Choose an output "
                        f"folder (-o) away from the inputs")
    return None


def _remove_output(path: str) -> None:
    """Remove an earlier output; a link is removed itself, never what it points to."""
    if os.path.islink(path) or os.path.isfile(path):
        os.remove(path)
    elif os.path.isdir(path):
        for name in os.listdir(path):   # only the probability images this command writes
            p = os.path.join(path, name)
            if name.endswith(".nii.gz") and (os.path.islink(p) or os.path.isfile(p)):
                os.remove(p)
        if not os.listdir(path):
            os.rmdir(path)


class CasePredictor:
    """Runs the loaded model on one case at a time and writes its outputs."""

    def __init__(self, predictor: AnomalyMapPredictor, model_folder: str, folds, checkpoint_name: str,
                 options: PredictOptions, log=print):
        self.predictor = predictor
        self.model_folder = model_folder
        self.folds = list(folds)
        self.checkpoint_name = checkpoint_name
        self.options = options
        self.log = log
        self.inputs: List[InputSpec] = []   # every input of the run: no output may touch one
        self.plans = predictor.plans_manager.plans
        self.configuration = self._configuration_name()
        self.with_anomaly = predictor.enable_anomaly_map()
        self.anomaly_message = ("anomaly map: the network provides one (return_anomaly_map)" if self.with_anomaly else
                                "anomaly map skipped: this model's network has no anomaly map "
                                "(`return_anomaly_map`); plain nnU-Net models predict labels only")
        self.roles, self.roles_message = roles_for_model(self.plans, self.configuration, predictor.dataset_json)
        reader = self.plans.get("image_reader_writer", "SimpleITKIO")
        self.reorient = REORIENTING_READERS.get(reader)
        self.reader_warning = None
        if reader not in ("SimpleITKIO",) and self.reorient is None:
            self.reader_warning = (f"the model was planned with the reader {reader}; inputs are read with "
                                   f"SimpleITK (same voxel order as nnU-Net's SimpleITKIO)")
        self.needs_3d = len(predictor.configuration_manager.patch_size) == 3
        n_in = len(predictor.dataset_json.get("channel_names", predictor.dataset_json.get("modality", {})))
        if n_in != 1:
            from nnunetv2_zept.prediction.predictor import ModelError

            raise ModelError(f"the model in {model_folder} expects {n_in} input channels; this command predicts "
                             f"single-channel CT models only (use nnUNetv2_predict for multi-channel models)")

    def _configuration_name(self) -> str:
        """Name of the loaded configuration (the predictor keeps only its settings)."""
        pm, cm = self.predictor.plans_manager, self.predictor.configuration_manager
        for name in pm.available_configurations:
            if pm.get_configuration(name).configuration == cm.configuration:
                return name
        folder = os.path.basename(os.path.normpath(self.model_folder))
        return folder.split("__")[-1]

    # -----------------------------------------------------------------------------------------

    def load(self, spec: InputSpec) -> LoadedCase:
        return load_case(spec, self.needs_3d)

    def check_outputs_free(self, spec: InputSpec) -> dict:
        """This run's files for the case.  No output may be an input; without --overwrite no output
        of the case may exist, from this run's options or any other (a mixed set of files from two
        runs would be read as one case by `evaluate`)."""
        files = output_files(spec.case_id, self.options, self.with_anomaly, spec.kind == "dicom")
        every = case_output_files(self.options.output_folder, spec.case_id)
        collision = input_collision(every, self.inputs or [spec])
        if collision:
            raise PredictInputError(f"{spec.path}: {collision}")
        if not self.options.overwrite:
            existing = [f for f in every.values() if os.path.lexists(f)]
            if existing:
                raise PredictInputError(
                    f"{spec.path}: output {existing[0]} already exists; choose another output folder (-o) or pass "
                    f"--overwrite to replace earlier predictions of this case")
        return files

    def predict(self, case: LoadedCase) -> dict:
        t0 = time.time()
        files = self.check_outputs_free(case.spec)
        work_image = case.image
        array, props = case.array, case.properties
        if self.reorient:
            from nnunetv2_zept.prediction.inputs import nnunet_array_and_properties

            work_image = sitk.DICOMOrient(case.image, self.reorient)
            array, props = nnunet_array_and_properties(work_image)
        self._check_extent(case, array, props)
        pre = self.predictor.configuration_manager.preprocessor_class(verbose=False)
        data, _, props = pre.run_case_npy(array, None, dict(props), self.predictor.plans_manager,
                                          self.predictor.configuration_manager, self.predictor.dataset_json)
        import torch

        data = torch.from_numpy(data).to(dtype=torch.float32, memory_format=torch.contiguous_format)
        t_pre = time.time()
        logits = self.predictor.predict_logits_from_preprocessed_data(data).cpu()
        t_pred = time.time()
        arrays = logits_to_input_grid(logits, self.with_anomaly, self.predictor.plans_manager,
                                      self.predictor.configuration_manager, self.predictor.label_manager,
                                      self.predictor.dataset_json, props)
        del logits, data
        if self.reorient:
            arrays = self._orient_back(arrays, work_image, case.image)
        report = self._write(case, arrays, files, props)
        report["seconds"] = {"preprocess": round(t_pre - t0, 2), "predict": round(t_pred - t_pre, 2),
                             "export_and_report": round(time.time() - t_pred, 2),
                             "total": round(time.time() - t0, 2)}
        with open(files["report"], "w") as f:
            json.dump(report, f, indent=2)
        return report

    def _check_extent(self, case: LoadedCase, array: np.ndarray, props: dict) -> None:
        """nnU-Net resamples to the model's spacing; a volume thinner than one target voxel
        along an axis would vanish (nnU-Net then fails with an obscure numpy error)."""
        pm, cm = self.predictor.plans_manager, self.predictor.configuration_manager
        shape = [array.shape[1:][i] for i in pm.transpose_forward]
        spacing = [props["spacing"][i] for i in pm.transpose_forward]
        target = list(cm.spacing)
        if len(target) < len(shape):   # 2D configurations keep the slice axis
            target = [spacing[0]] + target
        axis_names = ["z", "y", "x"]
        for k, (n, sp, tg) in enumerate(zip(shape, spacing, target)):
            if round(n * sp / tg) < 1:
                axis = axis_names[pm.transpose_forward[k]]
                raise PredictInputError(
                    f"{case.spec.path}: the volume covers only {n * sp:.1f} mm along {axis} ({n} voxels of "
                    f"{sp:.3g} mm) but this model works at {tg:.3g} mm spacing; pass a volume that covers at least "
                    f"{tg:.3g} mm (more slices)")

    @staticmethod
    def _orient_back(arrays: PredictionArrays, work: sitk.Image, original: sitk.Image) -> PredictionArrays:
        target = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(original.GetDirection())

        def back(a):
            return sitk.GetArrayFromImage(sitk.DICOMOrient(image_like(a, work), target))

        arrays.segmentation = back(arrays.segmentation)
        arrays.probabilities = np.stack([back(p) for p in arrays.probabilities])
        if arrays.anomaly is not None:
            arrays.anomaly = back(arrays.anomaly)
        return arrays

    # -----------------------------------------------------------------------------------------

    def _label_values(self) -> dict:
        """Label map value -> class name, as nnU-Net paints them."""
        lm = self.predictor.label_manager
        names = [k for k in self.predictor.dataset_json["labels"] if k not in ("background", "ignore")]
        if lm.has_regions:
            return {int(v): names[i] for i, v in enumerate(lm.regions_class_order)}
        return {int(v): k for k, v in self.predictor.dataset_json["labels"].items()
                if k not in ("background", "ignore")}

    def _write(self, case: LoadedCase, arrays: PredictionArrays, files: dict, props: dict) -> dict:
        """Write the case's files; on any error remove what this call wrote, so a failed case
        leaves no half set of outputs behind."""
        written: List[str] = []
        if self.options.overwrite:
            # every earlier output of the case goes, also those this run does not write (e.g. the
            # .npz of an earlier --save_probabilities run), so no mixed set is left behind
            for path in case_output_files(self.options.output_folder, case.case_id).values():
                if os.path.lexists(path):
                    _remove_output(path)
        try:
            return self._write_all(case, arrays, files, props, written)
        except BaseException:
            for path in reversed(written):
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                elif os.path.exists(path):
                    os.remove(path)
            raise

    def _write_all(self, case, arrays, files, props, written) -> dict:
        ref = case.image
        os.makedirs(self.options.output_folder, exist_ok=True)
        value_names = self._label_values()
        tumour_names = [self.roles.names[t] for t in self.roles.tumours] if self.roles else []
        segments = None
        if "dicom_seg" in files:   # first: the step most likely to refuse unusual source headers
            from nnunetv2_zept.prediction.dicom_seg import DicomSegUnavailable, write_dicom_seg

            written.append(files["dicom_seg"])
            try:
                segments = write_dicom_seg(arrays.segmentation, value_names, tumour_names, case.dicom_files,
                                           files["dicom_seg"], f"ZePT {case.case_id}"[:64], __version__)
            except DicomSegUnavailable as e:
                # the label map and scores are still valid: warn, do not fail the case
                case.warnings.append(f"{case.spec.path}: DICOM SEG not written: {e}")
                self.log(f"    warning: DICOM SEG not written: {e}")
                segments = []
            if not segments:
                if not any("DICOM SEG not written" in w for w in case.warnings):
                    case.warnings.append(f"{case.spec.path}: DICOM SEG not written: the label map is empty "
                                         f"(a DICOM SEG needs at least one segment)")
                files.pop("dicom_seg")
        written.append(files["label_map"])
        write_image(label_map_image(arrays.segmentation, ref), files["label_map"])
        if arrays.anomaly is not None:
            written.append(files["anomaly_map"])
            write_image(image_like(arrays.anomaly.astype(np.float32), ref), files["anomaly_map"])
        if self.options.save_probabilities:
            written.append(files["probabilities"])
            os.makedirs(files["probabilities"], exist_ok=True)
            for name, p in zip(arrays.channel_names, arrays.probabilities):
                write_image(image_like(p.astype(np.float32), ref), os.path.join(files["probabilities"], name + ".nii.gz"))
            written.extend([files["probabilities_npz"], files["properties_pkl"]])
            np.savez_compressed(files["probabilities_npz"], probabilities=arrays.probabilities)
            with open(files["properties_pkl"], "wb") as f:
                pickle.dump(props, f)
        report = self._report(case, arrays, files, value_names, segments)
        written.append(files["report"])
        return report

    def _report(self, case: LoadedCase, arrays: PredictionArrays, files: dict, value_names: dict,
                segments) -> dict:
        img = case.image
        voxel_ml = float(np.prod(img.GetSpacing())) / 1000.0
        present = {int(v) for v in np.unique(arrays.segmentation)}
        report = {
            "case": case.case_id,
            "input": case.spec.path,
            "input_type": "dicom_series" if case.spec.kind == "dicom" else "image_file",
            "geometry": {"size_xyz": list(img.GetSize()), "spacing_xyz": list(img.GetSpacing()),
                         "origin": list(img.GetOrigin()), "direction": list(img.GetDirection())},
            "model": {"folder": self.model_folder, "trainer": self.predictor.trainer_name,
                      "configuration": self.configuration, "folds": [str(f) for f in self.folds],
                      "checkpoint": self.checkpoint_name, "mirroring_tta": bool(self.predictor.use_mirroring),
                      "nnunetv2_zept_version": __version__},
            "outputs": {k: os.path.basename(v) for k, v in files.items() if k != "report"},
            "label_map_values": {str(v): n for v, n in sorted(value_names.items())},
            "labels_present": sorted(value_names[v] for v in present if v in value_names),
            "class_volumes_ml": class_volumes(arrays.probabilities, arrays.channel_names, voxel_ml),
            "class_roles": self.roles_message,
            "tumours": {},
            "anomaly_map": {"available": arrays.anomaly is not None, "message": self.anomaly_message},
            "tumour_score_settings": self.options.score_settings.to_dict(),
            "warnings": list(case.warnings),
        }
        if case.spec.kind == "dicom":
            report["dicom"] = {"series_instance_uid": case.dicom_series_uid, "num_slices": len(case.dicom_files)}
            if segments is not None:
                report["dicom"]["seg_segments"] = segments
        if self.roles is not None:
            report["tumours"] = tumour_findings(arrays.probabilities, arrays.channel_names, self.roles,
                                                self.predictor.label_manager.has_regions, img,
                                                self.options.score_settings)
        if arrays.anomaly is not None:
            report["anomaly_map"].update(anomaly_findings(arrays.anomaly, arrays.probabilities, arrays.channel_names,
                                                          self.roles, img, self.options.score_settings))
        if self.reader_warning:
            report["warnings"].append(self.reader_warning)
        return report


# ---------------------------------------------------------------------------------------------


def _summary_lines(report: dict) -> List[str]:
    lines = []
    for name, t in report.get("tumours", {}).items():
        kind = "zero-shot" if t["zero_shot"] else "seen"
        les = t["lesions"]
        detail = (f"{len(les)} lesion(s), largest {max(l['volume_ml'] for l in les):.2f} mL" if les else
                  ("no lesion" if t["host_organ_found"] else "host organ not found"))
        lines.append(f"    {name} [{kind}]: presence score {t['presence_score']:.3f}, {detail}")
    if report["anomaly_map"].get("available"):
        lines.append(f"    anomaly map: max {report['anomaly_map']['max']:.3f}")
    return lines


def predict_inputs(case_predictor: CasePredictor, specs: Sequence[InputSpec],
                   early_failures: Sequence[Tuple[str, str]] = (), verbose: bool = False,
                   log=print) -> Tuple[List[dict], List[Tuple[str, str]]]:
    """Predict every input; returns (reports, failures as (input, message))."""
    reports, failures = [], list(early_failures)
    case_predictor.inputs = list(specs)
    for inp, msg in early_failures:
        log(f"[skip] {msg}")
    n = len(specs)
    for i, spec in enumerate(specs, start=1):
        log(f"[{i}/{n}] {spec.case_id} <- {spec.path}")
        t = time.time()
        try:
            case_predictor.check_outputs_free(spec)
            case = case_predictor.load(spec)
            size = "x".join(map(str, case.image.GetSize()))
            spacing = "x".join(f"{s:.3g}" for s in case.image.GetSpacing())
            log(f"    read {size} voxels at {spacing} mm" + (f" ({len(case.dicom_files)} DICOM slices)"
                                                             if case.dicom_files else ""))
            for w in case.warnings:
                log(f"    warning: {w}")
            report = case_predictor.predict(case)
        except PredictInputError as e:
            failures.append((spec.path, str(e)))
            log(f"    FAILED: {e}")
            continue
        except Exception as e:   # report and go on with the next input
            msg = f"{spec.path}: prediction failed with {type(e).__name__}: {e}"
            failures.append((spec.path, msg))
            log(f"    FAILED: {msg}")
            if verbose:
                log(traceback.format_exc())
            continue
        reports.append(report)
        for line in _summary_lines(report):
            log(line)
        log(f"    done in {time.time() - t:.1f} s -> {', '.join(report['outputs'].values())}")
    return reports, failures
