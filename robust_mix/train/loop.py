"""The training loop every recipe shares: one epoch loop, whatever is trained.

A recipe supplies a :class:`TrainTask` (what is trained, its data, its loss, its validation);
:func:`fit` does the rest, the same way for all of them:

- the data: a ``DataLoader`` (workers optional) over the task's data set, each process reading
  its ``DistributedSampler`` share; the order depends on ``(seed, epoch)`` only;
- the step: ``accumulation`` micro-batches (DDP gradient sync on the last only), autocast in the
  recipe's precision, a gradient scaler for fp16, gradient-norm clipping, AdamW, linear warm-up
  then cosine decay per step;
- randomness inside a step (augmentation, attack starts) comes from a generator seeded with
  ``(seed, rank, epoch, step)``, so a resumed run repeats exactly what the killed one would have done;
- checkpoints (rank 0, atomic) after every epoch and, with ``RunOptions.checkpoint_every``, every
  that many steps; validation after every epoch (sharded over ranks, sums all-reduced, in float32);
  the best epoch's weights saved by the task; a per-epoch record in ``history.jsonl``;
- progress: a bar per epoch on rank 0 (the caller's :data:`ProgressFactory`; library code never prints).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from robust_mix.distributed import DistContext, generator
from robust_mix.train.batchnorm import synchronize_batchnorm
from robust_mix.train.config import Schedule
from robust_mix.train.precision import Precision
from robust_mix.train.run_dir import RunDir, RunFileError, read_history
from robust_mix.validate import InvalidInputError

logger = logging.getLogger(__name__)

Batch = Sequence[torch.Tensor]


class ProgressBar(Protocol):
    """One epoch's progress display (drawn by the CLI)."""

    def update(self, steps: int, postfix: Mapping[str, float]) -> None:
        ...

    def close(self) -> None:
        ...


#: ``factory(description, total_steps, steps_already_done, images_per_step) -> ProgressBar``.
ProgressFactory = Callable[[str, int, int, int], ProgressBar]


class TrainingDivergedError(ValueError):
    """A step's gradients were not finite (fp32, bf16): the run stops; its last checkpoint is kept."""


def _gradient_norm(params: Sequence[torch.Tensor]) -> float:
    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


#: DataLoader processes allowed per CPU of the machine (loading that waits on files can use more than one each).
LOADER_WORKERS_PER_CPU = 4


@dataclass
class RunOptions:
    """How a recipe runs, without changing what it computes (may differ between a run and its resume).

    Attributes:
        workers: ``DataLoader`` worker processes per rank (0: load in the training process).
        checkpoint_every: also checkpoint every this many optimizer steps (``None``: after each epoch only).
        log_every: log a training line every this many steps (0: never).
        progress: draws per-epoch progress on rank 0 (``None``: no display).
    """

    workers: int = 0
    checkpoint_every: Optional[int] = None
    log_every: int = 50
    progress: Optional[ProgressFactory] = None

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {self.workers!r}")
        cpus = os.cpu_count() or 1
        if self.workers > LOADER_WORKERS_PER_CPU * cpus:  # --workers 100000 forked until the machine gave out
            raise InvalidInputError(f"workers must be at most {LOADER_WORKERS_PER_CPU * cpus} DataLoader processes "
                                    f"({LOADER_WORKERS_PER_CPU} per CPU; this machine has {cpus}), got {self.workers}: "
                                    "more only wait for the CPUs, and each holds its own memory; use e.g. "
                                    f"{min(4, cpus)}, or 0 to load in the training process")
        if self.checkpoint_every is not None and (not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be a positive number of steps, got {self.checkpoint_every!r}")


class TrainTask:
    """What a recipe plugs into :func:`fit`.

    Attributes:
        trained: the module whose parameters (those with ``requires_grad``) are optimised; its
            BatchNorms are synchronised across ranks.
        higher_is_better: direction of ``evaluate()["score"]`` for model selection.
    """

    trained: nn.Module
    higher_is_better: bool = True

    def forward_module(self) -> nn.Module:
        """The module DDP wraps; :meth:`loss` runs its forward through the ``model`` it is given."""
        return self.trained

    def train_size(self, epoch: int) -> int:
        """Items in the epoch's training set (known before :meth:`begin_epoch` builds it)."""
        return len(self.train_set(epoch))

    def begin_epoch(self, epoch: int) -> None:
        """Called on every rank before the epoch (e.g. to generate its adversarial buffer)."""

    def train_set(self, epoch: int) -> Dataset:
        """The epoch's training items."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """``(mean loss of the micro-batch, metrics)``; runs inside the recipe's autocast."""
        raise NotImplementedError

    def evaluate(self, epoch: int) -> dict[str, float]:
        """Validation metrics (every rank calls it; results already reduced), with a ``"score"``."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trained tensors for the checkpoint."""
        return self.trained.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.trained.load_state_dict(state)

    def save_best(self) -> None:
        """Write the best epoch's weights (called on rank 0)."""
        raise NotImplementedError


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``total_steps`` (stepped per optimizer step)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class StepPlan:
    """How the global batch splits: steps per epoch and items per rank and micro-batch."""

    steps_per_epoch: int
    per_rank: int
    micro_batch: int


def plan_steps(schedule: Schedule, train_size: int, dist: DistContext) -> StepPlan:
    """Check that the global batch splits over ranks and micro-batches and fits the data set.

    Raises:
        ValueError: ``batch_size`` is not a multiple of ``world_size * accumulation``, or the
            training set is smaller than one global batch (e.g. more processes than data).
    """
    parts = dist.world_size * schedule.accumulation
    if schedule.batch_size % parts:
        raise ValueError(f"batch_size={schedule.batch_size} (the global batch) must be a multiple of "
                         f"world_size x accumulation = {dist.world_size} x {schedule.accumulation}; "
                         f"change --nproc-per-node, or --set batch_size=... / accumulation=...")
    steps = train_size // schedule.batch_size
    if schedule.max_steps_per_epoch is not None:
        steps = min(steps, schedule.max_steps_per_epoch)
    if steps < 1:
        raise ValueError(f"the training set has {train_size} items, fewer than one global batch of "
                         f"batch_size={schedule.batch_size} ({dist.world_size} processes x "
                         f"{schedule.batch_size // parts} x accumulation {schedule.accumulation}); "
                         "use fewer processes, a smaller batch_size or more training data")
    return StepPlan(steps, schedule.batch_size // dist.world_size, schedule.batch_size // parts)


def epoch_indices(size: int, plan: StepPlan, schedule: Schedule, epoch: int, dist: DistContext) -> list[int]:
    """This rank's item order for ``epoch``: its ``DistributedSampler`` share, cut to whole steps.

    Step ``t`` of rank ``r`` takes items ``t * per_rank ..`` of that share; over all ranks a step
    covers the same items as one process with the whole global batch would.
    """
    sampler = DistributedSampler(range(size), num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                 seed=schedule.seed, drop_last=True)
    sampler.set_epoch(epoch)
    return list(sampler)[: plan.steps_per_epoch * plan.per_rank]


def _batch_len(batch: Batch) -> int:
    return int(batch[0].shape[0])


def _to_device(batch: Batch, device: torch.device) -> list[torch.Tensor]:
    return [t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t for t in batch]


def fit(task: TrainTask, schedule: Schedule, run: RunDir, dist: DistContext,
        options: Optional[RunOptions] = None) -> list[dict[str, Any]]:
    """Train ``task`` for ``schedule.epochs`` epochs, resuming from ``run``'s checkpoint; returns the history.

    Call :func:`plan_steps` first (before ``run.start()``) so that a run that cannot start writes nothing.
    """
    options = options or RunOptions()
    precision = Precision(schedule.precision, dist.device.type)
    task.trained = synchronize_batchnorm(task.trained, dist)
    params = [p for p in task.trained.parameters() if p.requires_grad]
    forward = task.forward_module()
    if dist.distributed:  # buffers need no per-step sync: synchronised BatchNorm keeps them equal on all ranks
        model: nn.Module = nn.parallel.DistributedDataParallel(
            forward, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            forward_sync_buffers=False)
    else:
        model = forward
    optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    first_plan = plan_steps(schedule, task.train_size(0), dist)
    scheduler = warmup_cosine(optimizer, first_plan.steps_per_epoch * schedule.epochs,
                              int(schedule.warmup_epochs * first_plan.steps_per_epoch))
    scaler = precision.scaler()

    start_epoch, start_step, best, history, tally = 0, 0, None, [], {}
    state = run.load_checkpoint()
    if state is not None:
        try:
            task.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            why = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise RunFileError(f"{run.checkpoint} does not fit this run's model or optimizer ({why}): it was written "
                               "by another run; move it away to start this one over") from None
        start_epoch, start_step, best = int(state["epoch"]), int(state.get("step", 0)), state["best"]
        # checkpoints written before the history moved into them: the file holds it
        history = state.get("history") or [r for r in read_history(run.path) if r.get("epoch", 0) <= start_epoch]
        run.write_history(history)  # the checkpoint's history is the record: a damaged history.jsonl is repaired
        tally = dict(state.get("tally", {})) if dist.is_main else {}  # rank 0 saved the all-reduced sums
        logger.info("resuming %s at epoch %d, step %d (best %s)", run.path, start_epoch + 1, start_step, best)

    def checkpoint(epoch: int, step: int, sums: Mapping[str, float]) -> None:
        run.save_checkpoint({"model": task.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                             "epoch": epoch, "step": step, "best": best, "history": history,
                             "tally": dict(sums), "format": 2})

    for epoch in range(start_epoch, schedule.epochs):
        task.begin_epoch(epoch)
        dataset = task.train_set(epoch)
        plan = plan_steps(schedule, len(dataset), dist)
        first = start_step if epoch == start_epoch else 0
        order = epoch_indices(len(dataset), plan, schedule, epoch, dist)[first * plan.per_rank:]
        loader = DataLoader(dataset, batch_size=plan.micro_batch, sampler=order, num_workers=options.workers,
                            pin_memory=dist.device.type == "cuda")
        batches = iter(loader)
        bar = (options.progress(f"epoch {epoch + 1}/{schedule.epochs}", plan.steps_per_epoch, first,
                                schedule.batch_size) if options.progress and dist.is_main else None)
        sums: defaultdict[str, float] = defaultdict(float, tally if epoch == start_epoch else {})
        forward.train()
        t0, images, skipped = time.time(), 0, 0
        try:
            for step in range(first, plan.steps_per_epoch):
                gen = generator(schedule.seed, dist.rank, epoch, step)
                optimizer.zero_grad(set_to_none=True)
                for micro in range(schedule.accumulation):
                    batch = _to_device(next(batches), dist.device)
                    last = micro == schedule.accumulation - 1
                    sync = contextlib.nullcontext() if last or not dist.distributed else model.no_sync()
                    with sync:
                        with precision.autocast():
                            loss, metrics = task.loss(model, batch, gen)
                        scaler.scale(loss / schedule.accumulation).backward()
                    n = _batch_len(batch)
                    sums["count"] += n
                    for key, value in metrics.items():
                        sums[key] += float(value) * n
                if schedule.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    norm = float(torch.nn.utils.clip_grad_norm_(params, schedule.grad_clip))
                else:
                    norm = _gradient_norm(params) if not scaler.is_enabled() else 0.0
                # fp16's scaler skips steps with inf/NaN gradients by design; otherwise the weights would turn NaN
                # and every later epoch, the "best" weights included, be computed from them. Gradients are
                # all-reduced, so every rank stops at the same step.
                if not scaler.is_enabled() and not math.isfinite(norm):
                    raise TrainingDivergedError(
                        f"training diverged at epoch {epoch + 1}, step {step + 1}: the gradients are not finite "
                        f"(loss {loss.item():.4g}); lower lr (now {schedule.lr:g}) or set grad_clip, in another "
                        f"--out folder (they change the recipe); {run.path} keeps its last checkpoint")
                # fp16: a non-finite loss (not only overflowing scaled gradients, which the scaler calibrates away
                # in its first steps) is a step the scaler skips; an epoch of nothing else trained nothing
                skipped += scaler.is_enabled() and not math.isfinite(float(loss))
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                images += schedule.batch_size
                if bar is not None:
                    bar.update(1, {"loss": metrics["loss"] if "loss" in metrics else loss.item()})
                if options.log_every and (step + 1) % options.log_every == 0:
                    logger.info("epoch %d step %d/%d: loss %.4f, lr %.3g, %.1f images/s", epoch + 1, step + 1,
                                plan.steps_per_epoch, loss.item(), scheduler.get_last_lr()[0],
                                images / max(1e-9, time.time() - t0))
                if (options.checkpoint_every and (step + 1) % options.checkpoint_every == 0
                        and step + 1 < plan.steps_per_epoch):
                    reduced = dist.all_reduce_sums(sums)
                    checkpoint(epoch, step + 1, reduced if dist.is_main else {})
        finally:
            if bar is not None:
                bar.close()
        seconds = time.time() - t0
        if scaler.is_enabled():  # every rank decides alike: a non-finite loss on one rank skips the step on all
            skipped = int(dist.all_reduce_sums({"skipped": float(skipped)})["skipped"]) // dist.world_size
        if skipped and skipped == plan.steps_per_epoch - first:  # fp16: the weights never moved this epoch
            raise TrainingDivergedError(
                f"training diverged: fp16's gradient scaler skipped every step of epoch {epoch + 1} ({skipped}), "
                f"the loss was never finite; lower lr (now {schedule.lr:g}), set grad_clip or use "
                f"precision=bf16, in another --out folder (they change the recipe); {run.path} keeps its last "
                "checkpoint")
        totals = dist.all_reduce_sums(sums)
        count = max(1.0, totals.pop("count", 0.0))
        forward.eval()
        val = task.evaluate(epoch)
        score = val["score"]
        if best is None or (score > best if task.higher_is_better else score < best):
            best = score
            if dist.is_main:
                task.save_best()
        record = {"epoch": epoch + 1, **{f"train_{k}": v / count for k, v in sorted(totals.items())},
                  **{k: v for k, v in val.items() if k != "score"}, "score": score, "best": best,
                  "seconds": round(seconds, 1), "images_per_s": round(images / max(1e-9, seconds), 1)}
        history.append(record)
        logger.info("epoch %d: %s", epoch + 1, record)
        checkpoint(epoch + 1, 0, {})
    return history
