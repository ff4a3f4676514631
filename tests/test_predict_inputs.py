"""Input handling of `nnunetv2_zept predict` on real CT (no model needed; fast)."""

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_zept.prediction.inputs import PredictInputError, describe_inputs, load_case

from conftest import real_data as _real


def test_dicom_series_is_read_in_hounsfield_units_with_its_geometry():
    import pydicom

    folder = _real("dcmqi_ct3slice", "ct-3slice")
    (spec,), problems = describe_inputs([str(folder)])
    assert not problems and spec.kind == "dicom" and spec.case_id == "ct-3slice"
    case = load_case(spec)
    assert case.image.GetSize() == (512, 512, 3)
    np.testing.assert_allclose(case.image.GetSpacing(), (0.810547, 0.810547, 1.0), atol=1e-5)
    np.testing.assert_allclose(case.image.GetOrigin(), (-235.2, -226.8, -128.69), atol=1e-3)
    # slice z of the volume is the file at z in the series order, with RescaleSlope/Intercept applied
    for z, f in enumerate(case.dicom_files):
        ds = pydicom.dcmread(f)
        assert abs(float(ds.ImagePositionPatient[2]) - case.image.TransformIndexToPhysicalPoint((0, 0, z))[2]) < 1e-3
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(case.array[0, z], hu.astype(np.float32))
    # nnU-Net's SimpleITKIO conventions: [c, z, y, x] array, spacing reversed
    assert case.array.shape == (1, 3, 512, 512) and case.array.dtype == np.float32
    assert case.properties["spacing"] == pytest.approx(list(case.image.GetSpacing())[::-1])
    assert case.properties["sitk_stuff"]["direction"] == case.image.GetDirection()


def test_nifti_volume_matches_nnunet_reader():
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    path = _real("ibsi_sts", "STS_019", "CT_image.nii.gz")
    (spec,), _ = describe_inputs([str(path)])
    case = load_case(spec)
    arr, props = SimpleITKIO().read_images([str(path)])
    np.testing.assert_array_equal(case.array, arr)
    assert case.properties["spacing"] == pytest.approx(props["spacing"])
    assert case.properties["sitk_stuff"] == props["sitk_stuff"]
    assert spec.case_id == "CT_image" and not case.warnings


def test_case_ids_are_unique_and_strip_nnunet_channel_suffix(tmp_path):
    a = tmp_path / "a" / "liver_007_0000.nii.gz"
    b = tmp_path / "b" / "liver_007.nrrd"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    specs, problems = describe_inputs([str(a), str(b), str(tmp_path / "notes.txt"), str(tmp_path / "nope")])
    assert [s.case_id for s in specs] == ["liver_007", "liver_007_2"]
    assert "neither a DICOM series folder nor an image file" in problems[0][1]
    assert "does not exist" in problems[1][1]


def test_vector_and_4d_images_are_rejected(tmp_path):
    rgb = tmp_path / "rgb.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3), str(rgb))
    four = tmp_path / "four_d.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8, 2], sitk.sitkInt16), str(four))
    specs, _ = describe_inputs([str(rgb), str(four)])
    with pytest.raises(PredictInputError, match="3 components per voxel"):
        load_case(specs[0])
    with pytest.raises(PredictInputError, match="4 dimensions"):
        load_case(specs[1])


def test_folder_of_nifti_files_says_to_pass_the_files(tmp_path):
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkInt16), str(tmp_path / "ct.nii.gz"))
    (spec,), _ = describe_inputs([str(tmp_path)])
    with pytest.raises(PredictInputError, match=r"no DICOM series. Pass the image files themselves"):
        load_case(spec)
