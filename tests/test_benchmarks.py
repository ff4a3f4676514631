"""The benchmark scripts' own logic (no timing): the class layouts of the scaling table, and the
sealed zero-shot benchmark's statistics, configurations and pipeline."""
import json
import os
import shutil
import sys
import zipfile

import numpy as np
import pytest
import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)

import training_cost  # noqa: E402
from liver_spleen import DATASET_JSON  # noqa: E402


@pytest.mark.parametrize("organs,tumours", [(5, 3), (9, 6), (16, 12)])
def test_scaling_class_layouts_are_valid_region_datasets(organs, tumours):
    from nnunetv2_zept.roles import roles_from_dataset_json

    roles = roles_from_dataset_json(training_cost._scaling_roles(organs, tumours))
    assert len(roles.organs) == organs and len(roles.tumours) == tumours
    assert 0 < len(roles.zero_shot) < tumours


# ------------------------------------------------------------------------------------ zero-shot benchmark
import zero_shot  # noqa: E402
import zero_shot_stats as zstats  # noqa: E402


def test_histogram_auroc_and_fpr95_match_sklearn_on_binned_scores():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    bins = rng.integers(0, 40, size=500)                  # scores already binned: exact for histograms
    labels = rng.random(500) < 0.3 + 0.01 * bins
    pos = np.bincount(bins[labels], minlength=40)
    neg = np.bincount(bins[~labels], minlength=40)
    assert zstats.auroc_from_histograms(pos, neg) == pytest.approx(roc_auc_score(labels, bins))
    fpr, tpr, _ = roc_curve(labels, bins)
    assert zstats.fpr_at_tpr_from_histograms(pos, neg) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])
    assert np.isnan(zstats.auroc_from_histograms(pos * 0, neg))


def test_weighted_case_auroc_equals_sklearn_with_case_weights():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    scores = np.round(rng.random(30), 1)                  # ties on purpose
    labels = rng.random(30) < 0.4
    w = rng.integers(0, 3, size=(5, 30)).astype(float)
    got = zstats.weighted_auroc(scores, labels, w)
    for r in range(5):
        assert got[r] == pytest.approx(roc_auc_score(labels, scores, sample_weight=w[r]))


def test_resamples_keep_every_stratum_and_intervals_hold_their_estimate():
    present = {"a": np.array([1, 1, 0, 0, 0, 0], bool), "b": np.array([0, 0, 1, 0, 0, 0], bool)}
    w = zstats.resample_weights(present, 6, n=50, seed=3)
    assert w.shape == (51, 6) and np.all(w[0] == 1)
    assert np.all(w[:, :2].sum(1) == 2) and np.all(w[:, 2] == 1) and np.all(w[:, 3:].sum(1) == 3)
    per_seed = [np.concatenate([[0.8], np.linspace(0.6, 1.0, 50)]), np.concatenate([[0.6], np.linspace(0.4, 0.8, 50)])]
    s = zstats.seed_mean_with_ci(per_seed)
    assert s["mean"] == pytest.approx(0.7) and (s["min"], s["max"]) == (0.6, 0.8) and s["n_seeds"] == 2
    assert s["ci_low"] < 0.7 < s["ci_high"]
    d = zstats.difference_with_ci([p + 0.1 for p in per_seed], per_seed)
    assert d["difference"] == pytest.approx(0.1) and d["ci_low"] == pytest.approx(0.1)   # paired: no spread


def test_every_ablation_configuration_names_existing_trainers():
    import nnunetv2_zept.trainers as trainers

    configs = zero_shot.ablation_configs()
    assert "zept_noSelfPrompt" in configs and "zept_noGrouping" in configs
    for c in list(zero_shot.MAIN_CONFIGS) + configs:
        assert all(hasattr(trainers, t) for t in zero_shot.trainers_of(c))
    assert zero_shot.trainers_of("zept_noGrouping")[0] == "nnUNetTrainerZePTStage1_noGrouping"
    assert zero_shot.trainers_of("zept_noSelfPrompt")[0] == "nnUNetTrainerZePTStage1"
    # the anomaly's calibration leaves Stage 1's weights unchanged, so its variant reuses the default Stage 1
    assert zero_shot.trainers_of("zept_minmaxAnomaly") == ["nnUNetTrainerZePTStage1",
                                                         "nnUNetTrainerZePTStage2_minmaxAnomaly"]
    with pytest.raises(SystemExit, match="unknown configuration"):
        zero_shot.trainers_of("zepp")


def test_zero_shot_benchmark_pipeline_seals_the_test_split(tmp_path, capsys):
    """Quick budget end to end: development runs, resumption, the test split refused for a configuration
    without development results, scored once, recorded, and refused a second time."""
    work, results = tmp_path / "work", tmp_path / "results"
    common = ["--budget", "quick", "--seeds", "0", "--work", str(work), "--results", str(results)]
    assert zero_shot.main(["dev", "--configs", "zept", "nnunet_adamw"] + common) == 0
    run = results / "quick" / "dev" / "zept" / "seed0"
    r = json.loads(run.with_suffix(".json").read_text())
    assert r["trainers"] == ["nnUNetTrainerZePTStage1", "nnUNetTrainerZePTStage2"] and r["training"]
    arrays = np.load(run.with_suffix(".npz"))
    assert arrays["liver_metastasis/host"].shape == (8, 2, zstats.STORED_BINS)
    assert "liver_metastasis/voxels" in arrays
    # the like-for-like baseline: seen types from its own label maps, zero-shot types from the
    # tumour-agnostic copy (whose zero-shot labels paint over the seen tumours in the liver)
    bench = zero_shot.Bench(work, "quick", "cpu", results)
    pred = work / "predictions" / "quick" / "dev" / "nnunet_adamw" / "seed0"
    own, _ = zero_shot.evaluate_run(bench.split_folders("dev"), pred, bench.dataset_json)
    agnostic, _ = zero_shot.evaluate_run(bench.split_folders("dev"), pred.with_name("seed0_tumour_agnostic"),
                                         bench.dataset_json)
    stored = json.loads((results / "quick" / "dev" / "nnunet_adamw" / "seed0.json").read_text())
    for name, source in (("liver_tumour", own), ("kidney_tumour", own), ("liver_metastasis", agnostic)):
        assert json.dumps(stored["full_resolution"]["per_class"][name]) == json.dumps(zero_shot._slim(source["per_class"][name]))
    # the development-only studies run on the saved runs and predictions
    assert zero_shot.main(["thresholds", "--configs", "zept", "--budget", "quick", "--results", str(results)]) == 0
    study = (results / "quick" / "thresholds_dev_zept.md").read_text()
    assert "Threshold study: `zept`, budget quick" in study
    with pytest.raises(SystemExit, match="names one file"):    # two studies never overwrite one file
        zero_shot.main(["thresholds", "--configs", "zept", "nnunet_adamw", "--budget", "quick",
                        "--results", str(results), "--out", str(tmp_path / "one.md")])
    assert all(row.split(" | ")[1] in ("seen_tumour", "zero_shot_tumour") for row in study.splitlines()[6:] if row)
    import seen_precedence

    assert seen_precedence.main(["--work", str(work), "--seeds", "0", "--budget", "quick", "--results", str(results),
                                 "--out", str(tmp_path / "precedence.md")]) == 0
    assert "| seen DSC |" in (tmp_path / "precedence.md").read_text()
    assert (work / "predictions" / "quick" / "dev" / "zept" / "seed0_seen_precedence").is_dir()
    import seen_false_positives

    capsys.readouterr()
    assert seen_false_positives.main(["--work", str(work), "--seed", "0", "--budget", "quick", "--hu"]) == 0
    listing = capsys.readouterr().out
    assert "| median HU |" in listing
    assert "- kidney_tumour voxels of the training cases: " in listing and "liver-kidney_right boundary" in listing
    # resumed: nothing is trained or predicted again, also when the saved predictions are evaluated again
    logs = sorted((work / "logs").rglob("*.log"))
    mtimes = [p.stat().st_mtime for p in logs]
    assert zero_shot.main(["dev", "--configs", "zept"] + common) == 0
    assert zero_shot.main(["re-evaluate", "--configs", "zept"] + common) == 0
    assert [p.stat().st_mtime for p in sorted((work / "logs").rglob("*.log"))] == mtimes
    assert json.loads(run.with_suffix(".json").read_text())["training"] == r["training"]
    # the development split predicted again by the same models (after a change of the prediction code)
    adamw_log = work / "logs" / "quick" / "seed0" / "predict_dev_nnunet_adamw.log"
    before = adamw_log.stat().st_mtime
    assert zero_shot.main(["re-predict", "--configs", "nnunet_adamw"] + common) == 0
    again = json.loads((results / "quick" / "dev" / "nnunet_adamw" / "seed0.json").read_text())
    assert adamw_log.stat().st_mtime > before and again["training"] == stored["training"]
    assert zero_shot._headline(again["full_resolution"]["groups"]) == pytest.approx(
        zero_shot._headline(stored["full_resolution"]["groups"]), abs=1e-6)
    with pytest.raises(SystemExit, match="development split only"):
        bench.evaluate("test", "nnunet_adamw", 0, repredict=True)
    with pytest.raises(SystemExit, match="no development results"):
        zero_shot.main(["test", "--configs", "nnunet"] + common)
    assert not (results / "test_record.json").exists()
    assert zero_shot.main(["test", "--configs", "zept", "--tag", "t1"] + common) == 0
    record = json.loads((results / "test_record.json").read_text())
    assert [(x["config"], x["tag"]) for x in record] == [("zept", "t1")]
    assert "reproduction" not in json.loads((results / "quick" / "test" / "zept" / "seed0.json").read_text())
    (results / "quick" / "test" / "zept" / "seed0.json").unlink()
    with pytest.raises(SystemExit, match="already scored"):
        zero_shot.main(["test", "--configs", "zept", "--tag", "t1"] + common)
    report = (results / "report.md").read_text()
    assert "TEST split" in report and "scored 1 time" in report and "Retrained seeds" not in report

    # reference models: small nnU-Net zips that nnU-Net's own predictor loads after installation
    from nnunetv2_zept.experiments.reference_models import (ReferenceModelError, install_reference,
                                                            reference_info)

    bench = zero_shot.Bench(work, "quick", "cpu", results)
    zips = zero_shot.export_references(bench, tmp_path / "reference")
    assert sorted(z.name for z in zips) == ["nnunet_adamw.zip", "zept.zip"]
    info = reference_info(zips[1] if zips[1].name == "zept.zip" else zips[0])
    assert info["config"] == "zept" and info["seed"] == 0 and "rebuild" in info
    installed = tmp_path / "installed"
    for z in zips:
        install_reference(z, installed)
    model = installed / info["model_folder"]
    ckpt = torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=False, map_location="cpu")
    assert ckpt["optimizer_state"] is None
    assert all(v.dtype != torch.float32 for v in ckpt["network_weights"].values())
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), (0,), "checkpoint_final.pth")
    # a zip of another plugin version is refused before anything is installed
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(zips[0]) as src, zipfile.ZipFile(other, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("zept_reference.json"):
                data = json.dumps(dict(json.loads(data), plugin_version="0.0.1")).encode()
            dst.writestr(item, data)
    with pytest.raises(ReferenceModelError, match=r"nnunetv2_zept 0\.0\.1 but this is nnunetv2_zept"):
        install_reference(other, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    # a later session on another machine: no model folders; the seed is trained again, and its
    # development split predicted again next to the recorded numbers
    for gone in (work / "nnunet_results" / "quick", work / "predictions" / "quick" / "test"):
        shutil.rmtree(gone)
    with pytest.raises(SystemExit, match="no trained model of nnUNetTrainerZePTBaselineAdamW"):
        zero_shot.main(["re-predict", "--configs", "nnunet_adamw"] + common)
    assert zero_shot.main(["test", "--configs", "nnunet_adamw", "--tag", "t1"] + common) == 0
    rep = json.loads((results / "quick" / "test" / "nnunet_adamw" / "seed0.json").read_text())["reproduction"]
    assert set(rep["dev_recorded"]) == set(rep["dev_retrained"]) >= {"organ_DSC", "zero_shot_case_AUROC"}
    assert rep["dev_recorded"] == zero_shot._headline(stored["full_resolution"]["groups"])
    assert "| quick | nnunet_adamw | 0 |" in (results / "report.md").read_text()


def test_gpu_cost_script_runs_shrunk_on_cpu(tmp_path):
    """benchmarks/gpu_cost.sh --cpu-smoke: the GPU script's steps (cost tables with prediction tiles and
    peak memory, the demo with a baseline) on a tiny CPU run, so that the script cannot rot."""
    import subprocess

    repo = os.path.dirname(BENCH)
    proc = subprocess.run(["bash", os.path.join(BENCH, "gpu_cost.sh"), "--cpu-smoke", "--work", str(tmp_path)],
                          cwd=repo, env=dict(os.environ, PYTHON=sys.executable, nnUNet_def_n_proc="1"),
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = (tmp_path / "training_cost_smoke.md").read_text()
    assert "## Prediction" in table and "nnunetv2_zept predict" in table and "ZePT Stage 2" in table
    data = json.loads((tmp_path / "training_cost_smoke.json").read_text())
    assert not data.get("errors"), data.get("errors")      # a failed part is logged, not raised, by the script
    zept_row = data["predict"]["nnUNetTrainerZePTStage2|nnunetv2_zept predict"][0]
    assert zept_row["windows"] >= 1 and 0 < zept_row["startup_s"] < zept_row["wall_s"]
    row = data["predict"]["nnUNetTrainerZePTStage2|no_tta"][0]
    assert row["windows"] >= 1 and 0 < row["startup_s"] < row["wall_s"]
    assert (tmp_path / "demo" / "report" / "report.md").is_file()
    assert "gpu_cost.sh: done" in proc.stdout


def test_dice_at_thresholds_equals_the_dice_of_each_thresholded_mask():
    from nnunetv2_zept.evaluation.histogram_roc import RocHistogram

    rng = np.random.default_rng(1)
    labels = rng.random(4000) < 0.05
    scores = np.clip(np.where(labels, rng.normal(0.7, 0.2, 4000), rng.beta(1, 6, 4000)), 0, 1)
    coarse = zstats.coarse_histogram(RocHistogram(zstats.STORED_BINS * 5).add(scores, labels))
    curve = zstats.dice_at_thresholds(coarse[0], coarse[1])
    edges = zstats.bin_lower_edges()
    assert edges[zstats.STORED_BINS // 2] == pytest.approx(0.5)
    for b in (0, 60, 100, 110, 140, 199):
        # the histogram puts a score into the bin of its logit; compare on scores rounded down to bins
        mask = np.searchsorted(edges, scores, side="right") - 1 >= b
        expected = 2 * np.sum(mask & labels) / (labels.sum() + mask.sum())
        assert curve[b] == pytest.approx(expected)
    assert np.isnan(zstats.dice_at_thresholds(coarse[0] * 0, coarse[1])).all()


def test_threshold_study_finds_the_threshold_that_delineates_and_its_oracle_bound():
    from zero_shot_thresholds import threshold_study

    B = zstats.STORED_BINS

    def run(seed, lesion_bin):
        # every case: 20 lesion voxels in `lesion_bin`, 100 tissue voxels just below it, the rest far below
        body = np.zeros((3, 2, B), np.int64)
        body[:, 0, lesion_bin] = 20
        body[:, 1, lesion_bin - 3] = 100
        body[:, 1, 10] = 5000
        return {"seed": seed, "arrays": {"cases": np.arange(3), "t/present": np.ones(3, bool),
                                         "t/voxels": np.full(3, 20), "t/body": body}}

    study = threshold_study([run(0, 90), run(1, 90)], ["t"])["t"]
    assert study["dsc_at_0.5"] == 0.0                      # every lesion voxel below p = 0.5
    assert study["dsc_at_best"] == pytest.approx(1.0)      # a threshold between tissue and lesion
    assert zstats.bin_lower_edges()[87] < study["best_threshold"] <= zstats.bin_lower_edges()[90]
    assert study["dsc_leave_one_seed_out"] == pytest.approx(1.0)
    # a seed whose lesions sit elsewhere: the other seed's threshold misses, the per-case oracle does not
    shifted = threshold_study([run(0, 90), run(1, 120)], ["t"])["t"]
    assert shifted["dsc_leave_one_seed_out"] < 0.5
    assert shifted["dsc_oracle_per_case"] == pytest.approx(1.0)


def test_seen_precedence_caps_only_zero_shot_types_that_share_a_host_and_repaints(tmp_path):
    import SimpleITK as sitk

    from nnunetv2_zept.roles import roles_from_dataset_json
    from seen_precedence import precedence_copy, seen_precedence

    roles = roles_from_dataset_json(DATASET_JSON)
    probs = np.zeros((5, 2, 3, 4), np.float32)       # channels: liver, spleen, liver_tumour, spleen_cyst, liver_metastasis
    probs[0] = 0.9
    probs[2, 0, 0] = [0.8, 0.3, 0.0, 0.6]            # seen liver tumour
    probs[4, 0, 0] = [0.7, 0.9, 0.6, 0.2]            # zero-shot liver metastasis
    probs[3, 1] = 0.95                               # zero-shot splenic cyst: no seen rival in the spleen
    out = seen_precedence(probs, roles)
    np.testing.assert_allclose(out[4, 0, 0], [0.2, 0.7, 0.6, 0.2], atol=1e-6)
    np.testing.assert_array_equal(out[3], probs[3])
    np.testing.assert_array_equal(out[:3], probs[:3])

    pred = tmp_path / "pred"
    pred.mkdir()
    np.savez_compressed(pred / "case_0.npz", probabilities=probs)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.uint8)), str(pred / "case_0.nii.gz"))
    assert precedence_copy(pred, tmp_path / "copy", DATASET_JSON) == 1
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "copy" / "case_0.nii.gz")))
    # liver (1) everywhere, liver_tumour (3) at p 0.8 and 0.6; metastasis (5) only where it now exceeds 0.5
    np.testing.assert_array_equal(seg[0, 0], [3, 5, 5, 3])
    assert (seg[1] == 4).all()
    assert (sitk.GetArrayFromImage(sitk.ReadImage(str(pred / "case_0.nii.gz"))) == 0).all()   # input untouched


def test_organ_boundary_holds_the_touching_voxels_of_both_organs_only():
    from seen_false_positives import boundary, hu_percentiles

    label = np.zeros((1, 3, 6), dtype=np.uint8)
    label[0, :, :3] = 1            # organ 1 touches organ 2 along one face
    label[0, :, 3:5] = 2
    label[0, 0, 4] = 3             # a third organ beside organ 2 is no part of the 1-2 boundary
    got = boundary(label, 1, 2)
    want = np.zeros_like(got)
    want[0, :, 2:4] = True
    assert np.array_equal(got, want)
    assert not boundary(label, 1, 3).any()
    assert hu_percentiles(np.zeros(0)) == "none"
    assert hu_percentiles(np.arange(101.0)) == "101 voxels: 5 / 25 / 50 / 75 / 95"


def _fake_run(seed, config, score_shift, commit="abc1234"):
    """A development run of 6 cases (3 with tumour type t) in the stored-array layout."""
    B = zstats.STORED_BINS
    present = np.array([1, 1, 1, 0, 0, 0], bool)
    hist = np.zeros((6, 2, B), np.int64)
    hist[:, 0, 120] = 10
    hist[:, 1, 100] = 1000
    arrays = {"cases": np.array([f"c{i}" for i in range(6)]), "organ_dsc": np.full((6, 1), 0.9),
              "t/present": present, "t/score": np.where(present, 0.5, 0.6) + score_shift * present,
              "t/dsc": np.where(present, 0.3, np.nan), "t/nsd": np.where(present, 0.4, np.nan),
              "t/voxels": np.where(present, 50, 0), "t/host": hist, "t/body": hist}
    return {"seed": seed, "config": config, "commit": commit, "arrays": arrays,
            "full_resolution": {"per_class": {"t": {"role": "zero_shot_tumour"}}}}


def test_compare_pairs_variants_on_shared_seeds_and_refuses_mixed_scoring(tmp_path):
    from zero_shot_compare import compare, shared_seeds, write_comparison

    runs = {"ref": [_fake_run(s, "ref", 0.0) for s in (0, 1, 2)],
            "var": [_fake_run(s, "var", 0.2) for s in (0, 1)]}
    assert shared_seeds(runs) == [0, 1] and shared_seeds(runs, [1, 5]) == [1]
    rows = compare(runs, "ref", [0, 1], resamples=200)["var"]
    # the reference ranks every tumour case below every tumour-free one, the variant above
    assert rows["zero-shot case AUROC"]["reference"] == 0.0 and rows["zero-shot case AUROC"]["variant"] == 1.0
    d = rows["zero-shot case AUROC"]
    assert d["difference"] == pytest.approx(1.0) and d["ci_low"] > 0.5
    assert rows["organ DSC"]["difference"] == pytest.approx(0.0)
    text = write_comparison(tmp_path, runs, (), tmp_path / "c.md", "cmd")
    assert "| zero-shot case AUROC | 0.000 | 1.000 | +1.000" in text and "seeds [0, 1]" in text
    assert "development split" in text
    text = write_comparison(tmp_path, runs, (), tmp_path / "c.md", "cmd", split="test")
    assert "test split" in text and "development" not in text
    with pytest.raises(SystemExit, match="no test runs of 'var'"):
        write_comparison(tmp_path, {"ref": runs["ref"], "var": []}, (), tmp_path / "c.md", "cmd", split="test")
    with pytest.raises(SystemExit, match="every configuration has run"):
        write_comparison(tmp_path, runs, [2], tmp_path / "c.md", "cmd")
    runs["var"][0]["commit"] = "0000000"          # not a commit: its scoring code cannot be checked
    with pytest.raises(SystemExit, match="scored by commits"):
        write_comparison(tmp_path, runs, (), tmp_path / "c.md", "cmd")


def test_compare_refuses_a_seed_whose_trainings_ran_on_different_cpu_types(tmp_path):
    """A seed reproduces its training on one CPU type only, so a reference and a variant of one seed
    trained on different CPU types are not paired; other seeds, and runs without a record, may differ."""
    from zero_shot_compare import training_cpu_mismatch, write_comparison

    runs = {"ref": [_fake_run(s, "ref", 0.0) for s in (0, 1)], "var": [_fake_run(s, "var", 0.2) for s in (0, 1)]}
    for c, rs in runs.items():
        for r in rs:
            r["training"] = {"nnUNetTrainerZePTStage1": {"cpu": "Xeon (AVX-512)" if r["seed"] == 0 else "EPYC (AVX2)"},
                             f"Stage2_{c}": {"cpu": "Xeon (AVX-512)" if r["seed"] == 0 else "EPYC (AVX2)"}}
    runs["var"][1]["training"]["older_trainer"] = {"wall_s": 1.0}     # recorded before the CPU type was
    assert training_cpu_mismatch(runs) is None
    write_comparison(tmp_path, runs, (), tmp_path / "c.md", "cmd")
    runs["var"][0]["training"]["Stage2_var"]["cpu"] = "EPYC (AVX2)"
    problem = training_cpu_mismatch(runs)
    assert problem.startswith("seed 0 was trained on different CPU types") and "var: Stage2_var on EPYC (AVX2)" in problem
    with pytest.raises(SystemExit, match="different CPU types"):
        write_comparison(tmp_path, runs, (), tmp_path / "c.md", "cmd")


def test_cpu_type_names_the_widest_vector_instruction_set(monkeypatch):
    """The CPU type a training records separates AVX-512 from AVX2 machines of one model name, whose
    convolution kernels round differently."""
    import benchmark_machine

    for flags, expected in (("fpu sse2 avx avx2 avx512f avx512bw", "AMD EPYC (AVX-512)"),
                            ("fpu sse2 avx avx2", "AMD EPYC (AVX2)"), ("fpu sse2", "AMD EPYC")):
        fields = {"model name": "AMD EPYC", "flags": flags}
        monkeypatch.setattr(benchmark_machine, "_cpuinfo_field", fields.get)
        assert benchmark_machine.cpu_type() == expected


def test_prediction_tile_parts_times_every_part_on_ground_truth_organs(tmp_path, capsys):
    """benchmarks/prediction_tile_parts.py on a tiny case: the parts table, the former evaluations, and the
    ZePT network's organ logits taken from the ground-truth organs (so that host regions are organ-sized)."""
    import prediction_tile_parts as parts

    out = tmp_path / "parts.json"
    assert parts.main(["--shape", "48", "40", "32", "--spacing", "6", "6", "6", "--patch", "24", "32", "32",
                       "--features", "8", "--tiles", "2", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| plain nnU-Net tile |" in table and "| host_regions |" in table and "| adapter |" in table
    r = json.loads(out.read_text())
    assert r["tile_s"]["plain"] > 0 and r["tile_s"]["zept_s2"] > r["parts_s"]["run_backbone"] > 0
    assert set(r["former_s"]) == {"adapter_unfolded", "adapter_whole_tile", "host_regions_whole_tile"}
    assert "| ZePT Stage 2 tile, seen_restriction off" in table and r["tile_s"]["zept_s2_unrestricted"] > 0
    assert "| ZePT Stage 2 tile, zero_shot_host_residual off" in table and r["tile_s"]["zept_s2_no_host_residual"] > 0
    assert r["parts_s"]["host_residual"] > 0              # the default runs it on a tile with zero-shot hosts
    tiles, n = parts.case_tiles([48, 40, 32], [6, 6, 6], [24, 32, 32], 3)
    assert len(tiles) == 3 <= n and all(t[0].shape == (1, 1, 24, 32, 32) for t in tiles)
    assert any(bool((organs > 0).any()) for _, organs in tiles)


def test_organ_labels_separates_the_organ_label_from_tumours_painted_beside_it(tmp_path):
    """A tumour label painted next to the organ joins the organ's region (region DSC drops) but not
    its own label (label DSC stays 1)."""
    import SimpleITK as sitk

    import organ_labels

    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:6, 2:6, 2:6] = 5                                 # the pancreas, 64 voxels
    pred = ref.copy()
    pred[6:8, 2:6, 2:6] = 11                               # a false pancreas tumour in its shell, 32 voxels
    for folder, arr in (("labels", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / folder / "case_0.nii.gz"))
    d = organ_labels.organ_dice(tmp_path / "pred", tmp_path / "labels", {"pancreas": [5, 11], "liver": [1, 9]})
    assert d["pancreas"]["label"] == pytest.approx(1.0)
    assert d["pancreas"]["region"] == pytest.approx(2 * 64 / (96 + 64))
    assert np.isnan(d["liver"]["region"])                  # absent on both sides: undefined, not 1


def test_shell_margin_sweep_lowers_only_the_zero_shot_shell_and_counts_voxels_by_place(tmp_path):
    """A liver box grown by 2 voxels: a metastasis voxel in its notch keeps its probability, one in the
    outer shell is lowered by the margin (or floored when cut), and the label maps are repainted."""
    import SimpleITK as sitk

    import shell_margin_sweep
    from nnunetv2_zept.experiments.baseline_scores import FLOOR
    from nnunetv2_zept.roles import roles_from_dataset_json

    dj = {"channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "regions_class_order": [1, 2, 3],
          "labels": {"background": 0, "liver": [1, 2, 3], "liver_tumour": 2, "liver_metastasis": 3},
          "zept": {"organs": ["liver"], "tumours": {"liver_tumour": {"host": ["liver"]},
                                                    "liver_metastasis": {"host": ["liver"], "zero_shot": True}}}}
    probs = np.full((3, 16, 16, 16), 0.01, np.float32)
    probs[0, 4:12, 4:12, 4:12] = 0.9
    probs[0, 4:6, 7:9, 4:12] = 0.01                        # a notch (2 voxels wide) from the top face
    probs[2, 4, 8, 8] = 0.9                                 # metastasis in the notch: closed outline
    probs[2, 2, 8, 8] = 0.8                                 # above the notch, outside the organ: outer shell
    src = tmp_path / "pred"
    src.mkdir()
    np.savez_compressed(src / "c.npz", probabilities=probs)
    img = sitk.GetImageFromArray(np.zeros((16, 16, 16), np.uint8))
    img.SetSpacing((5.0, 5.0, 5.0))                         # 10 mm = 2 voxels
    sitk.WriteImage(img, str(src / "c.nii.gz"))
    (src / "done").write_text("ok\n")

    ref = np.zeros((16, 16, 16), np.uint8)
    ref[4, 8, 8] = 3
    roles = roles_from_dataset_json(dj)
    counts = shell_margin_sweep.where_voxels(probs, ref, roles, (5.0, 5.0, 5.0), 10.0, {2: 3})[2]
    assert counts["true positive"].tolist() == [1, 0, 0] and counts["false positive"].tolist() == [0, 1, 0]

    for margin, dst in ((2.0, tmp_path / "m2"), (float("inf"), tmp_path / "cut")):
        shell_margin_sweep.with_margin(src, dst, dj, margin, 10.0)
        new = np.load(dst / "c.npz")["probabilities"]
        assert new[2, 4, 8, 8] == pytest.approx(0.9)
        want = FLOOR if np.isinf(margin) else 1 / (1 + np.exp(-(np.log(4.0) - 2.0)))   # 0.35: no label
        assert new[2, 2, 8, 8] == pytest.approx(want, rel=1e-5)
        np.testing.assert_array_equal(new[:2], probs[:2])
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(dst / "c.nii.gz")))
        assert lab[4, 8, 8] == 3 and lab[2, 8, 8] == 0 and lab[8, 8, 8] == 1
    np.testing.assert_array_equal(np.load(src / "c.npz")["probabilities"], probs)   # the source is untouched
