"""The adaptive-smoothing recipe: train the mixing network on two frozen bases, then calibrate it.

>>> train_adasmooth(apply_preset(AdaSmoothRecipe(standard="timm/...", robust="robustbench/cifar100/Linf/...",
...                                              eps=8 / 255, policy=...), "paper"), "runs/cifar100-adasmooth")

Per buffer round (:mod:`robust_mix.train.buffer`), the adversarial buffer is generated against the
current composite; the shared loop (:func:`robust_mix.train.loop.fit`) then trains the mixing
network on clean:adversarial pairs with :func:`robust_mix.losses.mixing_training_loss`. After
every epoch the network is validated on ``val_subset`` validation images and their attacks
(drawn like the buffer's, fixed seed, against the current network): the mixing loss (model
selection: lowest), the detection accuracy on clean and on attacked images (``gamma <= 0`` counts
as "clean", ``gamma > 0`` as "attacked"), the mix's accuracy on both, and alpha statistics.
Finally (rank 0) the policy's constants are calibrated (:mod:`robust_mix.train.policy_calibration`).

Writes ``<out>/policy.safetensors`` (the ``policy.*`` tensors of the ``MixedClassifier``),
``<out>/policy.json`` (the calibrated :class:`~robust_mix.config.PolicyConfig`), ``calibration.json``,
and the buffer under ``<out>/buffer/round-<r>/``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn
from torch.utils.data import Dataset

from robust_mix.config import PolicyConfig, checked_from_dict
from robust_mix.data import dataset_tensors, num_classes
from robust_mix.distributed import DistContext, derive_seed
from robust_mix.io import load_state_dict, save_state_dict
from robust_mix.losses import mixing_training_loss
from robust_mix.mixing import MixedClassifier, MixedOutput
from robust_mix.train.buffer import (AttackMode, BufferDataset, attack_kind, class_ranks, examples_per_image,
                                     generate_buffer)
from robust_mix.train.checks import check_recipe, recipe_split
from robust_mix.train.config import AdaSmoothRecipe, preset_differences
from robust_mix.train.evaluation import sum_over_shards
from robust_mix.train.loop import Batch, RunOptions, TrainTask, fit, plan_steps
from robust_mix.train.pair import build_mixed, load_initial_policy, policy_state, resolve_dataset
from robust_mix.train.policy_calibration import calibrate_policy
from robust_mix.train.run_dir import CHECKPOINT, RunDir
from robust_mix.validate import InvalidInputError

logger = logging.getLogger(__name__)

POLICY_FILE = "policy.safetensors"
BUFFER_DIR = "buffer"
VAL_SEED = 12345
_VAL_SUMS = ("n", "loss_w", "w", "detect_clean", "detect_adv", "acc_clean", "acc_adv",
             "alpha_clean", "alpha_clean_sq", "alpha_adv", "alpha_adv_sq")


class CompositeForward(nn.Module):
    """The composite's training forward (what DDP wraps): images -> ``(log_probs, alpha, gamma)``."""

    def __init__(self, model: MixedClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model.forward_all(x)
        return out.log_probs, out.alpha, out.gamma


def pair_loss(config: AdaSmoothRecipe, outputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixing loss of ``[clean; adversarial]`` outputs for labels ``y`` ``(B,)``; also the sample weights."""
    log_probs, alpha, gamma = outputs
    n = len(y)
    is_adv = torch.cat([torch.zeros(n, device=y.device), torch.ones(n, device=y.device)])
    weight = torch.cat([torch.full((n,), config.clean_weight, device=y.device), torch.ones(n, device=y.device)])
    out = MixedOutput(log_probs.float(), alpha, gamma, None, None)
    loss = mixing_training_loss(out, torch.cat([y, y]), is_adv, c_bce=config.c_bce, c_ce=config.c_ce,
                                c_prod=config.c_prod, sample_weight=weight)
    return loss, weight


class AdaSmoothTask(TrainTask):
    """The mixing network of ``model``, trained on its buffer."""

    higher_is_better = False  # the score is the validation mixing loss

    def __init__(self, config: AdaSmoothRecipe, model: MixedClassifier, images: Dataset, val: Dataset,
                 run: RunDir, dist: DistContext, options: RunOptions) -> None:
        self.config, self.model, self.images, self.val = config, model, images, val
        self.run, self.dist, self.options = run, dist, options
        self.trained = model.policy
        self._composite = CompositeForward(model)
        self._buffer: Optional[BufferDataset] = None

    def forward_module(self) -> nn.Module:
        return self._composite

    def epochs_per_round(self) -> int:
        return self.config.epochs // self.config.buffer_rounds

    def round_folder(self, index: int) -> Path:
        return self.run.path / BUFFER_DIR / f"round-{index}"

    def train_size(self, epoch: int) -> int:
        return len(self.images) * examples_per_image(self.config)

    def begin_epoch(self, epoch: int) -> None:
        index = epoch // self.epochs_per_round()
        folder = self.round_folder(index)
        if self._buffer is None or self._buffer.folder != folder:
            generate_buffer(self.model, self.images, self.config, folder, self.dist, index, self.options.progress)
            self._buffer = BufferDataset(self.images, folder, self.config)
            if self.dist.is_main and index > 0:  # the earlier rounds are not needed any more
                shutil.rmtree(self.round_folder(index - 1), ignore_errors=True)

    def train_set(self, epoch: int) -> Dataset:
        if self._buffer is None:
            raise RuntimeError("begin_epoch() builds the buffer before train_set() is read")
        return self._buffer

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        x, adv, y = batch[0], batch[1], batch[2]
        outputs = model(torch.cat([x, adv]))
        loss, _ = pair_loss(self.config, outputs, y)
        gamma = outputs[2].detach()
        n = len(y)
        return loss, {"loss": loss.item(), "detect_clean": (gamma[:n] <= 0).float().mean().item(),
                      "detect_adv": (gamma[n:] > 0).float().mean().item()}

    def validation_sums(self, x: torch.Tensor, y: torch.Tensor, positions: torch.Tensor,
                        gen: torch.Generator) -> dict[str, float]:
        """Sums over one validation batch: loss, detection, accuracy and alpha on clean and attacked images."""
        config, model = self.config, self.model
        kind = int(positions[0]) // self.val_batch() % examples_per_image(config)
        with AttackMode(model):
            ranks = class_ranks(model, x)
            adv = attack_kind(model, x, y, ranks, kind, config, derive_seed(config.seed, VAL_SEED, int(positions[0])))
        with torch.no_grad():
            out = model.forward_all(torch.cat([x, adv]))
            loss, weight = pair_loss(config, (out.log_probs, out.alpha, out.gamma), y)
        n = len(y)
        correct = out.log_probs.argmax(1) == torch.cat([y, y])
        alpha = out.alpha.float()
        return {"n": n, "loss_w": loss.item() * weight.sum().item(), "w": weight.sum().item(),
                "detect_clean": (out.gamma[:n] <= 0).sum().item(), "detect_adv": (out.gamma[n:] > 0).sum().item(),
                "acc_clean": correct[:n].sum().item(), "acc_adv": correct[n:].sum().item(),
                "alpha_clean": alpha[:n].sum().item(), "alpha_clean_sq": (alpha[:n] ** 2).sum().item(),
                "alpha_adv": alpha[n:].sum().item(), "alpha_adv_sq": (alpha[n:] ** 2).sum().item()}

    def val_batch(self) -> int:
        return self.config.batch_size // self.config.accumulation

    def evaluate(self, epoch: int) -> dict[str, float]:
        s = sum_over_shards(self.val, self.validation_sums, _VAL_SUMS, self.dist, self.val_batch())
        n = max(1.0, s["n"])

        def std(total: float, squares: float) -> float:
            return math.sqrt(max(0.0, squares / n - (total / n) ** 2))

        result = {"val_loss": s["loss_w"] / max(1e-12, s["w"]),
                  "val_detect_clean": s["detect_clean"] / n, "val_detect_adv": s["detect_adv"] / n,
                  "val_detect": (s["detect_clean"] + s["detect_adv"]) / (2 * n),
                  "val_acc_clean": s["acc_clean"] / n, "val_acc_adv": s["acc_adv"] / n,
                  "alpha_clean_mean": s["alpha_clean"] / n, "alpha_clean_std": std(s["alpha_clean"], s["alpha_clean_sq"]),
                  "alpha_adv_mean": s["alpha_adv"] / n, "alpha_adv_std": std(s["alpha_adv"], s["alpha_adv_sq"])}
        result["score"] = result["val_loss"]
        return result

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.trained.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.trained.load_state_dict(state)

    def save_best(self) -> None:
        save_state_dict({k: v.cpu() for k, v in policy_state(self.model).items()}, self.run.path / POLICY_FILE)


def train_adasmooth(config: AdaSmoothRecipe, out: str, dist: Optional[DistContext] = None,
                    options: Optional[RunOptions] = None, calibrate: bool = True) -> dict[str, Any]:
    """Generate the buffer, train the mixing network, select on validation and calibrate (rank 0).

    Resumable at every level: finished buffer shards are kept, training resumes from the
    checkpoint, and a finished run whose ``calib_*`` fields changed only recalibrates.

    Returns:
        The last epoch's record, with the calibrated ``policy`` when ``calibrate``.
    """
    dist, options = dist or DistContext(), options or RunOptions()
    check_recipe(config)
    run = RunDir(out, config, dist, outputs=(CHECKPOINT, BUFFER_DIR, POLICY_FILE), free_prefixes=("calib_",))
    try:  # the run folder's lock is released on every way out
        name = resolve_dataset(config.dataset, config.robust)
        images = recipe_split(config, name, "train", "buffer_subset")
        val = recipe_split(config, name, "val", "val_subset")
        calibration_set = recipe_split(config, name, "val", "calib_images")
        classes = num_classes(images)
        if config.n_targets >= classes:
            raise InvalidInputError(f"n_targets must be at most {classes - 1} (the data set has {classes} classes), "
                                    f"got {config.n_targets}; set it with --set n_targets=...")
        model = build_mixed(config, images[0][0].unsqueeze(0).to(dist.device), classes, dist)
        if config.init_policy.strip():  # a checkpoint of this run, when there is one, still takes precedence
            load_initial_policy(model, config.init_policy)
            logger.info("mixing network initialised from %s", config.init_policy)
        task = AdaSmoothTask(config, model, images, val, run, dist, options)
        plan_steps(config, task.train_size(0), dist)
        run.start()
        logger.info("adaptive smoothing on %s: mixing network of %d parameters; buffer of %d images x %d examples "
                    "in %d round(s); %d val images; %d process(es), device %s", name,
                    sum(p.numel() for p in model.policy.parameters()), len(images), examples_per_image(config),
                    config.buffer_rounds, len(val), dist.world_size, dist.device)
        scaled = preset_differences(config, "paper")
        logger.info("differs from the authors' configuration (preset 'paper') in: %s",
                    ", ".join(f"{k} {a} -> {b}" for k, (a, b) in scaled.items()) or "nothing")
        previous = run.load_checkpoint() if run.same_recipe else None
        finished = previous is not None and int(previous["epoch"]) >= config.epochs  # nothing left to train
        history = fit(task, config, run, dist, options)
        record = dict(history[-1]) if history else {}
        calibrated = run.path / "policy.json"
        if (calibrate and dist.is_main and run.same_recipe and finished and calibrated.is_file()
                and (run.path / "calibration.json").is_file()):  # written last: the calibration finished
            logger.info("%s holds the calibration of this recipe and network: not calibrated again", calibrated)
            record["policy"] = run.read_json(calibrated.name, lambda data: checked_from_dict(PolicyConfig, data))
        elif calibrate and dist.is_main:
            model.load_state_dict(load_state_dict(run.path / POLICY_FILE), strict=False)
            calib_x, calib_y = dataset_tensors(calibration_set)
            policy, table = calibrate_policy(model, calib_x, calib_y, config, dist.device,
                                             progress=options.progress)
            run.write_json("policy.json", dataclasses.asdict(policy))
            run.write_json("calibration.json", table)
            record["policy"] = dataclasses.asdict(policy)
        return record
    finally:
        run.close()
