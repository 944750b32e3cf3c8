"""The training loop shared by distillation and triplet fine-tuning.

Checkpoints after every epoch (resumable), deterministic seeds, warm-up + cosine learning
rate, an optional time budget, and callbacks for progress and per-epoch validation.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edged.embed.nn4.net import NN4Small2

log = logging.getLogger(__name__)

Batch = Any
LossFn = Callable[[NN4Small2, Batch], tuple[torch.Tensor, dict[str, float]]]
EpochBatches = Callable[[int, np.random.Generator], Iterator[Batch]]


@dataclass
class LoopConfig:
    epochs: int = 20
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 300
    seed: int = 0
    time_budget_s: float | None = None


def lr_at(step: int, total: int, cfg: LoopConfig, elapsed_s: float = 0.0) -> float:
    """Linear warm-up then cosine decay to zero over `total` steps.

    With a time budget the decay follows whichever runs out first, steps or time, so a
    budgeted run always finishes its schedule (at the cost of bit-exact reproducibility
    across machines of different speed; runs without a budget are deterministic).
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.time_budget_s:
        progress = max(progress, elapsed_s / cfg.time_budget_s)
    return float(cfg.lr * 0.5 * (1.0 + np.cos(np.pi * min(1.0, progress))))


def _produce(batches: Iterator[Batch], out: queue.Queue, stop: threading.Event) -> None:
    try:
        for batch in batches:
            while not stop.is_set():
                try:
                    out.put(batch, timeout=0.5)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
    finally:
        out.put(None)


def run_training(model: NN4Small2, cfg: LoopConfig, workdir: str | Path, steps_per_epoch: int,
                 epoch_batches: EpochBatches, loss_fn: LossFn, resume: bool = True,
                 on_step: Callable[[int, int, float], None] | None = None,
                 on_epoch: Callable[[int, NN4Small2], dict[str, float]] | None = None) -> dict:
    """Train `model` in place; returns the history. Batches are produced on a helper thread.

    A checkpoint is written after every epoch; with a time budget, training stops (and
    checkpoints) as soon as the budget is spent, possibly mid-epoch.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = workdir / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(1, steps_per_epoch * cfg.epochs)
    history: dict = {"epochs": [], "seconds": 0.0, "steps": 0}
    start_epoch = 0
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"], state["history"]
        log.info("resumed from %s after epoch %d", ckpt, start_epoch)
    step = history["steps"]
    started = time.monotonic() - history["seconds"]
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        q: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()
        producer = threading.Thread(target=_produce, args=(epoch_batches(epoch, rng), q, stop), daemon=True)
        producer.start()
        model.train()
        sums: dict[str, float] = {}
        n = 0
        try:
            while (batch := q.get()) is not None:
                elapsed = time.monotonic() - started
                if cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s:
                    break
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, cfg, elapsed)
                loss, parts = loss_fn(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                n += 1
                loss_value = float(loss.detach())
                for key, value in {"loss": loss_value, **parts}.items():
                    sums[key] = sums.get(key, 0.0) + value
                if on_step:
                    on_step(step, total, loss_value)
                if step % 100 == 0:
                    log.info("step %d/%d loss %.4f (%.0f s)", step, total, loss_value, time.monotonic() - started)
        finally:
            stop.set()
            while producer.is_alive():
                with contextlib.suppress(queue.Empty):
                    q.get(timeout=0.1)
            producer.join()
        model.eval()
        record: dict[str, float] = {k: v / max(n, 1) for k, v in sums.items()}
        if on_epoch:
            record.update(on_epoch(epoch + 1, model))
        record.update(epoch=epoch + 1, steps=step, seconds=round(time.monotonic() - started, 1))
        history["epochs"].append(record)
        history["seconds"] = time.monotonic() - started
        history["steps"] = step
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                    "history": history}, tmp)
        tmp.replace(ckpt)
        log.info("epoch %d: %s", epoch + 1, record)
        if cfg.time_budget_s is not None and history["seconds"] >= cfg.time_budget_s:
            log.info("time budget of %.0f s reached after epoch %d", cfg.time_budget_s, epoch + 1)
            break
    model.eval()
    return history
