"""The fast model path for frozen base models: work that depends only on frozen weights, done once.

**Weight standardisation** (BiT's ``StdConv2d``) recomputes ``(w - mean(w)) / std(w)`` for every
convolution on every forward pass: a third of the forward time of BiT-M-R152x2 at batch 4 on a CPU
(``benchmarks/bench_forward.py``). :func:`cache_frozen_weights` switches such layers to a subclass
(:mod:`robust_mix.std_conv`) that keeps the standardised weight in a non-persistent buffer and
recomputes it only when the weight changes (in-place update, ``load_state_dict``, a move to another
device or dtype) or needs a gradient. The computation is the layer's own, so outputs are bit for bit
those of the original layer; ``state_dict()`` is untouched (the buffer is not persistent), so
saving, loading and the RobustBench-format conversions see no difference. The price is memory: one more copy of those
weights (0.93 GB for BiT-M-R152x2). :class:`~robust_mix.mixing.MixedClassifier` applies it to both
base models.

:func:`fast_pooling` lets max-pooling layers pool channels-last (a faster kernel, the same maxima)
when no gradient is recorded.

:func:`frozen_parameters` keeps the attacks from computing weight gradients they never use.
Only exact optimisations live on the default path. Two are opt-in because they round differently
in the last bits, so the benchmark scripts count the examples whose flags change:
:func:`channels_last` (``--channels-last``: NHWC weights, which on a CPU also turns the pooling
layers of small ResNets into far faster kernels) and :func:`compile_model` (``--compile``).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import sys
import time
from typing import Callable, Iterator

import torch
from torch import nn

logger = logging.getLogger(__name__)


def _cached_layers() -> dict[type, type]:
    """Layer class -> cached twin, for the layer libraries already loaded (none can occur otherwise)."""
    if "timm.layers.std_conv" not in sys.modules:
        return {}
    from robust_mix import std_conv  # imports timm: only once timm is loaded anyway

    return std_conv.CACHED_LAYERS


def cache_frozen_weights(module: nn.Module) -> int:
    """Switch every weight-standardising convolution in ``module`` to its cached twin, in place.

    Returns the number of layers switched. Outputs, gradients with respect to the input and
    ``state_dict()`` stay exactly as they were; see the module docstring.
    """
    table = _cached_layers()
    count = 0
    for layer in module.modules():
        cached = table.get(type(layer))
        if cached is not None:
            layer.__class__ = cached
            layer.register_buffer("standardized_weight", None, persistent=False)
            layer._cache_key = None
            count += 1
    if count:
        logger.debug("caching the standardised weights of %d layers of %s", count, type(module).__name__)
    return count


class ForwardNHWCMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools a contiguous NCHW CPU input in NHWC when no gradient is recorded.

    PyTorch's NHWC max-pooling kernel vectorises over channels and is faster on a CPU
    than the NCHW one; a maximum does not round, so the values are those of the NCHW kernel bit for
    bit, and the result is turned back into NCHW so that every later layer sees the layout (and does
    the arithmetic) it saw before. Forward-only work gains (clean predictions, Square's queries;
    ``benchmarks/bench_fastpath.py`` times whole AutoAttack runs); when autograd records the call the
    layer runs unchanged, because there the NHWC round trip did not pay off.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() != 4 or x.device.type != "cpu" or self.return_indices or not x.is_contiguous()
                or (torch.is_grad_enabled() and x.requires_grad) or torch.compiler.is_compiling()):
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


#: Exact twins that need no state: layer class -> twin (switched by :func:`fast_pooling`).
_POOLING_LAYERS: dict[type, type] = {nn.MaxPool2d: ForwardNHWCMaxPool2d}


def fast_pooling(module: nn.Module) -> int:
    """Switch every ``nn.MaxPool2d`` in ``module`` to :class:`ForwardNHWCMaxPool2d`, in place.

    Returns the number of layers switched. Outputs, gradients and ``state_dict()`` are unchanged
    (the layer has no state; ``tests/test_fastpath.py`` checks bit-for-bit equality).
    """
    count = 0
    for layer in module.modules():
        twin = _POOLING_LAYERS.get(type(layer))
        if twin is not None:
            layer.__class__ = twin
            count += 1
    return count


def original_class(cls: type) -> type:
    """The class a fast-path twin (a cached or pooling layer) stands in for; any other class itself. The twins
    compute what their originals compute, so a model is the same model with or without them."""
    return {twin: original for original, twin in {**_cached_layers(), **_POOLING_LAYERS}.items()}.get(cls, cls)


def volatile_state(cls: type) -> frozenset[str]:
    """Names of the caches a layer of class ``cls`` fills on its first forward pass (``_volatile_state``, declared by
    the fast-path twins), also while the twin runs as its original class (:func:`original_layers`)."""
    twin = {**_cached_layers(), **_POOLING_LAYERS}.get(original_class(cls))
    return frozenset(getattr(cls, "_volatile_state", ())) | frozenset(getattr(twin, "_volatile_state", ()))


@contextlib.contextmanager
def original_layers(module: nn.Module) -> Iterator[nn.Module]:
    """Context in which ``module``'s cached and pooling layers run as the original classes (recomputing
    on every call, pooling NCHW), for side-by-side comparisons; the caches are kept and valid again
    afterwards."""
    originals = {twin: original for original, twin in {**_cached_layers(), **_POOLING_LAYERS}.items()}
    swapped = [(layer, type(layer)) for layer in module.modules() if type(layer) in originals]
    for layer, cached in swapped:
        layer.__class__ = originals[cached]
    try:
        yield module
    finally:
        for layer, cached in swapped:
            layer.__class__ = cached


@contextlib.contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[nn.Module]:
    """Context in which no parameter of ``module`` requires a gradient (restored afterwards).

    Attacks differentiate with respect to the input only, but FAB's ``backward()`` would also
    compute and accumulate gradients for every trainable weight (an adaptive model's mixing
    network). Input gradients are the same either way.
    """
    trainable = [p for p in module.parameters() if p.requires_grad]
    for param in trainable:
        param.requires_grad_(False)
    try:
        yield module
    finally:
        for param in trainable:
            param.requires_grad_(True)


def channels_last(model: nn.Module) -> nn.Module:
    """Store ``model``'s 4-d weights and buffers channels-last (NHWC), in place; returns ``model``.

    Convolutions then run oneDNN's NHWC kernels and their outputs stay NHWC through the network
    (whatever the input's layout), so pooling and elementwise layers take the NHWC paths too. The
    values, names and hooks are unchanged (``state_dict()`` holds the same numbers; saving writes
    contiguous copies), but the kernels accumulate in another order: outputs differ in the last
    bits, and an attack's result can differ on an example at the decision boundary. Opt-in
    (``robust-mix benchmark --channels-last``); ``benchmarks/bench_fastpath.py --channels-last``
    measures the speed-up and counts the flags that change.
    """
    return model.to(memory_format=torch.channels_last)


def build_channels_last(factory: Callable[[], nn.Module]) -> nn.Module:
    """``channels_last(factory())``: a picklable model factory for worker processes, e.g.
    ``functools.partial(build_channels_last, functools.partial(robust_mix.load_model, name))``."""
    return channels_last(factory())


def is_channels_last(model: nn.Module) -> bool:
    """True when some 4-d weight or buffer of ``model`` is stored channels-last (as :func:`channels_last` leaves
    them). Tensors laid out alike in both formats (a single input channel, 1x1 kernels) tell nothing and are skipped."""
    return any(t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
               for t in itertools.chain(model.parameters(), model.buffers()))


def is_compiled(model: nn.Module) -> bool:
    """True when ``model`` or one of its modules runs through ``torch.compile``: compiled in place
    (``nn.Module.compile``, as :func:`compile_model` does) or wrapped (``torch.compile(model)``)."""
    return any(getattr(m, "_compiled_call_impl", None) is not None or hasattr(m, "_orig_mod") for m in model.modules())


def fast_path(model: nn.Module) -> dict[str, bool]:
    """Which opt-in paths ``model`` runs on, ``{"channels_last": ..., "compiled": ...}``: both round differently
    in the last bits without changing a weight, so a benchmark's state records them and refuses to resume on
    the other path (:func:`robust_mix.benchmark.benchmark`)."""
    return {"channels_last": is_channels_last(model), "compiled": is_compiled(model)}


def compile_model(model: nn.Module, probe: torch.Tensor, *, backend: str = "inductor") -> float:
    """Compile ``model``'s networks in place with ``torch.compile`` and run it once on ``probe``
    ``(B, C, H, W)``; returns the seconds that first call took (compilation included).

    A :class:`~robust_mix.mixing.MixedClassifier` compiles its two bases and its mixing network
    (``nn.Module.compile``: module names, hooks and ``state_dict()`` unchanged; the mixing itself
    stays eager), any other model as a whole. Shapes are dynamic, so the attacks' changing batch
    sizes reuse the code; the backward graphs compile during the first attack with gradients.

    Opt-in for long runs (``robust-mix benchmark --compile``): the first compilation takes minutes
    on a CPU, and compiled kernels may round differently in the last bits, so flags can differ from
    the eager path on a few examples (``benchmarks/bench_fastpath.py --compile`` counts them).
    Inductor keeps compiled code in its cache (``$TORCHINDUCTOR_CACHE_DIR``): later runs of the same
    model compile faster.
    """
    policy = getattr(model, "policy", None)
    parts = ([model.standard, model.robust] + ([policy.network] if policy is not None else [])
             if hasattr(model, "standard") and hasattr(model, "robust") else [model])
    started = time.perf_counter()
    for part in parts:
        part.compile(backend=backend, dynamic=True)
    with torch.no_grad():
        model(probe)
    seconds = time.perf_counter() - started
    logger.info("compiled %d network(s) of %s (%s backend): first forward pass %.1f s", len(parts),
                type(model).__name__, backend, seconds)
    return seconds
