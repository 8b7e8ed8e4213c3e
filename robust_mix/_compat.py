"""The one place where third-party import quirks are papered over.

RobustBench 1.1.1 imports ``autoattack`` and ``autoattack.state``, but the package index
ships AutoAttack as ``pyautoattack``. Registering the installed module under the old
names lets ``import robustbench`` work. Import this module before robustbench.
"""
from __future__ import annotations

import importlib
import sys


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


alias_autoattack()
