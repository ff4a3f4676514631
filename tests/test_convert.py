"""`nnunetv2_zept convert`: a tiny generated multi-label dataset becomes a ZePT region dataset that
nnU-Net's own planning accepts, and the source is never changed."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_zept.cli import main as cli_main
from nnunetv2_zept.conversion import (ConversionError, ConversionOptions, build_zept_dataset_json,
                                      convert_dataset)
from nnunetv2_zept.roles import ZePTConfigError, roles_from_dataset_json

SHAPE = (32, 32, 32)
SOURCE_LABELS = {"background": 0, "liver": 1, "liver_tumour": 2, "kidney": 3, "kidney_tumour": 4}


def _write(arr, path, spacing=(1.5, 1.5, 1.5)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def _case(rng, kind):
    """A 32^3 CT-like volume with an organ block and a tumour ball inside it."""
    seg = np.zeros(SHAPE, np.uint8)
    z, y, x = np.mgrid[:32, :32, :32]
    organ, tumour = (1, 2) if kind == "liver" else (3, 4)
    seg[6:26, 6:26, 4:20 if kind == "liver" else 14:28] = organ
    c = (16, 16, 12 if kind == "liver" else 21)
    seg[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 9] = tumour
    hu = np.choose(seg, [-100.0, 60.0, 20.0, 150.0, 40.0]) + rng.normal(0, 10, SHAPE)
    return hu.astype(np.float32), seg


def make_source(raw: Path, dataset_id=11, name="LiverKidney", labels=SOURCE_LABELS, prefixes=("LITS", "KITS")):
    folder = raw / ("Dataset%03d_%s" % (dataset_id, name))
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = 0
    for prefix, kind in zip(prefixes, ("liver", "kidney")):
        for i in range(2):
            img, seg = _case(rng, kind)
            _write(img, folder / "imagesTr" / f"{prefix}_{i:03d}_0000.nii.gz")
            _write(seg, folder / "labelsTr" / f"{prefix}_{i:03d}.nii.gz")
            n += 1
    _write(_case(rng, "liver")[0], folder / "imagesTs" / "TEST_000_0000.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": labels, "numTraining": n, "file_ending": ".nii.gz",
        "name": name, "licence": "generated"}, indent=2))
    return folder


def tree_hash(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch):
    dirs = {k: tmp_path / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for k, d in dirs.items():
        d.mkdir()
        monkeypatch.setenv(k, str(d))
    return dirs


ZS_TEXT = "Kidney cyst: a round, sharply marginated, water-density lesion (0-20 HU) without enhancement."
CONVERT_ARGS = ["convert", "-d", "11", "-o", "511", "--name", "LKZePT", "--zero-shot", "kidney_cyst",
                "--text", "kidney_cyst", ZS_TEXT,
                "--case-source", "lits", "LITS_", "liver", "liver_tumour",
                "--case-source", "kits", "KITS_", "kidney", "kidney_tumour"]


def test_convert_writes_region_dataset_and_leaves_source_untouched(nnunet_dirs, capsys):
    raw = nnunet_dirs["nnUNet_raw"]
    src = make_source(raw)
    before = tree_hash(src)
    assert cli_main(CONVERT_ARGS) == 0
    out = capsys.readouterr().out
    dst = raw / "Dataset511_LKZePT"
    dj = json.loads((dst / "dataset.json").read_text())

    # organs first (with the tumours they host, zero-shot id included), then tumours; new id 5
    assert dj["labels"] == {"background": 0, "liver": [1, 2], "kidney": [3, 4, 5], "liver_tumour": 2,
                            "kidney_tumour": 4, "kidney_cyst": 5}
    assert dj["regions_class_order"] == [1, 3, 2, 4, 5]
    assert dj["zept"] == {
        "organs": ["liver", "kidney"],
        "tumours": {"liver_tumour": {"host": ["liver"]}, "kidney_tumour": {"host": ["kidney"]},
                    "kidney_cyst": {"host": ["kidney"], "zero_shot": True, "text": ZS_TEXT}},
        "sources": {"lits": {"case_prefix": "LITS_", "annotates": ["liver", "liver_tumour"]},
                    "kits": {"case_prefix": "KITS_", "annotates": ["kidney", "kidney_tumour"]}}}
    for key in ("channel_names", "numTraining", "file_ending", "licence"):
        assert dj[key] == json.loads((src / "dataset.json").read_text())[key]

    roles = roles_from_dataset_json(dj, present_channels=[0, 1, 2, 3])
    assert roles.zero_shot == [4] and roles.hosts == {2: [0], 3: [1], 4: [1]}
    assert roles.annotated_channels("LITS_000") == [0, 2]
    assert roles.annotated_channels("KITS_001") == [1, 3]
    assert "kidney_cyst [zero-shot] in kidney" in out and "plan_and_preprocess -d 511" in out

    # labels byte-identical copies (not links); images shared or copied; imagesTs handled
    for f in (src / "labelsTr").iterdir():
        copy = dst / "labelsTr" / f.name
        assert copy.read_bytes() == f.read_bytes() and not os.path.samefile(copy, f)
    for sub in ("imagesTr", "imagesTs"):
        names = sorted(p.name for p in (src / sub).iterdir())
        assert names and sorted(p.name for p in (dst / sub).iterdir()) == names
        for n in names:
            assert (dst / sub / n).read_bytes() == (src / sub / n).read_bytes()
    assert os.path.samefile(dst / "imagesTr" / "LITS_000_0000.nii.gz", src / "imagesTr" / "LITS_000_0000.nii.gz")
    assert tree_hash(src) == before
    assert [p.name for p in raw.iterdir() if p.name.startswith(".")] == []   # no partial folder left


def test_convert_refuses_to_overwrite_and_to_reconvert(nnunet_dirs, capsys):
    raw = nnunet_dirs["nnUNet_raw"]
    make_source(raw)
    assert cli_main(["convert", "-d", "Dataset011_LiverKidney", "-o", "12"]) == 0
    dst = raw / "Dataset012_LiverKidneyZePT"
    written = tree_hash(dst)
    capsys.readouterr()
    # same id, other name: nnU-Net ids must be unique, so this is refused too
    assert cli_main(["convert", "-d", "LiverKidney", "-o", "12", "--name", "Other"]) == 1
    err = capsys.readouterr().err
    assert "already used" in err and "Dataset012_LiverKidneyZePT" in err and "-o" in err
    assert tree_hash(dst) == written and not (raw / "Dataset012_Other").exists()
    # an id used only in nnUNet_preprocessed is refused as well
    (nnunet_dirs["nnUNet_preprocessed"] / "Dataset013_Something").mkdir()
    assert cli_main(["convert", "-d", "11", "-o", "13"]) == 1
    assert "Dataset013_Something" in capsys.readouterr().err
    # the converted dataset is region-based: converting it again is refused with a hint
    assert cli_main(["convert", "-d", "12", "-o", "14"]) == 1
    err = capsys.readouterr().err
    assert "already region-based" in err and "zept" in err
    assert cli_main(["convert", "-d", "99", "-o", "15"]) == 1
    err = capsys.readouterr().err
    assert "no dataset '99'" in err and "Dataset011_LiverKidney" in err


def test_convert_errors_name_the_problem_and_the_fix(nnunet_dirs, capsys):
    raw = nnunet_dirs["nnUNet_raw"]
    labels = {"background": 0, "liver": 1, "cancer": 2, "kidney": 3, "kidney_tumour": 4}
    make_source(raw, 21, "Bare", labels)
    # "cancer" names no organ and there are two organs: the user must say where it lives
    assert cli_main(["convert", "-d", "21", "-o", "521"]) == 1
    err = capsys.readouterr().err
    assert "'cancer' has no host organ" in err and "--host cancer <ORGAN>" in err and "--roles" in err
    assert cli_main(["convert", "-d", "21", "-o", "521", "--host", "cancer", "liver"]) == 0
    dj = json.loads((raw / "Dataset521_BareZePT" / "dataset.json").read_text())
    assert dj["labels"]["liver"] == [1, 2] and dj["zept"]["tumours"]["cancer"] == {"host": ["liver"]}
    capsys.readouterr()

    make_source(raw, 11)
    # a class with voxels in labelsTr cannot be zero-shot
    assert cli_main(["convert", "-d", "11", "-o", "522", "--zero-shot", "liver_tumour"]) == 1
    err = capsys.readouterr().err
    assert "zept.tumours.liver_tumour.zero_shot" in err and "has voxels in the training labels" in err
    # a case source whose prefix matches no case
    assert cli_main(["convert", "-d", "11", "-o", "522", "--case-source", "lits", "LiTS-", "liver"]) == 1
    err = capsys.readouterr().err
    assert "'lits'" in err and "'LiTS-'" in err and "matches none" in err
    # a source cannot annotate a zero-shot class
    assert cli_main(["convert", "-d", "11", "-o", "522", "--zero-shot", "kidney_cyst",
                     "--case-source", "kits", "KITS_", "kidney", "kidney_cyst"]) == 1
    err = capsys.readouterr().err
    assert "'kits' annotates the zero-shot classes ['kidney_cyst']" in err and "remove them" in err
    # a class the block does not know
    assert cli_main(["convert", "-d", "11", "-o", "522", "--case-source", "lits", "LITS_", "spleen"]) == 1
    err = capsys.readouterr().err
    assert "zept.sources.lits.annotates[] = 'spleen'" in err and "Fix:" in err
    # a new class can only be zero-shot
    roles_file = raw.parent / "roles.json"
    roles_file.write_text(json.dumps({"zept": {"tumours": {"spleen_lesion": {"host": ["liver"]}}}}))
    assert cli_main(["convert", "-d", "11", "-o", "522", "--roles", str(roles_file)]) == 1
    assert "'spleen_lesion' is not a label of the source" in capsys.readouterr().err
    assert not any(p.name.startswith(("Dataset522", ".Dataset522")) for p in raw.iterdir())
    # LITS cases contain liver_tumour voxels that a source annotating only the liver would waste: a note
    assert cli_main(["convert", "-d", "11", "-o", "523", "--case-source", "lits", "LITS_", "liver"]) == 0
    out = capsys.readouterr().out
    assert "2 case(s) of source 'lits' contain 'liver_tumour', which the source does not annotate" in out
    assert "'kidney'" not in out.split("note:")[-1]


def test_roles_file_and_multi_host_tumours(capsys):
    """Pure dataset.json building: a --roles file, a tumour in two sided organs, an MSD-style name."""
    src = {"channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": 1,
           "labels": {"background": 0, "kidney_left": 1, "kidney_right": 2, "kidney_tumor": 3, "vessel": 4}}
    opts = ConversionOptions(roles_override={"tumours": {"vessel": {"host": ["kidney_left"]}},
                                             "texts": {"kidney_left": "The left kidney ..."}})
    dj, roles = build_zept_dataset_json(src, opts, present_ids=[0, 1, 2, 3, 4], case_list=["a"])
    # kidney_tumor lives in two organs: not merged into either; vessel (now a tumour) merged into its host
    assert dj["labels"] == {"background": 0, "kidney_left": [1, 4], "kidney_right": 2, "kidney_tumor": 3,
                            "vessel": 4}
    assert dj["zept"]["organs"] == ["kidney_left", "kidney_right"]
    assert dj["zept"]["tumours"]["kidney_tumor"] == {"host": ["kidney_left", "kidney_right"]}
    assert dj["zept"]["texts"] == {"kidney_left": "The left kidney ..."}
    assert roles.hosts == {2: [0, 1], 3: [0]}
    assert "2 host organs" in capsys.readouterr().out

    # no region with two ids would make nnU-Net use softmax: the first organ region is doubled
    dj, _ = build_zept_dataset_json({**src, "labels": {"background": 0, "kidney_left": 1, "kidney_right": 2,
                                                       "kidney_tumor": 3}}, ConversionOptions(), [0, 1, 2, 3])
    assert dj["labels"]["kidney_left"] == [1, 1] and dj["regions_class_order"] == [1, 2, 3]
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    lm = LabelManager(dj["labels"], dj["regions_class_order"])
    assert lm.has_regions and lm.all_labels == [0, 1, 2, 3]

    # MSD Task03 names: "cancer" in the only organ
    dj, roles = build_zept_dataset_json({**src, "labels": {"background": 0, "liver": 1, "cancer": 2}},
                                        ConversionOptions(), [0, 1, 2])
    assert dj["labels"] == {"background": 0, "liver": [1, 2], "cancer": 2} and roles.hosts == {1: [0]}
    # undeclared ids in the label files
    with pytest.raises(ConversionError, match=r"label ids \[7\]"):
        build_zept_dataset_json({**src, "labels": {"background": 0, "liver": 1, "cancer": 2}},
                                ConversionOptions(), [0, 1, 2, 7])
    # an unknown organ in a --roles file is reported by the zept validation with key and fix
    with pytest.raises(ZePTConfigError, match=r"zept.organs\[\] = 'spleen'.*Fix"):
        build_zept_dataset_json(src, ConversionOptions(roles_override={"organs": ["spleen"]}))


def test_plan_and_preprocess_accepts_converted_dataset(nnunet_dirs, tmp_path):
    """nnU-Net's own integrity check, planning and preprocessing accept both a normal conversion and
    one where no organ region holds a tumour (the [id, id] region that forces sigmoid regions)."""
    raw = nnunet_dirs["nnUNet_raw"]
    make_source(raw)
    convert_dataset(11, 511, "LKZePT", ConversionOptions(zero_shot=["kidney_cyst"]), log=lambda s: None)
    sided = {"background": 0, "kidney_left": 1, "kidney_right": 2, "kidney_tumor": 3, "kidney_cyst": 4}
    make_source(raw, 12, "Sided", sided)
    res = convert_dataset(12, 512, log=lambda s: None)
    assert res.dataset_json["labels"]["kidney_left"] == [1, 1]
    env = {**os.environ, "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1", "nnUNet_compile": "f",
           "OMP_NUM_THREADS": "1"}
    exe = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
    proc = subprocess.run([str(exe), "-d", "511", "512", "-c", "3d_fullres", "-np", "1", "-npfp", "1",
                           "--verify_dataset_integrity"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pre = nnunet_dirs["nnUNet_preprocessed"] / "Dataset511_LKZePT"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert "3d_fullres" in plans["configurations"]
    assert json.loads((pre / "dataset.json").read_text())["regions_class_order"] == [1, 3, 2, 4, 5]
    assert len(list((pre / "nnUNetPlans_3d_fullres").glob("*.b2nd"))) == 8   # 4 cases: data + seg
    # foreground sampling saw every region but the zero-shot one (what the trainer reads as "present")
    import pickle
    seen = {}
    for f in (pre / "nnUNetPlans_3d_fullres").glob("*.pkl"):
        for k, v in pickle.loads(f.read_bytes())["class_locations"].items():
            seen[k] = seen.get(k, 0) + len(v)
    assert {k: n > 0 for k, n in seen.items()} == {(1, 2): True, (3, 4, 5): True, 2: True, 4: True, 5: False}
    pre2 = nnunet_dirs["nnUNet_preprocessed"] / "Dataset512_SidedZePT"
    assert len(list((pre2 / "nnUNetPlans_3d_fullres").glob("*_seg.b2nd"))) == 4


def test_docs_roles_file_example_and_stray_regions_class_order():
    import re
    doc = (Path(__file__).resolve().parents[1] / "docs" / "dataset.md").read_text()
    roles_file = json.loads(re.findall(r"```json\n(.*?)```", doc, re.S)[1])
    src = {"channel_names": {"0": "CT"}, "file_ending": ".nii.gz", "numTraining": 1,
           "labels": {"background": 0, "pancreas": 1, "cancer": 2}, "regions_class_order": [1, 2]}
    dj, roles = build_zept_dataset_json(src, ConversionOptions(roles_override=roles_file["zept"]), [0, 1, 2],
                                        log=lambda s: None)
    assert dj["labels"] == {"background": 0, "pancreas": [1, 2], "cancer": 2}
    assert dj["zept"]["tumours"]["cancer"]["host"] == ["pancreas"]
    assert roles.texts["cancer"].startswith("Pancreatic ductal adenocarcinoma")


def test_copy_fallback_and_no_half_written_dataset(nnunet_dirs, monkeypatch):
    import nnunetv2_zept.conversion as conv
    raw = nnunet_dirs["nnUNet_raw"]
    src = make_source(raw)
    before = tree_hash(src)

    def no_links(a, b):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(conv.os, "link", no_links)
    res = convert_dataset(11, 40, log=lambda s: None)
    assert (res.linked, res.copied, res.labels_copied) == (0, 5, 4)
    img = "imagesTr/KITS_001_0000.nii.gz"
    assert not os.path.samefile(res.folder / img, src / img) and (res.folder / img).read_bytes() == (src / img).read_bytes()

    calls = []
    real_copy = conv.shutil.copy2

    def failing_copy(a, b):
        calls.append(a)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_copy(a, b)
    monkeypatch.setattr(conv.shutil, "copy2", failing_copy)
    with pytest.raises(OSError, match="No space left"):
        convert_dataset(11, 41, log=lambda s: None)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset011_LiverKidney", "Dataset040_LiverKidneyZePT"]
    assert tree_hash(src) == before
