"""`nnunetv2_zept merge`: N nnU-Net raw datasets (MSD tasks, KiTS, multi-organ sets) -> one ZePT
region dataset with one shared class vocabulary, one `zept.sources` entry per input, zero-shot
tumour types held out, images linked and label maps remapped.

    plan = build_plan(MergeOptions(inputs=["3", "9", "220", "11", "6"], test_inputs=["6"], target_id=600,
                                   name="ZePTUnion"))
    print(describe_plan(plan))      # what --dry-run prints
    result = write_plan(plan)       # writes $nnUNet_raw/Dataset600_ZePTUnion

Modules: `vocabulary` (class names, built-in maps, mapping files), `inputs` (reading and checking
input datasets), `plan` (label space, sources, every decision), `writer` (the files).
"""
from nnunetv2_zept.merging.plan import MergeOptions, MergePlan, build_plan, describe_plan
from nnunetv2_zept.merging.vocabulary import BUILTIN_MAPS, MergeError
from nnunetv2_zept.merging.writer import MergeResult, write_plan

__all__ = ["MergeOptions", "MergePlan", "MergeResult", "MergeError", "BUILTIN_MAPS", "build_plan", "describe_plan",
           "write_plan"]
