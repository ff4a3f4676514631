"""End-to-end tests of `nnunetv2_zept predict` on real CT (DICOM series and NIfTI volumes).

Model fixture: a tiny region-based ZePT dataset (liver + liver tumour seen, pancreas + pancreas
tumour zero-shot) of 4 synthetic 32^3 CTs at 4 mm (coarse so that real CT predicts fast on CPU), planned and preprocessed with the stock
nnU-Net commands and trained with the stock `nnUNetv2_train` for one epoch of 2 iterations by
the test-only trainer in tests/predict_ext_trainers/.  Its network honours the ZePT anomaly-map
contract with a closed-form anomaly logit.  To test the real ZePT network instead, set
TRAINER to "nnUNetTrainerZePTStage2" (one line; the closed-form anomaly check is then skipped).

A "plain nnU-Net" model folder is derived from the same checkpoint (same weights, stock
nnUNetTrainer network without `return_anomaly_map`).

Real CT comes from ../shared/data/real relative to the repository root; tests that need it are
skipped with the reason when it is absent.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

TRAINER = "nnUNetTrainerZePTPredictTest"   # switch to "nnUNetTrainerZePTStage2" to test the real network
PLANS = "nnUNetPlans"
CONFIG = "3d_fullres"
DATASET_ID = 987
DATASET_NAME = f"Dataset{DATASET_ID}_ZePTPredictTest"

REPO = Path(__file__).resolve().parents[1]
REAL = (REPO / ".." / "shared" / "data" / "real").resolve()
EXT_TRAINERS = Path(__file__).resolve().parent / "predict_ext_trainers"
PYTHON = sys.executable
BIN = Path(sys.executable).parent   # console scripts of this environment

LABELS = {"background": 0, "liver": [1, 2], "liver_tumour": 2, "pancreas": [3, 4], "pancreas_tumour": 4}
ZEPT_BLOCK = {"organs": ["liver", "pancreas"],
              "tumours": {"liver_tumour": {"host": ["liver"]},
                          "pancreas_tumour": {"host": ["pancreas"], "zero_shot": True}}}


def _real(*parts) -> Path:
    p = REAL.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real CT test data missing: {p} (expected in ../shared/data/real relative to the repo root)")
    return p


# ---------------------------------------------------------------------------------------------- model fixture


def _synthetic_case(rng: np.random.Generator, n: int = 32, spacing: float = 4.0):
    """Body ellipsoid (fat/soft tissue) in air, a liver sphere with a hypodense tumour, a pancreas blob."""
    z, y, x = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    c = (n - 1) / 2
    body = ((x - c) / 14) ** 2 + ((y - c) / 12) ** 2 + ((z - c) / 15) ** 2 <= 1
    img = np.full((n, n, n), -1000.0)
    img[body] = -90.0
    img[body & (((x - c) / 11) ** 2 + ((y - c) / 9) ** 2 <= 1)] = 40.0
    lc = np.array([c + rng.integers(-2, 3), c - 4 + rng.integers(-2, 3), c - 4 + rng.integers(-2, 3)])
    liver = (z - lc[0]) ** 2 + (y - lc[1]) ** 2 + (x - lc[2]) ** 2 <= 7 ** 2
    pc = np.array([c + rng.integers(-2, 3), c + 6, c + 7])
    pancreas = ((z - pc[0]) / 3) ** 2 + ((y - pc[1]) / 3) ** 2 + ((x - pc[2]) / 5) ** 2 <= 1
    tc = lc + rng.integers(-2, 3, size=3)
    tumour = liver & ((z - tc[0]) ** 2 + (y - tc[1]) ** 2 + (x - tc[2]) ** 2 <= 3 ** 2)
    img[liver] = 60.0
    img[pancreas] = 45.0
    img[tumour] = 10.0
    img += rng.normal(0, 12, img.shape)
    seg = np.zeros(img.shape, np.uint8)
    seg[liver] = 1
    seg[tumour] = 2
    seg[pancreas] = 3
    out = []
    for arr in (img.astype(np.int16), seg):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((spacing,) * 3)
        im.SetOrigin((-64.0, -64.0, -64.0))
        out.append(im)
    return out


def _env(root: Path, planning: bool = False) -> dict:
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"), "nnUNet_def_n_proc": "1",
        "nnUNet_n_proc_DA": "1" if planning else "0", "nnUNet_compile": "f",
        # the test trainer's folder first: its lookup must not depend on the plugin's own trainers
        "nnUNet_extTrainer": os.pathsep.join([str(EXT_TRAINERS)] + [
            e for e in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if e.strip()]),
        "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1",
    })
    return env


def _run(cmd, env, timeout=600):
    t = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    r.seconds = time.time() - t
    return r


def _check(r, what):
    assert r.returncode == 0, f"{what} failed (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """Trained tiny model: dict with folders, env and timings."""
    root = tmp_path_factory.mktemp("predict_model")
    raw = root / "raw" / DATASET_NAME
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    cases = [f"synth_{i:03d}" for i in range(4)]
    for cid in cases:
        img, seg = _synthetic_case(rng)
        sitk.WriteImage(img, str(raw / "imagesTr" / f"{cid}_0000.nii.gz"))
        sitk.WriteImage(seg, str(raw / "labelsTr" / f"{cid}.nii.gz"))
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": LABELS, "regions_class_order": [1, 2, 3, 4],
        "numTraining": len(cases), "file_ending": ".nii.gz", "zept": ZEPT_BLOCK}, indent=1))
    timings = {}
    r = _run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", CONFIG, "-np", "1", "-npfp", "1"],
             _env(root, planning=True))
    _check(r, "plan_and_preprocess")
    timings["plan_and_preprocess_s"] = r.seconds
    # a narrower U-Net than planned (same stages and patch): prediction on 512x512 real CT on a
    # 2-core CPU would otherwise dominate the test time
    plans_file = root / "preprocessed" / DATASET_NAME / f"{PLANS}.json"
    plans = json.loads(plans_file.read_text())
    arch = plans["configurations"][CONFIG]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [min(f, 8 * 2 ** i) for i, f in enumerate(arch["features_per_stage"])]
    plans_file.write_text(json.dumps(plans, indent=1))
    (root / "preprocessed" / DATASET_NAME / "splits_final.json").write_text(
        json.dumps([{"train": cases[:3], "val": cases[3:]}]))
    env = _env(root)
    r = _run([str(BIN / "nnUNetv2_train"), str(DATASET_ID), CONFIG, "0", "-tr", TRAINER, "-device", "cpu"], env)
    _check(r, "nnUNetv2_train")
    timings["train_s"] = r.seconds
    zept_folder = root / "results" / DATASET_NAME / f"{TRAINER}__{PLANS}__{CONFIG}"
    assert (zept_folder / "fold_0" / "checkpoint_final.pth").is_file()

    plain_folder = None
    if TRAINER == "nnUNetTrainerZePTPredictTest":
        import torch

        plain_folder = root / "results" / DATASET_NAME / f"nnUNetTrainer__{PLANS}__{CONFIG}"
        plain_folder.mkdir()
        for f in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
            shutil.copy(zept_folder / f, plain_folder / f)
        (plain_folder / "fold_0").mkdir()
        ckpt = torch.load(zept_folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        ckpt["trainer_name"] = "nnUNetTrainer"
        torch.save(ckpt, plain_folder / "fold_0" / "checkpoint_final.pth")
    return {"root": root, "env": env, "zept": zept_folder, "plain": plain_folder, "timings": timings,
            "train_cases": [raw / "imagesTr" / f"{c}_0000.nii.gz" for c in cases]}


# ---------------------------------------------------------------------------------------------- helpers


def _predict(model, args, timeout=600):
    r = _run([PYTHON, "-m", "nnunetv2_zept.cli", "predict", *map(str, args)], model["env"], timeout)
    return r


def _read_input(path: Path) -> sitk.Image:
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def _assert_same_geometry(out: sitk.Image, ref: sitk.Image, what: str):
    assert out.GetSize() == ref.GetSize(), f"{what}: size {out.GetSize()} != input {ref.GetSize()}"
    # NIfTI stores geometry as float32: compare to that precision
    np.testing.assert_allclose(out.GetSpacing(), ref.GetSpacing(), rtol=1e-6, atol=1e-5, err_msg=f"{what} spacing")
    np.testing.assert_allclose(out.GetOrigin(), ref.GetOrigin(), rtol=1e-6, atol=1e-4, err_msg=f"{what} origin")
    np.testing.assert_allclose(out.GetDirection(), ref.GetDirection(), atol=1e-6, err_msg=f"{what} direction")


# ---------------------------------------------------------------------------------------------- main run


@pytest.fixture(scope="module")
def main_run(model, tmp_path_factory):
    """One call with every kind of good input: two real DICOM series, a real NIfTI, a real CT
    re-saved as .mha with a flipped axis (non-identity direction), and a training case."""
    tmp = tmp_path_factory.mktemp("predict_main")
    flipped = tmp / "ct_sm_flipped.mha"
    sitk.WriteImage(sitk.Flip(sitk.ReadImage(str(_real("totalsegmentator", "example_ct_sm.nii.gz"))),
                              [True, False, False]), str(flipped))
    inputs = {
        "example_ct_dicom": _real("totalsegmentator", "example_ct_dicom"),
        "ct-3slice": _real("dcmqi_ct3slice", "ct-3slice"),
        "CT_image": _real("ibsi_sts", "STS_019", "CT_image.nii.gz"),
        "ct_sm_flipped": flipped,
        "synth_000": model["train_cases"][0],
    }
    out = tmp / "out"
    r = _predict(model, ["-i", *inputs.values(), "-o", out, "-m", model["zept"], "--disable_tta", "-device", "cpu",
                         "--dicom-seg", "--save_probabilities"])
    _check(r, "nnunetv2_zept predict")
    return {"out": out, "inputs": inputs, "result": r}


def test_every_output_has_the_input_geometry(main_run):
    out = main_run["out"]
    for cid, path in main_run["inputs"].items():
        ref = _read_input(Path(path))
        for f in [out / f"{cid}.nii.gz", out / f"{cid}_anomaly.nii.gz",
                  *sorted((out / f"{cid}_probabilities").glob("*.nii.gz"))]:
            assert f.is_file(), f"missing output {f}\n{main_run['result'].stdout[-2000:]}"
            _assert_same_geometry(sitk.ReadImage(str(f)), ref, f.name)
    assert "example_ct_dicom" in main_run["result"].stdout and "Predicted 5 of 5" in main_run["result"].stdout


def test_label_map_is_nnunet_region_painting_of_the_probabilities(main_run, model):
    dataset = json.loads((model["zept"] / "dataset.json").read_text())
    order = dataset["regions_class_order"]
    names = [k for k in dataset["labels"] if k != "background"]
    for cid in main_run["inputs"]:
        probs = np.load(main_run["out"] / f"{cid}.npz")["probabilities"]
        assert probs.shape[0] == len(names)
        expected = np.zeros(probs.shape[1:], np.uint8)
        for i, value in enumerate(order):
            expected[probs[i] > 0.5] = value
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(main_run["out"] / f"{cid}.nii.gz")))
        np.testing.assert_array_equal(seg, expected, err_msg=cid)
        for i, name in enumerate(names):   # per-class images hold the same probabilities
            img = sitk.GetArrayFromImage(sitk.ReadImage(str(main_run["out"] / f"{cid}_probabilities" / f"{name}.nii.gz")))
            np.testing.assert_allclose(img, probs[i], atol=1e-6, err_msg=f"{cid} {name}")
        assert 0.0 <= probs.min() and probs.max() <= 1.0


@pytest.mark.skipif(TRAINER != "nnUNetTrainerZePTPredictTest", reason="closed-form anomaly of the test network only")
def test_anomaly_channel_survives_sliding_window_and_export(main_run):
    """The test network's anomaly logit is -max_r logit_r, so on a case at the model's spacing
    (no resampling) the exported map must equal 1 - max_r p_r: the extra channel was blended,
    split off and exported as the last channel, not mixed with a segmentation channel."""
    out = main_run["out"]
    probs = np.load(out / "synth_000.npz")["probabilities"]
    anomaly = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "synth_000_anomaly.nii.gz")))
    np.testing.assert_allclose(anomaly, 1.0 - probs.max(axis=0), atol=5e-3)
    assert anomaly.std() > 1e-3   # not a constant map
    for cid in main_run["inputs"]:   # real CT: resampled, still a score in [0, 1]
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{cid}_anomaly.nii.gz")))
        assert a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0


def test_report_json_scores_and_lesions(main_run, model):
    out = main_run["out"]
    dataset = json.loads((model["zept"] / "dataset.json").read_text())
    names = [k for k in dataset["labels"] if k != "background"]
    for cid, path in main_run["inputs"].items():
        rep = json.loads((out / f"{cid}.json").read_text())
        img = sitk.ReadImage(str(out / f"{cid}.nii.gz"))
        probs = np.load(out / f"{cid}.npz")["probabilities"]
        voxel_ml = float(np.prod(img.GetSpacing())) / 1000
        assert rep["case"] == cid and rep["input"] == str(Path(path).resolve())
        assert rep["anomaly_map"]["available"] is True
        assert set(rep["tumours"]) == {"liver_tumour", "pancreas_tumour"}
        assert rep["tumours"]["pancreas_tumour"]["zero_shot"] is True
        assert rep["tumours"]["liver_tumour"]["zero_shot"] is False
        for i, n in enumerate(names):
            assert rep["class_volumes_ml"][n] == pytest.approx(np.count_nonzero(probs[i] >= 0.5) * voxel_ml, rel=1e-6)
        for tname, t in rep["tumours"].items():
            tp = probs[names.index(tname)]
            assert 0.0 <= t["presence_score"] <= 1.0
            assert t["tumour_detected"] == (len(t["lesions"]) > 0) == (t["presence_score"] >= 0.5)
            for les in t["lesions"]:
                assert les["host_organ"] in t["host_organs"]
                assert 0.5 <= les["highest_probability"] <= float(tp.max()) + 1e-4   # JSON rounds to 4 decimals
                assert 0 < les["volume_ml"] <= rep["class_volumes_ml"][tname] + 1e-3   # JSON rounds to 4 decimals
                idx = img.TransformPhysicalPointToContinuousIndex(les["centre_mm"])
                assert all(-0.5 <= i <= s - 0.5 for i, s in zip(idx, img.GetSize())), (cid, les)
                np.testing.assert_allclose(idx, les["centre_voxel_xyz"], atol=0.05)


def test_dicom_seg_references_the_series(main_run):
    import highdicom as hd
    import pydicom

    out = main_run["out"]
    series = Path(main_run["inputs"]["ct-3slice"])
    slices = {}
    for f in sorted(series.iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        slices[ds.SOPInstanceUID] = ds
    series_uid = next(iter(slices.values())).SeriesInstanceUID
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct-3slice.nii.gz")))
    ref_img = _read_input(series)
    seg = hd.seg.segread(out / "ct-3slice_seg.dcm")
    assert seg.StudyInstanceUID == next(iter(slices.values())).StudyInstanceUID
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [series_uid]
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced <= set(slices)
    rep = json.loads((out / "ct-3slice.json").read_text())
    value_of = {int(s.SegmentNumber): next(d["label_value"] for d in rep["dicom"]["seg_segments"]
                                           if d["segment_number"] == int(s.SegmentNumber))
                for s in seg.SegmentSequence}
    assert sorted(value_of.values()) == sorted(int(v) for v in np.unique(label) if v)
    names = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    for number, value in value_of.items():
        assert names[number] == rep["label_map_values"][str(value)]
    pixels = seg.pixel_array.reshape(-1, *label.shape[1:])
    seen = set()
    for k, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        sop = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        src = slices[sop]
        # the frame lies on its source slice, and that slice is z index z of the volume
        pos = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(pos, [float(v) for v in src.ImagePositionPatient], atol=1e-3)
        z = int(round(ref_img.TransformPhysicalPointToContinuousIndex(pos)[2]))
        np.testing.assert_array_equal(pixels[k].astype(bool), label[z] == value_of[number])
        seen.add((z, number))
    expected = {(z, n) for n, v in value_of.items() for z in range(label.shape[0]) if np.any(label[z] == v)}
    assert seen == expected   # every non-empty (slice, segment) pair has its frame


def test_dicom_seg_is_skipped_with_a_warning_for_series_without_uids(main_run):
    """The TotalSegmentator example series has blanked Study/Series/SOP Instance UIDs: no SEG can
    reference it, the other outputs are still written and the report says why."""
    out = main_run["out"]
    assert not (out / "example_ct_dicom_seg.dcm").exists()
    rep = json.loads((out / "example_ct_dicom.json").read_text())
    assert any("DICOM SEG not written" in w and "SeriesInstanceUID" in w for w in rep["warnings"])
    assert rep["dicom"]["num_slices"] == 20 and (out / "example_ct_dicom.nii.gz").is_file()
    for cid in ("CT_image", "ct_sm_flipped", "synth_000"):   # no SEG for non-DICOM inputs
        assert not (out / f"{cid}_seg.dcm").exists()


def test_outputs_are_not_overwritten(main_run, model, monkeypatch, capsys):
    from nnunetv2_zept.cli import main

    monkeypatch.setenv("nnUNet_extTrainer", model["env"]["nnUNet_extTrainer"])
    before = (main_run["out"] / "synth_000.nii.gz").read_bytes()
    rc = main(["predict", "-i", str(main_run["inputs"]["synth_000"]), "-o", str(main_run["out"]), "-m",
               str(model["zept"]), "--disable_tta", "-device", "cpu"])
    text = "".join(capsys.readouterr())
    assert rc == 1
    assert "already exists" in text and "--overwrite" in text
    assert (main_run["out"] / "synth_000.nii.gz").read_bytes() == before


# ---------------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs_fail_clearly_and_the_others_are_predicted(model, tmp_path):
    bad = {}
    (tmp_path / "empty").mkdir()
    bad["empty"] = (tmp_path / "empty", "folder is empty")
    two = tmp_path / "two_series"
    two.mkdir()
    for f in _real("dcmqi_ct3slice", "ct-3slice").iterdir():
        shutil.copy(f, two / f"a_{f.name}")
    for f in sorted(_real("totalsegmentator", "example_ct_dicom").iterdir())[:3]:
        shutil.copy(f, two / f"b_{f.name}")
    bad["two_series"] = (two, "holds 2 DICOM series")
    bad["seg_modality"] = (_real("dcmqi_ct3slice"), "Modality 'SEG', not 'CT'")
    one_slice = tmp_path / "one_slice.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(_real("totalsegmentator", "example_ct_sm.nii.gz")))[:, :, 10], str(one_slice))
    bad["2d"] = (one_slice, "is 2D")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(2000))
    bad["corrupt"] = (corrupt, "could not read the image file")
    truncated = tmp_path / "truncated_series"
    shutil.copytree(_real("dcmqi_ct3slice", "ct-3slice"), truncated)
    data = (truncated / "02.dcm").read_bytes()
    (truncated / "02.dcm").write_bytes(data[: len(data) // 2])
    bad["truncated"] = (truncated, "02.dcm of this series cannot be read")
    bad["missing"] = (tmp_path / "no_such_file.nii.gz", "does not exist")
    good = model["train_cases"][0]
    out = tmp_path / "out"
    # mirroring TTA on here (the default; 8 flips per tile, so on the smallest case)
    r = _predict(model, ["-i", bad["empty"][0], good, *[v[0] for k, v in bad.items() if k != "empty"],
                         "-o", out, "-m", model["zept"], "-device", "cpu"])
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert f"Predicted 1 of {len(bad) + 1}" in r.stdout
    summary = r.stderr[r.stderr.index("FAILED"):]
    for key, (path, phrase) in bad.items():
        lines = [ln for ln in summary.splitlines() if str(path) in ln or str(Path(path).resolve()) in ln]
        assert lines, f"{key}: {path} not named in the failure summary:\n{summary}"
        assert any(phrase in ln for ln in lines), f"{key}: expected {phrase!r} in {lines}"
    assert (out / "synth_000.nii.gz").is_file() and (out / "synth_000.json").is_file()
    _assert_same_geometry(sitk.ReadImage(str(out / "synth_000.nii.gz")), sitk.ReadImage(str(good)), "TTA run")
    assert json.loads((out / "synth_000.json").read_text())["model"]["mirroring_tta"] is True
    produced = {p.name.split(".")[0].replace("_anomaly", "") for p in out.iterdir()}
    assert produced == {"synth_000"}, produced   # failed inputs leave nothing behind


def test_missing_folds_and_bad_model_folder_are_clear_errors(model, tmp_path, capsys):
    from nnunetv2_zept.cli import main

    good = str(_real("totalsegmentator", "example_ct_sm.nii.gz"))
    rc = main(["predict", "-i", good, "-o", str(tmp_path / "o"), "-m", str(model["zept"]), "-f", "0", "3",
               "-device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "lacks fold(s) 3" in err and "available: 0" in err
    rc = main(["predict", "-i", good, "-o", str(tmp_path / "o"), "-m", str(tmp_path), "-device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "has no plans.json" in err
    rc = main(["predict", "-i", good, "-o", str(tmp_path / "o"), "-m", str(model["zept"]), "-chk",
               "checkpoint_nope.pth", "-device", "cpu"])
    assert rc == 1 and "checkpoint_nope.pth" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- plain nnU-Net model


@pytest.mark.skipif(TRAINER != "nnUNetTrainerZePTPredictTest", reason="the plain model is derived from the test model")
def test_plain_nnunet_model_predicts_without_anomaly_map(model, main_run, tmp_path):
    """-d/-c/-tr/-p addressing like nnUNetv2_predict; the network has no `return_anomaly_map`:
    labels and scores are written, the anomaly map is skipped with a message, and the labels
    equal those of the ZePT-contract network with the same weights (the extra channel does not
    disturb segmentation)."""
    out = tmp_path / "out"
    case = main_run["inputs"]["CT_image"]
    r = _predict(model, ["-i", case, "-o", out, "-d", str(DATASET_ID), "-c", CONFIG, "-tr", "nnUNetTrainer", "-p",
                         PLANS, "--disable_tta", "-device", "cpu"])
    _check(r, "predict with the plain model")
    assert "anomaly map skipped" in r.stdout
    assert not (out / "CT_image_anomaly.nii.gz").exists()
    rep = json.loads((out / "CT_image.json").read_text())
    assert rep["anomaly_map"]["available"] is False and "no anomaly map" in rep["anomaly_map"]["message"]
    assert rep["model"]["trainer"] == "nnUNetTrainer" and set(rep["tumours"]) == {"liver_tumour", "pancreas_tumour"}
    plain = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "CT_image.nii.gz")))
    zept = sitk.GetArrayFromImage(sitk.ReadImage(str(main_run["out"] / "CT_image.nii.gz")))
    np.testing.assert_array_equal(plain, zept)


# ---------------------------------------------------------------------------------------------- nothing lost, nothing run


def _one_error_line(r):
    """The command's error: exactly one line on stderr, no traceback."""
    from conftest import stderr_lines

    lines = stderr_lines(r.stderr)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    return lines


def test_output_that_resolves_to_an_input_is_refused_even_with_overwrite(model, tmp_path):
    src = model["train_cases"][0]
    data = src.read_bytes()
    # 1. the input's own folder as -o: <case>.nii.gz is the input (nnU-Net's _0000 suffix aside)
    own = tmp_path / "own"
    own.mkdir()
    (own / "ct.nii.gz").write_bytes(data)
    # 2. an earlier output that is a symbolic link to the input, 3. one that is a hard link
    links = tmp_path / "links"
    links.mkdir()
    (links / "in").mkdir()
    (links / "in" / "sym.nii.gz").write_bytes(data)
    (links / "in" / "hard.nii.gz").write_bytes(data)
    os.symlink(links / "in" / "sym.nii.gz", links / "sym.nii.gz")
    os.link(links / "in" / "hard.nii.gz", links / "hard.nii.gz")
    # 4. a DICOM series folder as -o
    series = tmp_path / "series"
    shutil.copytree(_real("dcmqi_ct3slice", "ct-3slice"), series)
    listing = sorted(p.name for p in series.iterdir())
    for inputs, out in (([own / "ct.nii.gz"], own), ([links / "in" / "sym.nii.gz", links / "in" / "hard.nii.gz"], links),
                        ([series], series)):
        r = _predict(model, ["-i", *inputs, "-o", out, "-m", model["zept"], "--overwrite", "--save_probabilities",
                             "--disable_tta", "-device", "cpu"])
        _one_error_line(r)
        assert "Loading model" not in r.stdout   # refused before minutes of model loading
        for inp in inputs:
            assert any(str(inp) in ln and ("is the input file itself" in ln or "inside the input DICOM folder" in ln)
                       for ln in r.stderr.splitlines()), r.stderr
    assert (own / "ct.nii.gz").read_bytes() == data
    assert (links / "in" / "sym.nii.gz").read_bytes() == data and (links / "in" / "hard.nii.gz").read_bytes() == data
    assert sorted(p.name for p in series.iterdir()) == listing


def test_command_line_mistakes_are_one_line_before_the_model_loads(model, tmp_path):
    good = model["train_cases"][0]
    (tmp_path / "a_file").write_text("not a folder")
    for args, phrase in ((["-o", tmp_path / "a_file"], "exists and is not a folder"),
                         (["-o", tmp_path / "o", "--min-lesion-mm3", "-5"], "--min-lesion-mm3 -5")):
        r = _predict(model, ["-i", good, *args, "-m", model["zept"], "-device", "cpu"])
        (line,) = _one_error_line(r)
        assert phrase in line and "Loading model" not in r.stdout
    assert not (tmp_path / "o").exists()


def test_bad_checkpoints_are_refused_and_their_code_never_runs(model, tmp_path):
    """A copy of the model folder whose fold_0 checkpoint is empty, random bytes, truncated, or a
    pickle that would run a command (as `torch.load(weights_only=False)` in nnU-Net's predictor does)."""
    import torch

    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    real = (model["zept"] / "fold_0" / "checkpoint_final.pth").read_bytes()
    evil = tmp_path / "evil.pth"
    ckpt = torch.load(model["zept"] / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    ckpt["extra"] = Payload()
    torch.save(ckpt, evil)
    bad = {"empty": (b"", "empty (0 bytes)"), "random": (os.urandom(4096), "not a readable checkpoint"),
           "truncated": (real[: len(real) // 2], "not a readable checkpoint"),
           "code": (evil.read_bytes(), "refused: loading it would run code")}
    for name, (content, phrase) in bad.items():
        folder = tmp_path / name / model["zept"].name
        folder.mkdir(parents=True)
        for f in ("plans.json", "dataset.json"):
            shutil.copy(model["zept"] / f, folder / f)
        (folder / "fold_0").mkdir()
        (folder / "fold_0" / "checkpoint_final.pth").write_bytes(content)
        r = _predict(model, ["-i", model["train_cases"][0], "-o", tmp_path / name / "out", "-m", folder,
                             "-device", "cpu"])
        (line,) = _one_error_line(r)
        assert str(folder / "fold_0" / "checkpoint_final.pth") in line and phrase in line, line
        assert not marker.exists(), f"{name}: the checkpoint's code ran"
    assert torch.load(evil, weights_only=False) and marker.exists()   # the payload is real


def test_overwrite_leaves_no_outputs_of_an_earlier_run(model, tmp_path):
    case = model["train_cases"][1]
    out = tmp_path / "out"
    base = ["-i", case, "-o", out, "-m", model["zept"], "--disable_tta", "-device", "cpu"]
    _check(_predict(model, base + ["--save_probabilities"]), "first run")
    cid = "synth_001"
    assert (out / f"{cid}.npz").is_file() and (out / f"{cid}_probabilities").is_dir()
    # without --overwrite: refused, the earlier outputs untouched
    r = _predict(model, base)
    assert r.returncode == 1 and "already exists" in r.stderr and "--overwrite" in r.stderr
    # with --overwrite and without --save_probabilities: the earlier probabilities are gone, so that
    # `evaluate` cannot pair them with the new label map
    (out / "unrelated.txt").write_text("a user's file")
    _check(_predict(model, base + ["--overwrite"]), "second run")
    left = sorted(p.name for p in out.iterdir())
    assert left == [f"{cid}.json", f"{cid}.nii.gz", f"{cid}_anomaly.nii.gz", "unrelated.txt"], left
    assert json.loads((out / f"{cid}.json").read_text())["outputs"].keys() == {"label_map", "anomaly_map"}


def test_readme_steps_predict_then_evaluate_chain(model, tmp_path):
    """README step 4 (`nnunetv2_zept predict --save_probabilities`) feeds step 5 (`evaluate`)."""
    raw = model["train_cases"][0].parents[1]
    images = tmp_path / "imagesTs"
    images.mkdir()
    for p in model["train_cases"][:2]:
        shutil.copy(p, images / p.name)
    out = tmp_path / "out"
    _check(_predict(model, ["-i", *sorted(images.iterdir()), "-o", out, "-m", model["zept"], "--save_probabilities",
                            "--disable_tta", "-device", "cpu"]), "predict")
    assert (out / "synth_000_anomaly.nii.gz").is_file()
    r = _run([PYTHON, "-m", "nnunetv2_zept.cli", "evaluate", str(raw / "labelsTr"), str(out), "-djfile",
              str(raw / "dataset.json"), "-o", str(tmp_path / "eval"), "--images", str(images), "--no-plots"],
             model["env"])
    _check(r, "evaluate")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["cases"] == ["synth_000", "synth_001"]
    assert summary["per_class"]["liver"]["n_cases"] == 2
