"""The one place where third-party import quirks are papered over.

RobustBench 1.1.1 imports ``autoattack`` and ``autoattack.state``, but the package index
ships AutoAttack as ``pyautoattack``. Registering the installed module under the old
names lets ``import robustbench`` work. Import this module before robustbench.

timm 1.0.9 decorates a class in ``timm/models/hrnet.py`` with ``torch.jit.interface``, which
torch 2.14 deprecates with a ``FutureWarning`` at import time: every command that builds a model
printed it. :func:`import_timm` imports timm (robustbench imports it too) with exactly that
warning silenced.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

_TIMM_JIT_WARNING = r"`torch\.jit\.interface` is deprecated"


def alias_autoattack() -> None:
    """Make ``import autoattack`` resolve to ``pyautoattack`` unless a real one exists."""
    if "autoattack" in sys.modules:
        return
    try:
        importlib.import_module("autoattack.state")
        return
    except ImportError:
        pass
    sys.modules.pop("autoattack", None)
    pkg = importlib.import_module("pyautoattack")
    sys.modules["autoattack"] = pkg
    for sub in ("autoattack", "state", "autopgd_base", "fab_pt", "square", "checks", "other_utils"):
        sys.modules[f"autoattack.{sub}"] = importlib.import_module(f"pyautoattack.{sub}")


def import_timm() -> ModuleType:
    """``timm``, imported without torch's ``torch.jit.interface`` deprecation warning (see module doc).

    Call it before importing robustbench, which imports timm itself.
    """
    if "timm" not in sys.modules:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TIMM_JIT_WARNING, category=FutureWarning)
            importlib.import_module("timm")
    return sys.modules["timm"]


alias_autoattack()
