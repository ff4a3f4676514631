"""`nnunetv2_zept texts`: per-class roles, texts and encoder; --precompute writes the cache."""
import json

import numpy as np
import pytest

from nnunetv2_zept.cli import main
from nnunetv2_zept.knowledge.cache import CACHE_DIRNAME, read_cache

NAME = "Dataset951_ZePTTexts"
LABELS = {"background": 0, "liver": [1, 3], "Kidney Right": [2], "liver_tumour": 3, "pancreas_tumor": 4,
          "pancreas": [5, 4]}


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch):
    raw, pre, res = tmp_path / "raw", tmp_path / "pre", tmp_path / "res"
    for d in (raw / NAME, pre / NAME, res):
        d.mkdir(parents=True)
    for var, d in (("nnUNet_raw", raw), ("nnUNet_preprocessed", pre), ("nnUNet_results", res)):
        monkeypatch.setenv(var, str(d))
    dj = {"channel_names": {"0": "CT"}, "labels": LABELS, "regions_class_order": [1, 2, 5, 3, 4],
          "numTraining": 0, "file_ending": ".nii.gz"}
    (raw / NAME / "dataset.json").write_text(json.dumps(dj))
    (pre / NAME / "dataset.json").write_text(json.dumps(dj))
    classes = ["liver", "Kidney Right", "pancreas", "air", "fat", "soft_tissue", "bone", "liver_tumour",
               "pancreas_tumor", "background_tissue"]
    emb = tmp_path / "emb.json"
    emb.write_text(json.dumps({c: np.eye(len(classes))[i].tolist() for i, c in enumerate(classes)}))
    monkeypatch.setenv("NNUNETV2_ZEPT_TEXT_ENCODER", f"file:{emb}")
    return pre / NAME, raw / NAME


def test_texts_command_shows_and_precomputes(nnunet_dirs, capsys):
    pre, _ = nnunet_dirs
    assert main(["texts", "-d", "951"]) == 0
    out = capsys.readouterr().out
    assert "Kidney Right  [organ]  built-in class: kidney_right; text from built-in" in out
    assert "pancreas_tumor  [seen tumour in pancreas]  built-in class: pancreatic_tumour" in out
    assert "fat  [background tissue]" in out and "text encoder: file:emb.json@" in out
    assert "environment variable NNUNETV2_ZEPT_TEXT_ENCODER" in out and "not written yet" in out
    assert not (pre / CACHE_DIRNAME).exists()

    assert main(["texts", "-d", NAME, "--precompute"]) == 0
    assert "computed" in capsys.readouterr().out
    files = list((pre / CACHE_DIRNAME).glob("*.npz"))
    assert len(files) == 1 and len(read_cache(files[0]).names) == 10
    assert main(["texts", "-d", "951", "--precompute"]) == 0
    assert "cached already" in capsys.readouterr().out


def test_texts_command_reports_missing_text(nnunet_dirs, capsys):
    pre, raw = nnunet_dirs
    dj = json.loads((pre / "dataset.json").read_text())
    dj["labels"]["thyroid"] = 6
    dj["zept"] = {"organs": ["liver", "Kidney Right", "pancreas", "thyroid"],
                  "tumours": {"liver_tumour": {"host": ["liver"]}, "pancreas_tumor": {"host": ["pancreas"]}}}
    (pre / "dataset.json").write_text(json.dumps(dj))
    assert main(["texts", "-d", "951", "--precompute"]) == 1
    out = capsys.readouterr().out
    assert "thyroid  [organ]  -> NO TEXT" in out and "zept.texts.thyroid" in out
    assert not (pre / CACHE_DIRNAME).exists()


def test_texts_command_lists_builtin_classes(capsys):
    assert main(["texts", "--list"]) == 0
    out = capsys.readouterr().out
    assert "kidney_tumour" in out and "renal cell carcinoma" in out
