"""AdamW with linear warm-up then cosine decay, stepped per epoch like nnU-Net's schedulers.

nnU-Net's PolyLRScheduler writes one learning rate into every parameter group; this one scales
each group's own base rate, so groups can differ.
"""
import math

import torch


class WarmupCosineLR(torch.optim.lr_scheduler._LRScheduler):
    def __init__(self, optimizer, num_epochs: int, warmup_epochs: int, min_factor: float = 0.0):
        self.num_epochs = max(1, int(num_epochs))
        self.warmup_epochs = max(0, min(int(warmup_epochs), self.num_epochs - 1))
        self.min_factor = min_factor
        super().__init__(optimizer)

    def factor(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        span = max(1, self.num_epochs - self.warmup_epochs)
        t = min(1.0, (epoch - self.warmup_epochs) / span)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))

    def get_lr(self):
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def step(self, epoch=None):
        # nnU-Net calls step(current_epoch); keep that contract
        if epoch is None:
            epoch = self.last_epoch + 1
        self.last_epoch = int(epoch)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]


# ZePT's optimiser (both stages), shared with the like-for-like nnU-Net baseline
ADAMW_LR = 1e-3
ADAMW_WEIGHT_DECAY = 1e-4
WARMUP_FRACTION = 0.05


def adamw_warmup_cosine(params, num_epochs: int, lr: float = ADAMW_LR, weight_decay: float = ADAMW_WEIGHT_DECAY,
                        warmup_fraction: float = WARMUP_FRACTION):
    """(AdamW, WarmupCosineLR) over `num_epochs` with a warm-up of `warmup_fraction` of them."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return optimizer, WarmupCosineLR(optimizer, num_epochs, int(round(warmup_fraction * num_epochs)))
