"""Reading intermediate features from any backbone with forward hooks, without forking it."""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn


class _TapHook:
    """The forward hook of one tapped layer: an object holding its tap, not a closure, so that
    ``copy.deepcopy`` of a model moves the hook to the copied tap (a closure would keep writing into the
    original's, and the copy would see no features) and ``pickle`` can save the model."""

    def __init__(self, tap: "FeatureTap", name: str) -> None:
        self.tap = tap
        self.name = name

    def __call__(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if self.tap._active:
            self.tap._outputs[self.name] = output


class FeatureTap:
    """Records the outputs of named submodules while active.

    Args:
        model: the backbone to read from.
        layers: names from ``model.named_modules()``, in the order the features are wanted.

    Raises:
        ValueError: a name is not a submodule of ``model``; the message lists candidates.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            top = [n for n in modules if n and n.count(".") <= 1][:40]
            raise ValueError(f"layer(s) {missing} not found in {type(model).__name__}; "
                             f"some available names: {top}")
        self.layers = list(layers)
        self._outputs: dict[str, torch.Tensor] = {}
        self._active = False
        self._handles = [modules[name].register_forward_hook(_TapHook(self, name)) for name in layers]

    def __getstate__(self) -> dict:
        # the last pass's features are not part of the model: a copy (copy.deepcopy, pickle) leaves them out, which
        # also lets a model be copied after a forward pass with gradients (non-leaf tensors cannot be deep-copied)
        return {**self.__dict__, "_outputs": {}, "_active": False}

    @contextlib.contextmanager
    def capture(self) -> Iterator[dict[str, torch.Tensor]]:
        """Context in which forward passes record features; yields the name -> tensor dict."""
        self._outputs = {}
        self._active = True
        try:
            yield self._outputs
        finally:
            self._active = False

    def collect(self, outputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The captured features in layer order; an error if a layer did not run."""
        missing = [name for name in self.layers if name not in outputs]
        if missing:
            raise RuntimeError(f"layer(s) {missing} produced no output during the forward pass")
        return [outputs[name] for name in self.layers]

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
