"""nnU-Net's predictor, extended to carry the ZePT anomaly map through the sliding window.

A ZePT network exposes its anomaly map on request: with `network.return_anomaly_map = True`
its eval forward returns one extra LAST channel holding the calibrated anomaly map as a logit
(docs/architecture.md, "What forward returns").  nnU-Net's sliding window allocates its blending buffer with
`label_manager.num_segmentation_heads` channels, so `AnomalyMapPredictor` lends the predictor a
label manager that reports one more head for the duration of a sliding-window call.  Tiling,
Gaussian blending, mirroring TTA and fold averaging stay nnU-Net's own code and apply to the
anomaly channel exactly as to the segmentation channels.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunetv2_zept.architectures.zept_network import unwrap_network

from nnunetv2_zept.input_checks import path_problem


class ModelError(ValueError):
    """The model folder cannot be used; the message says why and how to fix it."""


class _LabelManagerWithExtraHeads:
    """Read-only view of a LabelManager that reports `extra` more segmentation heads."""

    def __init__(self, label_manager, extra: int):
        self._wrapped = label_manager
        self.num_segmentation_heads = label_manager.num_segmentation_heads + extra

    def __getattr__(self, name):
        return getattr(self._wrapped, name)


def network_has_anomaly_map(network: nn.Module) -> bool:
    return hasattr(unwrap_network(network), "return_anomaly_map")


class AnomalyMapPredictor(nnUNetPredictor):
    """nnUNetPredictor whose logits have one extra last channel (the anomaly logit) when
    `with_anomaly_map` is on and the network supports it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.with_anomaly_map = False

    def enable_anomaly_map(self) -> bool:
        """Ask the network for its anomaly map; False (and nothing changed) if it has none."""
        if self.network is None:
            raise RuntimeError("initialise the predictor before enabling the anomaly map")
        if not network_has_anomaly_map(self.network):
            self.with_anomaly_map = False
            return False
        unwrap_network(self.network).return_anomaly_map = True
        self.with_anomaly_map = True
        return True

    @property
    def num_output_channels(self) -> int:
        """Channels of the returned logits: segmentation heads (+1 anomaly)."""
        return self.label_manager.num_segmentation_heads + int(self.with_anomaly_map)

    @contextmanager
    def _extra_head_buffer(self):
        if not self.with_anomaly_map:
            yield
            return
        real = self.label_manager
        self.label_manager = _LabelManagerWithExtraHeads(real, 1)
        try:
            yield
        finally:
            self.label_manager = real

    @torch.inference_mode()
    def predict_sliding_window_return_logits(self, input_image: torch.Tensor):
        with self._extra_head_buffer():
            logits = super().predict_sliding_window_return_logits(input_image)
        if logits.shape[0] != self.num_output_channels:
            raise RuntimeError(
                f"the network returned {logits.shape[0]} channels, expected {self.num_output_channels} "
                f"({self.label_manager.num_segmentation_heads} segmentation heads"
                f"{' + 1 anomaly map' if self.with_anomaly_map else ''})")
        return logits


# ---------------------------------------------------------------------------------------------
# finding and checking the trained model folder


def model_folder_from_ids(dataset: str, configuration: str, trainer: str, plans: str) -> str:
    """`nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>` like nnUNetv2_predict."""
    results = os.environ.get("nnUNet_results")
    if not results:
        raise ModelError("-d was given but the environment variable nnUNet_results is not set. Set it to the "
                         "folder that holds your trained models, or pass the model folder with -m")
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        dataset_name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise ModelError(f"dataset {dataset!r} not found: {e}") from None
    folder = os.path.join(results, dataset_name, f"{trainer}__{plans}__{configuration}")
    problem = path_problem(folder, "model folder")
    if problem and "does not exist" not in problem:
        raise ModelError(problem)
    if not os.path.isdir(folder):
        raise ModelError(f"model folder {folder} does not exist: no {trainer} model with plans {plans} and "
                         f"configuration {configuration} was trained for {dataset_name}. Check -tr/-p/-c")
    return folder


def _available_folds(model_folder: str, checkpoint_name: str) -> List[str]:
    out = []
    for name in sorted(os.listdir(model_folder)):
        if name.startswith("fold_") and os.path.isfile(os.path.join(model_folder, name, checkpoint_name)):
            out.append(name[len("fold_"):])
    return out


def check_model_folder(model_folder: str, folds: Optional[Sequence[Union[int, str]]],
                       checkpoint_name: str) -> Tuple[Union[int, str], ...]:
    """The folds to use; a ModelError naming what is missing otherwise."""
    problem = path_problem(model_folder, "model folder")
    if problem is None and not os.path.isdir(model_folder):
        problem = f"model folder {model_folder} is a file; pass the folder <Trainer>__<Plans>__<configuration>"
    if problem:
        raise ModelError(problem)
    for f in ("plans.json", "dataset.json"):
        if not os.path.isfile(os.path.join(model_folder, f)):
            raise ModelError(f"model folder {model_folder} has no {f}; pass the trained model folder "
                             f"(<Trainer>__<Plans>__<configuration>, the one holding fold_0, ...)")
    available = _available_folds(model_folder, checkpoint_name)
    if folds is None or len(folds) == 0:
        auto = [f for f in available if f != "all"]
        if not auto:
            auto = [f for f in available if f == "all"]
        if not auto:
            raise ModelError(f"model folder {model_folder} has no fold_*/{checkpoint_name}; train the model first "
                             f"or choose another checkpoint with -chk")
        return tuple(int(f) if f != "all" else f for f in auto)
    wanted = [str(f) for f in folds]
    missing = [f for f in wanted if f not in available]
    if missing:
        raise ModelError(
            f"model folder {model_folder} lacks fold(s) {', '.join(missing)} with {checkpoint_name} (available: "
            f"{', '.join(available) or 'none'}). Pass -f with available folds or train the missing ones")
    return tuple(int(f) if f != "all" else f for f in wanted)


def _initialize_safely(predictor: nnUNetPredictor, model_folder: str, use_folds, checkpoint_name: str) -> None:
    """nnU-Net's `initialize_from_trained_model_folder`, with every checkpoint read by the
    plugin's safe loader: nnU-Net reads them with `torch.load(weights_only=False)`, which runs any
    code a crafted checkpoint holds.  The network is then built and handed over exactly as nnU-Net
    does it (`manual_initialization`)."""
    import inspect

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_zept.checkpoints import CheckpointError, load_checkpoint
    from nnunetv2_zept.input_checks import InputCheckError, read_json

    try:
        dataset_json = read_json(os.path.join(model_folder, "dataset.json"), "the model's dataset.json")
        plans = read_json(os.path.join(model_folder, "plans.json"), "the model's plans.json")
    except InputCheckError as e:
        raise ModelError(str(e)) from None
    parameters, first = [], None
    for f in use_folds:
        path = os.path.join(model_folder, f"fold_{f}", checkpoint_name)
        try:
            checkpoint = load_checkpoint(path, map_location=torch.device("cpu"))
        except CheckpointError as e:
            raise ModelError(f"{e} Use the checkpoints your training wrote, or train the fold again") from None
        for key in ("trainer_name", "init_args"):
            if key not in checkpoint:
                raise ModelError(f"{path}: not a checkpoint written by nnU-Net v2 (no {key!r})")
        first = first or checkpoint
        parameters.append(checkpoint["network_weights"])
    plans_manager = PlansManager(plans)
    configuration_name = first["init_args"]["configuration"]
    if configuration_name not in plans_manager.available_configurations:
        raise ModelError(f"{model_folder}: the checkpoint's configuration {configuration_name!r} is not in plans.json "
                         f"(configurations: {', '.join(plans_manager.available_configurations)})")
    configuration_manager = plans_manager.get_configuration(configuration_name)
    trainer_class = recursive_find_trainer_class_by_name(first["trainer_name"])
    num_input_channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    num_output_channels = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    if "plans_manager" in inspect.signature(trainer_class.build_network_architecture).parameters:
        network = trainer_class.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                           num_output_channels, enable_deep_supervision=False)
    else:   # trainers written for nnU-Net < 2.7
        network = trainer_class.build_network_architecture(
            configuration_manager.network_arch_class_name, configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import, num_input_channels, num_output_channels,
            enable_deep_supervision=False)
    network.load_state_dict(parameters[0])
    predictor.manual_initialization(network, plans_manager, configuration_manager, parameters, dataset_json,
                                    first["trainer_name"], first.get("inference_allowed_mirroring_axes"))


def build_predictor(model_folder: str, folds: Optional[Sequence[Union[int, str]]], checkpoint_name: str,
                    device: torch.device, use_mirroring: bool, tile_step_size: float = 0.5,
                    verbose: bool = False, progress_bar: bool = False) -> AnomalyMapPredictor:
    use_folds = check_model_folder(model_folder, folds, checkpoint_name)
    predictor = AnomalyMapPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=verbose, verbose_preprocessing=verbose, allow_tqdm=progress_bar)
    try:
        _initialize_safely(predictor, model_folder, use_folds, checkpoint_name)
    except ModelError:
        raise
    except (RuntimeError, ValueError, KeyError) as e:
        # e.g. the trainer class is not installed, or weights do not match the network
        raise ModelError(f"cannot load the model in {model_folder}: {str(e).strip().splitlines()[0]}") from None
    return predictor
