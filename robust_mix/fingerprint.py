"""Digests that tell models apart on resume: :func:`model_fingerprint` (the tensors: names, shapes, sums, and
the mixing constants) and :func:`model_code_fingerprint` (what the tensors cannot show: module classes, plain
settings, non-persistent buffers). The harness's ``run.json`` and the RobustBench AutoAttack state both record
them, so a state folder of one model is never resumed by another."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import torch
from torch import nn

from robust_mix.fastpath import original_class, volatile_state


def model_fingerprint(model: nn.Module) -> str:
    """A cheap digest of a model's tensors (names, shapes, sums) to detect a changed model on resume.

    The sums are taken in float64: a float32 sum depends on the thread count (reduction order) in its
    last digit, which would refuse a resume under another ``--threads``. A tensor's dtype counts where it is
    not float32 (a float64 copy of a float32 model has the same sums but rounds differently), so float32
    models keep the fingerprints of earlier versions.
    """
    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            t = tensor.detach().double()
            dtype = "" if tensor.dtype == torch.float32 or not tensor.is_floating_point() else str(tensor.dtype)
            h.update(f"{name}{tuple(tensor.shape)}{dtype}{t.sum().item():.6e}{t.abs().sum().item():.6e}".encode())
    h.update(repr(getattr(model, "alpha", None) if not getattr(model, "is_adaptive", False) else "adaptive")
             .encode())
    # constants that change outputs without changing a tensor (e.g. a recalibrated alpha range)
    policy = getattr(model, "policy", None)
    if policy is not None and dataclasses.is_dataclass(getattr(policy, "config", None)):
        h.update(repr(sorted(dataclasses.asdict(policy.config).items())).encode())
    h.update(repr([getattr(model, k, None) for k in ("mixing", "std_scale", "rob_scale", "standard_map",
                                                    "robust_map")]).encode())
    return h.hexdigest()[:16]


#: Attributes every ``nn.Module`` has (its bookkeeping and training mode): no part of what a model computes.
_MODULE_BOOKKEEPING = frozenset(vars(nn.Module()))
#: Plain values an attribute may hold to count as a model's configuration (and their lists and tuples).
_PLAIN = (bool, int, float, str, type(None))


def _is_plain(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def model_code_fingerprint(model: nn.Module) -> str:
    """A digest of what :func:`model_fingerprint`'s tensor sums cannot see: the class of every module
    (its module and qualified name, a fast-path twin named as its original class), its plain settings (numbers, strings,
    flags and their tuples, e.g. a wrapper's ``scale=2.0`` or a layer's stride) and its non-persistent buffers
    (e.g. an input normalisation's mean and std), each under the module's name. Two models without parameters
    (wrappers, fixed transforms) have the same tensor fingerprint but differ here.

    It is the same for the same model in every process: no object ids, addresses or device names go in,
    caches a layer fills on its first forward pass (:func:`robust_mix.fastpath.volatile_state`) are left out, and so
    are ``nn.Module``'s own bookkeeping and training mode.
    """
    h = hashlib.sha256()
    with torch.no_grad():
        for name, module in model.named_modules():
            cls = original_class(type(module))
            volatile = volatile_state(type(module))
            h.update(f"{name}:{cls.__module__}.{cls.__qualname__}".encode())
            settings = sorted((key, repr(value)) for key, value in vars(module).items()
                              if key not in _MODULE_BOOKKEEPING and key not in volatile and _is_plain(value))
            h.update(repr(settings).encode())
            for key, buffer in module._buffers.items():
                if key in module._non_persistent_buffers_set and key not in volatile:
                    t = None if buffer is None else buffer.detach().double()
                    h.update((f"{key}=None" if t is None else f"{key}{tuple(buffer.shape)}{buffer.dtype}"
                              f"{t.sum().item():.6e}{t.abs().sum().item():.6e}").encode())
    return h.hexdigest()[:16]
