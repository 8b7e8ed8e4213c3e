"""The measures recipes select and calibrate with: clean accuracy, PGD accuracy, the harness's AutoAttack; and
:func:`probe`, one forward pass that names a model refusing the data set's images before any work.

Tensor versions (``accuracy``, ``pgd_accuracy``, ``autoattack_accuracy``) take a few hundred
or thousand images already in memory; :func:`sum_over_shards` streams a validation data set,
each rank its share, and all-reduces the sums, so every rank gets the same numbers.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from robust_mix.attacks import pgd
from robust_mix.benchmark import benchmark, predict
from robust_mix.validate import check_model_examples
from robust_mix.distributed import DistContext, generator
from robust_mix.validate import check_device, check_eps, check_int, evaluates_model, positive_int

Device = Union[str, torch.device]


@evaluates_model
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
             device: Device = "cpu") -> float:
    """Top-1 accuracy of ``model`` on raw ``[0, 1]`` images ``(N, C, H, W)`` and their ``(N,)`` class indices.

    Computed in eval mode; afterwards each of the model's modules is back in the mode it was in.

    Raises:
        robust_mix.validate.InvalidInputError: the images or labels are not what the model takes (shape, dtype,
            values in ``[0, 1]``, one label per image in its class range, at least one example), before any pass.
        robust_mix.validate.NonFiniteOutputError: the model returned NaN/inf for some images (never read as class 0).
    """
    images, labels = check_model_examples(model, images, labels)
    predicted = predict(model, images, batch_size, check_device(device))
    return int((predicted == labels.cpu()).sum()) / len(labels)


def pgd_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                gen: torch.Generator) -> int:
    """How many of the batch ``x`` ``(B, C, H, W)`` stay correct under untargeted PGD-CE (random start)."""
    x_adv = pgd(lambda z: F.cross_entropy(model(z), y, reduction="none"), x, eps, steps, generator=gen)
    with torch.no_grad():
        return int((model(x_adv).argmax(1) == y).sum().item())


@evaluates_model
def pgd_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int,
                 batch_size: int = 500, device: Device = "cpu", seed: int = 0) -> float:
    """Accuracy under untargeted PGD-CE (random start) of ``model``'s outputs (logits or log-probs) on raw
    ``[0, 1]`` images ``(N, C, H, W)`` and their ``(N,)`` class indices, in eval mode (each module is left in the
    mode it was in).

    Raises:
        robust_mix.validate.InvalidInputError: the images or labels are not what the model takes (as
            :func:`accuracy`), or ``eps``, ``steps`` or ``batch_size`` are out of range, before any pass.
    """
    images, labels = check_model_examples(model, images, labels)
    eps, steps = check_eps(eps), positive_int("steps", steps)
    batch_size, device = positive_int("batch_size", batch_size), check_device(device)
    gen = torch.Generator().manual_seed(check_int("seed", seed))
    correct = 0
    for i in range(0, len(labels), batch_size):
        x, y = images[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        correct += pgd_correct(model, x, y, eps, steps, gen)
    return correct / len(labels)


def autoattack_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float,
                        attack: Union[str, Sequence[str]] = "apgd-ce,apgd-t", batch_size: int = 250,
                        device: Device = "cpu", seed: int = 0, adaptive: bool = False) -> float:
    """Accuracy under pyautoattack through the harness (l_inf, ``seed``) on ``(N, C, H, W)`` images.

    ``attack`` is any :func:`robust_mix.protocol.resolve_attack` spec: ``"standard"`` for the
    leaderboard's four stages, ``"apgd-ce,apgd-t"`` (the default) for the cheaper pair;
    ``adaptive`` adds the harness's adaptive suite (an image counts only if it survives both).
    """
    result = benchmark(model, threat_model="Linf", eps=eps, images=images, labels=labels, attack=attack,
                       batch_size=batch_size, device=device, seed=seed, adaptive=adaptive)
    return result.robust_accuracy


BatchSums = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], Mapping[str, float]]


def sum_over_shards(dataset: Dataset, batch_sums: BatchSums, keys: Sequence[str], dist: DistContext,
                    batch_size: int, seed: int = 0, workers: int = 0) -> dict[str, float]:
    """Sum ``batch_sums(x, y, positions, generator)`` over this rank's share of ``dataset``, then over ranks.

    ``keys`` are the sums every rank reports (a rank with an empty share reports zeros). Each
    batch's generator is seeded with ``(seed, position of its first item)``.
    """
    share = Subset(dataset, list(dist.shard(len(dataset))))
    totals = {key: 0.0 for key in keys}
    loader = DataLoader(share, batch_size=batch_size, num_workers=workers)
    for x, y, positions in loader:
        x, y = x.to(dist.device), y.to(dist.device)
        sums = batch_sums(x, y, positions, generator(seed, int(positions[0])))
        for key in keys:
            totals[key] += float(sums[key])
    return dist.all_reduce_sums(totals)


def probe(model: nn.Module, x: torch.Tensor, refusal: str, adapter: Optional[nn.Module] = None) -> torch.Tensor:
    """``model(adapter(x))`` without gradients, ``model`` in eval mode (restored afterwards): a model that does
    not accept ``x`` (a shape error, or an assertion such as timm's fixed ``img_size``) is a ``ValueError``
    starting with ``refusal``, followed by what the model said."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(adapter(x) if adapter is not None else x)
    except (RuntimeError, AssertionError, ValueError, IndexError) as err:
        why = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{refusal} ({why})") from None
    finally:
        model.train(was_training)
