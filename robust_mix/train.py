"""Training recipes: base classifiers (standard, PGD adversarial) and the adaptive mixing network.

A recipe is a dataclass config (saved as ``recipe.json`` beside the weights) plus one function
that runs it. Every run is seeded and resumable: after each epoch the model, optimizer and
scheduler state go atomically into ``<out>/checkpoint.pt``; running the same command again
continues from there. Progress goes to ``<out>/train.log`` and one JSON line per epoch to
``<out>/history.jsonl``.

>>> robust-mix train fmnist-standard --out runs/fmnist-standard
>>> robust-mix train fmnist-robust --out runs/fmnist-robust
>>> robust-mix train fmnist-adasmooth --out runs/fmnist-adasmooth \
...     --set standard=runs/fmnist-standard/model.safetensors robust=runs/fmnist-robust/model.safetensors

The recipes work for any pair of base models and any data set :func:`robust_mix.data.load_dataset`
knows; the registered defaults are the Fashion-MNIST ones (l_inf, eps = 0.1).
"""
from __future__ import annotations

import dataclasses
import io
import itertools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from robust_mix.backbones import load_backbone, save_backbone
from robust_mix.config import PolicyConfig, _from_dict
from robust_mix.data import load_dataset
from robust_mix.io import atomic_write_bytes, atomic_write_text, save_state_dict
from robust_mix.losses import adaptive_attack_loss, dlr_loss_targeted, mixing_training_loss
from robust_mix.mixing import MixedClassifier, build_adaptive_policy
from robust_mix.validate import (check_eps, check_fields, check_fraction, check_writable_dir, non_negative_float,
                                 positive_float, positive_int)

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
LossFn = Callable[[torch.Tensor], torch.Tensor]

FMNIST_RESNET = {"in_chans": 1, "num_classes": 10, "layers": [1, 1, 1, 1], "channels": [32, 64, 96, 128],
                 "stem_width": 16, "stem_type": "deep"}


# -- configs -----------------------------------------------------------------------------------
#: Range rules of recipe fields (any recipe, by field name); types are checked from the annotations.
RECIPE_RULES = {
    **dict.fromkeys(("epochs", "batch_size", "attack_steps", "eval_attack_steps", "train_subset", "val_subset",
                     "n_targets", "iter_min", "iter_max", "calib_images", "calib_attack_steps", "val_images",
                     "ln_k", "blocks"), positive_int),
    **dict.fromkeys(("lr", "attack_step_size", "grad_clip", "iter_df", "iter_scale", "eps_lo", "eps_hi"),
                    positive_float),
    **dict.fromkeys(("weight_decay", "warmup_epochs", "c_bce", "c_ce", "c_prod", "clean_weight"), non_negative_float),
    **dict.fromkeys(("w_max", "calib_keep", "ratio_bn_momentum"), check_fraction),
    "eps": lambda name, value: check_eps(value, name=name),
}


def check_recipe(config: Any) -> None:
    """Refuse a recipe whose fields have the wrong type or range (``epochs=-1``, ``lr="abc"``), naming them."""
    check_fields(config, RECIPE_RULES)


@dataclass
class BackboneRecipe:
    """Standard or PGD adversarial training of a base classifier.

    Attributes:
        arch: ``timm/<arch>`` reference; ``arch_kwargs`` go to ``timm.create_model``.
        adversarial: PGD adversarial training (Madry et al.) at ``eps`` instead of standard training.
        attack_steps, attack_step_size: PGD of the training attack (random start).
        eval_attack_steps: PGD steps of the per-epoch validation attack (model selection).
        train_subset, val_subset: first images of the train / val splits used (``None``: all).
        augment: random 2-pixel shifts and horizontal flips.
    """

    arch: str = "timm/resnet18"
    arch_kwargs: dict[str, Any] = field(default_factory=lambda: dict(FMNIST_RESNET))
    dataset: str = "fashion-mnist"
    adversarial: bool = False
    eps: float = 0.1
    attack_steps: int = 7
    attack_step_size: float = 0.025
    eval_attack_steps: int = 10
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    augment: bool = True
    train_subset: Optional[int] = None
    val_subset: Optional[int] = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        check_recipe(self)


@dataclass
class AdaSmoothRecipe:
    """Adaptive smoothing: train the mixing network on two frozen base models (PAPER.md section 3).

    Scaled down from the authors' CIFAR recipe for a CPU: a ``train_subset`` of images instead of
    all of them; attacks generated online per batch against the current composite (instead of a
    precomputed buffer), with ``n_targets`` targeted classes (top-2 .. top-(1 + n_targets)) instead
    of nine; iteration counts ``clip(round(iter_scale * chi2(iter_df)), iter_min, iter_max)``
    instead of chi-square(75); more epochs over the subset. Kept: the composite attack loss with
    ``w ~ U(0, w_max)`` on the BCE term, per-sample ``eps * U(eps_lo, eps_hi)``, random start,
    untargeted + targeted examples, clean:adversarial 1:1, AdamW + warm-up + cosine, clip 10.

    Attributes:
        standard, robust: base model files (self-describing ``.safetensors``) or references.
        policy: the mixing network (feature layers, widths); gamma scale/bias and alpha range
            are set afterwards on the validation split (``calib_*``).
        c_bce, c_ce, c_prod, clean_weight: the loss (``mixing_training_loss``).
        ratio_bn_momentum: momentum of the ratio's ``BatchNorm1d`` while training. The authors'
            0.01 lags far behind the raw output, which drifts freely (the BatchNorm makes its scale
            and offset irrelevant to the loss); at this recipe's learning rates the running
            statistics end up several standard deviations off, so eval-mode alpha, which the
            training attack and validation see, is constant. 0.1 keeps them within a fraction of one.
        calib_*: the grid searched on ``calib_images`` validation images; the rule: the largest
            validation clean accuracy among settings whose validation robust accuracy is at least
            ``calib_keep`` times the robust base's under the same attack: ``calib_attack`` is
            ``"pgd"`` (PGD-CE, ``calib_attack_steps`` steps, on the composite), ``"autoattack"``
            (APGD-CE + APGD-T through the harness, seed 0) or any harness attack spec such as
            ``"standard"`` (all four AutoAttack stages). Changing only ``calib_*`` fields and rerunning
            a finished run recalibrates it without retraining.
    """

    standard: str = "runs/fmnist-standard/model.safetensors"
    robust: str = "runs/fmnist-robust/model.safetensors"
    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(
        standard_layers=["layer1", "layer2"], robust_layers=["layer1", "layer2"],
        widths=[64, 96], blocks=1, input_shape=(1, 28, 28)))
    dataset: str = "fashion-mnist"
    eps: float = 0.1
    eps_lo: float = 0.4
    eps_hi: float = 1.1
    w_max: float = 0.4
    n_targets: int = 3
    iter_df: float = 6.0
    iter_scale: float = 1.0
    iter_min: int = 3
    iter_max: int = 12
    epochs: int = 4
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-5
    warmup_epochs: float = 0.3
    grad_clip: float = 10.0
    ratio_bn_momentum: float = 0.1
    c_bce: float = 1.0
    c_ce: float = 0.5
    c_prod: float = 0.1
    clean_weight: float = 1.0
    train_subset: Optional[int] = 8000
    val_subset: int = 512
    calib_images: int = 300
    calib_attack_steps: int = 10
    calib_attack: str = "pgd"
    calib_keep: float = 0.95
    calib_alpha_lo: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8])
    calib_gamma_scale: list[float] = field(default_factory=lambda: [1.0, 2.0])
    calib_gamma_bias: list[float] = field(default_factory=lambda: [0.0])
    seed: int = 0

    def __post_init__(self) -> None:
        check_recipe(self)


@dataclass
class MixedNutsRecipe:
    """MixedNUTS calibration (PAPER.md section 5) of ``robust``'s output map on the validation split.

    Attributes:
        val_images: validation images used (disjoint from the test set).
        attack_steps: APGD-CE steps (pyautoattack) against the robust base for the attacked margins.
        beta: percentile parameter; ``q`` is the ``(100 - beta)``-th percentile of margins of
            correctly classified attacked inputs.
        scales, powers, biases: the 8x8x8 grid of ``(s, p, c)``.
    """

    standard: str = "runs/fmnist-standard/model.safetensors"
    robust: str = "runs/fmnist-robust/model.safetensors"
    dataset: str = "fashion-mnist"
    eps: float = 0.1
    val_images: int = 500
    attack_steps: int = 50
    beta: float = 98.5
    ln_k: int = 250
    scales: list[float] = field(default_factory=lambda: [round(0.25 * 2 ** (i / 1.5), 4) for i in range(8)])
    powers: list[float] = field(default_factory=lambda: [round(1.0 + 0.5 * i, 2) for i in range(8)])
    biases: list[float] = field(default_factory=lambda: [round(-2.5 + 0.35 * i, 2) for i in range(8)])
    batch_size: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        check_recipe(self)


RecipeConfig = Union[BackboneRecipe, AdaSmoothRecipe, MixedNutsRecipe]


@dataclass
class Recipe:
    """A named default config and the function that runs it."""

    config: RecipeConfig
    run: Callable[..., dict[str, Any]]
    help: str


def recipe_from_dict(cls: type, data: dict[str, Any]) -> RecipeConfig:
    """Rebuild a recipe config from JSON data (nested dataclasses included)."""
    return _from_dict(cls, data)


def save_recipe(config: RecipeConfig, path: PathLike) -> None:
    """Write a recipe config as JSON, atomically."""
    atomic_write_text(path, json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def apply_settings(config: RecipeConfig, settings: Sequence[str]) -> RecipeConfig:
    """``["epochs=3", "policy.widths=[32,64]"]`` -> a copy of ``config`` with those fields replaced.

    Values are parsed as JSON when they parse, else kept as strings.
    """
    data = dataclasses.asdict(config)
    for item in settings:
        if "=" not in item:
            raise ValueError(f"settings look like key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target, parts = data, key.split(".")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                raise ValueError(f"unknown setting {key!r} for {type(config).__name__}")
            target = target[part]
        if parts[-1] not in target:
            raise ValueError(f"unknown setting {key!r} for {type(config).__name__}; "
                             f"valid: {sorted(target)}")
        target[parts[-1]] = value
    return recipe_from_dict(type(config), data)


# -- run plumbing ------------------------------------------------------------------------------
class RunDir:
    """A training run's folder: config, atomic per-epoch checkpoint, log file and history."""

    def __init__(self, out: PathLike, config: RecipeConfig) -> None:
        self.path = check_writable_dir(out, "run folder")
        self.config = config
        self._handler = logging.FileHandler(self.path / "train.log")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("robust_mix").addHandler(self._handler)
        if logging.getLogger("robust_mix").getEffectiveLevel() > logging.INFO:
            logging.getLogger("robust_mix").setLevel(logging.INFO)
        saved = self.path / "recipe.json"
        if saved.is_file() and (self.path / "checkpoint.pt").is_file():
            previous = json.loads(saved.read_text())
            current = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as JSON lists
            if _training_fields(previous) != _training_fields(current):
                raise ValueError(f"{self.path} holds a checkpoint of a run with a different recipe; "
                                 "use another --out folder or delete that one to start over")
        save_recipe(config, saved)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically write the resumable state (tensors and plain containers only)."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoint, buffer.getvalue())

    def load_checkpoint(self) -> Optional[dict[str, Any]]:
        """The last checkpoint, or ``None`` when the run starts fresh."""
        if not self.checkpoint.is_file():
            return None
        return torch.load(self.checkpoint, map_location="cpu", weights_only=True)

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, best: float,
               strict: bool = True) -> tuple[int, float]:
        """Restore the last checkpoint into the training objects; ``(epochs done, best)`` (``(0, best)`` if fresh)."""
        state = self.load_checkpoint()
        if state is None:
            return 0, best
        model.load_state_dict(state["model"], strict=strict)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        logger.info("resuming %s after epoch %d (best %.4f)", self.path, state["epoch"], state["best"])
        return state["epoch"], state["best"]

    def end_epoch(self, record: dict[str, Any], model_state: dict[str, torch.Tensor],
                  optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Log the epoch's record and write the resumable state after it."""
        logger.info("epoch %d: %s", record["epoch"], record)
        self.log_epoch(record)
        self.save_checkpoint({"model": model_state, "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "epoch": record["epoch"], "best": record["best"]})

    def log_epoch(self, record: dict[str, Any]) -> None:
        with open(self.path / "history.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def close(self) -> None:
        logging.getLogger("robust_mix").removeHandler(self._handler)
        self._handler.close()


def _training_fields(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields a checkpoint depends on (calibration settings can change on a rerun)."""
    return {k: v for k, v in recipe.items() if not k.startswith("calib_")}


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                   warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
             drop_last: bool = True) -> list[torch.Tensor]:
    order = (torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
             if shuffle else torch.arange(n))
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels (zero padding) and horizontal flips, ``(B, C, H, W)``."""
    b, _, h, w = x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    dx = torch.randint(0, 5, (b,), generator=generator)
    dy = torch.randint(0, 5, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    out[flip] = out[flip].flip(-1)
    return out


def _subset(images: torch.Tensor, labels: torch.Tensor, n: Optional[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return (images, labels) if n is None else (images[:n], labels[:n])


# -- attacks -----------------------------------------------------------------------------------
def pgd(loss_fn: LossFn, x: torch.Tensor, eps: Union[float, torch.Tensor], steps: int,
        step_size: Union[float, torch.Tensor, None] = None, random_start: bool = True,
        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """l_inf PGD maximising ``loss_fn(x_adv)`` (per-example ``(B,)`` losses) within ``eps`` of ``x``.

    Args:
        loss_fn: images ``(B, C, H, W)`` -> per-example losses ``(B,)`` to maximise.
        x: clean images in ``[0, 1]``.
        eps: radius, a float or per-example ``(B,)``.
        steps: iterations (0 returns the random start, or ``x``).
        step_size: per-step size (float or ``(B,)``); default ``2.5 * eps / steps``.
        generator: CPU generator for the random start (reproducible runs).

    Returns:
        ``(B, C, H, W)`` adversarial images, detached.
    """
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    eps_t = eps_t.expand(x.shape[0], 1, 1, 1)
    alpha = (2.5 * eps_t / max(1, steps) if step_size is None
             else torch.as_tensor(step_size, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1))
    x_adv = x.detach().clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator).to(x.device, x.dtype) * 2 - 1
        x_adv = (x_adv + noise * eps_t).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(loss_fn(x_adv).sum(), x_adv)
        with torch.no_grad():
            x_adv = x_adv + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps_t), x + eps_t).clamp(0, 1)
    return x_adv.detach()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
             device: Union[str, torch.device] = "cpu") -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``(N, C, H, W)`` images."""
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        x, y = images[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        correct += (model(x).argmax(1) == y).sum().item()
    return correct / max(1, len(labels))


def pgd_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int,
                 batch_size: int = 500, device: Union[str, torch.device] = "cpu", seed: int = 0) -> float:
    """Accuracy under untargeted PGD-CE (random start) of ``model``'s outputs (logits or log-probs)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    correct = 0
    for i in range(0, len(labels), batch_size):
        x, y = images[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        x_adv = pgd(lambda z: F.cross_entropy(model(z), y, reduction="none"), x, eps, steps,
                    generator=generator)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == y).sum().item()
    return correct / max(1, len(labels))


def autoattack_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float,
                        attack: Union[str, Sequence[str]] = "apgd-ce,apgd-t", batch_size: int = 100,
                        device: Union[str, torch.device] = "cpu", seed: int = 0) -> float:
    """Accuracy under pyautoattack through the harness (l_inf, ``seed``) on ``(N, C, H, W)`` images.

    ``attack`` is any :func:`robust_mix.protocol.resolve_attack` spec: ``"standard"`` for the
    leaderboard's four stages, ``"apgd-ce,apgd-t"`` (the default) for the cheaper pair.
    """
    from robust_mix.benchmark import benchmark

    result = benchmark(model, threat_model="Linf", eps=eps, images=images, labels=labels, attack=attack,
                       batch_size=batch_size, device=device, seed=seed)
    return result.robust_accuracy


#: ``calib_attack`` names that are not harness specs.
CALIBRATION_ALIASES = {"autoattack": "apgd-ce,apgd-t"}


def _calibration_attack(config: "AdaSmoothRecipe", images: torch.Tensor, labels: torch.Tensor,
                        device: Union[str, torch.device]) -> Callable[[nn.Module], float]:
    """The robust-accuracy measure that calibration uses: PGD-CE or the harness's AutoAttack."""
    if config.calib_attack == "pgd":
        return lambda net: pgd_accuracy(net, images, labels, config.eps, config.calib_attack_steps,
                                        device=device)
    spec = CALIBRATION_ALIASES.get(config.calib_attack, config.calib_attack)
    from robust_mix.protocol import resolve_attack

    try:
        resolve_attack(spec)
    except ValueError as err:
        raise ValueError(f"calib_attack must be 'pgd', 'autoattack' or a harness attack spec such as "
                         f"'standard': {err}") from None
    return lambda net: autoattack_accuracy(net, images, labels, config.eps, attack=spec, device=device)


# -- base classifiers --------------------------------------------------------------------------
def build_backbone(config: BackboneRecipe) -> nn.Module:
    """A freshly initialised base classifier for ``config`` (seeded)."""
    import timm

    if not config.arch.startswith("timm/"):
        raise ValueError(f"base-model recipes build timm architectures ('timm/<arch>'), got {config.arch!r}")
    torch.manual_seed(config.seed)
    return timm.create_model(config.arch[len("timm/"):], pretrained=False, **config.arch_kwargs)


def train_backbone(config: BackboneRecipe, out: PathLike, device: Union[str, torch.device] = "cpu",
                   progress: bool = True, max_steps: Optional[int] = None) -> dict[str, Any]:
    """Train a base classifier; the best validation epoch is written to ``<out>/model.safetensors``.

    Model selection: validation clean accuracy (standard), or validation PGD accuracy
    (``eval_attack_steps`` steps, adversarial). ``max_steps`` stops each epoch early (tests).

    Returns:
        The last epoch's record (``epoch``, ``train_loss``, ``val_clean``, ``val_robust``, ``best``).
    """
    run = RunDir(out, config)
    try:
        torch.manual_seed(config.seed)
        images, labels = _subset(*load_dataset(config.dataset, "train"), config.train_subset)
        val_x, val_y = _subset(*load_dataset(config.dataset, "val"), config.val_subset)
        model = build_backbone(config).to(device)
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("%s %s: %d parameters, %d train / %d val images, device %s", config.arch,
                    "adversarial" if config.adversarial else "standard", n_params, len(labels), len(val_y), device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = len(_batches(len(labels), config.batch_size, 0, 0, shuffle=False))
        if max_steps is not None:
            steps_per_epoch = min(steps_per_epoch, max_steps)
        scheduler = _warmup_cosine(optimizer, steps_per_epoch * config.epochs,
                                   int(config.warmup_epochs * steps_per_epoch))
        record: dict[str, Any] = {}
        start, best = run.resume(model, optimizer, scheduler, best=-1.0)
        for epoch in range(start, config.epochs):
            generator = torch.Generator().manual_seed(config.seed * 7919 + epoch)
            batches = _batches(len(labels), config.batch_size, config.seed, epoch)[:steps_per_epoch]
            total, t0 = 0.0, time.time()
            for idx in _progress(batches, len(batches), f"epoch {epoch + 1}/{config.epochs}", progress):
                x, y = images[idx], labels[idx]
                if config.augment:
                    x = _augment(x, generator)
                x, y = x.to(device), y.to(device)
                if config.adversarial:
                    model.eval()
                    x = pgd(lambda z: F.cross_entropy(model(z), y, reduction="none"), x, config.eps,
                            config.attack_steps, config.attack_step_size, generator=generator)
                model.train()
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item()
            val_clean = accuracy(model, val_x, val_y, device=device)
            val_robust = (pgd_accuracy(model, val_x[:1000], val_y[:1000], config.eps, config.eval_attack_steps,
                                       device=device) if config.adversarial else None)
            score = val_robust if config.adversarial else val_clean
            if score > best:
                best = score
                save_backbone(model.cpu(), run.path / "model.safetensors", ref=config.arch,
                              kwargs=config.arch_kwargs)
                model.to(device)
            record = {"epoch": epoch + 1, "train_loss": total / max(1, len(batches)), "val_clean": val_clean,
                      "val_robust": val_robust, "best": best, "seconds": round(time.time() - t0, 1)}
            run.end_epoch(record, model.state_dict(), optimizer, scheduler)
        return record
    finally:
        run.close()


# -- adaptive smoothing ------------------------------------------------------------------------
def build_mixed(standard: str, robust: str, policy: PolicyConfig,
                device: Union[str, torch.device] = "cpu") -> MixedClassifier:
    """Two frozen base models (files or references) with a fresh adaptive policy."""
    model = MixedClassifier(load_backbone(standard), load_backbone(robust), alpha=0.5)
    model.alpha = build_adaptive_policy(model, dataclasses.replace(policy))
    return model.to(device)


def _iteration_count(config: AdaSmoothRecipe, generator: torch.Generator) -> int:
    # chi-square(df) as a sum of squared normals, then scaled and clipped
    draw = (torch.randn(max(1, int(round(config.iter_df))), generator=generator) ** 2).sum().item()
    return int(min(config.iter_max, max(config.iter_min, round(config.iter_scale * draw))))


def adaptive_adversarial_batch(model: MixedClassifier, x: torch.Tensor, y: torch.Tensor,
                               config: AdaSmoothRecipe, generator: torch.Generator) -> torch.Tensor:
    """Adaptive-attack examples for one clean batch ``(B, C, H, W)``: half untargeted CE, half targeted DLR.

    The attack maximises :func:`robust_mix.losses.adaptive_attack_loss` on the whole composite
    (policy in eval mode, unscaled alpha), with per-example ``w ~ U(0, w_max)``, per-example
    ``eps * U(eps_lo, eps_hi)``, a random start and a random iteration count. Targets are drawn
    from the composite's top-2 .. top-(1 + n_targets) classes on the clean input.
    """
    b = x.shape[0]
    device = x.device
    eps = config.eps * (config.eps_lo + (config.eps_hi - config.eps_lo) * torch.rand(b, generator=generator))
    weight = config.w_max * torch.rand(b, generator=generator)
    eps, weight = eps.to(device), weight.to(device)
    targeted = torch.arange(b, device=device) >= b // 2
    was_training = model.training
    model.eval()
    model.policy.scale_alpha = False
    try:
        with torch.no_grad():
            ranks = model(x).argsort(dim=1, descending=True)
        pick = torch.randint(1, 1 + config.n_targets, (b,), generator=generator).to(device)
        targets = ranks.gather(1, pick[:, None])[:, 0]

        def loss_fn(z: torch.Tensor) -> torch.Tensor:
            out = model.forward_all(z)
            untargeted = adaptive_attack_loss(out, y, weight=weight)
            main = dlr_loss_targeted(out.log_probs, y, targets)
            targeted_loss = (1 - weight) * main + weight * F.binary_cross_entropy_with_logits(
                out.gamma, torch.ones_like(out.gamma), reduction="none")
            return torch.where(targeted, targeted_loss, untargeted)

        return pgd(loss_fn, x, eps, _iteration_count(config, generator), generator=generator)
    finally:
        model.policy.scale_alpha = None
        model.train(was_training)


def _mixing_loss(model: MixedClassifier, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                 config: AdaSmoothRecipe) -> torch.Tensor:
    inputs = torch.cat([x, x_adv])
    is_adv = torch.cat([torch.zeros(len(x)), torch.ones(len(x_adv))]).to(x.device)
    weight = torch.cat([torch.full((len(x),), config.clean_weight), torch.ones(len(x_adv))]).to(x.device)
    return mixing_training_loss(model.forward_all(inputs), torch.cat([y, y]), is_adv, c_bce=config.c_bce,
                                c_ce=config.c_ce, c_prod=config.c_prod, sample_weight=weight)


def _policy_state(model: MixedClassifier) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith("policy.")}


def train_adasmooth(config: AdaSmoothRecipe, out: PathLike, device: Union[str, torch.device] = "cpu",
                    progress: bool = True, max_steps: Optional[int] = None,
                    calibrate: bool = True) -> dict[str, Any]:
    """Train the mixing network on frozen bases, select on validation, calibrate gamma and alpha range.

    Writes ``<out>/policy.safetensors`` (the ``policy.*`` tensors of the MixedClassifier) and
    ``<out>/policy.json`` (the calibrated :class:`PolicyConfig`).

    Model selection: lowest validation mixing loss on ``val_subset`` images and their
    adaptive-attack examples (fixed seed). Then :func:`calibrate_policy`.
    """
    run = RunDir(out, config)
    try:
        torch.manual_seed(config.seed)
        images, labels = _subset(*load_dataset(config.dataset, "train"), config.train_subset)
        val_x, val_y = _subset(*load_dataset(config.dataset, "val"), config.val_subset)
        model = build_mixed(config.standard, config.robust, config.policy, device)
        model.policy.bn.momentum = config.ratio_bn_momentum
        params = list(model.policy.parameters())
        logger.info("mixing network: %d parameters; %d train / %d val images, device %s",
                    sum(p.numel() for p in params), len(labels), len(val_y), device)
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = len(_batches(len(labels), config.batch_size, 0, 0, shuffle=False))
        if max_steps is not None:
            steps_per_epoch = min(steps_per_epoch, max_steps)
        scheduler = _warmup_cosine(optimizer, steps_per_epoch * config.epochs,
                                   int(config.warmup_epochs * steps_per_epoch))
        record: dict[str, Any] = {}
        start, best = run.resume(model, optimizer, scheduler, best=math.inf, strict=False)
        for epoch in range(start, config.epochs):
            generator = torch.Generator().manual_seed(config.seed * 7919 + epoch)
            batches = _batches(len(labels), config.batch_size, config.seed, epoch)[:steps_per_epoch]
            total, t0 = 0.0, time.time()
            for idx in _progress(batches, len(batches), f"epoch {epoch + 1}/{config.epochs}", progress):
                x, y = images[idx].to(device), labels[idx].to(device)
                x_adv = adaptive_adversarial_batch(model, x, y, config, generator)
                model.train()
                loss = _mixing_loss(model, x, x_adv, y, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                scheduler.step()
                total += loss.item()
            val = evaluate_policy(model, val_x, val_y, config, device)
            if val["val_loss"] < best:
                best = val["val_loss"]
                save_state_dict(_policy_state(model), run.path / "policy.safetensors")
            record = {"epoch": epoch + 1, "train_loss": total / max(1, len(batches)), **val, "best": best,
                      "seconds": round(time.time() - t0, 1)}
            run.end_epoch(record, _policy_state(model), optimizer, scheduler)
        if calibrate:
            from robust_mix.io import load_state_dict

            model.load_state_dict(load_state_dict(run.path / "policy.safetensors"), strict=False)
            calib_x, calib_y = _subset(*load_dataset(config.dataset, "val"), config.calib_images)
            policy, table = calibrate_policy(model, calib_x, calib_y, config, device)
            atomic_write_text(run.path / "policy.json", json.dumps(dataclasses.asdict(policy), indent=2) + "\n")
            atomic_write_text(run.path / "calibration.json", json.dumps(table, indent=2) + "\n")
            record = {**record, "policy": dataclasses.asdict(policy)}
        return record
    finally:
        run.close()


def evaluate_policy(model: MixedClassifier, images: torch.Tensor, labels: torch.Tensor,
                    config: AdaSmoothRecipe, device: Union[str, torch.device] = "cpu") -> dict[str, float]:
    """Validation mixing loss and clean/adversarial detection accuracy (``gamma > 0`` means adversarial).

    Attacks use a fixed seed, so epochs compare on the same footing.
    """
    generator = torch.Generator().manual_seed(12345)
    losses, hits, count = [], 0, 0
    for i in range(0, len(labels), 2 * config.batch_size):
        x, y = images[i:i + 2 * config.batch_size].to(device), labels[i:i + 2 * config.batch_size].to(device)
        if len(y) < 2:
            continue
        x_adv = adaptive_adversarial_batch(model, x, y, config, generator)
        model.eval()
        with torch.no_grad():
            losses.append(_mixing_loss(model, x, x_adv, y, config).item() * len(y))
            gamma = model.forward_all(torch.cat([x, x_adv])).gamma
            hits += ((gamma > 0).float() == torch.cat([torch.zeros(len(y)), torch.ones(len(y))]).to(device)
                     ).sum().item()
            count += 2 * len(y)
    return {"val_loss": sum(losses) / max(1, count // 2), "val_detect": hits / max(1, count)}


def calibrate_policy(model: MixedClassifier, images: torch.Tensor, labels: torch.Tensor,
                     config: AdaSmoothRecipe, device: Union[str, torch.device] = "cpu"
                     ) -> tuple[PolicyConfig, list[dict[str, Any]]]:
    """Choose gamma scale/bias and the eval-time alpha range on validation images.

    Rule: among the grid ``calib_alpha_lo x calib_gamma_scale x calib_gamma_bias`` (``hi = 1``),
    the largest clean accuracy whose PGD robust accuracy (composite attacked end to end) is at
    least ``calib_keep`` times the robust base's under the same attack; if none qualifies, the
    most robust setting. Returns the chosen config and the whole table.
    """
    policy = model.policy
    base = dataclasses.replace(policy.config)
    robust_accuracy = _calibration_attack(config, images, labels, device)
    robust_ref = robust_accuracy(model.robust)
    threshold = config.calib_keep * robust_ref
    logger.info("calibration: robust base %s accuracy %.4f on %d val images; threshold %.4f",
                config.calib_attack, robust_ref, len(labels), threshold)
    table = []
    for lo, scale, bias in itertools.product(config.calib_alpha_lo, config.calib_gamma_scale,
                                             config.calib_gamma_bias):
        policy.config.alpha_range, policy.config.gamma_scale, policy.config.gamma_bias = (lo, 1.0), scale, bias
        clean = accuracy(model, images, labels, device=device)
        robust = robust_accuracy(model)
        table.append({"alpha_lo": lo, "gamma_scale": scale, "gamma_bias": bias, "clean": clean, "robust": robust})
        logger.info("calibration: %s", table[-1])
    qualified = [row for row in table if row["robust"] >= threshold]
    pick = (max(qualified, key=lambda r: (r["clean"], r["robust"])) if qualified
            else max(table, key=lambda r: (r["robust"], r["clean"])))
    chosen = dataclasses.replace(base, alpha_range=(pick["alpha_lo"], 1.0), gamma_scale=pick["gamma_scale"],
                                 gamma_bias=pick["gamma_bias"])
    policy.config.alpha_range, policy.config.gamma_scale, policy.config.gamma_bias = (
        chosen.alpha_range, chosen.gamma_scale, chosen.gamma_bias)
    logger.info("calibration picked %s (robust base %.4f, threshold %.4f)", pick, robust_ref, threshold)
    table.append({"robust_base": robust_ref, "threshold": threshold, "picked": pick})
    return chosen, table


# -- MixedNUTS ---------------------------------------------------------------------------------
def run_mixednuts(config: MixedNutsRecipe, out: PathLike, device: Union[str, torch.device] = "cpu",
                  progress: bool = True) -> dict[str, Any]:
    """Calibrate MixedNUTS on the validation split; writes ``<out>/nuts.json`` (NutsConfig + alpha)."""
    from robust_mix.calibrate import attacked_margin_inputs, calibrate_nuts

    run = RunDir(out, config)
    try:
        images, labels = _subset(*load_dataset(config.dataset, "val"), config.val_images)
        robust = load_backbone(config.robust).to(device).eval()
        with torch.no_grad():
            clean_logits = torch.cat([robust(images[i:i + config.batch_size].to(device)).cpu()
                                      for i in range(0, len(labels), config.batch_size)])
        adv = attacked_margin_inputs(robust, images, labels, config.eps, config.attack_steps,
                                     config.batch_size, device, config.seed)
        with torch.no_grad():
            adv_logits = torch.cat([robust(adv[i:i + config.batch_size].to(device)).cpu()
                                    for i in range(0, len(labels), config.batch_size)])
        nuts, alpha, table = calibrate_nuts(clean_logits, labels, adv_logits, labels, config)
        result = {"nuts": dataclasses.asdict(nuts), "alpha": alpha, "best": table["best"]}
        atomic_write_text(run.path / "nuts.json", json.dumps(result, indent=2) + "\n")
        atomic_write_text(run.path / "calibration.json", json.dumps(table, indent=2) + "\n")
        logger.info("MixedNUTS: %s", result)
        return result
    finally:
        run.close()


RECIPES: dict[str, Recipe] = {
    "fmnist-standard": Recipe(BackboneRecipe(), train_backbone,
                              "standard training of a small timm ResNet on Fashion-MNIST"),
    "fmnist-robust": Recipe(BackboneRecipe(adversarial=True), train_backbone,
                            "PGD-7 adversarial training (eps 0.1) of the same ResNet"),
    "fmnist-adasmooth": Recipe(AdaSmoothRecipe(), train_adasmooth,
                               "adaptive-smoothing mixing network on the two Fashion-MNIST bases"),
    "fmnist-mixednuts": Recipe(MixedNutsRecipe(), run_mixednuts,
                               "MixedNUTS calibration of the robust base on the validation split"),
}
