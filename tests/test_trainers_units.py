"""Pieces of the ZePT training losses, and a DDP step of each stage (issue: trainers)."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from nnunetv2_zept.losses.segmentation import masked_bce_dice
from nnunetv2_zept.roles import roles_from_dataset_json
from nnunetv2_zept.training.background_tissue import tissue_pseudo_labels
from nnunetv2_zept.training.healthy_organ_targets import healthy_organ_targets
from nnunetv2_zept.training.lr_schedule import WarmupCosineLR
from nnunetv2_zept.training.partial_labels import validity_mask

DATASET_JSON = {
    "labels": {"background": 0, "liver": [1, 4], "kidney_right": 2, "kidney_left": [3, 5],
               "liver_tumour": 4, "kidney_tumour": 5},
    "zept": {"organs": ["liver", "kidney_right", "kidney_left"],
             "tumours": {"liver_tumour": {"host": ["liver"]},
                         "kidney_tumour": {"host": ["kidney_right", "kidney_left"], "zero_shot": True}},
             "sources": {"a": {"case_prefix": "A_", "annotates": ["liver", "liver_tumour"]}}},
}
ROLES = roles_from_dataset_json(DATASET_JSON)


def test_unannotated_channels_get_exactly_zero_gradient():
    logits = torch.randn(2, 5, 6, 6, 6, requires_grad=True)
    target = (torch.rand(2, 5, 6, 6, 6) > 0.5).float()
    valid = validity_mask(["A_001", "B_002"], ROLES, ROLES.organs + ROLES.tumours)
    # case A annotates liver + liver tumour only; case B (no source) everything but the zero-shot class
    assert valid.tolist() == [[1, 0, 0, 1, 0], [1, 1, 1, 1, 0]]
    masked_bce_dice(logits, target, valid).backward()
    g = logits.grad.flatten(2).abs().sum(-1)
    assert torch.all(g[valid == 0] == 0)
    assert torch.all(g[valid == 1] > 0)


def _reference_masked_bce_dice(logits, target, valid, weight=None):
    """The loss written out pair by pair (the definition masked_bce_dice must keep)."""
    bce, dice = [], []
    w_all = torch.ones_like(logits) if weight is None else weight
    for b in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            if not valid[b, c]:
                continue
            x, y, w = logits[b, c], target[b, c], w_all[b, c]
            bce.append((torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none") * w).sum()
                       / w.sum().clamp_min(1.0))
            if (y * w).sum() > 0:
                p = torch.sigmoid(x) * w
                dice.append(1 - 2 * (p * y * w).sum() / (p.sum() + (y * w).sum() + 1.0))
    return torch.stack(bce).mean() + (torch.stack(dice).mean() if dice else 0.0)


@pytest.mark.parametrize("weighted", [False, True])
def test_masked_loss_equals_its_pair_by_pair_definition(weighted):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 5, 4, 5, 6, generator=g) * 3
    target = (torch.rand(3, 5, 4, 5, 6, generator=g) > 0.7).float()
    target[1, 2] = 0                                   # a valid pair without reference voxels
    valid = torch.tensor([[1, 0, 0, 1, 0], [1, 0, 1, 1, 0], [0, 0, 0, 1, 0]], dtype=torch.float32)
    weight = (torch.rand(3, 5, 4, 5, 6, generator=g) > 0.2).float() if weighted else None
    torch.testing.assert_close(masked_bce_dice(logits, target, valid, weight),
                               _reference_masked_bce_dice(logits, target, valid, weight))


def test_all_masked_batch_is_zero_and_keeps_graph():
    logits = torch.randn(1, 5, 4, 4, 4, requires_grad=True)
    loss = masked_bce_dice(logits, torch.zeros_like(logits), torch.zeros(1, 5))
    loss.backward()
    assert loss.item() == 0 and torch.all(logits.grad == 0)


def test_dice_term_only_where_the_reference_has_the_class():
    # 3 of 4 (case, channel) pairs have no reference voxels, as with tumour channels: a near-perfect
    # prediction must give a loss near 0 (a per-pair Dice of empty pairs would pin it at >= 0.75)
    logits = torch.full((2, 2, 4, 4, 4), -9.0)
    target = torch.zeros_like(logits)
    target[0, 0, :2] = 1
    logits[0, 0, :2] = 9.0
    assert masked_bce_dice(logits, target, torch.ones(2, 2)).item() < 0.02
    # a wrong prediction on the one pair with a tumour still costs its full Dice
    logits[0, 0, :2] = -9.0
    assert masked_bce_dice(logits, target, torch.ones(2, 2)).item() > 0.99


def test_healthy_organ_targets_make_tumour_voxels_negative_for_the_host():
    t = torch.zeros(1, 5, 4, 4, 4)
    t[0, 0, :2] = 1          # liver region (includes the tumour)
    t[0, 3, 0] = 1           # liver tumour: slice 0
    new, w = healthy_organ_targets(t, ROLES, "negative")
    assert w is None and new[0, 0, 0].sum() == 0 and new[0, 0, 1].sum() == 16
    assert torch.equal(new[0, 3], t[0, 3])               # tumour channel itself untouched
    new, w = healthy_organ_targets(t, ROLES, "ignore")
    assert torch.equal(new, t) and w[0, 0, 0].sum() == 0 and w[0, 0, 1].sum() == 16 and w[0, 1:].min() == 1


def test_tissue_pseudo_labels_from_hu():
    props = {"mean": 50.0, "std": 100.0, "percentile_00_5": -1000.0, "percentile_99_5": 1500.0}
    hu = torch.tensor([-900.0, -100.0, 40.0, 700.0]).reshape(1, 1, 4, 1, 1)
    x = (hu - 50.0) / 100.0
    lab = tissue_pseudo_labels(x, torch.ones(1, 4, 1, 1, dtype=torch.bool), props, ["air", "fat", "soft_tissue", "bone"])
    assert lab[0, :, :, 0, 0].argmax(0).tolist() == [0, 1, 2, 3]
    # organ-only intensity statistics clip everything darker than the organs onto the lower bound: that is fat
    props_clipped = {"mean": 100.0, "std": 30.0, "percentile_00_5": 30.0, "percentile_99_5": 200.0}
    x = (torch.tensor([30.0, 120.0]).reshape(1, 1, 2, 1, 1) - 100.0) / 30.0
    lab = tissue_pseudo_labels(x, torch.ones(1, 2, 1, 1, dtype=torch.bool), props_clipped, ["air", "fat", "soft_tissue", "bone"])
    assert lab[0, :, :, 0, 0].argmax(0).tolist() == [1, 2]
    # explained voxels carry no pseudo-label; a single catch-all query takes every unexplained voxel
    expl = torch.tensor([True, False]).reshape(1, 2, 1, 1)
    lab = tissue_pseudo_labels(x, expl, props_clipped, ["background_tissue"])
    assert lab.flatten().tolist() == [1.0, 0.0]


def test_warmup_then_cosine_to_zero():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosineLR(opt, num_epochs=20, warmup_epochs=4)
    lrs = []
    for e in range(20):
        sched.step(e)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] < lrs[1] < lrs[3] and abs(lrs[4] - 1.0) < 1e-9
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] < 0.02


# ----------------------------------------------------------------------------- DDP with gloo on CPU
def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _ddp_worker(rank, world, port, result_queue):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from nnunetv2_zept.architectures import build_zept_network, default_zept_config
    from nnunetv2_zept.architectures.config import background_names
    from nnunetv2_zept.experiments.example_plans import make_plans, managers
    from nnunetv2_zept.losses.stage_losses import stage1_loss, stage2_loss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    try:
        plans = make_plans((32, 32, 32), (1.5, 1.5, 1.5))
        pm, cm = managers(plans)
        cfg = default_zept_config(ROLES, 16)
        props = plans["foreground_intensity_properties_per_channel"]["0"]
        steps = {}
        for stage in (1, 2):
            torch.manual_seed(0)
            net = build_zept_network(pm, cm, 1, ROLES.num_channels, True, cfg)
            net.set_text_embeddings(torch.nn.functional.normalize(torch.randn(len(cfg["query_classes"]), 16), dim=1))
            net.set_stage(stage)
            trained = {id(p) for p in (net.stage1_parameters() if stage == 1 else net.stage2_parameters())}
            for p in net.parameters():
                p.requires_grad_(id(p) in trained)
            ddp = DDP(net)   # nnU-Net wraps without find_unused_parameters
            opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
            g = torch.Generator().manual_seed(rank)
            for _ in range(2):   # an unused parameter makes the *second* step raise
                x = torch.randn(1, 1, 32, 32, 32, generator=g)
                outs, aux = ddp(x, with_aux=True)
                tg = [(torch.rand(o.shape, generator=g) > 0.7).float() for o in outs]
                keys = [f"A_{rank}" if stage == 2 else f"B_{rank}"]
                if stage == 1:
                    loss = stage1_loss(outs, tg, keys, x, aux, ROLES, background_names(cfg["switches"]), props)
                else:
                    loss = stage2_loss(outs, tg, keys, aux, ROLES)
                opt.zero_grad()
                loss.backward()
                opt.step()
            missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
            steps[stage] = missing
        result_queue.put((rank, "ok", steps))
    except Exception as e:  # report to the parent instead of hanging it
        result_queue.put((rank, "error", repr(e)))
    finally:
        dist.destroy_process_group()


def test_ddp_step_of_each_stage_needs_no_find_unused_parameters():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    for rank, status, info in results:
        assert status == "ok", f"rank {rank}: {info}"
        assert info == {1: [], 2: []}, f"rank {rank}: trainable parameters without gradient {info}"


def test_stage1_state_loads_into_stage2_ablation_without_alignment_head():
    from nnunetv2_zept.architectures import build_zept_network, default_zept_config
    from nnunetv2_zept.experiments.example_plans import make_plans, managers
    from nnunetv2_zept.training.stage1_checkpoint import Stage1CheckpointError, load_stage1_weights

    pm, cm = managers(make_plans((32, 32, 32), (1.5, 1.5, 1.5)))
    torch.manual_seed(0)
    full = build_zept_network(pm, cm, 1, ROLES.num_channels, True, default_zept_config(ROLES, 16))
    no_align = build_zept_network(pm, cm, 1, ROLES.num_channels, True, default_zept_config(ROLES, 16, alignment=False))
    state = full.state_dict()
    load_stage1_weights(no_align, state, "stage1.pth")
    for n, t in no_align.state_dict().items():
        if n in state and not n.endswith(("stage", "text_embeddings")):
            assert torch.equal(t, state[n]), n
    broken = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    with pytest.raises(Stage1CheckpointError, match="does not fit"):
        load_stage1_weights(no_align, broken, "stage1.pth")


def test_stage_losses_report_their_terms():
    # the trainers print each term per epoch; the terms must add up to the loss they optimise
    from nnunetv2_zept.losses.stage_losses import stage1_loss, stage2_loss

    g = torch.Generator().manual_seed(0)
    outs = [torch.randn(2, 5, 8, 8, 8, generator=g), torch.randn(2, 5, 4, 4, 4, generator=g)]
    tg = [(torch.rand(o.shape, generator=g) > 0.7).float() for o in outs]
    keys = ["B_000", "B_001"]
    n_q = 3
    aux = {"align_query": torch.nn.functional.normalize(torch.randn(n_q, 8, generator=g), dim=1),
           "align_text": torch.nn.functional.normalize(torch.randn(n_q, 8, generator=g), dim=1),
           "logit_scale": torch.tensor(10.0),
           "background_logits": torch.randn(2, 4, 8, 8, 8, generator=g)}
    x = torch.randn(2, 1, 8, 8, 8, generator=g) * 300
    props = {"mean": 50.0, "std": 100.0, "percentile_00_5": -900.0, "percentile_99_5": 900.0}
    parts = {}
    total = stage2_loss(outs, tg, keys, aux, ROLES, alignment_weight=0.5, parts=parts)
    assert set(parts) == {"tumour_mask", "alignment"}
    assert torch.isclose(total, parts["tumour_mask"] + 0.5 * parts["alignment"])
    parts = {}
    total = stage1_loss(outs, tg, keys, x, aux, ROLES, ["air", "fat", "soft_tissue", "bone"], props,
                        background_weight=0.1, parts=parts)
    assert set(parts) == {"organ", "background_tissue"}
    assert torch.isclose(total, parts["organ"] + 0.1 * parts["background_tissue"])
    assert not any(p.requires_grad for p in parts.values())


def test_every_variant_is_a_trainer_class_with_valid_consistent_switches():
    import nnunetv2_zept.trainers as trainers
    from nnunetv2_zept.architectures.config import resolve_switches
    from nnunetv2_zept.training.stage1_checkpoint import stage1_trainer_name

    # the anomaly's calibration is not among them: both modes build the same tensors and Stage 1's
    # weights do not depend on it, so _minmaxAnomaly is a Stage-2-only variant
    structural = ("grouping", "disentangled", "background_queries")
    names = [n for n in trainers.__all__ if n.startswith("nnUNetTrainerZePTStage2_")]
    assert len(names) >= 10
    for name in names:
        s2 = getattr(trainers, name)
        resolve_switches(s2.SWITCHES)
        s1 = getattr(trainers, stage1_trainer_name(name), trainers.nnUNetTrainerZePTStage1)
        # the Stage 1 a variant starts from builds the same network where Stage 1 shapes it
        for k in structural:
            assert s2.SWITCHES.get(k) == s1.SWITCHES.get(k), (name, k)
    for name in trainers.__all__:
        assert getattr(trainers, name).__name__ == name


def test_hierarchical_alignment_variant_gives_stage2_its_relation_matrix():
    from nnunetv2_zept.architectures import default_zept_config
    from nnunetv2_zept.trainers import nnUNetTrainerZePTStage2, nnUNetTrainerZePTStage2_hierarchicalAlignment

    for cls, hierarchical in ((nnUNetTrainerZePTStage2, False), (nnUNetTrainerZePTStage2_hierarchicalAlignment, True)):
        t = object.__new__(cls)           # only the loss-side attributes are needed
        t.roles = ROLES
        t.zept_config = default_zept_config(ROLES, 8, **cls.SWITCHES)
        rel = t._alignment_relation()
        if not hierarchical:
            assert rel is None
        else:
            q = {n: i for i, n in enumerate(t.zept_config["query_classes"])}
            assert rel.shape == (len(q), len(q)) and rel[q["liver_tumour"], q["liver"]]


def test_a_checkpoint_write_that_dies_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """nnU-Net writes checkpoint_latest.pth in place; a kill during the write would truncate it."""
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as nnunet_trainer_module

    from nnunetv2_zept.trainers.common_settings import PluginTrainerSettings

    class _Logger:
        def get_checkpoint(self):
            return {}

    net = torch.nn.Linear(2, 2)
    trainer = object.__new__(PluginTrainerSettings)
    trainer.__dict__.update(local_rank=0, disable_checkpointing=False, is_ddp=False, network=net,
                            optimizer=torch.optim.SGD(net.parameters(), lr=0.1), grad_scaler=None, logger=_Logger(),
                            _best_ema=None, current_epoch=3, my_init_kwargs={}, inference_allowed_mirroring_axes=None)
    latest = str(tmp_path / "checkpoint_latest.pth")
    trainer.save_checkpoint(latest)
    assert torch.load(latest, weights_only=True)["current_epoch"] == 4
    assert os.listdir(tmp_path) == ["checkpoint_latest.pth"]

    def dies_midway(obj, filename):
        with open(filename, "wb") as f:
            f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(nnunet_trainer_module.torch, "save", dies_midway)
    trainer.current_epoch = 4
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(latest)
    assert torch.load(latest, weights_only=True)["current_epoch"] == 4
