"""The benchmark scripts' own logic (no timing): the baseline's tumour-agnostic zero-shot copy,
the shared-Stage-1 checkpoint filter, aggregation over seeds and target checks, knowledge texts
for synthetic classes, and the class layouts of the scaling table."""
import json
import os
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)

import ablation  # noqa: E402
import bench_data  # noqa: E402
import training_cost  # noqa: E402

# organs liver (1), spleen (2); seen liver_tumour (3); zero-shot spleen_cyst (4) and liver_metastasis (5)
DATASET_JSON = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "liver": [1, 3, 5], "spleen": [2, 4], "liver_tumour": 3, "spleen_cyst": 4,
               "liver_metastasis": 5},
    "regions_class_order": [1, 2, 3, 4, 5],
    "file_ending": ".nii.gz",
    "zept": {"organs": ["liver", "spleen"],
             "tumours": {"liver_tumour": {"host": ["liver"]},
                         "spleen_cyst": {"host": ["spleen"], "zero_shot": True},
                         "liver_metastasis": {"host": ["liver"], "zero_shot": True}}},
}


def _write_prediction(folder, case, prob, seg):
    os.makedirs(folder, exist_ok=True)
    np.savez_compressed(os.path.join(folder, f"{case}.npz"), probabilities=prob)
    img = sitk.GetImageFromArray(seg.astype(np.uint8))
    img.SetSpacing((2.0, 2.0, 3.0))
    sitk.WriteImage(img, os.path.join(folder, f"{case}.nii.gz"))


def test_baseline_zero_shot_copy_uses_max_seen_probability_inside_hosts(tmp_path):
    shape = (4, 6, 8)
    prob = np.zeros((5, *shape), np.float32)
    prob[0, ..., :3] = 0.9        # liver: x < 3
    prob[1, ..., 5:] = 0.9        # spleen: x >= 5
    prob[2, 1, 1, 1] = 0.8        # seen tumour inside the liver
    prob[2, 2, 2, 6] = 0.7        # seen tumour inside the spleen
    prob[2, 3, 3, 4] = 0.95       # seen tumour outside every organ
    prob[2, 0, 0, 0] = 0.3        # below threshold
    prob[3] = prob[4] = 0.01      # the baseline's untrained zero-shot channels
    seg = np.zeros(shape, np.uint8)
    seg[..., :3] = 1
    seg[..., 5:] = 2
    seg[1, 1, 1] = seg[2, 2, 6] = seg[3, 3, 4] = 3
    pred, out = tmp_path / "pred", tmp_path / "copy"
    _write_prediction(str(pred), "c1", prob, seg)

    ablation.baseline_zero_shot_copy(pred, out, DATASET_JSON)

    new = np.load(out / "c1.npz")["probabilities"]
    np.testing.assert_array_equal(new[3], prob[2])       # zero-shot score = max over seen tumour channels
    np.testing.assert_array_equal(new[4], prob[2])
    np.testing.assert_array_equal(new[:3], prob[:3])     # organ and seen channels unchanged
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "c1.nii.gz")))
    assert lab[1, 1, 1] == 5      # in the liver -> liver_metastasis
    assert lab[2, 2, 6] == 4      # in the spleen -> spleen_cyst
    assert lab[3, 3, 4] == 3      # outside the hosts: left as it was
    assert lab[0, 0, 0] == 1
    np.testing.assert_array_equal(np.load(pred / "c1.npz")["probabilities"], prob)   # original untouched
    assert not (tmp_path / "copy.partial").exists()


def test_stage1_checkpoint_without_alignment_head(tmp_path):
    ckpt = {"network_weights": {"backbone.w": torch.ones(2), "alignment_head.text_proj.weight": torch.ones(3),
                                "alignment_head.log_scale": torch.zeros(())},
            "init_args": {"plans": {}}, "current_epoch": 2}
    path = tmp_path / "checkpoint_final.pth"
    torch.save(ckpt, path)
    assert ablation.stage1_checkpoint_for(path, {"self_prompt": False}) == path
    out = ablation.stage1_checkpoint_for(path, {"alignment": False})
    assert out != path and out.is_file()
    loaded = torch.load(out, weights_only=True)
    assert list(loaded["network_weights"]) == ["backbone.w"]
    assert loaded["current_epoch"] == 2
    assert set(torch.load(path, weights_only=True)["network_weights"]) == set(ckpt["network_weights"])


def _run(variant, seed, organ, vox, case):
    return {"variant": variant, "seed": seed,
            "metrics": {"organ_DSC": organ,
                        "zero_shot": {t: {"DSC": 0.5, "voxel_AUROC": v, "FPR95": 0.5, "case_AUROC": c}
                                      for t, v, c in zip(("a", "b"), vox, case)}}}


def test_aggregate_and_targets():
    runs = [_run("full", 0, 0.9, (0.9, 0.8), (0.8, 0.7)), _run("full", 1, 0.8, (0.7, 0.6), (0.6, float("nan"))),
            _run("baseline", 0, 0.95, (0.6, 0.85), (0.5, 0.5)), _run("minmax", 0, 0.9, (0.5, 0.5), (0.9, 0.9))]
    agg = ablation.aggregate(runs, ["a", "b"])
    assert agg["full"]["organ_DSC"] == pytest.approx({"mean": 0.85, "min": 0.8, "max": 0.9, "n": 2})
    assert agg["full"]["voxel_AUROC"]["per_type"]["a"]["mean"] == pytest.approx(0.8)
    # mean over types within a seed first (seed 1 has only type a for case AUROC), then over seeds
    assert agg["full"]["case_AUROC"]["mean_over_types"]["min"] == pytest.approx(0.6)
    assert agg["full"]["case_AUROC"]["mean_over_types"]["max"] == pytest.approx(0.75)
    lines = ablation.check_targets(agg, ["a", "b"])
    assert "full vs baseline, voxel_AUROC, a: 0.800 vs 0.600 -> met" in lines
    assert "full vs baseline, voxel_AUROC, b: 0.700 vs 0.850 -> NOT met" in lines
    assert any(l.startswith("full vs minmax, mean case_AUROC") and l.endswith("NOT met") for l in lines)
    assert any(l.startswith("full vs minmax, mean voxel_AUROC") and l.endswith("-> met") for l in lines)
    assert ablation._fmt(agg["full"]["organ_DSC"]) == "0.850 (0.80–0.90)"


def test_every_variant_is_well_formed():
    from nnunetv2_zept.architectures.config import resolve_switches

    assert ablation.VARIANTS["full"]["switches"] == {}
    for name, spec in ablation.VARIANTS.items():
        if name == "baseline":
            continue
        group = ablation.STAGE1_GROUPS[spec["stage1"]]
        resolve_switches(spec["switches"])
        resolve_switches(group["switches"])
        # a variant shares a Stage 1 only when they agree on every switch Stage 1 uses
        for k in ("grouping", "disentangled", "background_queries"):
            assert spec["switches"].get(k) == group["switches"].get(k), (name, k)


def test_add_missing_texts(tmp_path):
    # a class name without a built-in knowledge text gets one; built-in ones are left alone
    dj = dict(DATASET_JSON, labels={"background": 0, "liver": [1, 2], "blob_thing": 2})
    p = tmp_path / "dataset.json"
    p.write_text(json.dumps(dj))
    added = bench_data.add_missing_texts(p)
    from nnunetv2_zept.knowledge.texts import text_for_class

    assert added == ["blob_thing"]
    new = json.loads(p.read_text())
    for name in added:
        assert text_for_class(name, new["zept"]["texts"])
    assert "liver" not in new["zept"]["texts"]          # built-in text kept
    before = p.read_text()
    assert bench_data.add_missing_texts(p) == []
    assert p.read_text() == before


@pytest.mark.parametrize("organs,tumours", [(5, 3), (9, 6), (16, 12)])
def test_scaling_class_layouts_are_valid_region_datasets(organs, tumours):
    from nnunetv2_zept.roles import roles_from_dataset_json

    roles = roles_from_dataset_json(training_cost._scaling_roles(organs, tumours))
    assert len(roles.organs) == organs and len(roles.tumours) == tumours
    assert 0 < len(roles.zero_shot) < tumours


def test_lock_excludes_a_second_driver_and_takes_over_stale_locks(tmp_path):
    path = tmp_path / "locks" / "full_seed0"
    with ablation.Lock(path):
        assert path.read_text() == str(os.getpid())
        with pytest.raises(ablation.Busy):
            with ablation.Lock(path):
                pass
    assert not path.exists()
    import subprocess
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(dead.pid))          # its owner has exited
    with ablation.Lock(path):
        assert path.read_text() == str(os.getpid())
