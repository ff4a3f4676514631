"""Built-in knowledge texts and class-name resolution."""
import json

import pytest

from nnunetv2_zept.knowledge import BACKGROUND_TISSUES, CATCH_ALL_BACKGROUND, dataset_text_classes
from nnunetv2_zept.knowledge.texts import (TEXTS_FILE, MissingKnowledgeTextError, _load_table, builtin_table,
                                           resolve_class_name, text_for_class)
from nnunetv2_zept.roles import ZePTConfigError, roles_from_dataset_json

REQUIRED = [
    "liver", "spleen", "kidney_right", "kidney_left", "kidney", "pancreas", "stomach", "gallbladder", "oesophagus",
    "aorta", "inferior_vena_cava", "portal_splenic_vein", "adrenal_gland_right", "adrenal_gland_left", "duodenum",
    "colon", "small_bowel", "rectum", "bladder", "lung_right", "lung_left", "lungs", "hepatic_vessels", "prostate",
    "femoral_head_left", "femoral_head_right", "celiac_trunk",
    "liver_tumour", "kidney_tumour", "kidney_cyst", "pancreatic_tumour", "hepatic_vessel_tumour", "lung_tumour",
    "colon_tumour", "spleen_lesion", "adrenal_tumour", "bladder_tumour", "lymph_node_metastasis",
    "gallbladder_cancer", "gastric_cancer",
    *BACKGROUND_TISSUES, "background",
]


def test_network_background_query_names_have_texts():
    from nnunetv2_zept.architectures.config import BACKGROUND_TISSUES as NETWORK_BACKGROUNDS

    names = [n for group in NETWORK_BACKGROUNDS.values() for n in group]
    assert set(BACKGROUND_TISSUES) | {CATCH_ALL_BACKGROUND} == set(names)
    for n in names:
        assert resolve_class_name(n) == ("background" if n == CATCH_ALL_BACKGROUND else n)


def test_required_classes_have_substantial_texts():
    entries = builtin_table().entries
    assert len(entries) >= 30
    for name in REQUIRED:
        assert name in entries, f"no built-in text for {name}"
    for name, e in entries.items():
        words = len(e.text.split())
        assert 60 <= words <= 250, f"{name}: {words} words"
        assert "HU" in e.text, f"{name}: text gives no CT density"
    # texts are distinct paragraphs, not one template with the name swapped
    texts = [e.text for e in entries.values()]
    assert len(set(texts)) == len(texts)


def test_every_synonym_resolves_to_its_class():
    for canonical, e in builtin_table().entries.items():
        for phrase in (canonical, *e.synonyms):
            assert resolve_class_name(phrase) == canonical, phrase
            # separators, case and word order do not matter
            assert resolve_class_name(phrase.upper().replace(" ", "_")) == canonical, phrase
            if "gall " not in phrase:   # "gall bladder" is one word split in two
                assert resolve_class_name(" ".join(reversed(phrase.split()))) == canonical, phrase


@pytest.mark.parametrize("name,canonical", [
    ("liver_tumour", "liver_tumour"), ("Kidney Tumor", "kidney_tumour"), ("right kidney", "kidney_right"),
    ("kidney_right", "kidney_right"), ("Kidney_R", "kidney_right"), ("kidney_L", "kidney_left"),
    ("KidneyLeft", "kidney_left"), ("pancreas_tumor", "pancreatic_tumour"), ("lung nodule", "lung_tumour"),
    ("Lung Nodules", "lung_tumour"), ("pulmonary nodules", "lung_tumour"), ("renal mass", "kidney_tumour"),
    ("left kidney tumour", "kidney_tumour"), ("pancreatic cancer", "pancreatic_tumour"),
    ("liver lesions", "liver_tumour"), ("Liver Neoplasm", "liver_tumour"), ("colon carcinoma", "colon_tumour"),
    ("Gall Bladder", "gallbladder"), ("esophagus", "oesophagus"), ("Postcava (IVC)", "inferior_vena_cava"),
    ("Portal Vein and Splenic Vein", "portal_splenic_vein"), ("Celiac Truck", "celiac_trunk"),
    ("Left Head of Femur", "femoral_head_left"), ("Intestine", "small_bowel"), ("lung", "lungs"),
    ("R lung", "lung_right"), ("kidney cysts", "kidney_cyst"), ("Hepatic Vessel Tumor", "hepatic_vessel_tumour"),
    ("stomach_cancer", "gastric_cancer"), ("adrenal gland left", "adrenal_gland_left"),
    ("lymph node metastases", "lymph_node_metastasis"), ("bowel gas", "air"), ("muscle", "soft_tissue"),
])
def test_dataset_names_resolve(name, canonical):
    assert resolve_class_name(name) == canonical


@pytest.mark.parametrize("name", ["cancer", "tumour", "gallbladder cyst", "left colon", "thyroid", "foo_bar"])
def test_unmatched_names_do_not_guess(name):
    assert resolve_class_name(name) is None


def test_unknown_class_raises_clear_error():
    with pytest.raises(MissingKnowledgeTextError) as e:
        text_for_class("thyroid_nodule")
    msg = str(e.value)
    assert "thyroid_nodule" in msg and "zept.texts.thyroid_nodule" in msg
    assert isinstance(e.value, ZePTConfigError)


def test_overrides_exact_and_by_builtin_class():
    assert text_for_class("thyroid_nodule", {"thyroid_nodule": " A nodule in the thyroid. "}) == "A nodule in the thyroid."
    assert text_for_class("Liver", {"Liver": "custom"}) == "custom"
    # an override keyed by another spelling of the same built-in class applies too
    assert text_for_class("liver_tumor", {"Liver Tumour": "custom tumour"}) == "custom tumour"
    # but not to a different class
    assert text_for_class("liver", {"liver_tumour": "x"}) == builtin_table().entries["liver"].text
    with pytest.raises(ZePTConfigError, match="zept.texts.liver"):
        text_for_class("liver", {"liver": "   "})


def test_texts_from_dataset_json_roles():
    dj = {"labels": {"background": 0, "liver": [1, 2], "liver_tumour": 2, "thyroid": 3, "thyroid_nodule": 4},
          "zept": {"organs": ["liver", "thyroid"],
                   "tumours": {"liver_tumour": {"host": ["liver"]},
                               "thyroid_nodule": {"host": ["thyroid"], "zero_shot": True,
                                                  "text": "A thyroid nodule lies in the neck."}},
                   "texts": {"thyroid": "The thyroid gland lies in the neck."}}}
    roles = roles_from_dataset_json(dj)
    classes = dataset_text_classes(roles)
    assert classes == ["liver", "thyroid", *BACKGROUND_TISSUES, "liver_tumour", "thyroid_nodule", CATCH_ALL_BACKGROUND]
    texts = {n: text_for_class(n, roles.texts) for n in classes}
    assert texts["thyroid_nodule"] == "A thyroid nodule lies in the neck."
    assert texts["liver_tumour"] == builtin_table().entries["liver_tumour"].text


def test_colliding_synonyms_are_rejected(tmp_path):
    data = json.loads(TEXTS_FILE.read_text())
    data["classes"]["spleen"]["synonyms"].append("Liver")
    bad = tmp_path / "texts.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="collides"):
        _load_table(bad)
