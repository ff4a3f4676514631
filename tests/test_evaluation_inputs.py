"""`nnunetv2_zept evaluate` and `convert` refuse inputs that gave silent wrong results or tracebacks:
one line naming the file and the fix, exit status 1 (docs/input-checks.md).  The prediction
folder is the small synthetic one of test_evaluation_folder.py, changed by each test."""
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_zept.cli import main as cli_main
from nnunetv2_zept.evaluation import evaluate_folder
from nnunetv2_zept.evaluation.case_io import EvaluationInputError

from test_convert import make_source, nnunet_dirs  # noqa: F401  (fixture)
from test_evaluation_folder import CASES, folders  # noqa: F401  (fixture)


def _one_line_error(capsys, *phrases):
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for p in phrases:
        assert p in lines[0], lines[0]
    return lines[0]


def _rewrite(path, **geometry):
    img = sitk.ReadImage(str(path))
    for key, value in geometry.items():
        getattr(img, "Set" + key)(value)
    sitk.WriteImage(img, str(path))


@pytest.mark.parametrize("change, what", [({"Direction": (-1, 0, 0, 0, 1, 0, 0, 0, 1)}, "direction"),
                                          ({"Origin": (-10.0, 5.0, 120.0)}, "origin")])
def test_prediction_on_another_grid_is_refused(folders, tmp_path, capsys, change, what):
    ref_dir, pred_dir, dj, _ = folders
    # same array shape and spacing: only the grid's placement differs (a flipped axis, a shift)
    _rewrite(pred_dir / "CASE_L1.nii.gz", **change)
    with pytest.raises(EvaluationInputError, match=f"CASE_L1.*prediction {what}.*another voxel grid"):
        evaluate_folder(str(ref_dir), str(pred_dir), str(dj))
    assert cli_main(["evaluate", str(ref_dir), str(pred_dir), "-djfile", str(dj), "-o", str(tmp_path / "e")]) == 1
    _one_line_error(capsys, "CASE_L1", what, "Predict from the images that belong to these labels")


def test_nan_probabilities_are_refused(folders, tmp_path, capsys):
    ref_dir, pred_dir, dj, truth = folders
    probs = truth["CASE_P1"][1].copy()
    probs[4, 5:8, 20:24, 18:22] = np.nan
    np.savez_compressed(str(pred_dir / "CASE_P1.npz"), probabilities=probs)
    assert cli_main(["evaluate", str(ref_dir), str(pred_dir), "-djfile", str(dj), "-o", str(tmp_path / "e")]) == 1
    _one_line_error(capsys, "CASE_P1", str(pred_dir / "CASE_P1.npz"), "48 NaN or infinite")
    probs[4] = 3.0 * np.nan_to_num(probs[4])   # logits or scaled scores, not probabilities
    np.savez_compressed(str(pred_dir / "CASE_P1.npz"), probabilities=probs)
    assert cli_main(["evaluate", str(ref_dir), str(pred_dir), "-djfile", str(dj), "-o", str(tmp_path / "e")]) == 1
    _one_line_error(capsys, "CASE_P1", "not probabilities in [0, 1]")


def test_broken_dataset_json_is_one_line(folders, tmp_path, capsys):
    ref_dir, pred_dir, dj, _ = folders
    dj.write_text(dj.read_text()[:-20])
    assert cli_main(["evaluate", str(ref_dir), str(pred_dir), "-djfile", str(dj), "-o", str(tmp_path / "e")]) == 1
    _one_line_error(capsys, str(dj), "not valid JSON", "line 1", "fix the JSON syntax")


def test_truncated_label_map_is_refused(folders, tmp_path):
    ref_dir, pred_dir, dj, _ = folders
    data = (ref_dir / "CASE_L2.nii.gz").read_bytes()
    (ref_dir / "CASE_L2.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(EvaluationInputError, match="CASE_L2.*reference.*truncated"):
        evaluate_folder(str(ref_dir), str(pred_dir), str(dj))


def test_anomaly_maps_next_to_the_label_maps_are_not_cases(folders, tmp_path):
    """`nnunetv2_zept predict` writes <case>_anomaly.nii.gz beside <case>.nii.gz."""
    ref_dir, pred_dir, dj, _ = folders
    for case in CASES:
        shutil.copy(pred_dir / f"{case}.nii.gz", pred_dir / f"{case}_anomaly.nii.gz")
    summary = evaluate_folder(str(ref_dir), str(pred_dir), str(dj))
    assert sorted(summary["cases"]) == sorted(CASES)


def test_convert_broken_json_is_one_line(nnunet_dirs, capsys):  # noqa: F811
    src = make_source(nnunet_dirs["nnUNet_raw"])
    roles = nnunet_dirs["nnUNet_raw"].parent / "roles.json"
    roles.write_text('{"zept": {"organs": ["liver",]}}')
    assert cli_main(["convert", "-d", "11", "-o", "512", "--roles", str(roles)]) == 1
    _one_line_error(capsys, str(roles), "not valid JSON", "line 1")
    text = (src / "dataset.json").read_text()
    (src / "dataset.json").write_text(text.replace('"labels"', 'labels', 1))
    assert cli_main(["convert", "-d", "11", "-o", "512"]) == 1
    _one_line_error(capsys, str(src / "dataset.json"), "not valid JSON", "fix the JSON syntax")
    assert json.loads(text)   # the source was fine before the test broke it
