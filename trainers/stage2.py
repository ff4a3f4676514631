"""Stage 2: advanced (tumour) queries, their masked-attention decoder, the tumour head, the
mask-feature adapter and the query-knowledge alignment, on top of a frozen Stage 1 model."""
import os
from typing import List

import torch

from nnunetv2_zept.checkpoints import CheckpointError, load_checkpoint
from nnunetv2_zept.losses.stage_losses import stage2_loss
from nnunetv2_zept.training.stage1_checkpoint import (Stage1CheckpointError, check_compatible_zept_config,
                                                      find_stage1_checkpoint, load_stage1_weights)
from nnunetv2_zept.trainers.common_settings import TrainerStop
from nnunetv2_zept.architectures.zept_network import unwrap_network
from nnunetv2_zept.trainers.zept_trainer_base import nnUNetTrainerZePTBase


class nnUNetTrainerZePTStage2(nnUNetTrainerZePTBase):
    """ZePT Stage 2.

    Starts from the Stage 1 checkpoint of the same dataset, plans, configuration and fold (found in
    nnUNet_results, or given with -pretrained_weights) and refuses to start without one.
    Backbone, grouping, fundamental queries, organ head and anomaly calibration stay frozen
    (no gradient, no optimizer state).  Seen tumour channels get the mask loss; zero-shot tumour
    channels get none and learn only through the alignment of their query with their knowledge text.
    """

    STAGE = 2
    DEFAULT_EPOCHS = 500
    ALIGNMENT_WEIGHT = 1.0

    def trained_parameters(self, network) -> List[torch.nn.Parameter]:
        return list(network.stage2_parameters())

    def validated_channels(self) -> List[int]:
        return list(self.roles.seen_tumours)

    def compute_loss(self, output, aux, target, keys, data, parts=None) -> torch.Tensor:
        return stage2_loss(output, target, keys, aux, self.roles, self.ALIGNMENT_WEIGHT, self._alignment_relation(),
                           parts=parts)

    def _alignment_relation(self):
        """None (identity targets) or the hierarchical relation matrix of the query classes."""
        if self.zept_config["switches"]["alignment_targets"] != "hierarchical":
            return None
        if getattr(self, "_relation", None) is None:
            from nnunetv2_zept.losses.alignment import build_relation_matrix

            self._relation = build_relation_matrix(self.roles, self.zept_config["query_classes"])
        return self._relation

    def on_train_start(self):
        # not initialised yet = neither -pretrained_weights nor a checkpoint (--c) was loaded:
        # the Stage 1 checkpoint is required, and looked up before any worker starts
        stage1_path = None
        if not self.was_initialized:
            try:
                stage1_path = find_stage1_checkpoint(os.path.dirname(os.path.normpath(self.output_folder_base)),
                                                     self.__class__.__name__, self.plans_manager.plans_name,
                                                     self.configuration_name, self.fold)
            except Stage1CheckpointError as e:
                raise TrainerStop(str(e)) from None
        super().on_train_start()
        net = unwrap_network(self.network)
        if stage1_path is not None:
            try:
                ckpt = load_checkpoint(stage1_path, map_location=self.device)
                check_compatible_zept_config(ckpt, self.configuration_name, self.zept_config, stage1_path)
                load_stage1_weights(net, ckpt["network_weights"], stage1_path)
            except (CheckpointError, Stage1CheckpointError) as e:
                raise TrainerStop(str(e)) from None
            self.print_to_log_file(f"Stage 2 starts from Stage 1 checkpoint {stage1_path}")
        if self.current_epoch == 0:
            # a Stage 1 checkpoint carries stage=1 and possibly other text embeddings
            net.set_stage(2)
            net.set_text_embeddings(torch.as_tensor(self.text_embeddings.embeddings, dtype=torch.float32))
