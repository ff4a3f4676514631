"""nnunetv2_zept.roles: the `zept` block of dataset.json, its validation and inference from names."""
import json

import pytest

from nnunetv2_zept.roles import (ClassRoles, ZePTConfigError, check_region_based, infer_roles, is_region_based,
                                 looks_like_tumour, parse_zept_block, roles_from_dataset_json)

LABELS = {"background": 0, "liver": [1, 2], "kidney_right": [3, 5], "kidney_left": [4, 6], "pancreas": 7,
          "liver_tumour": 2, "kidney_tumour": [5, 6], "pancreas_tumour": 8}


def block(**over):
    b = {
        "organs": ["liver", "kidney_right", "kidney_left", "pancreas"],
        "tumours": {
            "liver_tumour": {"host": ["liver"]},
            "kidney_tumour": {"host": ["kidney_right", "kidney_left"]},
            "pancreas_tumour": {"host": ["pancreas"], "zero_shot": True, "text": "PDAC: hypodense, ill-defined."},
        },
        "texts": {"liver": "The liver is the largest solid abdominal organ."},
        "sources": {
            "lits": {"case_prefix": "LITS_", "annotates": ["liver", "liver_tumour"]},
            "kits": {"cases": ["KITS_001", "KITS_002"],
                     "annotates": ["kidney_right", "kidney_left", "kidney_tumour"]},
        },
    }
    b.update(over)
    return b


def dj(zept=None, labels=LABELS):
    d = {"labels": dict(labels), "regions_class_order": [1, 3, 4, 7, 2, 5, 8]}
    if zept is not None:
        d["zept"] = zept
    return d


def test_valid_block_parses():
    r = roles_from_dataset_json(dj(block()), present_channels=[0, 1, 2, 3, 4, 5])
    assert r.names == ["liver", "kidney_right", "kidney_left", "pancreas", "liver_tumour", "kidney_tumour",
                       "pancreas_tumour"]
    assert r.organs == [0, 1, 2, 3] and r.tumours == [4, 5, 6]
    assert r.hosts == {4: [0], 5: [1, 2], 6: [3]}
    assert r.zero_shot == [6] and r.seen_tumours == [4, 5] and not r.inferred
    assert r.texts == {"pancreas_tumour": "PDAC: hypodense, ill-defined.",
                       "liver": "The liver is the largest solid abdominal organ."}
    assert r.host_union_of(1) == [5] and r.host_union_of(3) == [6]
    assert "pancreas_tumour [zero-shot] in pancreas" in r.describe()


def test_annotated_channels_per_case_source():
    r = parse_zept_block(dj(block()))
    assert r.annotated_channels("LITS_017") == [0, 4]
    assert r.annotated_channels("KITS_002") == [1, 2, 5]
    assert r.annotated_channels("KITS_003") == [0, 1, 2, 3, 4, 5]       # no source: all but zero-shot
    assert r.annotated_channels("BTCV_001") == r.default_annotated() == [0, 1, 2, 3, 4, 5]


def test_to_dict_from_dict_round_trip():
    r = parse_zept_block(dj(block()))
    d = json.loads(json.dumps(r.to_dict()))          # through JSON, as in plans.json / checkpoints
    back = ClassRoles.from_dict(d)
    assert back == r and back.to_dict() == r.to_dict()
    assert back.annotated_channels("KITS_001") == [1, 2, 5]
    inferred = infer_roles(dj())
    assert ClassRoles.from_dict(inferred.to_dict()) == inferred and inferred.inferred


def _raises(d, *fragments, present=None):
    with pytest.raises(ZePTConfigError) as e:
        roles_from_dataset_json(d, present)
    msg = str(e.value)
    assert msg.startswith("dataset.json ") and "Fix:" in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


@pytest.mark.parametrize("zept, fragments", [
    (block(organs=["liver", "kidney_right", "kidney_left", "pancreas", "spleen"]),
     ["zept.organs[] = 'spleen'", "is not a class of dataset.json `labels`", "add the class to `labels`"]),
    (block(tumours={**block()["tumours"], "lung_tumour": {"host": ["liver"]}}),
     ["zept.tumours = 'lung_tumour'", "is not a class"]),
    (block(tumours={**block()["tumours"], "liver_tumour": {"host": []}}),
     ["zept.tumours.liver_tumour.host = []", "needs at least one host organ", "name its host organ(s)"]),
    (block(tumours={**block()["tumours"], "liver_tumour": {}}),
     ["zept.tumours.liver_tumour.host = None", "needs at least one host organ"]),
    (block(tumours={**block()["tumours"], "liver_tumour": {"host": ["kidney_tumour"]}}),
     ["zept.tumours.liver_tumour.host[] = 'kidney_tumour'", "is not listed in zept.organs", "add it to zept.organs"]),
    (block(tumours={**block()["tumours"], "liver_tumour": {"host": ["gallbladder"]}}),
     ["zept.tumours.liver_tumour.host[] = 'gallbladder'", "is not a class"]),
    (block(sources={"lits": {"case_prefix": "LITS_", "annotates": []}}),
     ["zept.sources.lits.annotates = []", "must annotate at least one class", "remove the source"]),
    (block(sources={"lits": {"case_prefix": "LITS_"}}),
     ["zept.sources.lits.annotates = None", "must annotate at least one class"]),
    (block(sources={"lits": {"annotates": ["liver"]}}),
     ["zept.sources.lits", "neither `case_prefix` nor `cases`", "add a case-id prefix"]),
    (block(sources={"lits": {"case_prefix": "LITS_", "annotates": ["liver"], "prefix": "x"}}),
     ["zept.sources.lits.prefix = 'x'", "unknown key", "annotates, case_prefix, cases"]),
    (block(sources={"lits": {"case_prefix": "LITS_", "annotates": ["lung"]}}),
     ["zept.sources.lits.annotates[] = 'lung'", "is not a class"]),
    (block(organ=["liver"]), ["zept.organ = ['liver']", "unknown key", "use only"]),
    (block(tumours={**block()["tumours"], "liver_tumour": {"host": ["liver"], "seen": True}}),
     ["zept.tumours.liver_tumour.seen = True", "unknown key", "use host, zero_shot, text"]),
    (block(organs=["liver", "kidney_right", "kidney_left"],
           tumours={**block()["tumours"], "pancreas_tumour": {"host": ["liver"], "zero_shot": True}}),
     ["zept = ['pancreas']", "neither in zept.organs nor in zept.tumours", "give every class a role"]),
    (block(organs=["liver", "kidney_right", "kidney_left", "pancreas", "liver_tumour"]),
     ["zept.tumours.liver_tumour", "also listed in zept.organs", "either as organ or as tumour"]),
    (block(organs=[]), ["zept.organs = []", "non-empty list"]),
    (block(texts={"liver": ""}), ["zept.texts.liver = ''", "non-empty string"]),
    (block(texts={"stomach": "x"}), ["zept.texts = 'stomach'", "is not a class"]),
    (block(tumours={**block()["tumours"], "liver_tumour": {"host": ["liver"], "text": "  "}}),
     ["zept.tumours.liver_tumour.text = '  '", "non-empty string", "drop the key"]),
    (block(tumours={**block()["tumours"], "liver_tumour": ["liver"]}),
     ["zept.tumours.liver_tumour = ['liver']", "must be an object with a `host` list"]),
    (["liver"], ["zept = ['liver']", "must be an object"]),
])
def test_inconsistent_block_raises_with_key_value_and_fix(zept, fragments):
    _raises(dj(zept), *fragments)


def test_zero_shot_class_with_training_voxels_raises():
    msg = _raises(dj(block()), "zept.tumours.pancreas_tumour.zero_shot = True", "has voxels in the training labels",
                  "zero_shot: false", present=[0, 1, 2, 3, 4, 5, 6])
    assert "remove its voxels" in msg
    roles_from_dataset_json(dj(block()), present_channels=[0, 4])        # absent: fine


def test_missing_labels_and_no_organ():
    _raises({"zept": block()}, "labels = None", "missing or empty")
    _raises({"labels": {"background": 0, "tumour": 1}}, "labels.tumour", "without a host organ",
            '"tumour": {"host": ["<organ>"]}')


def test_inference_from_names():
    labels = {"background": 0, "liver": 1, "kidney_left": 2, "kidney_right": 3, "lung": 4, "pancreas": 5,
              "liver_tumour": 6, "kidney_tumor": 7, "lung_nodule": 8, "pancreas_cancer": 9, "ignore": 10}
    r = roles_from_dataset_json({"labels": labels}, present_channels=[0, 1, 2, 3, 4, 5, 6])
    n = r.names
    assert r.inferred and "inferred from class names" in r.describe()
    assert [n[o] for o in r.organs] == ["liver", "kidney_left", "kidney_right", "lung", "pancreas"]
    host = {n[t]: [n[h] for h in hs] for t, hs in r.hosts.items()}
    assert host == {"liver_tumour": ["liver"], "kidney_tumor": ["kidney_left", "kidney_right"],
                    "lung_nodule": ["lung"], "pancreas_cancer": ["pancreas"]}
    # lung_nodule and pancreas_cancer have no voxels: zero-shot; seen tumours are annotated everywhere
    assert [n[z] for z in r.zero_shot] == ["lung_nodule", "pancreas_cancer"]
    assert r.annotated_channels("any") == [0, 1, 2, 3, 4, 5, 6]
    # without knowledge of the labels nothing is zero-shot
    assert infer_roles({"labels": labels}).zero_shot == []


@pytest.mark.parametrize("name, tumour", [("liver_tumour", True), ("Kidney Tumor", True), ("lung-nodule", True),
                                          ("liver_metastases", True), ("HCC_lesion", True), ("kidney_cyst", True),
                                          ("liver", False), ("hepatic_vessel", False), ("lymph_node", False)])
def test_looks_like_tumour(name, tumour):
    assert looks_like_tumour(name) is tumour


def test_region_based_detection():
    assert is_region_based(dj())
    check_region_based(dj())
    plain = {"labels": {"background": 0, "liver": 1, "liver_tumour": 2}}
    assert not is_region_based(plain)
    with pytest.raises(ZePTConfigError, match="nnunetv2_zept convert -d <ID> -o <NEW_ID>"):
        check_region_based(plain)


# ---- regressions of problems once found in roles.py ----------

def test_region_based_agrees_with_nnunet_label_manager():
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    d = {"labels": {"background": 0, "liver": 1, "liver_tumour": 2}, "regions_class_order": [1, 2]}
    assert is_region_based(d) == LabelManager(d["labels"], d["regions_class_order"]).has_regions


def test_side_letters_do_not_make_hosts():
    r = infer_roles({"labels": {"background": 0, "l_kidney": 1, "lung": 2, "lung_nodule": 3}})
    assert r.hosts == {2: [1]}
    r = infer_roles({"labels": {"background": 0, "kidney_r": 1, "rectum": 2, "rectum_cancer": 3}})
    assert r.hosts == {2: [1]}


@pytest.mark.parametrize("key, value", [("texts", ["liver"]), ("sources", ["lits"])])
def test_non_object_texts_and_sources_raise_config_error(key, value):
    _raises(dj(block(**{key: value})), f"zept.{key}")


def test_zero_shot_must_be_boolean():
    _raises(dj(block(tumours={**block()["tumours"], "liver_tumour": {"host": ["liver"], "zero_shot": "false"}})),
            "zept.tumours.liver_tumour.zero_shot")


def test_source_annotating_only_zero_shot_classes_raises():
    _raises(dj(block(sources={"msd": {"case_prefix": "MSD_", "annotates": ["pancreas_tumour"]}})),
            "zept.sources.msd.annotates")


def _json_blocks(markdown: str):
    import re
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)```", markdown, re.S)]


def test_docs_dataset_json_example_is_valid():
    """The complete example of docs/dataset.md validates and is a region dataset for nnU-Net itself."""
    from pathlib import Path

    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    doc = (Path(__file__).resolve().parents[1] / "docs" / "dataset.md").read_text()
    example, roles_file = _json_blocks(doc)[:2]   # then the merge mapping-file example
    # no voxels of pancreas_tumour (channel 7) in training
    r = roles_from_dataset_json(example, present_channels=range(7))
    assert r.names[7] == "pancreas_tumour" and r.zero_shot == [7] and r.hosts[6] == [2, 3]
    assert r.annotated_channels("LITS_004") == [1, 5] and r.annotated_channels("ORG_001") == [0, 1, 2, 3, 4]
    assert "pancreas_tumour" in r.texts and "liver" in r.texts
    lm = LabelManager(example["labels"], example["regions_class_order"])
    assert lm.has_regions and len(lm.all_regions) == r.num_channels and lm.all_labels == list(range(10))
    assert set(roles_file["zept"]) == {"tumours"}
