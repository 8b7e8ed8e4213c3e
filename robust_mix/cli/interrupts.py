"""Ctrl-C for the CLI: a KeyboardInterrupt that Python swallowed is raised again at the next progress step.

Python turns SIGINT into a ``KeyboardInterrupt`` at whatever bytecode runs next; when that is a
finalizer or a callback whose exceptions Python ignores (``Exception ignored in ...``), the interrupt
is lost and the run goes on. :func:`catching` remembers every SIGINT it sees; the progress displays
call :func:`check` at each step, which raises the remembered interrupt if it has not reached the
command yet.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_pending = False


def _on_sigint(signum: int, frame: object) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def catching() -> Iterator[None]:
    """Within the block, SIGINT raises ``KeyboardInterrupt`` and is remembered until it is handled."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _pending = False
    try:
        yield
    except KeyboardInterrupt:
        _pending = False
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C was received and swallowed before reaching the command."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt
