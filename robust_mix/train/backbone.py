"""Base-model recipes: standard, PGD adversarial (Madry et al.) and TRADES (Zhang et al.) training.

>>> train_backbone(BackboneRecipe(arch="timm/resnet18", arch_kwargs={"num_classes": 10}, dataset="cifar10",
...                               method="pgd", eps=8 / 255), "runs/cifar10-pgd")

The best validation epoch (clean accuracy for ``standard``, PGD accuracy otherwise) is written
to ``<out>/model.safetensors``, a self-describing file :func:`robust_mix.load_backbone` reads.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from robust_mix.attacks import pgd
from robust_mix.backbones import save_backbone
from robust_mix.data import num_classes
from robust_mix.distributed import DistContext
from robust_mix.train.checks import check_recipe, recipe_split
from robust_mix.train.config import BackboneRecipe
from robust_mix.train.evaluation import pgd_correct, probe, sum_over_shards
from robust_mix.train.loop import Batch, RunOptions, TrainTask, fit, plan_steps
from robust_mix.train.run_dir import CHECKPOINT, RunDir
from robust_mix.validate import InvalidInputError

logger = logging.getLogger(__name__)

EVAL_BATCH = 500
MODEL_FILE = "model.safetensors"


def build_backbone(config: BackboneRecipe) -> nn.Module:
    """A freshly initialised base classifier for ``config`` (seeded with ``config.seed``)."""
    import timm

    name = config.arch[len("timm/"):]
    if not timm.is_model(name.split(".")[0]):
        raise ValueError(f"BackboneRecipe field arch={config.arch!r}: timm has no such architecture")
    torch.manual_seed(config.seed)
    try:
        return timm.create_model(name, pretrained=False, **config.arch_kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as err:  # a keyword or value the architecture refuses
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InvalidInputError(f"BackboneRecipe field arch_kwargs={config.arch_kwargs!r}: timm cannot build "
                                f"{config.arch} with them ({why}); set the architecture's own arguments with "
                                "--set 'arch_kwargs={...}'") from None


def augment(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to ``shift`` pixels (zero padding) and horizontal flips of ``(B, C, H, W)`` images."""
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    out[flip] = out[flip].flip(-1)
    return out


def check_classes(model: nn.Module, dataset: Dataset, what: str) -> None:
    """The model's output size must be the data set's class count (probed with its first image)."""
    expected = num_classes(dataset)
    x = dataset[0][0].unsqueeze(0).to(next(model.parameters()).device)
    out = probe(model, x, f"{what} does not accept this data set's {tuple(x.shape[1:])} images")
    if out.ndim != 2 or out.shape[1] != expected:
        raise ValueError(f"{what} returns {tuple(out.shape[1:])} outputs per image but the data set has "
                         f"{expected} classes; set num_classes={expected} in arch_kwargs")


class BackboneTask(TrainTask):
    """One base classifier, trained on its data set by the recipe's method."""

    def __init__(self, config: BackboneRecipe, model: nn.Module, train_set: Dataset, val_set: Dataset,
                 run: RunDir, dist: DistContext) -> None:
        self.config, self.trained, self.run, self.dist = config, model, run, dist
        self._train, self._val = train_set, val_set
        self.higher_is_better = True
        if config.method != "standard" and config.eval_subset > len(val_set) and dist.is_main:
            logger.warning("eval_subset is %d but the validation split has %d images (val_subset): the per-epoch "
                           "PGD accuracy is measured on all %d", config.eval_subset, len(val_set), len(val_set))

    def train_set(self, epoch: int) -> Dataset:
        return self._train

    def _attack(self, x: torch.Tensor, loss_fn: Any, gen: torch.Generator) -> torch.Tensor:
        c = self.config
        self.trained.eval()  # attacks see the running BatchNorm statistics
        try:
            return pgd(loss_fn, x, c.eps, c.attack_steps, c.attack_step_size, generator=gen)
        finally:
            self.trained.train()

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        x, y = batch[0], batch[1]
        if c.augment:
            x = augment(x, c.augment_shift, generator)
        net = self.trained
        if c.method == "pgd":
            x = self._attack(x, lambda z: F.cross_entropy(net(z), y, reduction="none"), generator)
        if c.method == "trades":
            with torch.no_grad():
                net.eval()
                clean_probs = F.softmax(net(x).float(), dim=1)
            x_adv = self._attack(x, lambda z: F.kl_div(F.log_softmax(net(z).float(), dim=1), clean_probs,
                                                       reduction="none").sum(1), generator)
            logits = model(torch.cat([x, x_adv])).float()
            clean, adv = logits[:len(x)], logits[len(x):]
            natural = F.cross_entropy(clean, y)
            robust = F.kl_div(F.log_softmax(adv, dim=1), F.softmax(clean, dim=1), reduction="batchmean")
            loss = natural + c.trades_beta * robust
            return loss, {"loss": loss.item(), "ce": natural.item(), "kl": robust.item(),
                          "acc": (clean.argmax(1) == y).float().mean().item()}
        logits = model(x).float()
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item()}

    def evaluate(self, epoch: int) -> dict[str, float]:
        c, net = self.config, self.trained

        def clean(x: torch.Tensor, y: torch.Tensor, _: torch.Tensor, __: torch.Generator) -> dict[str, float]:
            with torch.no_grad():
                return {"correct": (net(x).argmax(1) == y).sum().item(), "n": len(y)}

        totals = sum_over_shards(self._val, clean, ("correct", "n"), self.dist, EVAL_BATCH)
        result = {"val_clean": totals["correct"] / max(1.0, totals["n"]), "val_robust": None}
        if c.method != "standard":
            subset = Subset(self._val, range(min(c.eval_subset, len(self._val))))

            def robust(x: torch.Tensor, y: torch.Tensor, _: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
                return {"correct": pgd_correct(net, x, y, c.eps, c.eval_attack_steps, gen), "n": len(y)}

            attacked = sum_over_shards(subset, robust, ("correct", "n"), self.dist, EVAL_BATCH, seed=c.seed)
            result["val_robust"] = attacked["correct"] / max(1.0, attacked["n"])
        result["score"] = result["val_robust"] if c.method != "standard" else result["val_clean"]
        return result

    def save_best(self) -> None:
        model = copy.deepcopy(self.trained).cpu()
        save_backbone(model, self.run.path / MODEL_FILE, ref=self.config.arch, kwargs=self.config.arch_kwargs)


def train_backbone(config: BackboneRecipe, out: str, dist: Optional[DistContext] = None,
                   options: Optional[RunOptions] = None) -> dict[str, Any]:
    """Train a base classifier; the best validation epoch is written to ``<out>/model.safetensors``.

    Resumes from ``<out>/checkpoint.pt``; a folder holding a different recipe's results is refused
    before anything is written.

    Returns:
        The last epoch's record (``epoch``, ``train_loss``, ``val_clean``, ``val_robust``, ``best``, ...).
    """
    dist = dist or DistContext()
    check_recipe(config)
    run = RunDir(out, config, dist, outputs=(CHECKPOINT, MODEL_FILE))
    try:  # the run folder's lock is released on every way out
        train_set = recipe_split(config, config.dataset, "train", "train_subset")
        val_set = recipe_split(config, config.dataset, "val", "val_subset")
        model = build_backbone(config).to(dist.device)
        check_classes(model, train_set, f"{config.arch} with arch_kwargs={config.arch_kwargs}")
        task = BackboneTask(config, model, train_set, val_set, run, dist)
        plan_steps(config, len(train_set), dist)
        run.start()
        logger.info("%s %s: %d parameters, %d train / %d val images, %d process(es), device %s", config.arch,
                    config.method, sum(p.numel() for p in model.parameters()), len(train_set), len(val_set),
                    dist.world_size, dist.device)
        history = fit(task, config, run, dist, options)
    finally:
        run.close()
    return history[-1] if history else {}
