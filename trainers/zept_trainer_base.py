"""Hooks shared by both ZePT trainers.  Each method overrides one nnU-Net hook and delegates the
work to the library (`nnunetv2_zept.training`, `nnunetv2_zept.losses`, `nnunetv2_zept.knowledge`).

Settings a user or a test can change without writing a subclass (environment variables):
  NNUNETV2_ZEPT_EPOCHS, NNUNETV2_ZEPT_ITERATIONS, NNUNETV2_ZEPT_VAL_ITERATIONS  training length
  NNUNETV2_ZEPT_SAVE_EVERY  epochs between checkpoint_latest.pth writes (nnU-Net default 50)
  NNUNETV2_ZEPT_SEED        seed of the run (common_settings.py)
  NNUNETV2_ZEPT_TEXT_ENCODER  which text encoder embeds the knowledge texts (docs/knowledge.md)
"""
import json
import os
from os.path import isfile, join
from typing import List

import numpy as np
import torch

from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn

from nnunetv2_zept.architectures.zept_network import unwrap_network
from nnunetv2_zept.roles import ClassRoles, ZePTConfigError, check_region_based, roles_from_dataset_json
from nnunetv2_zept.training.lr_schedule import ADAMW_LR, ADAMW_WEIGHT_DECAY, WARMUP_FRACTION, adamw_warmup_cosine
from nnunetv2_zept.training.present_classes import present_channels
from nnunetv2_zept.trainers.common_settings import PluginTrainerSettings, TrainerStop


class nnUNetTrainerZePTBase(PluginTrainerSettings):
    """Not meant to be trained directly: use nnUNetTrainerZePTStage1 / nnUNetTrainerZePTStage2."""

    STAGE = 0
    # network switches of this trainer (architectures/config.py DEFAULT_SWITCHES); a variant that
    # changes the network is a subclass with its own SWITCHES (trainers/variants.py), so that the
    # results folder name identifies the model
    SWITCHES: dict = {}
    DEFAULT_EPOCHS = 1000
    INITIAL_LR = ADAMW_LR
    WEIGHT_DECAY = ADAMW_WEIGHT_DECAY
    WARMUP_FRACTION = WARMUP_FRACTION

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        from nnunetv2_zept.knowledge.cache import TextCacheError
        from nnunetv2_zept.knowledge.encoders import TextEncoderError

        self.initial_lr = self.INITIAL_LR
        self.weight_decay = self.WEIGHT_DECAY
        try:
            check_region_based(dataset_json)
            self.roles = self._resolve_roles()
            self.zept_config = self._make_zept_config()
        except (ZePTConfigError, TextEncoderError, TextCacheError) as e:
            raise TrainerStop(str(e)) from None
        # The predictor rebuilds the network from plans.json of the results folder, with no access
        # to dataset.json or this trainer: the network's configuration travels in the plans.
        self.plans_manager.plans["configurations"][configuration]["zept"] = self.zept_config
        self.configuration_manager.configuration["zept"] = self.zept_config

    # ----------------------------------------------------------------------------- set-up hooks
    def _resolve_roles(self) -> ClassRoles:
        present = None
        if self.preprocessed_dataset_folder is not None and os.path.isdir(self.preprocessed_dataset_folder):
            present = present_channels(self.preprocessed_dataset_folder, self.label_manager)
        roles = roles_from_dataset_json(self.dataset_json, present)
        self.print_to_log_file(roles.describe())
        return roles

    def _make_zept_config(self) -> dict:
        from nnunetv2_zept.architectures import default_zept_config
        from nnunetv2_zept.training.text_embeddings import text_embeddings_for_training

        switches = dict(self.SWITCHES)
        self.text_embeddings = text_embeddings_for_training(self.roles, switches, self.preprocessed_dataset_folder_base,
                                                            self.dataset_json, log=self.print_to_log_file)
        config = default_zept_config(self.roles, int(self.text_embeddings.embeddings.shape[1]), **switches)
        changed = {k: v for k, v in config["switches"].items() if k in switches}
        self.print_to_log_file(f"ZePT network switches: {json.dumps(config['switches'], sort_keys=True)}"
                               + (f" (this trainer changes {json.dumps(changed, sort_keys=True)})" if changed else ""))
        config["text_encoder"] = {"name": self.text_embeddings.encoder, "text_hash": self.text_embeddings.text_hash}
        return config

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        from nnunetv2_zept.architectures import build_zept_network

        zept_config = configuration_manager.configuration.get("zept")
        if zept_config is None:
            raise ZePTConfigError(
                "plans.json has no `zept` entry for this configuration, so the ZePT network cannot be rebuilt. "
                "This happens with plans.json files not written by a ZePT trainer; predict with the "
                "results folder of nnUNetTrainerZePTStage1/Stage2.")
        return build_zept_network(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                                  enable_deep_supervision, zept_config)

    def trained_parameters(self, network) -> List[torch.nn.Parameter]:
        raise NotImplementedError

    def configure_optimizers(self):
        net = unwrap_network(self.network)
        net.set_text_embeddings(torch.as_tensor(self.text_embeddings.embeddings, dtype=torch.float32))
        net.set_stage(self.STAGE)
        trained = {id(p) for p in self.trained_parameters(net)}
        for p in net.parameters():
            p.requires_grad_(id(p) in trained)
        params = [p for p in net.parameters() if p.requires_grad]
        n_frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
        self.print_to_log_file(f"ZePT stage {self.STAGE}: training {sum(p.numel() for p in params):,} parameters, "
                               f"{n_frozen:,} frozen")
        return adamw_warmup_cosine(params, self.num_epochs, self.initial_lr, self.weight_decay, self.WARMUP_FRACTION)

    def _build_loss(self):
        # the loss needs the case keys (partial labels) and the input (tissue pseudo-labels), which
        # nnU-Net's loss call does not pass: see compute_loss
        return None

    # ----------------------------------------------------------------------------- loss
    def compute_loss(self, output: List[torch.Tensor], aux: dict, target: List[torch.Tensor], keys, data,
                     parts=None) -> torch.Tensor:
        """The stage's loss on the network's logits pyramid and its aux outputs (ZePTOutput);
        `parts` (a dict, if given) receives each of its terms for the epoch log."""
        raise NotImplementedError

    PART_PREFIX = "loss_part_"

    def _parts_output(self, parts: dict) -> dict:
        return {self.PART_PREFIX + k: v.cpu().numpy() for k, v in parts.items()}

    def _print_loss_parts(self, split: str, outputs: List[dict]) -> None:
        # means over this process's batches; the total (train_loss/val_loss) is nnU-Net's, over all ranks
        names = [k for k in outputs[0] if k.startswith(self.PART_PREFIX)] if outputs else []
        if names:
            means = {k[len(self.PART_PREFIX):]: float(np.mean([o[k] for o in outputs if k in o])) for k in names}
            self.print_to_log_file(f"{split} loss parts: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        self._print_loss_parts("train", train_outputs)

    @staticmethod
    def _as_list(x) -> list:
        return list(x) if isinstance(x, (list, tuple)) else [x]

    def training_batch(self, data: torch.Tensor, target: List[torch.Tensor]):
        """(data, target pyramid) of one training batch as the network sees it; a stage may alter it."""
        return data, target

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = [t.to(self.device, non_blocking=True) for t in self._as_list(batch["target"])]
        data, target = self.training_batch(data, target)
        self.optimizer.zero_grad(set_to_none=True)
        ctx = torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()
        with ctx:
            output, aux = self.network(data, with_aux=True)
            parts = {}
            loss = self.compute_loss(self._as_list(output), aux, target, batch["keys"], data, parts)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.network.parameters() if p.requires_grad], 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in self.network.parameters() if p.requires_grad], 12)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy(), **self._parts_output(parts)}

    def validation_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = [t.to(self.device, non_blocking=True) for t in self._as_list(batch["target"])]
        ctx = torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()
        with ctx, torch.no_grad():
            output, aux = self.network(data, with_aux=True)
            output = self._as_list(output)
            parts = {}
            loss = self.compute_loss(output, aux, target[: len(output)], batch["keys"], data, parts)
        pred = (torch.sigmoid(output[0].float()) > 0.5).long()
        axes = [0] + list(range(2, pred.ndim))
        tp, fp, fn, _ = get_tp_fp_fn_tn(pred, target[0], axes=axes)
        # pseudo Dice only over the channels this stage trains; the others are NaN and skipped by nnU-Net's nanmean
        keep = torch.zeros(pred.shape[1], dtype=torch.bool)
        keep[self.validated_channels()] = True
        nan = torch.full_like(tp.float(), float("nan"))
        return {"loss": loss.detach().cpu().numpy(), **self._parts_output(parts),
                "tp_hard": torch.where(keep.to(tp.device), tp.float(), nan).cpu().numpy(),
                "fp_hard": torch.where(keep.to(fp.device), fp.float(), nan).cpu().numpy(),
                "fn_hard": torch.where(keep.to(fn.device), fn.float(), nan).cpu().numpy()}

    def validated_channels(self) -> List[int]:
        raise NotImplementedError

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        # nnU-Net's pseudo Dice is NaN for a channel that is empty in every validation patch and never
        # predicted; one NaN epoch would poison the EMA that selects checkpoint_best.  A trained
        # channel that is correctly left empty counts as 1; channels this stage does not train stay NaN.
        from nnunetv2.utilities.collate_outputs import collate_outputs

        out = collate_outputs(val_outputs)
        tp, fp, fn = (np.nansum(out[k], 0) for k in ("tp_hard", "fp_hard", "fn_hard"))
        if self.is_ddp:
            import torch.distributed as dist
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (tp, fp, fn, out["loss"]))
            tp, fp, fn = (np.sum([g[i] for g in gathered], 0) for i in range(3))
            loss_here = np.vstack([g[3] for g in gathered]).mean()
        else:
            loss_here = np.mean(out["loss"])
        trained = set(self.validated_channels())
        dice = []
        for c, (a, b, d) in enumerate(zip(tp, fp, fn)):
            if c not in trained:
                dice.append(float("nan"))
            else:
                dice.append(1.0 if 2 * a + b + d == 0 else float(2 * a / (2 * a + b + d)))
        self.logger.log("mean_fg_dice", float(np.nanmean(dice)) if trained else 0.0, self.current_epoch)
        self.logger.log("dice_per_class_or_region", dice, self.current_epoch)
        self.logger.log("val_losses", loss_here, self.current_epoch)
        self._print_loss_parts("val", val_outputs)

    # ----------------------------------------------------------------------------- safety
    def _refuse_to_overwrite_finished_run(self):
        """A new (not resumed) training never replaces checkpoints a user already has."""
        if self.current_epoch != 0:
            return
        existing = [f for f in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
                    if isfile(join(self.output_folder, f))]
        if existing:
            raise TrainerStop(
                f"{self.output_folder} already holds {', '.join(existing)}. A new training would overwrite them. "
                f"Continue that training with --c, run only its validation with --val, or move the folder away "
                f"to start over.")

    def on_train_start(self):
        self._refuse_to_overwrite_finished_run()
        super().on_train_start()
