"""`nnunetv2_zept merge` on MSD-format mini datasets made with the synthetic generator: classes,
sources, zero-shot test sets, side split against the generator's truth, links, determinism, and
every bad input of the issue (clear error, nothing written)."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import msd_minis
from nnunetv2_zept.cli import main as cli_main
from nnunetv2_zept.merging import MergeError, MergeOptions, build_plan, describe_plan, write_plan
from nnunetv2_zept.roles import roles_from_dataset_json

ORGANS = ["liver", "spleen", "kidney_right", "kidney_left", "pancreas", "stomach", "colon", "lungs"]
SEEN = ["liver_tumour", "kidney_tumour", "kidney_cyst"]
ZERO_SHOT = ["pancreatic_tumour", "hepatic_vessel_tumour", "lung_tumour", "colon_tumour"]


@pytest.fixture(scope="module")
def minis(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    raw = root / "raw"
    msd_minis.make_msd_minis(raw, n_cases=3)
    mapping = msd_minis.write_mapping(root / "mapping.json")
    return {"root": root, "raw": raw, "mapping": mapping}


@pytest.fixture
def env(minis, monkeypatch):
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        (minis["root"] / sub).mkdir(exist_ok=True)
        monkeypatch.setenv(var, str(minis["root"] / sub))
    return minis


def union_options(minis, target_id=600, **kw):
    return MergeOptions(inputs=msd_minis.TRAIN + msd_minis.TEST, test_inputs=msd_minis.TEST, target_id=target_id,
                        name="ZePTUnion", mapping_file=minis["mapping"], **kw)


def _read(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _tree(folder: Path) -> dict:
    """path -> (sha256, mtime) of every file under folder (hidden ones included)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def merged(minis):
    mp = pytest.MonkeyPatch()
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        (minis["root"] / sub).mkdir(exist_ok=True)
        mp.setenv(var, str(minis["root"] / sub))
    before = _tree(minis["raw"])
    result = write_plan(build_plan(union_options(minis), log=lambda s: None), log=lambda s: None)
    mp.undo()
    return dict(minis, result=result, before=before,
                dj=json.loads((result.folder / "dataset.json").read_text()))


def _ids(dj, name):
    v = dj["labels"][name]
    return v if isinstance(v, list) else [v]


def test_union_classes_sources_and_zero_shot_test_sets(merged):
    dj = merged["dj"]
    roles = roles_from_dataset_json(dj)
    assert roles.names == ORGANS + SEEN + ZERO_SHOT
    assert [roles.names[z] for z in roles.zero_shot] == ZERO_SHOT
    sources = dj["zept"]["sources"]
    assert list(sources) == ["msd_liver", "msd_spleen", "kits", "wordmini", "ctorgmini"]
    assert sources["kits"] == {"case_prefix": "case_", "annotates": ["kidney_right", "kidney_left", "kidney_tumour",
                                                                     "kidney_cyst"]}
    assert sources["ctorgmini"]["annotates"] == ["liver", "kidney_right", "kidney_left", "lungs"]
    tests = dj["zept"]["test_sources"]
    assert tests["msd_lung"]["annotates"] == ["lung_tumour"]
    assert tests["msd_colon"]["annotates"] == ["colon_tumour"]
    assert tests["msd_pancreas"]["annotates"] == ["pancreas", "pancreatic_tumour"]
    # the vessel label of MSD Task08 is annotated by no training input: dropped, not a class
    assert tests["msd_hepatic_vessel"]["annotates"] == ["hepatic_vessel_tumour"]
    assert [s.name for s in roles.test_sources] == list(tests)
    assert dj["zept"]["tumours"]["hepatic_vessel_tumour"] == {"host": ["liver"], "zero_shot": True}
    assert dj["zept"]["tumours"]["kidney_tumour"] == {"host": ["kidney_right", "kidney_left"]}
    # organ regions hold their tumours, one id per side for the kidneys; ids are consecutive (nnU-Net)
    assert set(_ids(dj, "kidney_tumour")) < set(_ids(dj, "kidney_right")) | set(_ids(dj, "kidney_left"))
    assert not set(_ids(dj, "kidney_right")) & set(_ids(dj, "kidney_left"))
    assert set(_ids(dj, "pancreatic_tumour")) < set(_ids(dj, "pancreas"))
    all_ids = sorted({i for n in roles.names for i in _ids(dj, n)})
    assert all_ids == list(range(1, len(all_ids) + 1))
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    assert LabelManager(dj["labels"], dj["regions_class_order"]).has_regions
    folder = merged["result"].folder
    assert dj["numTraining"] == 15 == len(list((folder / "labelsTr").iterdir()))
    assert len(list((folder / "labelsTs").iterdir())) == 12
    zs_ids = {i for n in ZERO_SHOT for i in _ids(dj, n)}
    for f in (folder / "labelsTr").iterdir():
        assert not set(np.unique(_read(f)).tolist()) & zs_ids, f.name
    assert (folder / "merge.json").is_file()


def test_labels_are_remapped_and_kidneys_split_by_side_as_the_generator_drew_them(merged):
    dj, folder = merged["dj"], merged["result"].folder
    ids = msd_minis.IDS
    one = {n: _ids(dj, n)[0] for n in ORGANS}
    # MSD liver: liver 1 -> liver, cancer 2 -> liver_tumour
    cid, case, _, task = msd_minis.task_case("Dataset003_Liver", 0)
    out = _read(folder / "labelsTr" / f"{cid}.nii.gz")
    assert np.array_equal(out == one["liver"], task == 1)
    assert np.array_equal(out == _ids(dj, "liver_tumour")[0], task == 2) and (task == 2).any()
    # KiTS: one kidney label -> right / left kidney exactly as drawn; tumour and cyst on their host's side
    for i in range(3):
        cid, case, _, task = msd_minis.task_case("Dataset220_KiTS23", i)
        out = _read(folder / "labelsTr" / f"{cid}.nii.gz")
        assert np.array_equal(out == one["kidney_right"], case.label == ids["kidney_right"])
        assert np.array_equal(out == one["kidney_left"], case.label == ids["kidney_left"])
        for t in ("kidney_tumour", "kidney_cyst"):
            hosts = {l.host for l in case.lesions if l.type == t}
            lesion = case.label == ids[t]
            for host in hosts:
                side = 0 if host == "kidney_right" else 1
                assert (out[lesion] == _ids(dj, t)[side]).all()
            assert np.isin(out[lesion], _ids(dj, t)).all() and lesion.any() == bool(hosts)
    # CT-ORG: "kidneys" split the same way; its bone label (mapped to null) becomes background
    cid, case, _, task = msd_minis.task_case("Dataset012_CTORGmini", 1)
    out = _read(folder / "labelsTr" / f"{cid}.nii.gz")
    assert np.array_equal(out == one["kidney_right"], case.label == ids["kidney_right"])
    assert np.array_equal(out == one["lungs"], task == 3)
    assert (task == 5).any() and (out[task == 5] == 0).all()
    # zero-shot test labels: MSD Task08 vessel -> background, tumour -> hepatic_vessel_tumour
    cid, case, _, task = msd_minis.task_case("Dataset008_HepaticVessel", 0)
    out = _read(folder / "labelsTs" / f"{cid}.nii.gz")
    assert (task == 1).any() and (out[task == 1] == 0).all()
    assert np.array_equal(out == _ids(dj, "hepatic_vessel_tumour")[0], task == 2)
    # geometry is the input's
    src = sitk.ReadImage(str(merged["raw"] / "Dataset220_KiTS23" / "labelsTr" / "case_00000.nii.gz"))
    dst = sitk.ReadImage(str(folder / "labelsTr" / "case_00000.nii.gz"))
    assert src.GetOrigin() == dst.GetOrigin() and src.GetSpacing() == dst.GetSpacing()


def test_images_are_linked_and_inputs_never_change(merged):
    folder = merged["result"].folder
    src = merged["raw"] / "Dataset009_Spleen" / "imagesTr" / "spleen_0_0000.nii.gz"
    dst = folder / "imagesTr" / "spleen_0_0000.nii.gz"
    assert os.stat(src).st_ino == os.stat(dst).st_ino      # hard link on the same file system
    assert merged["result"].links == {"hard": 27}
    after = {k: v for k, v in _tree(merged["raw"]).items() if not k.startswith(folder.name)}
    assert after == merged["before"]


def test_same_command_gives_the_same_dataset_and_never_overwrites(merged, env):
    first = merged["result"].folder
    snapshot = _tree(first)
    with pytest.raises(MergeError, match="already used"):
        build_plan(union_options(env, 600), log=lambda s: None)
    assert _tree(first) == snapshot
    # written by two worker processes this time: the same files
    again = write_plan(build_plan(union_options(env, 601, num_processes=2), log=lambda s: None),
                       log=lambda s: None).folder
    assert json.loads((again / "dataset.json").read_text()) == merged["dj"]
    for sub in ("labelsTr", "labelsTs"):
        names = sorted(p.name for p in (first / sub).iterdir())
        assert names == sorted(p.name for p in (again / sub).iterdir())
        for n in names:
            assert np.array_equal(_read(first / sub / n), _read(again / sub / n))
    shutil.rmtree(again)


def test_dry_run_prints_the_plan_and_writes_nothing(env, capsys):
    before = _tree(env["raw"])
    rc = cli_main(["merge", "-i", *msd_minis.TRAIN, *msd_minis.TEST, "--test", *msd_minis.TEST, "-o", "610",
                   "--name", "DryRun", "--mapping", env["mapping"], "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "held out as zero-shot: colon_tumour (test cases: msd_colon)" in out
    assert "'kidney' (kidney) is split by side into kidney_right / kidney_left" in out
    assert "dropped: hepatic_vessels" in out and "nothing was written" in out
    assert _tree(env["raw"]) == before


# ----------------------------------------------------------------------------------------------
# bad input: one clear error each, nothing written

def _copy_input(raw: Path, src: str, dst: str, labels=None, channels=None):
    shutil.copytree(raw / src, raw / dst)
    dj = json.loads((raw / dst / "dataset.json").read_text())
    dj["name"] = dst.split("_", 1)[1]
    if labels is not None:
        dj["labels"] = {"background": 0, **labels}
    if channels is not None:
        dj["channel_names"] = channels
    (raw / dst / "dataset.json").write_text(json.dumps(dj))
    return dst


@pytest.fixture
def bad_env(tmp_path, minis, monkeypatch):
    raw = tmp_path / "raw"
    shutil.copytree(minis["raw"], raw, ignore=shutil.ignore_patterns("Dataset6*"))
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        (tmp_path / sub).mkdir(exist_ok=True)
        monkeypatch.setenv(var, str(tmp_path / sub))
    return raw


def _expect_error(raw, options, *phrases):
    before = sorted(str(p) for p in raw.rglob("*"))
    with pytest.raises(MergeError) as e:
        write_plan(build_plan(options, log=lambda s: None), log=lambda s: None)
    for p in phrases:
        assert p in str(e.value), str(e.value)
    assert "Fix:" in str(e.value) or "mapping file" in str(e.value)
    assert sorted(str(p) for p in raw.rglob("*")) == before
    return str(e.value)


def test_one_name_with_two_meanings(bad_env):
    a = _copy_input(bad_env, "Dataset003_Liver", "Dataset101_SiteA", labels={"liver": 1, "tumor": 2})
    b = _copy_input(bad_env, "Dataset007_Pancreas", "Dataset102_SiteB", labels={"pancreas": 1, "tumor": 2})
    msg = _expect_error(bad_env, MergeOptions([a, b], 600, "X"), "give the label name 'tumor' different meanings",
                        "liver_tumour in Dataset101_SiteA", "pancreatic_tumour in Dataset102_SiteB")
    assert '"Dataset101_SiteA": {"tumor": "liver_tumour"}' in msg
    # said explicitly, it merges
    mapping = bad_env.parent / "m.json"
    mapping.write_text(json.dumps({a: {"tumor": "liver_tumour"}, b: {"tumor": "pancreatic_tumour"}}))
    plan = build_plan(MergeOptions([a, b], 600, "X", mapping_file=str(mapping)), log=lambda s: None)
    assert plan.channels == ["liver", "pancreas", "liver_tumour", "pancreatic_tumour"]


def test_label_that_maps_to_nothing(bad_env):
    a = _copy_input(bad_env, "Dataset003_Liver", "Dataset103_Odd", labels={"liver": 1, "blob": 2})
    _expect_error(bad_env, MergeOptions([a, "Dataset009_Spleen"], 600, "X"), "label 'blob' maps to no class",
                  '"Dataset103_Odd": {"blob": "<class>"}')
    # the network's background tissue classes are no annotated structures either
    _expect_error(bad_env, MergeOptions(["Dataset012_CTORGmini"], 600, "X"), "'bone'", "background tissue")


def test_duplicate_case_ids_across_inputs(bad_env):
    b = _copy_input(bad_env, "Dataset009_Spleen", "Dataset109_SpleenCopy")
    _expect_error(bad_env, MergeOptions(["Dataset009_Spleen", b], 600, "X"), "3 case id(s) occur in more than one",
                  "--prefix-case-ids")
    plan = build_plan(MergeOptions(["Dataset009_Spleen", b], 600, "X", prefix_case_ids=True), log=lambda s: None)
    assert plan.dataset_json["zept"]["sources"]["spleencopy"]["case_prefix"] == "spleencopy_"
    assert sorted(plan.sources[0].case_ids.values()) == ["msd_spleen_spleen_0", "msd_spleen_spleen_1",
                                                         "msd_spleen_spleen_2"]


def test_mismatched_channel_names(bad_env):
    b = _copy_input(bad_env, "Dataset009_Spleen", "Dataset110_SpleenMR", channels={"0": "MR"})
    _expect_error(bad_env, MergeOptions(["Dataset003_Liver", b], 600, "X"), "different channel names",
                  "{'0': 'CT'} vs {'0': 'MR'}")


def test_zero_shot_voxels_left_in_training(bad_env):
    inputs = ["Dataset011_WORDmini", "Dataset007_Pancreas"]
    _expect_error(bad_env, MergeOptions(inputs, 600, "X", zero_shot=["pancreas tumour"]),
                  "zero-shot type 'pancreatic_tumour' has voxels in 2 training case(s) of Dataset007_Pancreas",
                  "--test", "--zero-shot-voxels host")
    # relabelled as the host organ instead: the pancreas keeps its tumour voxels, the tumour id never appears
    result = write_plan(build_plan(MergeOptions(inputs, 600, "X", zero_shot=["pancreatic_tumour"],
                                                zero_shot_voxels="host"), log=lambda s: None), log=lambda s: None)
    dj = json.loads((result.folder / "dataset.json").read_text())
    assert dj["zept"]["sources"]["msd_pancreas"]["annotates"] == ["pancreas"]
    _, _, _, task = msd_minis.task_case("Dataset007_Pancreas", 0)
    out = _read(result.folder / "labelsTr" / "pancreas_000.nii.gz")
    assert (task == 2).any() and np.array_equal(out == _ids(dj, "pancreas")[0], task > 0)


def test_output_id_that_exists(bad_env):
    (bad_env / "Dataset600_Other").mkdir()
    _expect_error(bad_env, MergeOptions(["Dataset009_Spleen"], 600, "X"), "output dataset id 600 is already used",
                  "Dataset600_Other")


def test_image_and_label_geometry_disagree(bad_env):
    b = _copy_input(bad_env, "Dataset009_Spleen", "Dataset111_Shifted")
    label = bad_env / b / "labelsTr" / "spleen_1.nii.gz"
    img = sitk.ReadImage(str(label))
    img.SetOrigin(tuple(v + 5.0 for v in img.GetOrigin()))
    sitk.WriteImage(img, str(label))
    _expect_error(bad_env, MergeOptions(["Dataset003_Liver", b], 600, "X"), "Dataset111_Shifted, case 'spleen_1'",
                  "disagree: origin")
    # a truncated label file is named, not a traceback
    c = _copy_input(bad_env, "Dataset009_Spleen", "Dataset113_Truncated")
    label = bad_env / c / "labelsTr" / "spleen_2.nii.gz"
    label.write_bytes(label.read_bytes()[: label.stat().st_size // 2])
    _expect_error(bad_env, MergeOptions(["Dataset003_Liver", c], 600, "X"), "Dataset113_Truncated, case 'spleen_2'",
                  "cannot read")


def test_cli_error_is_one_line_with_exit_1(bad_env, capsys):
    (bad_env / "Dataset600_Other").mkdir()
    rc = cli_main(["merge", "-i", "Dataset009_Spleen", "-o", "600", "--name", "X"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("nnunetv2_zept merge: error: output dataset id 600") and "\n" not in err


def test_region_based_kits_and_a_zero_shot_type_for_prediction_only(bad_env):
    # nnU-Net's own KiTS23 conversion: overlapping regions, so its labels are read by id
    kits = _copy_input(bad_env, "Dataset220_KiTS23", "Dataset221_KiTS2023",
                       labels={"kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2})
    dj = json.loads((bad_env / kits / "dataset.json").read_text())
    dj["overwrite_image_reader_writer"] = "NibabelIOWithReorient"
    (bad_env / kits / "dataset.json").write_text(json.dumps(dj))
    plan = build_plan(MergeOptions(["Dataset011_WORDmini", kits], 600, "X", zero_shot=["hepatic metastases"]),
                      log=lambda s: None)
    assert plan.sources[1].builtin == "kits"
    assert {i: r.target for i, r in plan.sources[1].resolution.items()} == {
        1: "kidney", 2: "kidney_tumour", 3: "kidney_cyst"}
    dj = plan.dataset_json
    assert "overwrite_image_reader_writer" not in dj
    assert dj["zept"]["tumours"]["liver_metastasis"] == {"host": ["liver"], "zero_shot": True}
    assert set(_ids(dj, "liver_metastasis")) < set(_ids(dj, "liver"))
    text = describe_plan(plan)
    assert "liver_metastasis (test cases: none; declared for prediction only)" in text
    assert "Dataset221_KiTS2023 asks nnU-Net for the image reader NibabelIOWithReorient" in text


def test_cases_in_another_orientation_are_written_reoriented(bad_env):
    # a copy of MSD spleen stored with the x axis flipped (same physical image, "RPS" instead of "LPS")
    b = _copy_input(bad_env, "Dataset009_Spleen", "Dataset112_SpleenFlipped")
    for f in list((bad_env / b / "imagesTr").iterdir()) + list((bad_env / b / "labelsTr").iterdir()):
        f_real = f.resolve()
        img = sitk.Flip(sitk.ReadImage(str(f_real)), [True, False, False])
        f.unlink()
        sitk.WriteImage(img, str(f), True)
    inputs = ["Dataset003_Liver", b]
    _expect_error(bad_env, MergeOptions(inputs, 600, "X"), "stored in 2 axis orientations",
                  "LPS: 3 case(s) of Dataset003_Liver", "RPS: 3 case(s) of Dataset112_SpleenFlipped",
                  "--orientation LPS")
    result = write_plan(build_plan(MergeOptions(inputs, 600, "X", orientation="LPS"), log=lambda s: None),
                        log=lambda s: None)
    assert result.links == {"hard": 3, "reoriented copy": 3}
    for i in range(3):
        _, _, image, task = msd_minis.task_case("Dataset009_Spleen", i)
        lab = sitk.ReadImage(str(result.folder / "labelsTr" / f"spleen_{i}.nii.gz"))
        assert lab.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        assert np.array_equal(sitk.GetArrayFromImage(lab) > 0, task == 1)
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(result.folder / "imagesTr" / f"spleen_{i}_0000.nii.gz")))
        assert np.array_equal(ct, image.astype(np.int16))
    with pytest.raises(MergeError, match="not an axis orientation"):
        build_plan(MergeOptions(inputs, 601, "X", orientation="LPX"), log=lambda s: None)


def test_docs_mapping_file_example_is_a_valid_mapping_file(tmp_path):
    import re

    from nnunetv2_zept.merging.vocabulary import load_mapping_file

    doc = (Path(__file__).resolve().parents[1] / "docs" / "dataset.md").read_text()
    blocks = [b for b in re.findall(r"```json\n(.*?)```", doc, re.S) if '"*"' in b]
    assert len(blocks) == 1
    (tmp_path / "m.json").write_text(blocks[0])
    mapping = load_mapping_file(tmp_path / "m.json")
    assert mapping["Dataset106_MyLungSet"] == "msd_lung" and mapping["Dataset012_CTORG"]["bone"] is None
