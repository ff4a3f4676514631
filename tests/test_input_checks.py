"""Inputs that gave silent wrong results, hangs or tracebacks are refused or warned about, with one
line naming the file (docs/input-checks.md).  No model needed: these run in seconds.

Every input is made by the test: a synthetic CT (body, organs, air around it) or a copy of the
real DICOM series in ../shared/data/real, damaged the way a user's data gets damaged."""
import contextlib
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_zept.input_checks import InputCheckError, hu_check, read_json
from nnunetv2_zept.prediction.inputs import PredictInputError, describe_inputs, load_case

from conftest import real_data as _real


def _ct(shape=(24, 40, 40), spacing=(0.8, 0.8, 2.5)) -> sitk.Image:
    """A CT-like volume in HU: air, a body of fat and soft tissue, bone."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = np.array(shape) / 2
    r = ((y - c[1]) / (shape[1] * 0.4)) ** 2 + ((x - c[2]) / (shape[2] * 0.45)) ** 2
    a = np.full(shape, -1000.0, np.float32)
    a[r <= 1] = -90.0
    a[r <= 0.6] = 45.0
    a[r <= 0.05] = 700.0
    a += np.random.default_rng(0).normal(0, 8, shape).astype(np.float32)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing(spacing)
    return img


def _load(path):
    (spec,), problems = describe_inputs([str(path)])
    assert not problems
    return load_case(spec)


def _refused(path, *phrases):
    with pytest.raises(PredictInputError) as e:
        _load(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    for p in phrases:
        assert p in msg, msg
    return msg


@contextlib.contextmanager
def _deadline(seconds):
    """A read that blocks (a named pipe) fails the test instead of hanging the suite."""
    def boom(*_):
        raise TimeoutError(f"still blocked after {seconds} s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------------------- image files


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_truncated_nifti_is_refused_not_zero_filled(tmp_path, ending):
    good = tmp_path / f"ct{ending}"
    sitk.WriteImage(_ct(), str(good))
    assert _load(good).image.GetSize() == (40, 40, 24)
    cut = tmp_path / f"cut{ending}"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    # SimpleITK alone reads it and fills the missing half with zeros
    assert (sitk.GetArrayFromImage(sitk.ReadImage(str(cut))) == 0).mean() > 0.3
    _refused(cut, "truncated", "Copy or export the file again")


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd"])
def test_nan_and_inf_voxels_are_refused(tmp_path, ending):
    a = sitk.GetArrayFromImage(_ct())
    a[10:12, 5:15, 5:15] = np.nan   # a block of 0.5% of the volume
    a[0, 0, 0] = np.inf
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((0.8, 0.8, 2.5))
    path = tmp_path / f"nan{ending}"
    sitk.WriteImage(img, str(path))
    if ending == ".nii.gz":   # SimpleITK's NIfTI reader turns them into 0 (water) without a word
        assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()
    _refused(path, "201 voxel(s)", "NaN or infinite", "Replace them")


def test_ct_values_far_from_hounsfield_units_are_refused_or_warned(tmp_path):
    base = sitk.GetArrayFromImage(_ct())
    _, y, x = np.meshgrid(*[np.arange(s) for s in base.shape], indexing="ij")
    outside_fov = (y - 20) ** 2 + (x - 20) ** 2 > 19.5 ** 2   # the corners of each slice
    for name, values in (("x1000", base * 1000), ("x2", base * 2), ("no_intercept", base + 1024),
                         ("padded", np.where(outside_fov, -3024, base))):
        img = sitk.GetImageFromArray(values.astype(np.float32))
        img.SetSpacing((0.8, 0.8, 2.5))
        sitk.WriteImage(img, str(tmp_path / f"{name}.nii.gz"))
    _refused(tmp_path / "x1000.nii.gz", "far outside the Hounsfield units", "x1000", "Convert the image to HU")
    (w,) = _load(tmp_path / "x2.nii.gz").warnings
    assert "outside the Hounsfield units" in w and str(tmp_path / "x2.nii.gz") in w
    (w,) = _load(tmp_path / "no_intercept.nii.gz").warnings
    assert "does not look like CT" in w and "RescaleIntercept" in w
    # a constant fill value outside the field of view is no reason to warn; real CT neither
    assert _load(tmp_path / "padded.nii.gz").warnings == []
    assert _load(_real("totalsegmentator", "example_ct_sm.nii.gz")).warnings == []


def test_robust_range_ignores_a_few_extreme_voxels():
    a = sitk.GetArrayFromImage(_ct())
    a.reshape(-1)[:20] = 30000.0   # a few metal voxels
    assert hu_check(a, "ct") == []
    with pytest.raises(InputCheckError, match="far outside"):
        hu_check(a * 1000, "ct")


@pytest.mark.parametrize("spacing, effect", [((0.1, 0.1, 0.1), "come out empty"),
                                             ((0.8, 0.8, 20.0), "enormous size")])
def test_implausible_spacing_is_refused(tmp_path, spacing, effect):
    sitk.WriteImage(_ct(spacing=spacing), str(tmp_path / "ct.nii.gz"))
    _refused(tmp_path / "ct.nii.gz", "outside 0.3-10 mm", effect, "correct it to mm")


def test_named_pipe_as_input_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "ct.nii.gz")
    with _deadline(30):
        specs, problems = describe_inputs([str(tmp_path / "ct.nii.gz")])
    assert specs == [] and "named pipe" in problems[0][1] and "not a regular file" in problems[0][1]


# ---------------------------------------------------------------------------------------------- DICOM series


@pytest.fixture
def series(tmp_path):
    """A writable copy of the real 20-slice CT series."""
    dst = tmp_path / "series"
    shutil.copytree(_real("totalsegmentator", "example_ct_dicom"), dst)
    os.chmod(dst, 0o755)
    for f in dst.iterdir():
        os.chmod(f, 0o644)
    return dst


def _slices(folder):
    return sorted(p for p in folder.iterdir())


def test_copy_of_the_series_reads(series):
    case = _load(series)
    assert case.image.GetSize()[2] == 20 and case.warnings == []


def test_duplicate_slice_is_refused(series):
    shutil.copy(_slices(series)[5], series / "zz_copy_of_slice_6.dcm")
    _refused(series, "zz_copy_of_slice_6.dcm", "duplicate")


def test_duplicate_position_with_a_new_uid_is_refused(series):
    import pydicom

    ds = pydicom.dcmread(_slices(series)[5])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(series / "zz_second_acquisition.dcm")
    _refused(series, "zz_second_acquisition.dcm")


@pytest.mark.parametrize("keep_bytes, which", [(100, 7), (2000, 7), (50000, 7), (2000, -1)],
                         ids=["no-header", "header-only", "half-pixels", "last-slice"])
def test_unreadable_slice_is_refused_not_dropped(series, keep_bytes, which):
    victim = _slices(series)[which]
    victim.write_bytes(victim.read_bytes()[:keep_bytes])
    # GDCM on its own leaves the file out: the volume is one slice short, without a word
    reader = sitk.ImageSeriesReader()
    assert len(reader.GetGDCMSeriesFileNames(str(series))) == 19
    _refused(series, victim.name, "Replace the file")


def test_companion_files_next_to_the_slices_are_ignored(series):
    (series / "README.txt").write_text("exported by the PACS")
    (series / "DICOMDIR").write_bytes(b"\0" * 10)
    assert _load(series).image.GetSize()[2] == 20


def test_named_pipe_in_a_series_folder_is_refused_without_blocking(series):
    os.mkfifo(series / "zz_pipe")
    with _deadline(60):
        msg = _refused(series, "zz_pipe", "named pipe", "Remove it")
    assert "block" in msg


# ---------------------------------------------------------------------------------------------- JSON and permissions


def test_broken_json_names_file_line_and_fix(tmp_path):
    p = tmp_path / "dataset.json"
    p.write_text('{"labels": {"background": 0,}\n')
    with pytest.raises(InputCheckError) as e:
        read_json(str(p), "dataset.json")
    assert str(p) in str(e.value) and "line 1" in str(e.value) and "fix the JSON syntax" in str(e.value)
    with pytest.raises(InputCheckError, match="does not exist"):
        read_json(str(tmp_path / "nope.json"), "dataset.json")


def _without_root_privileges():
    """root reads everything: the child drops the capabilities that bypass file permissions
    (prctl PR_CAPBSET_DROP of CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH before exec)."""
    if os.geteuid() != 0:
        return None

    def drop():
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):
            if libc.prctl(24, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    return drop


@pytest.fixture
def locked(tmp_path):
    """locked/ct.nii.gz and locked/dataset.json behind a folder without permissions."""
    (tmp_path / "locked").mkdir()
    sitk.WriteImage(_ct(), str(tmp_path / "locked" / "ct.nii.gz"))
    (tmp_path / "locked" / "dataset.json").write_text("{}")
    os.chmod(tmp_path / "locked", 0o000)
    yield tmp_path
    os.chmod(tmp_path / "locked", 0o755)


def test_permission_problem_is_not_reported_as_missing(locked):
    code = ("import sys; from nnunetv2_zept.prediction.inputs import describe_inputs; "
            "from nnunetv2_zept.input_checks import read_json, InputCheckError\n"
            "print(describe_inputs([sys.argv[1]])[1][0][1])\n"
            "try:\n    read_json(sys.argv[2], 'dataset.json')\nexcept InputCheckError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(locked / "locked" / "ct.nii.gz"),
                        str(locked / "locked" / "dataset.json")], capture_output=True, text=True,
                       preexec_fn=_without_root_privileges(), cwd=str(locked), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "permission denied" in line and "does not exist" not in line, line
