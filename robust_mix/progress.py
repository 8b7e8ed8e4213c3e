"""Whether a progress bar is drawn: one rule for the commands and for the library's ``progress=True``.

A bar is drawn when it is asked for (the library's ``progress=True``; the commands ask unless ``--no-progress``
is given) and tqdm's own switch, ``$TQDM_DISABLE``, is not set (to anything but ``0``, ``false``, ``no``, ``off``
or nothing). The commands also draw bars only on a terminal: in a log file or a CI job a bar's redraws fill the
file with carriage returns, so there the commands write their usual log lines and no bars.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, TextIO

#: tqdm's switch for every bar, which robust_mix follows too (its bars pass ``disable=``, which tqdm lets win).
DISABLE_ENV_VAR = "TQDM_DISABLE"
_OFF = {"", "0", "false", "no", "off"}


def disabled_by_environment(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether ``$TQDM_DISABLE`` (in ``environ``, default ``os.environ``) turns bars off."""
    env = os.environ if environ is None else environ
    return env.get(DISABLE_ENV_VAR, "").strip().lower() not in _OFF


def is_terminal(file: Optional[TextIO]) -> bool:
    """Whether ``file`` is a terminal (a closed or descriptor-less stream is not)."""
    try:
        return bool(file is not None and file.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def show_bars(requested: bool, file: Optional[TextIO] = None, *, terminal_only: bool = False,
              environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether to draw bars on ``file``: ``requested``, not turned off by ``$TQDM_DISABLE``, and, with
    ``terminal_only`` (the commands), ``file`` a terminal."""
    if not requested or disabled_by_environment(environ):
        return False
    return is_terminal(file) if terminal_only else True
