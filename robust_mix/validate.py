"""The validation layer: every check a robust_mix entry point makes on what its caller passes.

Library entry points (``load_model``/``build_model``, ``benchmark``, ``sweep``, the certificates,
report and submission writers, training recipes) and the CLI call these functions; the CLI also
uses them to parse its arguments (``--eps 8/255``). Code behind the entry points trusts its
inputs. Each error names the offending value, says what was expected and, where there is one, how
to fix it. This module imports only ``torch`` and the standard library.

>>> positive_int("n_examples", 1000)
1000
>>> parse_eps("8/255")
0.03137254901960784
"""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import inspect
import itertools
import json
import math
import numbers
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

#: Threat models the harness runs (pyautoattack's norms).
THREAT_MODELS = ("Linf", "L2", "L1")
#: RobustBench's threat models without an attack or a budget (accuracy on corrupted images).
CORRUPTION_THREAT_MODELS = ("corruptions", "corruptions_3d")
#: Slack for pixel values produced by float arithmetic (resizing, attacks' clamping).
_PIXEL_TOLERANCE = 1e-5
_SHOWN = 8  # offending indices named in a message


class InvalidInputError(ValueError):
    """A value passed to robust_mix is out of range or malformed; the message says which and why."""


class InvalidInputTypeError(InvalidInputError, TypeError):
    """A value passed to robust_mix has the wrong type (also a ``TypeError``)."""


class NonFiniteOutputError(ValueError):
    """The model returned NaN or +inf (or no finite class score) for some examples."""


class InvalidAdversarialExampleError(RuntimeError):
    """An attack returned points outside the threat model (the eps ball of their clean images under the run's
    norm, or the pixel range ``[0, 1]``): scoring them would report a robust accuracy that is wrongly low."""


# -- numbers ---------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _one_number(value: Any) -> Any:
    """A one-element tensor or NumPy array as its Python number (``torch.tensor(0.1)``, ``np.array(0.1)``, a NumPy
    scalar's array form); anything else as it is. The one rule of every number check here."""
    if (isinstance(value, torch.Tensor) and value.numel() == 1) or (isinstance(value, np.ndarray) and value.size == 1):
        return value.item()
    return value


def check_int(name: str, value: Any, *, minimum: Optional[int] = None) -> int:
    """``value`` as an ``int`` (``bool`` and floats such as ``2.0`` are refused), at least ``minimum``."""
    if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
        value = _one_number(value)
    if not _is_int(value):
        raise InvalidInputTypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


#: The largest seed ``torch.manual_seed`` and ``torch.Generator.manual_seed`` take.
MAX_SEED = 2 ** 64 - 1


def check_seed(name: str, value: Any) -> int:
    """A random seed: a whole number from 0 to :data:`MAX_SEED` (what ``torch.manual_seed`` takes; a larger one
    ended a certificate in torch's "Overflow when unpacking long long"). The one rule of every seed robust_mix
    takes (``--seed``, ``seed=``, a recipe's ``seed``)."""
    number = check_int(name, value, minimum=0)
    if number > MAX_SEED:
        raise InvalidInputError(f"{name} must be an integer from 0 to 2**64 - 1 (what torch.manual_seed takes), "
                                f"got {value}")
    return number


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int >= 1`` (example counts, batch and chunk sizes, epochs, samples)."""
    if _is_int(value) and value < 1:
        raise InvalidInputError(f"{name} must be a positive integer (>= 1), got {value}")
    return check_int(name, value, minimum=1)


def check_ln_k(name: str, value: Any) -> int:
    """``k`` of MixedNUTS' top-``k`` standardisation: an ``int >= 2`` (the variance of one logit is undefined, and
    ``k = 1`` made every MixedNUTS probability NaN)."""
    if _is_int(value) and value < 2:
        raise InvalidInputError(f"{name} must be an integer >= 2 (the logits are standardised by the mean and "
                                f"variance of the top k, which needs two), got {value}; PAPER.md uses 250")
    return check_int(name, value, minimum=2)


def optional_positive_int(name: str, value: Any) -> Optional[int]:
    """``None`` (meaning "the default") or a positive ``int``."""
    return None if value is None else positive_int(name, value)


def check_bool(name: str, value: Any, *, optional: bool = False) -> Optional[bool]:
    """``value`` when it is ``True`` or ``False`` (``None`` too when ``optional``, meaning "the default").

    Anything else is refused rather than read by its truth value: ``"no"`` or ``"false"`` would count as True.
    """
    if isinstance(value, bool) or (optional and value is None):
        return value
    expected = "True, False or None (the default)" if optional else "True or False"
    raise InvalidInputTypeError(f"{name} must be {expected}, got {value!r} ({type(value).__name__}); pass a Python "
                                "bool, not a string or a number")


def check_real(name: str, value: Any, *, low: Optional[float] = None, high: Optional[float] = None,
               low_open: bool = False, high_open: bool = False, expected: str = "") -> float:
    """A finite real number in the interval given by ``low``/``high`` (open ends when ``*_open``); a one-element
    tensor or NumPy array is read as its number, as a NumPy scalar is (``np.array(0.1)`` was refused as no number,
    ``torch.tensor(0.1)`` taken)."""
    value = _one_number(value)
    interval = expected or _interval(low, high, low_open, high_open)
    if not _is_real(value):
        raise InvalidInputTypeError(f"{name} must be a number{interval}, got {value!r} ({type(value).__name__})")
    number = float(value)
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if not math.isfinite(number) or below or above:
        raise InvalidInputError(f"{name} must be a finite number{interval}, got {value!r}")
    return number


def _interval(low: Optional[float], high: Optional[float], low_open: bool, high_open: bool) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f" {'<' if high_open else '<='} {high:g}"
    return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def positive_float(name: str, value: Any) -> float:
    """A finite number ``> 0`` (noise levels, Lipschitz constants, learning rates, temperatures)."""
    return check_real(name, value, low=0.0, low_open=True)


def non_negative_float(name: str, value: Any) -> float:
    """A finite number ``>= 0``."""
    return check_real(name, value, low=0.0)


#: The longest wall time a file robust_mix reads may state, in seconds (ten years): a larger one is no run's.
MAX_WALL_SECONDS = 10 * 365 * 24 * 3600.0


def check_wall_seconds(name: str, value: Any, *, positive: bool = False, high: float = MAX_WALL_SECONDS,
                       why: str = "ten years") -> float:
    """A wall time read back from a file (a report's, a sweep point's, a reference row's): a finite number of
    seconds, ``> 0`` when ``positive`` (else ``>= 0``), at most ``high`` (:data:`MAX_WALL_SECONDS`; ``why`` says what
    bounds it). The one rule of every time robust_mix reads back."""
    return check_real(name, value, low=0.0, high=high, low_open=positive,
                      expected=f" of seconds in {'(' if positive else '['}0, {high!r}] ({why})")


def check_radii(radii: Any, name: str = "radii") -> list[float]:
    """Radii to report certified accuracy at: a non-empty sequence of finite numbers ``>= 0``, returned sorted
    and without repeats (a certified-accuracy curve is read from small to large radius)."""
    if isinstance(radii, (str, bytes)) or not isinstance(radii, (Sequence, torch.Tensor)):
        raise InvalidInputTypeError(f"{name} must be a list of radii such as [0, 0.25, 0.5], got {radii!r} "
                                    f"({type(radii).__name__})")
    values = [non_negative_float(f"every one of {name}", r) for r in radii]
    if not values:
        raise InvalidInputError(f"{name} is empty; give at least one radius, e.g. [0, 0.25, 0.5] (or None: the "
                                "default)")
    return sorted(set(values))


def check_fraction(name: str, value: Any) -> float:
    """A fraction in ``[0, 1]`` (accuracies). A value in ``(1, 100]`` is named as a likely percentage."""
    try:
        return check_real(name, value, low=0.0, high=1.0)
    except InvalidInputTypeError:
        raise
    except InvalidInputError as err:
        if _is_real(value) and 1.0 < float(value) <= 100.0:
            raise InvalidInputError(f"{err} (it looks like a percentage; robust_mix stores fractions: "
                                    f"{float(value) / 100:g})") from None
        raise


def check_open_probability(name: str, value: Any) -> float:
    """A probability in ``(0, 1)`` (failure probabilities of a certificate)."""
    return check_real(name, value, low=0.0, high=1.0, low_open=True, high_open=True)


def parse_number(name: str, text: Union[str, float, int]) -> float:
    """``"0.1"``, ``"8/255"`` (a fraction, as the field writes budgets) or a number, as a float.

    Only the syntax is checked here; ranges are the caller's (e.g. :func:`check_eps`).
    """
    if not isinstance(text, str):
        return check_real(name, text)
    parts = text.strip().split("/")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(parts) > 2 or not values or (len(values) == 2 and values[1] == 0.0):
        why = "it divides by zero" if len(values) == 2 and values[1] == 0.0 else "not a number"
        raise InvalidInputError(f"{name} must be a number like 0.1 or a fraction like 8/255, got {text!r} ({why})")
    number = values[0] / values[1] if len(values) == 2 else values[0]
    if not math.isfinite(number):
        raise InvalidInputError(f"{name} must be a finite number, got {text!r}")
    return number


def _enum_value(value: Any) -> Any:
    """An ``Enum`` member's value (RobustBench's ``ThreatModel.Linf`` -> ``"Linf"``), else ``value``."""
    return value.value if isinstance(value, enum.Enum) else value


def spelled_alike(value: str, choices: Sequence[str]) -> Optional[str]:
    """The one of ``choices`` that ``value`` names in another case or with other separators (``"l_inf"`` ->
    ``"Linf"``, ``"CIFAR100"`` -> ``"cifar100"``), for a "did you mean" hint; ``None`` when none does."""
    key = lambda text: "".join(c for c in text.lower() if c not in " _-")  # noqa: E731
    return next((choice for choice in choices if key(choice) == key(value)), None)


def check_threat_model(threat_model: Any, name: str = "threat_model") -> str:
    """One of :data:`THREAT_MODELS`, as a ``str``; RobustBench's ``ThreatModel`` members are read as their value.

    Names are case-sensitive, as RobustBench's (``"linf"`` is refused, naming ``"Linf"``). RobustBench's
    corruption benchmarks are refused with a word on why: they have no attack and no budget.
    """
    value = _enum_value(threat_model)
    if isinstance(value, str) and value in THREAT_MODELS:
        return value
    message = f"{name} must be one of {list(THREAT_MODELS)}, got {threat_model!r}"
    if isinstance(value, str) and value in CORRUPTION_THREAT_MODELS:
        message += (f": {value!r} is RobustBench's common-corruptions benchmark (accuracy on corrupted images, "
                    "no attack, no eps), which robust_mix does not run; RobustBench has corruption sets for "
                    "cifar10, cifar100 and imagenet only (RobustBench 1.1.1's robustbench.eval.benchmark(model, "
                    f"dataset='imagenet', threat_model={value!r}) runs ImageNet's from a RobustBench checkout; "
                    "its CIFAR loaders fail there)")
    elif isinstance(value, str) and spelled_alike(value, THREAT_MODELS):
        message += (" (names are case-sensitive, as in RobustBench: did you mean "
                    f"{spelled_alike(value, THREAT_MODELS)!r}?)")
    raise InvalidInputError(message)


def check_dataset(dataset: Any, name: str = "dataset") -> str:
    """A data set name as a ``str``; RobustBench's ``BenchmarkDataset`` members are read as their value.

    Which names exist is checked where data are loaded (:func:`robust_mix.data.dataset_key`).
    """
    value = _enum_value(dataset)
    if not isinstance(value, str):
        raise InvalidInputTypeError(f"{name} must be a data set name such as 'cifar10' or 'fashion-mnist', got "
                                    f"{dataset!r} ({type(dataset).__name__})")
    return value


def check_eps(eps: Any, threat_model: Any = "Linf", name: str = "eps") -> float:
    """A perturbation budget: finite and positive; at most 1 under ``Linf`` (pixels lie in ``[0, 1]``).

    Accepts the ``"8/255"`` form. ``L2``/``L1`` budgets may exceed 1 (a distance over all pixels).
    """
    value = parse_number(name, eps) if isinstance(eps, str) else eps
    if check_threat_model(threat_model) == "Linf":
        hint = "; Linf budgets are in [0, 1] pixel units (8/255 = 0.0314)"
        return check_real(name, value, low=0.0, high=1.0, low_open=True, expected=f" in (0, 1]{hint}")
    return check_real(name, value, low=0.0, low_open=True)


def check_eps_within_images(eps: float, threat_model: str, image_shape: Sequence[int]) -> float:
    """``eps`` when it is no larger than the largest distance between two images of ``image_shape`` ``(C, H, W)``
    with pixels in ``[0, 1]`` under ``threat_model``: 1 under Linf, ``sqrt(C * H * W)`` under L2, ``C * H * W``
    under L1.

    A larger budget puts every image inside the ball around each clean one, so a robust accuracy measured with it
    says nothing; it is mostly a budget written in 255ths (``128`` for ``128/255``), which Linf refuses by its
    bound of 1 and L2 and L1 took as it was.

    Raises:
        InvalidInputError: naming the budget, the largest distance, and the budget in pixel units.
    """
    size = math.prod(int(d) for d in image_shape)
    largest = {"Linf": 1.0, "L2": math.sqrt(size), "L1": float(size)}[check_threat_model(threat_model)]
    if eps > largest * (1 + 1e-6):
        raise InvalidInputError(
            f"eps={eps:g} under {threat_model} is larger than {largest:.4g}, the largest {threat_model} distance "
            f"between two images of shape {tuple(int(d) for d in image_shape)} with pixels in [0, 1]: every image "
            f"lies within it, so robust accuracy would measure nothing. Budgets are in [0, 1] pixel units, not "
            f"255ths: {eps:g}/255 is eps={eps / 255:.4g}")
    return eps


def parse_int(name: str, text: Union[str, int]) -> int:
    """``"1000"`` -> 1000 (command-line text; ``"2.5"`` and ``"abc"`` are refused, naming the text)."""
    if not isinstance(text, str):
        return check_int(name, text)
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidInputError(f"{name} must be a whole number, got {text!r}") from None


def parse_eps(text: str) -> float:
    """``--eps`` text (``"8/255"``, ``"0.1"``) -> a finite positive budget (the threat model's upper
    bound is checked where the threat model is known, by :func:`check_eps`)."""
    return check_real("eps", parse_number("eps", text), low=0.0, low_open=True)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """One of ``choices`` (exact match)."""
    if not isinstance(value, str) or value not in choices:
        raise InvalidInputError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


# -- devices ---------------------------------------------------------------------------------------------
def _available(kind: str) -> tuple[bool, int]:
    """Whether devices of type ``kind`` (``"cuda"``, ``"mps"``, ``"xpu"``, ...) exist here, and how many."""
    if kind == "mps":
        return torch.backends.mps.is_available(), 1
    module = getattr(torch, kind, None)
    is_available = getattr(module, "is_available", None)
    if not callable(is_available) or not is_available():
        return False, 0
    count = getattr(module, "device_count", None)
    return True, int(count()) if callable(count) else 1


def check_device(device: Any, name: str = "device") -> torch.device:
    """A device that exists here, as a ``torch.device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``
    or a CUDA index. A GPU asked for but not visible is refused before any work, not met as a driver
    error in the middle of it.
    """
    if isinstance(device, torch.device):
        requested = device
    elif isinstance(device, str) or _is_int(device):
        try:
            requested = torch.device(device.strip() if isinstance(device, str) else int(device))
        except (RuntimeError, ValueError):
            raise InvalidInputError(f"{name} {device!r} is not a device name; use 'cpu', 'cuda' or 'cuda:<index>'"
                                    ) from None
    else:
        raise InvalidInputTypeError(f"{name} must be a device name such as 'cpu' or 'cuda:0' (or a torch.device), "
                                    f"got {device!r} ({type(device).__name__})")
    if requested.type == "cpu":
        return requested
    available, count = _available(requested.type)
    shown = str(requested)
    if not available and requested.type == "cuda":
        raise InvalidInputError(f"{name} {shown!r} asked for, but no GPU is visible (torch.cuda.is_available() is "
                                "False: no NVIDIA GPU or driver, CUDA_VISIBLE_DEVICES hides them, or torch was built "
                                "without CUDA); use device 'cpu'")
    if not available:
        raise InvalidInputError(f"{name} {shown!r} is not available here; use 'cpu'"
                                f"{' or cuda' if torch.cuda.is_available() else ''}")
    if requested.index is not None and requested.index >= count:
        raise InvalidInputError(f"{name} {shown!r} does not exist: {count} {requested.type} device(s) visible "
                                f"({requested.type}:0 to {requested.type}:{count - 1}); pick one of them")
    return requested


# -- models ----------------------------------------------------------------------------------------------
def check_model(model: Any, name: str = "model") -> torch.nn.Module:
    """``model`` when it is a ``torch.nn.Module``, else an error that says how to get one: a registry name is built
    with ``robust_mix.load_model(NAME)``, a plain function is wrapped in a module.

    Raises:
        InvalidInputTypeError: not a module (a name, a function, ``None``), naming ``name``.
    """
    if isinstance(model, str):
        raise InvalidInputTypeError(f"{name} must be a model (a torch.nn.Module), got the string {model!r}; build it "
                                    f"first: robust_mix.load_model({model!r})")
    if not isinstance(model, torch.nn.Module):
        hint = ("; wrap a function in a torch.nn.Module whose forward calls it" if callable(model)
                else "; build one with robust_mix.load_model(NAME)")
        raise InvalidInputTypeError(f"{name} must be a model (a torch.nn.Module), got {model!r} "
                                    f"({type(model).__name__}){hint}")
    return check_materialized(model, name)


def check_materialized(model: Any, name: str = "model") -> Any:
    """``model`` unless one of its tensors is on the ``meta`` device (a shape without values, as after
    ``model.to("meta")`` or a build under ``torch.device("meta")``): no prediction can be computed from it, and torch
    failed at the first one ("Tensor.item() cannot be called on meta tensors", "Cannot copy out of meta tensor").

    Raises:
        InvalidInputError: naming a tensor on the meta device and how to give the model values.
    """
    if isinstance(model, torch.nn.Module):
        meta = next((n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta), None)
        if meta is not None:
            raise InvalidInputError(f"{name}'s tensors are on the meta device (shapes without values, such as "
                                    f"{meta!r}), so it cannot predict; give it values first: "
                                    "model.to_empty(device='cpu') and then model.load_state_dict(weights), or build it "
                                    "on a real device")
    return model


@contextlib.contextmanager
def evaluation_mode(model: Any) -> Iterator[Any]:
    """``model`` in eval mode for the block; afterwards each of its modules is back in the mode it was in.

    The rule of every evaluation entry point (``benchmark``, the certificates, the recipes' accuracy helpers): a
    model handed over in training mode is measured as it predicts (BatchNorm on its running statistics, which the
    passes then leave as they were; dropout off; an adaptive policy's ratio in its eval-time range), not with batch
    statistics that each forward pass would also write into it, and a model evaluated between training epochs goes
    on training in training mode. Anything that is not a ``torch.nn.Module`` (a function) is passed through.
    """
    if not isinstance(model, torch.nn.Module):
        yield model
        return
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model.eval()
    finally:
        for module, training in modes:
            module.training = training


_Evaluation = typing.TypeVar("_Evaluation", bound=Callable[..., Any])


def evaluates_model(function: _Evaluation) -> _Evaluation:
    """``function(model, ...)`` run with its first argument (the model, given by position or by name) in
    :func:`evaluation_mode`: the decorator of the evaluation entry points."""
    name = next(iter(inspect.signature(function).parameters))

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with evaluation_mode(args[0] if args else kwargs.get(name)):
            return function(*args, **kwargs)

    return typing.cast(_Evaluation, wrapper)


def check_callback(name: str, value: Any, methods: Sequence[str], protocol: str) -> Any:
    """``value`` when it is ``None`` or has every one of ``methods`` (a progress receiver such as
    ``robust_mix.benchmark.Progress``, named by ``protocol``).

    Raises:
        InvalidInputTypeError: anything else; ``True`` (as the certificates' ``progress=True`` draws bars) is told
            that this one takes an object, not a flag. It failed, before, with an AttributeError once work began.
    """
    if value is None or all(callable(getattr(value, m, None)) for m in methods):
        return value
    hint = (f"; here {name} receives progress events, it is not a flag: pass an object with these methods or None"
            if isinstance(value, bool) else "")
    raise InvalidInputTypeError(f"{name} must be None or a {protocol} (an object with methods "
                                f"{', '.join(m + '()' for m in methods)}), got {value!r} ({type(value).__name__})"
                                f"{hint}")


# -- mixing ratios ------------------------------------------------------------------------------------
def check_alpha(alpha: Any, name: str = "alpha") -> float:
    """A fixed mixing ratio in ``[0, 1]`` (0 = standard model only, 1 = robust model only), as a float (``-0.0``
    is ``0.0``)."""
    alpha = _one_number(alpha)
    if not _is_real(alpha):
        raise InvalidInputTypeError(f"{name} must be a number in [0, 1] (or an AdaptiveAlpha policy), "
                                    f"got {alpha!r} ({type(alpha).__name__})")
    value = float(alpha)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} must lie in [0, 1] (0 = standard model only, 1 = robust model only), "
                                f"got {alpha!r}")
    return value + 0.0  # -0.0 is 0: labelled "-0" and stored in an alpha_-0.0 folder beside alpha_0.0, it was not


def check_alpha_range(alpha_range: Any, name: str = "alpha_range") -> tuple[float, float]:
    """An eval-time ``(lo, hi)`` range of an adaptive ratio, ``0 <= lo <= hi <= 1``."""
    if isinstance(alpha_range, (str, bytes)) or not isinstance(alpha_range, Sequence) or len(alpha_range) != 2:
        raise InvalidInputTypeError(f"{name} must be a pair (lo, hi) with 0 <= lo <= hi <= 1, got {alpha_range!r}")
    expected = f"{name} must be a pair (lo, hi) with 0 <= lo <= hi <= 1"
    try:
        lo, hi = (check_alpha(v, f"{name} bound") for v in alpha_range)
    except InvalidInputTypeError as err:
        raise InvalidInputTypeError(f"{expected}, got {tuple(alpha_range)!r} ({err})") from None
    except InvalidInputError:
        raise InvalidInputError(f"{expected}, got {tuple(alpha_range)!r}") from None
    if lo > hi:
        raise InvalidInputError(f"{expected}, got {tuple(alpha_range)!r} (lo > hi)")
    return lo, hi


def check_agreement(quantity: str, stated: Mapping[str, Any], fix: str) -> Optional[int]:
    """The one integer that every source in ``stated`` gives for ``quantity``; ``None`` when none states one.

    ``stated`` maps a description of each source (``"num_classes"``, ``"the standard base's in_chans"``) to
    what it states; a value that is not an integer (``None``) states nothing.

    Raises:
        InvalidInputError: two sources disagree; the message lists every stated value, then ``fix``.
    """
    known = {source: value for source, value in stated.items() if _is_int(value)}
    if len(set(known.values())) > 1:
        listed = ", ".join(f"{source}: {value}" for source, value in known.items())
        raise InvalidInputError(f"{quantity} do not match ({listed}); {fix}")
    return next(iter(known.values()), None)


# -- tensors --------------------------------------------------------------------------------------------
def _indices(mask: torch.Tensor, offset: Optional[Sequence[int]] = None) -> str:
    where = mask.nonzero().flatten().tolist()
    if offset is not None:
        where = [int(offset[i]) for i in where]
    return f"{_listed(where)} ({len(where)} of {mask.numel()})"


def _listed(values: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in values[:_SHOWN])
    return f"[{shown}{', ...' if len(values) > _SHOWN else ''}]"


def check_labels(labels: Any, num_classes: Optional[int] = None, n: Optional[int] = None) -> torch.Tensor:
    """Class indices ``(N,)``: an integer tensor, one per image (``n``), each in ``[0, num_classes)``.

    Returns them as ``torch.long``.
    """
    if not isinstance(labels, torch.Tensor):
        raise InvalidInputTypeError(f"labels must be a torch.Tensor of class indices, shape (N,), got "
                                    f"{type(labels).__name__}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise InvalidInputTypeError(f"labels must be an integer tensor (torch.long) of class indices, got "
                                    f"{labels.dtype}; convert whole-number labels with labels.long()")
    if labels.ndim != 1:
        hint = ("; use labels.reshape(-1)" if labels.ndim == 2 and labels.shape[1] == 1
                else "; one-hot labels? use labels.argmax(dim=1)" if labels.ndim == 2 else "")
        raise InvalidInputError(f"labels must have shape (N,), one class index per image, got shape "
                                f"{tuple(labels.shape)}{hint}")
    if n is not None and len(labels) != n:
        raise InvalidInputError(f"got {len(labels)} labels for {n} images; give one label per image")
    bad = labels < 0
    if num_classes is not None:
        bad |= labels >= num_classes
    if bad.any():
        first = labels[bad][:_SHOWN].tolist()
        allowed = f"lie in [0, {num_classes})" if num_classes is not None else "be >= 0"
        raise InvalidInputError(f"labels must {allowed}, got {first} at indices {_indices(bad)}")
    return labels.long()


def check_images(images: Any, input_shape: Optional[Sequence[int]] = None, *,
                 dtype: Optional[torch.dtype] = None, check_values: bool = True,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """A batch of raw images ``(B, C, H, W)``: floating point (``dtype``, the model's, when given), on ``device``
    (the model's, when given), the model's ``(C, H, W)`` contract when it declares one, and (``check_values``)
    finite values in ``[0, 1]``.

    The messages say how to adapt the input: add a batch dimension, convert channels, resize,
    divide by 255 or undo a normalisation.
    """
    if not isinstance(images, torch.Tensor):
        raise InvalidInputTypeError(f"images must be a torch.Tensor of shape (B, C, H, W), got "
                                    f"{type(images).__name__}")
    shape = tuple(images.shape)
    if images.ndim != 4:
        hint = "; add the batch dimension with images.unsqueeze(0)" if images.ndim == 3 else ""
        raise InvalidInputError(f"images must have shape (B, C, H, W), got {shape}{hint}")
    if not images.is_floating_point():
        hint = " (0-255 pixels: use images.float() / 255)" if images.dtype == torch.uint8 else ""
        raise InvalidInputTypeError(f"images must be floating point with values in [0, 1], got {images.dtype}"
                                    f"{hint}")
    if dtype is not None and images.dtype != dtype:
        raise InvalidInputTypeError(f"images are {images.dtype} but the model computes in {dtype}; convert them "
                                    f"with images.to({dtype})")
    if device is not None and images.device != device:
        raise InvalidInputError(f"images are on {images.device} but the model is on {device}; move them with "
                                f"images.to({str(device)!r}) (or the model with model.to({str(images.device)!r}))")
    if input_shape is not None:
        _check_contract(shape, tuple(int(v) for v in input_shape))
    if check_values and images.numel():
        _check_pixel_values(images.detach())
    return images


def check_examples(images: Any, labels: Any, input_shape: Optional[Sequence[int]] = None,
                   num_classes: Optional[int] = None, *, dtype: Optional[torch.dtype] = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples to evaluate: images as :func:`check_images` wants them, one label per image as
    :func:`check_labels` wants them, and at least one of each. Returns ``(images, labels)``, labels as ``long``.
    """
    images = check_images(images, input_shape, dtype=dtype)
    labels = check_labels(labels, num_classes, n=len(images))
    if not len(images):
        raise InvalidInputError(f"images hold no examples (shape {tuple(images.shape)}); pass at least one image "
                                "and its label")
    return images, labels


def layout_hint(shape: Sequence[int]) -> str:
    """``"; channels-last (B, H, W, C) images? ..."`` when a batch of ``shape`` looks like one (a last dimension of
    1, 3 or 4 channels after a second one of more), else ``""``: the hint for an error of a model that declares no
    input shape and failed on the images."""
    if len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] > 4:
        return "; channels-last (B, H, W, C) images? use images.permute(0, 3, 1, 2) (channels first)"
    return ""


def _check_contract(shape: tuple[int, ...], contract: tuple[int, ...]) -> None:
    channels, height, width = contract
    expected = f"the model takes raw images of shape (B, {channels}, {height}, {width}), got {shape}"
    if shape[1] != channels and (shape[3] == channels or (shape[3] in (1, 3) and shape[1:3] == (height, width))):
        resize = ("" if shape[1:3] == (height, width) else
                  f", then resize them from {shape[1]}x{shape[2]} to {height}x{width}")
        raise InvalidInputError(f"{expected}: channels-last (B, H, W, C) images? use images.permute(0, 3, 1, 2) "
                                f"(channels first){resize}")
    if shape[1] != channels:
        how = ("convert to grayscale with images.mean(dim=1, keepdim=True)" if channels == 1
               else f"repeat the channel with images.expand(-1, {channels}, -1, -1)" if shape[1] == 1
               else f"give {channels}-channel images")
        raise InvalidInputError(f"{expected}: {shape[1]} channels instead of {channels}; {how}")
    if shape[2:] != (height, width):
        raise InvalidInputError(
            f"{expected}: {shape[2]}x{shape[3]} instead of {height}x{width}; resize with "
            f"torch.nn.functional.interpolate(images, size=({height}, {width}), mode='bilinear', antialias=True)")


def _check_pixel_values(images: torch.Tensor) -> None:
    flat = images.flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    if not finite.all():
        raise InvalidInputError(f"images contain NaN or inf values at examples {_indices(~finite)}; "
                                "raw images must be finite values in [0, 1]")
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    if (lo < -_PIXEL_TOLERANCE).any():
        raise InvalidInputError(
            f"images must have values in [0, 1], got a minimum of {lo.min().item():g} at examples "
            f"{_indices(lo < -_PIXEL_TOLERANCE)} (normalised images? undo it with images * std + mean: the "
            "model normalises its input itself)")
    if (hi > 1 + _PIXEL_TOLERANCE).any():
        top = hi.max().item()
        hint = " (0-255 pixels? divide by 255)" if 2 < top <= 255 + _PIXEL_TOLERANCE else ""
        raise InvalidInputError(f"images must have values in [0, 1], got a maximum of {top:g} at examples "
                                f"{_indices(hi > 1 + _PIXEL_TOLERANCE)}{hint}")


def check_finite_outputs(outputs: torch.Tensor, what: str = "the model",
                         indices: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Scores ``(B, K)`` that can be read as a prediction: no NaN, no +inf, a finite maximum per row.

    ``-inf`` entries are allowed (log-probability of an impossible class). ``indices`` maps rows to
    the example numbers named in the error (without it, rows of ``outputs`` are named).

    Raises:
        NonFiniteOutputError: naming the examples, so that a NaN is never read as class 0.
    """
    bad = torch.isnan(outputs).any(dim=1) | torch.isposinf(outputs).any(dim=1) | \
        ~torch.isfinite(outputs.max(dim=1).values)
    if bad.any():
        where = f"examples {_indices(bad, indices)}" if indices is not None else f"rows {_indices(bad)} of a batch"
        raise NonFiniteOutputError(
            f"{what} returned NaN or inf scores for {where}; they cannot be read "
            "as predictions (argmax of NaN is class 0), so no accuracy is computed. Check the model and its "
            "input (normalisation, value range) for those examples")
    return outputs


#: Per-example norm of flattened perturbations ``(B, D) -> (B,)``, by threat model.
_NORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Linf": lambda d: d.abs().amax(dim=1), "L2": lambda d: d.norm(dim=1), "L1": lambda d: d.abs().sum(dim=1)}
#: Relative slack on a perturbation's size: the attacks' projections compute in float32 (a few ulps).
_PERTURBATION_RELATIVE_TOLERANCE = 1e-5


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """``(B,)`` distances ``||x_adv - x||`` under ``norm`` (``"Linf"``, ``"L2"``, ``"L1"``), computed in float64
    so that the measurement adds no rounding of its own (pyautoattack's final check measures the same norms)."""
    delta = (x_adv.detach().double() - x.detach().double()).flatten(1)
    return _NORMS[check_threat_model(norm)](delta)


def check_adversarial_examples(x_adv: Any, x: torch.Tensor, norm: str, eps: float, what: str = "the attack",
                               indices: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Adversarial examples ``(B, C, H, W)`` that may be scored: the shape of their clean images ``x``, finite,
    in ``[0, 1]`` and within ``eps`` of ``x`` under ``norm``.

    The tolerance covers float32 arithmetic only: :data:`_PIXEL_TOLERANCE` on pixel values, and on the distance
    ``eps`` times ``1 + 1e-5`` plus the ``norm`` of one float32 rounding (``finfo(float32).eps``) in every pixel.
    ``indices`` maps rows to the example numbers named in the error (without it, rows of the batch are named).

    Raises:
        InvalidAdversarialExampleError: naming ``what`` returned them, the examples, and the largest
            perturbation (or pixel value) found against ``eps`` (or ``[0, 1]``); no accuracy may be computed.
    """
    fix = ("no accuracy is computed from them, since an invalid point would make robust accuracy wrongly low. "
           "This is a bug in that attack stage: leave it out of the attack (attack=[...], --attack) and report "
           "it with the model and the arguments of the run")
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        got = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
        raise InvalidAdversarialExampleError(f"{what} returned adversarial examples of shape {got} for clean "
                                             f"images of shape {tuple(x.shape)}; {fix}")
    where = (lambda mask: f"examples {_indices(mask, indices)}" if indices is not None
             else f"rows {_indices(mask)} of a batch")
    flat = x_adv.detach().flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    if not finite.all():
        raise InvalidAdversarialExampleError(f"{what} returned NaN or inf pixel values for {where(~finite)}; {fix}")
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    outside = (lo < -_PIXEL_TOLERANCE) | (hi > 1 + _PIXEL_TOLERANCE)
    if outside.any():
        raise InvalidAdversarialExampleError(
            f"{what} returned adversarial examples outside [0, 1] for {where(outside)}: smallest value "
            f"{lo.min().item():.6g}, largest value {hi.max().item():.6g}; {fix}")
    norm = check_threat_model(norm)
    distance = perturbation_norms(x_adv, x, norm)
    rounding = perturbation_norms(torch.full_like(flat[:1], torch.finfo(torch.float32).eps),
                                  torch.zeros_like(flat[:1]), norm).item()
    beyond = distance > eps * (1 + _PERTURBATION_RELATIVE_TOLERANCE) + rounding
    if beyond.any():
        raise InvalidAdversarialExampleError(
            f"{what} returned adversarial examples outside the {norm} ball of radius eps around their clean "
            f"images for {where(beyond)}: the largest perturbation is {distance.max().item():.6g} ({norm}), eps is "
            f"{eps:.6g} (tolerance {eps * _PERTURBATION_RELATIVE_TOLERANCE + rounding:.2g}); {fix}")
    return x_adv


def check_score_shape(outputs: Any, n: int, what: str = "the model") -> torch.Tensor:
    """A model's output for ``n`` images as a ``(n, K)`` tensor (the shape part of :func:`check_scores`, cheap
    enough for every query of an attack).

    Raises:
        InvalidInputTypeError: the output is not a tensor (a tuple, a dict).
        InvalidInputError: another shape; for one image, a hint at ``squeeze()``, which drops its batch dimension.
    """
    if not isinstance(outputs, torch.Tensor):
        raise InvalidInputTypeError(f"{what} must return a tensor of class scores (B, K), got {type(outputs).__name__}; "
                                    "wrap it so that forward returns the logits only (e.g. forward(x)[0])")
    if outputs.ndim != 2 or outputs.shape[0] != n:
        hint = (" (a batch of one image: does forward squeeze() its output? That drops the batch dimension; "
                "leave it out)" if n == 1 and outputs.ndim == 1 else "")
        raise InvalidInputError(f"{what} must return class scores of shape (B, K) = ({n}, K), got shape "
                                f"{tuple(outputs.shape)}{hint}")
    return outputs


def check_scores(outputs: Any, n: int, labels: Optional[torch.Tensor] = None, what: str = "the model") -> torch.Tensor:
    """A model's output for ``n`` images read as class scores: a ``(n, K)`` tensor of logits or
    log-probabilities, ``K`` above every label, and not probabilities (rows of ``[0, 1]`` values summing
    to 1: the attacks' losses assume logits, so probabilities would weaken them and overstate robustness).

    Raises:
        InvalidInputTypeError: the output is not a tensor (a tuple, a dict).
        InvalidInputError: another shape, fewer classes than the labels need, or probabilities.
    """
    outputs = check_score_shape(outputs, n, what)
    classes = outputs.shape[1]
    if labels is not None and len(labels) and int(labels.max()) >= classes:
        raise InvalidInputError(f"{what} scores {classes} classes but labels go up to {int(labels.max())}; give "
                                f"labels in [0, {classes}) or the model of this label set")
    scores = outputs.detach()
    # a float16 / bfloat16 softmax sums to 1 only up to its rounding (bfloat16: ~1e-3), still probabilities
    slack = max(1e-4, 2 * torch.finfo(scores.dtype).eps) if scores.is_floating_point() else 0.0
    if classes > 1 and scores.is_floating_point() and torch.isfinite(scores).all() and bool(
            (scores >= 0).all() and (scores <= 1).all()
            and torch.allclose(scores.double().sum(dim=1), torch.ones(n, dtype=torch.double), atol=slack)):
        raise InvalidInputError(f"{what} returns probabilities (each row sums to 1), not logits: the attacks' "
                                "losses would be computed on them and overstate its robustness; return logits, "
                                "or log-probabilities (torch.log of them)")
    return outputs


# -- files ------------------------------------------------------------------------------------------------
def check_path(name: str, value: object, what: str = "a folder path") -> Optional[Path]:
    """A path argument as a ``Path`` with ``~`` expanded to the home folder, as a shell would (``--out=~/x`` and
    ``state_dir="~/x"`` reach no shell); ``None`` is kept (the default).

    Raises:
        InvalidInputTypeError: ``value`` is not a ``str`` or ``os.PathLike`` (e.g. a number), naming ``name``.
        InvalidInputError: ``value`` is an empty string: ``Path("")`` is the current folder, so ``"$OUT"`` with
            ``OUT`` unset would read or fill it; or a part of it is longer than a file name may be (255 bytes), which
            every use would fail on with ``OSError: File name too long``.
    """
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise InvalidInputTypeError(f"{name} must be {what} (str or pathlib.Path), got {value!r} "
                                    f"({type(value).__name__})")
    if isinstance(value, str) and not value.strip():
        here = " ('.' is the current folder)" if "folder" in what else ""
        raise InvalidInputError(f"{name} is an empty path {value!r} (an unset variable?); give {what}{here}")
    path = Path(value).expanduser()
    longest = max(path.parts, key=lambda part: len(os.fsencode(part)), default="")
    if len(os.fsencode(longest)) > _NAME_MAX:  # the OS refuses it, as OSError 'File name too long' from any use
        raise InvalidInputError(f"{name} {shorten(str(path))} has a part of {len(os.fsencode(longest))} bytes "
                                f"({shorten(longest)}), longer than the {_NAME_MAX} bytes a file or folder name may "
                                f"have; give {what} with shorter names")
    return path


#: The longest file or folder name, in bytes, that common file systems hold (ext4, APFS, NTFS: 255).
_NAME_MAX = 255


def shorten(text: str, keep: int = 60) -> str:
    """``repr(text)``, its middle cut out when it is long (a 5000-character name in a message hides the message)."""
    return repr(text) if len(text) <= keep else repr(text[:keep // 2]) + f"...({len(text)} characters)..." + repr(
        text[-keep // 2:])


def path_is(kind: str, path: Union[str, Path]) -> bool:
    """``Path(path).is_dir()`` or ``.is_file()`` (``kind``), ``~`` expanded, and ``False`` where the OS refuses to
    look (a name too long, a NUL byte) instead of an ``OSError``: for text that may be a path or a name."""
    try:
        target = Path(path).expanduser()
        return target.is_dir() if kind == "dir" else target.is_file()
    except (OSError, ValueError):
        return False


def check_input_file(path: Union[str, os.PathLike], what: str, *, inside: Optional[str] = None) -> Path:
    """An existing file to read, as a ``Path`` with ``~`` expanded (:func:`check_path`).

    A folder is named as one (it was reported as "not found", or failed as ``IsADirectoryError``); when it holds
    the file usually given (``inside``, e.g. ``report.json`` of a run folder), the message names that file.

    Raises:
        InvalidInputError: ``path`` is a folder.
        FileNotFoundError: nothing is there (``"{what} not found: {path}"``).
    """
    file = check_path(what, path, "a file path")
    if file.is_dir():
        candidate = file / inside if inside else None
        hint = (f"; did you mean {str(candidate)!r}?" if candidate is not None and candidate.is_file()
                else f"; give the path of the {what} itself")
        raise InvalidInputError(f"{what} {str(file)!r} is a folder, not a file{hint}")
    if not file.is_file():
        raise FileNotFoundError(f"{what} not found: {file}")
    return file


#: The installed robust_mix package: no output folder lies inside it.
PACKAGE_DIR = Path(__file__).resolve().parent


def check_writable_dir(path: Union[str, Path], what: str = "output folder") -> Path:
    """Create ``path`` (and parents) if needed and make sure files can be written there; returns it as a
    ``Path`` with ``~`` expanded (:func:`check_path`): callers write to the returned path.

    Called before any work starts, so that nothing computed is lost to an unwritable folder. An empty path is
    refused: ``Path("")`` is the current folder, and ``--out "$OUT"`` with ``OUT`` unset would fill it. So is a folder
    inside the package (:data:`PACKAGE_DIR`), whose files a reinstall replaces.
    """
    if isinstance(path, str) and not path.strip():
        raise InvalidInputError(f"the {what} is an empty path {path!r} (an unset variable?); give a folder, e.g. "
                                "runs/NAME (or '.' for the current folder)")
    folder = check_path(what, path)
    if folder.resolve().is_relative_to(PACKAGE_DIR):
        raise InvalidInputError(f"the {what} {str(folder)!r} is inside the robust_mix package ({PACKAGE_DIR}): what "
                                "is written there is lost when the package is reinstalled, and could replace the "
                                "package's own files; choose a folder outside it, e.g. runs/NAME")
    why = unwritable_reason(folder)
    if why is not None:
        raise InvalidInputError(f"cannot write to the {what} {str(folder)!r}: {why}; choose another folder "
                                "(nothing has been computed yet)")
    return folder


def unwritable_reason(folder: Path) -> Optional[str]:
    """Why ``folder`` cannot be made or written to (a file in its place, read-only, not this user's), or ``None``
    when it can: the folder is made if missing and a probe file is written in it and removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".robust-mix-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        return f"{blocker} is a file, not a folder" if blocker is not None else err.strerror or type(err).__name__
    return None


def check_revision(name: str, value: Any) -> str:
    """A Hugging Face Hub revision (a branch, a tag, ``refs/pr/1``, a commit): a name git accepts for a ref, which the
    Hub cache also uses as a path under the repo's ``refs`` folder, so ``../../x`` (no git ref) read a file outside it.

    Raises:
        InvalidInputTypeError: not a string.
        InvalidInputError: empty, or holding what no git ref name holds (``..``, ``//``, a leading or trailing ``/``,
            ``\\``, ``@{``, spaces, ``~^:?*[``, control characters); naming ``name`` and the value.
    """
    if not isinstance(value, str):
        raise InvalidInputTypeError(f"{name} must be a revision (a branch, tag or commit: a str), got {value!r}")
    odd = [c for c in value if not c.isprintable() or c in " ~^:?*[\\"]
    if (not value or odd or ".." in value or "//" in value or "@{" in value or value.startswith("/")
            or value.endswith(("/", ".", ".lock"))):
        raise InvalidInputError(f"{name} {value!r} is not a revision: give a branch, tag or commit of the Hub repo "
                                "('main', 'v1.0', 'refs/pr/1', a commit hash), a name git accepts (no '..', spaces, "
                                "'\\', '~^:?*[', leading or trailing '/')")
    return value


# -- JSON text ------------------------------------------------------------------------------------------------
class MalformedJSONError(json.JSONDecodeError):
    """JSON text that :func:`parse_json` refuses although :func:`json.loads` might read it, or cannot read without
    failing deep inside Python (nesting too deep, a number too long, a key given twice in one object). A
    ``json.JSONDecodeError`` (so a ``ValueError``): every reader that handles a file that is not JSON handles
    these the same way, naming the file and what to do. ``str()`` is the reason alone (no line and column)."""

    def __init__(self, msg: str, doc: str, pos: int = 0) -> None:
        super().__init__(msg, doc, pos)
        self.args = (msg,)

    def __str__(self) -> str:
        return self.msg


class _DuplicateKey(Exception):
    """Raised inside :func:`parse_json`'s object hook; never leaves it."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


def parse_json(text: Union[str, bytes]) -> Any:
    """JSON text as Python values: the one reader of every JSON file robust_mix reads (configs, reports, state
    files, a saved model's ``config.json``), which may come from someone else, truncated or edited.

    Besides what :func:`json.loads` refuses, an object holding one key twice is refused (``json.loads`` keeps the
    last value silently, so an edited file could say two things); and text nested too deeply or holding an integer
    too long for Python to read is refused as not valid JSON, where ``json.loads`` fails with a ``RecursionError``
    or an unrelated ``ValueError``.

    Raises:
        json.JSONDecodeError: the text is not JSON that robust_mix reads (a :class:`MalformedJSONError` for the
            cases above); callers name the file and say what to do.
    """
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError:
        raise
    except _DuplicateKey as dup:
        raise MalformedJSONError(f"the key {str(dup.args[0])!r} appears twice in one object, so the file says two "
                                 "things (edited by hand?)", "") from None
    except RecursionError:
        raise MalformedJSONError("nested too deeply to read (lists or objects inside one another thousands of "
                                 "levels deep: no file robust_mix writes)", "") from None
    except ValueError as err:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise MalformedJSONError(f"a number too long to read ({str(err).split(';')[0]})", "") from None


# -- dataclass configs --------------------------------------------------------------------------------------
Check = Callable[[str, Any], Any]


def check_fields(obj: Any, rules: Optional[Mapping[str, Check]] = None, prefix: str = "") -> None:
    """Check every field of a dataclass config against its annotation (nested configs included),
    then ``rules[field](name, value)`` for the fields with a range rule (``None`` values skip it).
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        name, value = f"{prefix}{f.name}", getattr(obj, f.name)
        _check_type(name, value, hints[f.name])
        if dataclasses.is_dataclass(value):
            check_fields(value, rules, prefix=f"{name}.")
        elif rules and f.name in rules and value is not None:
            rules[f.name](name, value)


def _check_type(name: str, value: Any, tp: Any) -> None:
    if not _matches(value, tp):
        raise InvalidInputTypeError(f"{name} must be {_describe(tp)}, got {value!r} ({type(value).__name__})")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")


def _matches(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return _is_int(value)
    if tp is float:
        return _is_real(value)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return all(_matches(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    return True  # annotations this checker does not model


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if tp is type(None):
        return "None"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        if origin is list or not args or args[-1] is Ellipsis:
            return f"a list of {_PLURALS.get(args[0], 'values') if args else 'values'}"
        kinds = {_PLURALS.get(a, "values") for a in args}
        return f"a list of {len(args)} {kinds.pop() if len(kinds) == 1 else 'values'}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def model_num_classes(model: torch.nn.Module) -> Optional[int]:
    """The model's class count, from the model or its config (``None`` if it does not say)."""
    count = getattr(model, "num_classes", None)
    config = getattr(model, "config", None)
    if not isinstance(count, int) and config is not None:
        count = config.num_classes
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def check_model_examples(model: torch.nn.Module, images: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels to evaluate ``model`` on, as :func:`check_examples` wants them and
    as the model declares them: its ``input_shape``, its class count (``num_classes``, its config's) and the dtype
    of its weights. Returns ``(images, labels)``, labels as ``long``.

    Raises:
        robust_mix.validate.InvalidInputError: naming what is wrong and how to fix it (an ``InvalidInputTypeError``
            for a wrong type or dtype).
    """
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    return check_examples(images, labels, getattr(model, "input_shape", None), model_num_classes(model), dtype=dtype)
