"""Synthetic pan-tumour CT generator: determinism, anatomy, HU, tumours, zero-shot split, files."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunetv2_zept.roles import roles_from_dataset_json
from nnunetv2_zept.synthetic import (ORGAN_IDS, ORGANS, TUMOUR_TYPES, make_case, make_synthetic_dataset,
                                     slice_figure)
from nnunetv2_zept.synthetic.anatomy import Tissue
from nnunetv2_zept.synthetic.case import default_label_ids

SEEN = ("liver_tumour", "kidney_tumour")
ZERO_SHOT = ("pancreas_tumour", "lung_nodule", "spleen_cyst", "liver_metastasis")


def _read(path):
    img = sitk.ReadImage(str(path))
    return img, sitk.GetArrayFromImage(img)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    path = make_synthetic_dataset(root, dataset_id=991, name="SynTest", num_train=6, num_test=8, seed=3,
                                  preset="demo", seen_tumours=SEEN, zero_shot_tumours=ZERO_SHOT)
    return path


@pytest.fixture(scope="module")
def fine_case():
    """One case at 2 mm, fine enough to resolve kidney cortex and small structures."""
    return make_case(11, (176, 128, 96), (2.0, 2.0, 2.0), ["liver_tumour", "kidney_tumour", "lung_nodule"])


def test_same_seed_same_arrays_and_files(tmp_path):
    a = make_case(5, (72, 56, 48), (5.0, 5.0, 5.0), ["liver_metastasis"])
    b = make_case(5, (72, 56, 48), (5.0, 5.0, 5.0), ["liver_metastasis"])
    c = make_case(6, (72, 56, 48), (5.0, 5.0, 5.0), ["liver_metastasis"])
    assert a.image.tobytes() == b.image.tobytes() and a.label.tobytes() == b.label.tobytes()
    assert a.image.dtype == np.int16 and a.label.dtype == np.uint8
    assert not np.array_equal(a.image, c.image)
    kw = dict(dataset_id=992, name="Det", num_train=2, num_test=2, seed=7, seen_tumours=("liver_tumour",),
              zero_shot_tumours=("spleen_cyst",), tumour_free_fraction=0.5)
    p1 = make_synthetic_dataset(tmp_path / "r1", **kw)
    p2 = make_synthetic_dataset(tmp_path / "r2", **kw)
    files1 = sorted(f.relative_to(p1) for f in p1.rglob("*") if f.is_file())
    files2 = sorted(f.relative_to(p2) for f in p2.rglob("*") if f.is_file())
    assert files1 == files2 and len(files1) == 2 + 4 * 2
    for f in files1:
        assert (p1 / f).read_bytes() == (p2 / f).read_bytes(), f"{f} differs between two runs with the same seed"


def test_case_regenerates_from_recorded_seed(dataset):
    meta = json.loads((dataset / "cases.json").read_text())
    rec = next(r for r in meta["cases"] if r["split"] == "test" and r["tumours"])
    g = meta["generator"]
    case = make_case(rec["seed"], g["shape_xyz"], g["spacing_xyz"], rec["tumours"], meta["label_ids"],
                     noise_hu=g["noise_hu"], min_lesion_diameter_mm=g["min_lesion_diameter_mm"],
                     deform_mm=g["deform_mm"], z_centre_mm=g["z_centre_mm"])
    _, img = _read(dataset / "imagesTs" / f"{rec['case_id']}_0000.nii.gz")
    _, lab = _read(dataset / "labelsTs" / f"{rec['case_id']}.nii.gz")
    assert np.array_equal(img, case.image) and np.array_equal(lab, case.label)
    assert len(rec["lesions"]) == len(case.lesions) >= 1
    assert all(l["voxels"] > 0 and l["type"] in rec["tumours"] for l in rec["lesions"])


def test_dataset_json_regions_and_roles(dataset):
    dj = json.loads((dataset / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "CT"} and dj["file_ending"] == ".nii.gz" and dj["numTraining"] == 6
    ids = json.loads((dataset / "cases.json").read_text())["label_ids"]
    assert dj["labels"]["liver"] == [ids["liver"], ids["liver_tumour"], ids["liver_metastasis"]]
    assert dj["labels"]["kidney_left"] == [ids["kidney_left"], ids["kidney_tumour"]]
    assert dj["labels"]["stomach"] == ids["stomach"] and dj["labels"]["lung_nodule"] == ids["lung_nodule"]
    # consecutive ids, tumours painted last
    assert sorted(ids.values()) == list(range(1, len(ids) + 1))
    assert dj["regions_class_order"][-len(SEEN + ZERO_SHOT):] == [ids[t] for t in SEEN + ZERO_SHOT]
    # channels with voxels in the training labels: none of them may be zero-shot
    names = [k for k in dj["labels"] if k != "background"]
    present = set()
    for f in (dataset / "labelsTr").glob("*.nii.gz"):
        vals = set(np.unique(_read(f)[1]).tolist())
        for c, n in enumerate(names):
            region = dj["labels"][n] if isinstance(dj["labels"][n], list) else [dj["labels"][n]]
            if vals & set(region) and not (n in ZERO_SHOT):
                present.add(c)
            if n in ZERO_SHOT and ids[n] in vals:
                present.add(c)
    roles = roles_from_dataset_json(dj, present_channels=present)
    assert sorted(roles.names[z] for z in roles.zero_shot) == sorted(ZERO_SHOT)
    assert sorted(roles.names[o] for o in roles.organs) == sorted(ORGANS)
    assert [roles.names[h] for h in roles.hosts[names.index("kidney_tumour")]] == ["kidney_right", "kidney_left"]


def test_zero_shot_only_in_held_out_and_controls_exist(dataset):
    ids = json.loads((dataset / "cases.json").read_text())["label_ids"]
    zs_ids = {ids[t] for t in ZERO_SHOT}
    for f in (dataset / "labelsTr").glob("*.nii.gz"):
        assert not (set(np.unique(_read(f)[1]).tolist()) & zs_ids), f"zero-shot label in training file {f.name}"
    meta = json.loads((dataset / "cases.json").read_text())
    for rec in meta["cases"]:
        if rec["split"] == "train":
            assert not set(rec["tumours"]) & set(ZERO_SHOT)
            assert all(l["type"] in SEEN for l in rec["lesions"])
    found, controls = set(), 0
    for f in sorted((dataset / "labelsTs").glob("*.nii.gz")):
        vals = set(np.unique(_read(f)[1]).tolist())
        found |= vals & zs_ids
        controls += max(vals) <= len(ORGANS)
    assert found == zs_ids, "every zero-shot type must occur in some held-out case"
    assert controls >= 1
    assert len(list((dataset / "imagesTs").glob("*_0000.nii.gz"))) == 8
    train_recs = [r for r in meta["cases"] if r["split"] == "train"]
    assert any(r["tumours"] for r in train_recs)


def test_labels_inside_body_and_organ_volumes(dataset):
    ranges_ml = {"liver": (600, 2600), "spleen": (40, 450), "kidney_right": (60, 320), "kidney_left": (60, 320),
                 "pancreas": (12, 160), "stomach": (40, 900), "aorta": (30, 200), "lung": (30, 3500)}
    for f in sorted((dataset / "labelsTr").glob("*.nii.gz")) + sorted((dataset / "labelsTs").glob("*.nii.gz")):
        img, lab = _read(f)
        _, ct = _read(f.parent.parent / ("images" + f.parent.name[-2:]) / f.name.replace(".nii.gz", "_0000.nii.gz"))
        # body from the image alone: tissue denser than -400 HU with enclosed air (lung, gas) filled per slice
        body = np.stack([ndimage.binary_fill_holes(ndimage.binary_closing(s, iterations=2)) for s in ct > -400])
        assert (lab > 0).sum() > 0
        outside = (lab > 0) & ~body
        assert outside.sum() <= 0.002 * (lab > 0).sum(), f"{f.name}: labelled voxels outside the body"
        vox_ml = float(np.prod(img.GetSpacing())) / 1000.0
        for organ, (lo, hi) in ranges_ml.items():
            ml = (lab == ORGAN_IDS[organ]).sum() * vox_ml
            assert lo <= ml <= hi, f"{f.name}: {organ} volume {ml:.0f} mL outside [{lo}, {hi}]"


def test_every_label_inside_body_exact(fine_case):
    assert not ((fine_case.label > 0) & ~fine_case.body).any()


def test_left_right_sides_in_patient_coordinates(dataset):
    for f in sorted((dataset / "labelsTr").glob("*.nii.gz"))[:4]:
        img, lab = _read(f)
        assert img.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

        def centre_lps(organ):
            zyx = np.argwhere(lab == ORGAN_IDS[organ]).mean(axis=0)
            return np.array(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]]))

        # LPS: +x is the patient's left, +y posterior, +z superior
        assert centre_lps("kidney_left")[0] > 30 and centre_lps("kidney_right")[0] < -30
        assert centre_lps("liver")[0] < 0 < centre_lps("spleen")[0]
        assert centre_lps("lung")[2] > centre_lps("kidney_left")[2]
        assert centre_lps("kidney_left")[1] > centre_lps("stomach")[1]   # kidneys are posterior


def test_organs_touch_like_real_ones(dataset):
    pairs = [("liver", "kidney_right"), ("spleen", "kidney_left"), ("stomach", "spleen")]
    hits = {p: 0 for p in pairs}
    files = sorted((dataset / "labelsTr").glob("*.nii.gz"))
    for f in files:
        lab = _read(f)[1]
        for a, b in pairs:
            grown = ndimage.binary_dilation(lab == ORGAN_IDS[a])
            hits[(a, b)] += bool((grown & (lab == ORGAN_IDS[b])).any())
    for p, n in hits.items():
        assert n >= len(files) - 1, f"{p} touch in only {n}/{len(files)} cases"


def test_tissue_hu_and_kidney_cortex(fine_case):
    img, tis = fine_case.image, fine_case.tissue
    expect = {Tissue.SUBCUT_FAT: (-125, -80), Tissue.VISCERAL_FAT: (-115, -70), Tissue.MUSCLE: (35, 75),
              Tissue.LIVER: (60, 110), Tissue.SPLEEN: (50, 125), Tissue.LUNG: (-900, -780),
              Tissue.BONE_CORTEX: (450, 1000), Tissue.AORTA: (130, 220), Tissue.PANCREAS: (60, 120),
              Tissue.KIDNEY_CORTEX: (140, 220), Tissue.KIDNEY_MEDULLA: (90, 150)}
    med = {}
    for t, (lo, hi) in expect.items():
        core = ndimage.binary_erosion(tis == t) & (fine_case.label == fine_case.organ_before_tumours)
        assert core.sum() > 30, t
        med[t] = float(np.median(img[core]))
        assert lo <= med[t] <= hi, f"{t.name}: median {med[t]} HU outside [{lo}, {hi}]"
    assert med[Tissue.KIDNEY_CORTEX] > med[Tissue.KIDNEY_MEDULLA] + 20
    # file-level view of the same: the kidney's outer 2 mm is brighter than its deeper part
    for organ in ("kidney_right", "kidney_left"):
        m = fine_case.organ_before_tumours == ORGAN_IDS[organ]
        m &= fine_case.label == ORGAN_IDS[organ]
        depth = ndimage.distance_transform_edt(m, sampling=2.0)
        assert np.mean(img[(depth > 2) & (depth <= 4)]) > np.mean(img[depth > 8]) + 10


def test_noise_level_is_the_requested_std():
    a = make_case(4, (72, 56, 48), (5.0, 5.0, 5.0), [], noise_hu=0)
    b = make_case(4, (72, 56, 48), (5.0, 5.0, 5.0), [], noise_hu=20)
    inside = (a.image > -900) & (a.image < 900)
    diff = b.image.astype(np.float64)[inside] - a.image[inside]
    assert abs(diff.std() - 20) < 1.0
    # organs are smooth without noise: liver texture stays within a few HU
    liver = ndimage.binary_erosion(a.label == ORGAN_IDS["liver"], iterations=2) & (a.tissue == Tissue.LIVER)
    assert a.image[liver].std() < 12


def test_tumours_stay_in_their_host_organs(fine_case):
    ids = default_label_ids(["liver_tumour", "kidney_tumour", "lung_nodule"])
    for lesion_type in ("liver_tumour", "kidney_tumour", "lung_nodule"):
        t = TUMOUR_TYPES[lesion_type]
        mask = fine_case.label == ids[lesion_type]
        assert mask.sum() > 0
        host = np.isin(fine_case.organ_before_tumours, [ORGAN_IDS[h] for h in t.hosts])
        if t.exophytic_probability == 0:
            assert host[mask].all(), f"{lesion_type} voxels outside {t.hosts}"
        else:
            # exophytic growth only into non-organ tissue, and each lesion overlaps its host
            assert np.isin(fine_case.organ_before_tumours[mask], [0] + [ORGAN_IDS[h] for h in t.hosts]).all()
            comps, n = ndimage.label(mask)
            assert all(host[comps == k].any() for k in range(1, n + 1))
    lesions = {l.type: l for l in fine_case.lesions}
    assert lesions["lung_nodule"].host == "lung"


@pytest.mark.parametrize("name", sorted(TUMOUR_TYPES))
def test_each_tumour_type_has_its_contrast(name):
    """Every type is placed in its host and differs from it in the intended direction."""
    case = make_case(21, (120, 88, 72), (3.0, 3.0, 3.0), [name], noise_hu=0, min_lesion_diameter_mm=15)
    t = TUMOUR_TYPES[name]
    tid = default_label_ids([name])[name]
    les = ndimage.binary_erosion(case.label == tid) if (case.label == tid).sum() > 60 else case.label == tid
    host = np.isin(case.label, [ORGAN_IDS[h] for h in t.hosts]) & ~ndimage.binary_dilation(case.label == tid, iterations=2)
    host = ndimage.binary_erosion(host)
    d = float(np.mean(case.image[les])) - float(np.median(case.image[host]))
    if name == "liver_hemangioma":
        assert d > 15
    elif name == "lung_nodule":
        assert d > 500
    else:   # hypodense types, cysts, necrotic and RCC-like masses are darker than their host
        assert d < -15, f"{name}: tumour - host = {d:.1f} HU"
    assert 1 <= len(case.lesions) <= t.count[1]


def test_overwrite_protection(tmp_path):
    kw = dict(dataset_id=993, name="Ow", num_train=1, num_test=2, seen_tumours=("liver_tumour",),
              zero_shot_tumours=("spleen_cyst",), tumour_free_fraction=0.5)
    p = make_synthetic_dataset(tmp_path, **kw)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synthetic_dataset(tmp_path, **kw)
    (p / "dataset.json").write_text("{}")
    make_synthetic_dataset(tmp_path, overwrite=True, **kw)
    assert json.loads((p / "dataset.json").read_text())["numTraining"] == 1
    foreign = tmp_path / "Dataset994_Users"
    foreign.mkdir()
    (foreign / "dataset.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not made by"):
        make_synthetic_dataset(tmp_path, overwrite=True, **{**kw, "dataset_id": 994, "name": "Users"})
    assert (foreign / "dataset.json").read_text() == "{}"
    with pytest.raises(FileExistsError, match="unique ids"):
        make_synthetic_dataset(tmp_path, **{**kw, "dataset_id": 994})
    with pytest.raises(ValueError, match="both as seen and as zero-shot"):
        make_synthetic_dataset(tmp_path, **{**kw, "dataset_id": 995, "zero_shot_tumours": ("liver_tumour",)})
    with pytest.raises(ValueError, match="raise num_test"):
        make_synthetic_dataset(tmp_path, **{**kw, "dataset_id": 995, "zero_shot_tumours": ("spleen_cyst", "lung_nodule")})


def test_slice_figure_writes_png(tmp_path, fine_case):
    ids = default_label_ids(["liver_tumour", "kidney_tumour", "lung_nodule"])
    out = slice_figure(fine_case.image, fine_case.label, tmp_path / "fig.png",
                       label_names={v: k for k, v in ids.items()}, highlight=[9, 10, 11],
                       spacing_xyz=fine_case.grid.spacing_xyz)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
