"""Trainer variants in nnU-Net's style: one class per change, its name saying the change, so that the
results folder (`<Trainer>__<Plans>__<configuration>`) identifies the model.

A Stage 2 variant starts from the Stage 1 variant with the same suffix when one was trained, else
from nnUNetTrainerZePTStage1 (training/stage1_checkpoint.py).  Variants that change the network
built in Stage 1 (grouping, query sets) exist in both stages with the same switches;
variants that change only what Stage 1 trains on (its targets, its synthetic lesions) have a
Stage 2 twin without switches, so that each gets its own Stage 2 folder; Stage-2-only variants
share the default Stage 1.  The effective switches are written to each fold's training log and
stored in the plans of the results folder (and so in every checkpoint).
"""
from nnunetv2_zept.training.lesion_recipes import HypodenseLesionRecipe
from nnunetv2_zept.trainers.stage1 import nnUNetTrainerZePTStage1
from nnunetv2_zept.trainers.stage2 import nnUNetTrainerZePTStage2


# ------------------------------------------------------------------ shorter schedules
class nnUNetTrainerZePTStage1_100epochs(nnUNetTrainerZePTStage1):
    DEFAULT_EPOCHS = 100


class nnUNetTrainerZePTStage1_250epochs(nnUNetTrainerZePTStage1):
    DEFAULT_EPOCHS = 250


class nnUNetTrainerZePTStage2_100epochs(nnUNetTrainerZePTStage2):
    DEFAULT_EPOCHS = 100


class nnUNetTrainerZePTStage2_250epochs(nnUNetTrainerZePTStage2):
    DEFAULT_EPOCHS = 250


# ------------------------------------------------------------------ network variants (both stages)
class nnUNetTrainerZePTStage1_noGrouping(nnUNetTrainerZePTStage1):
    """Plain cross-attention instead of object-aware grouping of the fundamental queries."""
    SWITCHES = {"grouping": False}


class nnUNetTrainerZePTStage2_noGrouping(nnUNetTrainerZePTStage2):
    SWITCHES = nnUNetTrainerZePTStage1_noGrouping.SWITCHES


class nnUNetTrainerZePTStage1_sharedQueries(nnUNetTrainerZePTStage1):
    """One query set: tumour queries are fundamental queries too (paper's disentangling switched off)."""
    SWITCHES = {"disentangled": False}


class nnUNetTrainerZePTStage2_sharedQueries(nnUNetTrainerZePTStage2):
    SWITCHES = nnUNetTrainerZePTStage1_sharedQueries.SWITCHES


class nnUNetTrainerZePTStage1_noBackgroundQueries(nnUNetTrainerZePTStage1):
    """No background tissue queries (the paper's query set): fat, muscle and bone are 'anomalous'."""
    SWITCHES = {"background_queries": "none"}


class nnUNetTrainerZePTStage2_noBackgroundQueries(nnUNetTrainerZePTStage2):
    SWITCHES = nnUNetTrainerZePTStage1_noBackgroundQueries.SWITCHES


class nnUNetTrainerZePTStage1_oneBackgroundQuery(nnUNetTrainerZePTStage1):
    """One catch-all background query instead of one per tissue class."""
    SWITCHES = {"background_queries": "one"}


class nnUNetTrainerZePTStage2_oneBackgroundQuery(nnUNetTrainerZePTStage2):
    SWITCHES = nnUNetTrainerZePTStage1_oneBackgroundQuery.SWITCHES


# ------------------------------------------------------------------ Stage 1 training variants
class nnUNetTrainerZePTStage1_ignoreTumourVoxels(nnUNetTrainerZePTStage1):
    """Paper-style Stage 1 targets: tumour voxels are excluded from their host organ's loss
    instead of being negatives for it."""
    HEALTHY_ORGAN_MODE = "ignore"


class nnUNetTrainerZePTStage2_ignoreTumourVoxels(nnUNetTrainerZePTStage2):
    """Stage 2 on nnUNetTrainerZePTStage1_ignoreTumourVoxels."""


class nnUNetTrainerZePTStage1_noSyntheticLesions(nnUNetTrainerZePTStage1):
    """Stage 1 without synthetic lesions: only annotated tumours teach the organ queries to leave
    abnormal tissue unexplained."""
    SYNTHETIC_LESIONS = None


class nnUNetTrainerZePTStage2_noSyntheticLesions(nnUNetTrainerZePTStage2):
    """Stage 2 on nnUNetTrainerZePTStage1_noSyntheticLesions."""


class nnUNetTrainerZePTStage1_hypodenseLesions(nnUNetTrainerZePTStage1):
    """Stage 1 with the earlier synthetic lesions (the default before the generic curriculum):
    hypo-attenuating blobs 25-120 HU below the organ (not below water), fluid to soft tissue in aerated organs, every
    pasted voxel a negative for every organ and tissue channel (ablation of the generic curriculum)."""

    SYNTHETIC_LESIONS = HypodenseLesionRecipe()


class nnUNetTrainerZePTStage2_hypodenseLesions(nnUNetTrainerZePTStage2):
    """Stage 2 on nnUNetTrainerZePTStage1_hypodenseLesions."""


# ------------------------------------------------------------------ Stage 2 variants (default Stage 1)
class nnUNetTrainerZePTStage2_noSelfPrompt(nnUNetTrainerZePTStage2):
    """Tumour queries attend to every voxel (no anomaly-driven attention mask)."""
    SWITCHES = {"self_prompt": False}


class nnUNetTrainerZePTStage2_noAlignment(nnUNetTrainerZePTStage2):
    """No query-knowledge alignment: zero-shot queries are never told what they look for."""
    SWITCHES = {"alignment": False}


class nnUNetTrainerZePTStage2_minmaxAnomaly(nnUNetTrainerZePTStage2):
    """Per-patch min-max normalised anomaly (the paper) instead of the calibrated absolute score.
    Stage 2 only: Stage 1's loss never sees the anomaly, so its weights do not depend on the switch
    (a Stage 1 trained with it reproduced the default's bit for bit); the calibration statistics it
    gathers go unused in min-max mode."""
    SWITCHES = {"anomaly_calibration": "minmax"}


class nnUNetTrainerZePTStage2_noAnomalyInjection(nnUNetTrainerZePTStage2):
    """Tumour logits without the calibrated anomaly added."""
    SWITCHES = {"anomaly_injection": False}


class nnUNetTrainerZePTStage2_noOrganRestriction(nnUNetTrainerZePTStage2):
    """Prompts and zero-shot channels over the whole patch instead of the host organs' region."""
    SWITCHES = {"organ_restriction": False}


class nnUNetTrainerZePTStage2_hierarchicalAlignment(nnUNetTrainerZePTStage2):
    """Alignment targets that also pull each tumour query towards its host organs' and the other
    tumour types' texts (soft multi-positive targets) instead of its own text only."""
    SWITCHES = {"alignment_targets": "hierarchical"}


class nnUNetTrainerZePTStage2_zeroShotAdapter(nnUNetTrainerZePTStage2):
    """The mask-feature adapter term on zero-shot channels too (fitted to the seen types only)."""
    SWITCHES = {"zero_shot_adapter": True}



class nnUNetTrainerZePTStage2_noSeenRestriction(nnUNetTrainerZePTStage2):
    """Prediction leaves the seen tumour channels over the whole patch (the adapter runs over every
    tile), as before 2026-12-03; training is the default's."""
    SWITCHES = {"seen_restriction": False}


class nnUNetTrainerZePTStage2_noHostResidualQuery(nnUNetTrainerZePTStage2):
    """Prediction adds each zero-shot query term to the anomaly as it is, with its fit on the host
    organ's logit, as before 2026-12-03; training is the default's."""
    SWITCHES = {"zero_shot_host_residual": False}


class nnUNetTrainerZePTStage2_hostResidualQuery(nnUNetTrainerZePTStage2):
    """The default's switch set explicitly, as the ablation that chose it trained it while the default
    was off (benchmarks/results/zero_shot_ablation: `zept_hostResidualQuery`); kept so that its
    recorded runs can be rebuilt under their name."""
    SWITCHES = {"zero_shot_host_residual": True}


class nnUNetTrainerZePTStage2_noTumourShellMargin(nnUNetTrainerZePTStage2):
    """Prediction keeps the tumour logits unchanged in the outer shell of their host regions, as
    before 2026-12-03; training is the default's."""
    SWITCHES = {"tumour_shell_margin": 0.0}
