"""The smallest dataset.json with every tumour role, shared by the tests of the benchmarks and of the
experiment machinery: organs liver (1) and spleen (2); seen liver_tumour (3); zero-shot
spleen_cyst (4) and liver_metastasis (5)."""

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
