"""Keeps nnU-Net's model selection defined when a class has no Dice in any validation case.

nnU-Net averages each class's Dice over cases with `nanmean` and then the classes with a plain
`mean`.  Dice is undefined (NaN) where a case has neither reference nor predicted voxels of a
class, so one class that is empty in every case makes the foreground mean NaN and
`nnUNetv2_find_best_configuration` finds no best model (`max` over NaN, then an IndexError).
A zero-shot tumour class is such a class by definition: no training label holds it, so in
cross-validation it has no reference, and a model that rightly predicts none of it breaks the
selection.  This module wraps `nnunetv2.evaluation.evaluate_predictions.compute_metrics_on_folder`
as that module is imported, for prediction folders inside the results of the plugin's trainers
only (`<Trainer>__<Plans>__<configuration>` with a trainer name starting `nnUNetTrainerZePT`, and
ensembles that include one): there, where nnU-Net's foreground mean would be NaN it becomes the
mean over the classes that have a Dice, and the left-out classes are named.  Every other call is
handed to nnU-Net's function unchanged, so plain nnU-Net models get exactly nnU-Net's results.

It is installed by the start-up hook (`_register.autoregister`) and must stay cheap: nothing is
imported here until nnU-Net's evaluation module itself is.  `NNUNETV2_ZEPT_NO_AUTOREGISTER=1`
turns it off together with the trainer registration.
"""
import functools
import importlib.machinery
import os
import sys

TARGET_MODULE = "nnunetv2.evaluation.evaluate_predictions"
PATCHED_FLAG = "_nnunetv2_zept_nan_safe_foreground_mean"
# every trainer class of the plugin is named so (trainers/__init__.py); nnU-Net names results
# folders <Trainer>__<Plans>__<configuration> and ensembles ensemble___<folder>___<folder>___<folds>
PLUGIN_TRAINER_PREFIX = "nnUNetTrainerZePT"


def is_plugin_results_folder(folder) -> bool:
    """Whether `folder` lies in the results of a plugin trainer, or of an ensemble with one."""
    for part in os.path.abspath(os.fspath(folder)).split(os.sep):
        models = part.split("___")[1:-1] if part.startswith("ensemble___") else [part]
        if any(m.count("__") == 2 and m.split("__")[0].startswith(PLUGIN_TRAINER_PREFIX) for m in models):
            return True
    return False


def nan_safe_foreground_mean(result: dict) -> list:
    """Replace a NaN foreground mean by the mean over classes with a defined value, in place.

    `result` is the dict `compute_metrics_on_folder` returns.  Returns the classes (keys of
    `result["mean"]`) that were left out of at least one metric's mean.
    """
    import numpy as np

    left_out = []
    for metric, value in result["foreground_mean"].items():
        if not (isinstance(value, float) and np.isnan(value)):
            continue
        per_class = {k: v[metric] for k, v in result["mean"].items() if k not in (0, "0")}
        defined = [v for v in per_class.values() if not np.isnan(v)]
        if not defined:
            continue  # nothing to average: nnU-Net's NaN stands
        result["foreground_mean"][metric] = float(np.mean(defined))
        left_out.extend(k for k, v in per_class.items() if np.isnan(v) and k not in left_out)
    return left_out


def _wrap(original):
    import inspect

    signature = inspect.signature(original)

    @functools.wraps(original)
    def compute_metrics_on_folder(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        if not is_plugin_results_folder(bound.arguments["folder_pred"]):
            return original(*args, **kwargs)
        output_file = bound.arguments.get("output_file")
        bound.arguments["output_file"] = None
        result = original(*bound.args, **bound.kwargs)
        left_out = nan_safe_foreground_mean(result)
        if left_out:
            print(f"nnunetv2_zept: class(es) {', '.join(str(k) for k in left_out)} have no reference and no "
                  f"predicted voxels in any case, so their Dice is undefined; the foreground mean is taken over "
                  f"the other classes (zero-shot classes are always like this in cross-validation)")
        if output_file is not None:
            sys.modules[TARGET_MODULE].save_summary_json(result, output_file)
        return result

    setattr(compute_metrics_on_folder, PATCHED_FLAG, True)
    return compute_metrics_on_folder


def patch_module(module) -> None:
    if not getattr(module.compute_metrics_on_folder, PATCHED_FLAG, False):
        module.compute_metrics_on_folder = _wrap(module.compute_metrics_on_folder)


class _PatchingLoader:
    """Runs the real loader, then patches the fresh module before anyone imports from it."""

    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        patch_module(module)

    def __getattr__(self, name):  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self._inner, name)


class _Finder:
    """`sys.meta_path` entry that only ever answers for nnU-Net's evaluation module."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def install() -> None:
    if TARGET_MODULE in sys.modules:
        patch_module(sys.modules[TARGET_MODULE])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
