"""The reference models that ship in benchmarks/reference_models (what `make demo` shows): small,
made by this plugin version, loadable by nnU-Net's own predictor after nnU-Net's own installer, and
still good at the organs they were trained on when they predict fresh cases."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunetv2_zept import __version__
from nnunetv2_zept.experiments.reference_models import (MAX_ZIP_BYTES, install_reference, reference_info,
                                                        shipped_reference_models)

REFERENCE_FOLDER = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_models"
# a generator seed no training, benchmark or demo uses (demo held-out: 3000; benchmark: 1000, 2000)
FRESH_SEED = 3117


def test_reference_models_ship_small_and_made_by_this_plugin_version():
    zips = shipped_reference_models(REFERENCE_FOLDER)
    assert sorted(zips) == ["nnunet_adamw", "zept"], f"expected both reference zips in {REFERENCE_FOLDER}"
    infos = {name: reference_info(z) for name, z in zips.items()}
    for name, z in zips.items():
        assert z.stat().st_size < MAX_ZIP_BYTES
        assert infos[name]["config"] == name
        assert infos[name]["plugin_version"] == __version__, (
            f"{z.name} was made by nnunetv2_zept {infos[name]['plugin_version']}, this is {__version__}: rebuild the "
            "reference models (docs/benchmarks.md, 'Reference models') or the demo refuses them")
        assert "export-reference" in infos[name]["rebuild"]
    # the demo compares them: same training seed, budget and data
    for key in ("seed", "budget", "data"):
        assert infos["zept"][key] == infos["nnunet_adamw"][key], key


@pytest.fixture(scope="module")
def fresh_cases(tmp_path_factory):
    """5 fresh cases on the grid the reference models were trained on (the demo's CPU grid)."""
    from nnunetv2_zept.experiments.synthetic_runs import CPU_GRID, make_dataset

    root = tmp_path_factory.mktemp("fresh")
    return make_dataset(root, 985, "ZePTFresh", CPU_GRID, 0, 5, FRESH_SEED, tumour_free_fraction=0.2)


@pytest.mark.parametrize("name", ["zept", "nnunet_adamw"])
def test_installed_reference_model_segments_the_organs_of_fresh_cases(name, fresh_cases, tmp_path):
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunetv2_zept.evaluation import evaluate_folder

    zip_path = shipped_reference_models(REFERENCE_FOLDER)[name]
    info = install_reference(zip_path, tmp_path / "results")
    predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(tmp_path / "results" / info["model_folder"]), ("0",),
                                                   "checkpoint_final.pth")
    out = tmp_path / "predictions"
    predictor.predict_from_files(str(fresh_cases / "imagesTs"), str(out), save_probabilities=True, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)
    dataset_json = json.loads((fresh_cases / "dataset.json").read_text())
    summary = evaluate_folder(str(fresh_cases / "labelsTs"), str(out), dataset_json, plots=False)
    organ_dsc = {n: summary["per_class"][n]["DSC"] for n in summary["groups"]["organs"]["classes"]}
    # what the model scored on the benchmark's development split (recorded in the zip), on 5 fresh cases
    # with a margin for their sampling: the fp16 export and nnU-Net's installer kept the model intact
    development = info["development_split"]["organs"]["DSC"]
    assert summary["groups"]["organs"]["DSC"] >= min(0.8, development - 0.1), (development, organ_dsc)
    assert min(organ_dsc.values()) >= 0.4, organ_dsc
