"""Finding and checking the Stage 1 checkpoint that a Stage 2 training starts from."""
import os
from os.path import isfile, join
from typing import Optional


class Stage1CheckpointError(RuntimeError):
    pass


def stage1_trainer_name(stage2_trainer_name: str) -> str:
    """nnUNetTrainerZePTStage2_100epochs -> nnUNetTrainerZePTStage1_100epochs (same suffix)."""
    return stage2_trainer_name.replace("Stage2", "Stage1", 1)


def find_stage1_checkpoint(results_dataset_folder: str, stage2_trainer_name: str, plans_name: str,
                           configuration: str, fold) -> str:
    """Path of the Stage 1 `checkpoint_final.pth` for the same dataset, plans, configuration and fold.

    Looks for the Stage 1 trainer with the same suffix as the Stage 2 trainer, then for the plain
    `nnUNetTrainerZePTStage1` (a checkpoint elsewhere is given with -pretrained_weights).
    Raises Stage1CheckpointError naming every path it looked at and the command that makes one.
    """
    names = [stage1_trainer_name(stage2_trainer_name)]
    if "nnUNetTrainerZePTStage1" not in names:
        names.append("nnUNetTrainerZePTStage1")
    tried = []
    for name in names:
        path = join(results_dataset_folder, f"{name}__{plans_name}__{configuration}", f"fold_{fold}",
                    "checkpoint_final.pth")
        if isfile(path):
            return path
        tried.append(path)
    dataset = os.path.basename(os.path.normpath(results_dataset_folder))
    raise Stage1CheckpointError(
        "Stage 2 starts from a finished Stage 1 training of the same dataset, plans, configuration and fold, "
        "and none was found. Looked for:\n  " + "\n  ".join(tried) +
        f"\nMake it with:\n  nnUNetv2_train {dataset} {configuration} {fold} -tr {names[0]} -p {plans_name}\n"
        f"or pass a Stage 1 checkpoint with -pretrained_weights PATH.")


def check_compatible_zept_config(stage1_checkpoint: dict, configuration: str, zept_config: dict,
                                 path: Optional[str] = None) -> None:
    """The Stage 1 network must have the same class roles and text width as the Stage 2 one."""
    try:
        theirs = stage1_checkpoint["init_args"]["plans"]["configurations"][configuration]["zept"]
    except (KeyError, TypeError):
        raise Stage1CheckpointError(f"{path}: not a ZePT Stage 1 checkpoint (no zept configuration for "
                                    f"{configuration!r} in its plans). Train Stage 1 with nnUNetTrainerZePTStage1.")
    # switches are not compared: ablations train Stage 2 variants (no self-prompt, no alignment, ...) on one
    # Stage 1; a structural mismatch is caught by the strict load_state_dict that follows
    for key in ("roles", "text_dim"):
        a, b = theirs.get(key), zept_config.get(key)
        if key == "roles" and a and b:
            a = {k: a[k] for k in ("names", "organs", "tumours", "hosts", "zero_shot")}
            b = {k: b[k] for k in ("names", "organs", "tumours", "hosts", "zero_shot")}
        if a != b:
            raise Stage1CheckpointError(
                f"{path}: Stage 1 was trained with a different zept {key} ({a!r}) than this Stage 2 "
                f"({b!r}). Retrain Stage 1 on the current dataset.json / settings.")


def load_stage1_weights(network, state_dict: dict, path: Optional[str] = None) -> None:
    """Copy a Stage 1 state into a Stage 2 network.

    Every tensor Stage 1 trained (and every buffer) must be there with the same shape; Stage-2-only
    modules may be absent from the network (e.g. the alignment head of a no-alignment ablation),
    so keys the network does not have are skipped."""
    own = network.state_dict()
    stage1_ids = {id(p) for p in network.stage1_parameters()}
    stage1_names = {n for n, p in network.named_parameters() if id(p) in stage1_ids}
    stage1_names |= {n for n, _ in network.named_buffers()} - {n for n in own if n.endswith(("stage", "text_embeddings"))}
    missing = sorted(n for n in stage1_names if n in own and n not in state_dict)   # non-persistent buffers aside
    wrong = sorted(n for n in own if n in state_dict and tuple(own[n].shape) != tuple(state_dict[n].shape))
    if missing or wrong:
        raise Stage1CheckpointError(f"{path}: does not fit this network (missing {missing[:5]}, shape mismatch "
                                    f"{wrong[:5]}). Train Stage 1 with the same plans and switches.")
    network.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
