"""The process heap: keep freed memory for reuse instead of handing it back to the OS.

glibc's ``malloc`` serves large blocks (above a threshold it adapts between 128 KiB and 32 MiB) with
fresh ``mmap`` pages and trims the top of its heap when enough of it is free. A forward pass that
keeps a few tensors alive across the next stage (the mixing network's feature taps do) makes the
heap's top come and go: every call then faults its pages in again, inside the convolutions that touch
them first. ``benchmarks/bench_forward.py`` prints the minor page faults per call of each variant under
both policies (docs/paper.md has the figures for the paper model ``cifar100-adasmooth``).

The policy (glibc only; elsewhere nothing is changed):

* ``M_MMAP_THRESHOLD`` 32 MiB (glibc's upper bound): blocks below it come from the heap;
* ``M_TRIM_THRESHOLD`` 1 GiB: up to that much free memory at the top of the heap stays mapped.

Setting them fixes both (glibc then stops adapting them). The price is memory the process keeps after
a peak: at most ``M_TRIM_THRESHOLD`` beyond what it uses. ``$ROBUST_MIX_MALLOC=system`` leaves glibc's
defaults. Numerics are unaffected: only where memory comes from changes. Applied with the thread policy
(:func:`robust_mix.threads.apply_thread_policy`), once per process, and logged.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from typing import Mapping, Optional

logger = logging.getLogger(__name__)

ENV_VAR = "ROBUST_MIX_MALLOC"
MODES = ("keep", "system")
#: ``mallopt`` parameters (glibc ``malloc.h``).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30


def allocator_mode(environ: Optional[Mapping[str, str]] = None) -> str:
    """``"keep"`` (the default) or ``"system"``, from ``$ROBUST_MIX_MALLOC``.

    Raises:
        ValueError: any other value; the message lists the choices.
    """
    env = os.environ if environ is None else environ
    mode = env.get(ENV_VAR, "").strip().lower() or "keep"
    if mode not in MODES:
        raise ValueError(f"${ENV_VAR} must be one of {', '.join(MODES)} (keep: freed memory stays mapped for reuse; "
                         f"system: glibc's defaults), got {env[ENV_VAR]!r}")
    return mode


def _glibc() -> Optional[ctypes.CDLL]:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


class _State:
    applied: Optional[str] = None


def apply_allocator_policy(environ: Optional[Mapping[str, str]] = None) -> str:
    """Apply the heap policy of ``$ROBUST_MIX_MALLOC`` to this process (once; later calls return the first
    result). Returns what was done: ``"keep"``, ``"system"``, or ``"unsupported"`` (not glibc)."""
    if _State.applied is not None:
        return _State.applied
    mode = allocator_mode(environ)
    if mode == "keep":
        libc = _glibc()
        if libc is not None and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 \
                and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
            logger.info("allocator: freed memory stays mapped for reuse (mmap threshold %d MiB, trim threshold "
                        "%d MiB; $%s=system keeps glibc's defaults)", MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20,
                        ENV_VAR)
        else:
            mode = "unsupported"
            logger.debug("allocator: not glibc, or glibc refused mallopt(); its defaults are kept")
    _State.applied = mode
    return mode
