"""The one training loop: every model gets the same optimiser, schedule, clipping, batches and seed.

AdamW (betas 0.9/0.95, weight decay 0.1 on matrices only), linear warm-up over the first 10% of the
steps then cosine decay to 10% of the peak rate, gradient norm clipped at 1.0. Batches come from a
callable that draws from a torch.Generator seeded per training, so at one seed every model sees the
same data in the same order.
"""

import math
import time
from dataclasses import dataclass

import torch

from bench.core.timing import autocast
from bench.perplexity.data import IGNORE

CLIP_NORM = 1.0
WARMUP_FRACTION = 0.1
FINAL_LR_FRACTION = 0.1


@dataclass(frozen=True)
class TrainResult:
    losses: tuple  # per step, nats per token
    train_loss: float  # mean over the last 10% of the steps
    time_s: float


def lr_at(step, *, steps, lr):
    warmup = max(1, int(WARMUP_FRACTION * steps))
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer(model, *, lr):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95)
    )


def train(model, next_batch, *, steps, lr, device, dtype=None, loss_fn=None):
    """Run `steps` optimiser steps on batches from next_batch() -> (inputs, labels) on CPU.
    loss_fn(model, inputs, labels) defaults to the LM's own cross-entropy, model(ids, labels)."""
    loss_fn = loss_fn or (lambda m, x, y: m(x, y))
    opt = optimizer(model, lr=lr)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype in (torch.float16, "float16"))
    model.train()
    losses, start = [], time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps=steps, lr=lr)
        inputs, labels = (t.to(device, non_blocking=True) for t in next_batch())
        with autocast(dtype, device.type):
            loss = loss_fn(model, inputs, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tail = losses[-max(1, steps // 10) :]
    return TrainResult(losses=tuple(losses), train_loss=sum(tail) / len(tail), time_s=time.perf_counter() - start)


@torch.inference_mode()
def mean_loss(model, inputs, labels, *, device, dtype=None, batch=8):
    """Mean cross-entropy (nats per token) over fixed windows, in batches; the LM's loss is a mean per
    batch, so each batch is weighted by its token count."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(inputs), batch):
        x, y = inputs[i : i + batch].to(device), labels[i : i + batch].to(device)
        with autocast(dtype, device.type):
            loss = model(x, y)
        scored = (y != IGNORE).sum().item()  # the LM's loss is a mean over the scored labels
        total += loss.float().item() * scored
        count += scored
    model.train()
    return total / count
