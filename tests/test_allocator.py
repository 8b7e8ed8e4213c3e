"""The heap policy (robust_mix.allocator): freed memory stays mapped, so a repeated pass does not fault it in again."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from robust_mix import allocator, threads
from robust_mix.allocator import allocator_mode

# One process per policy: malloc 96 blocks of 1 MiB, touch them, free them all, six times. The blocks go
# through libc's malloc directly (torch's CPU tensors come from the same heap), so no small allocation lands
# between them: under glibc's defaults the freed top of the heap is handed back and every round faults its
# pages in again; under the policy the later rounds reuse what the first one mapped.
_ROUNDS = """
import ctypes, ctypes.util, json, resource
from robust_mix.allocator import apply_allocator_policy
mode = apply_allocator_policy()
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(6):
    before = faults()
    blocks = [libc.malloc(1 << 20) for _ in range(96)]
    for block in blocks:
        ctypes.memset(block, 1, 1 << 20)
    for block in blocks:
        libc.free(block)
    counts.append(faults() - before)
print(json.dumps({"mode": mode, "faults": counts}))
"""


def _rounds(mode: str) -> dict:
    env = {**os.environ, "ROBUST_MIX_MALLOC": mode}
    out = subprocess.run([sys.executable, "-c", _ROUNDS], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_mode_is_read_from_the_environment():
    assert allocator_mode({}) == "keep"
    assert allocator_mode({"ROBUST_MIX_MALLOC": " System "}) == "system"
    with pytest.raises(ValueError, match=r"ROBUST_MIX_MALLOC must be one of keep, system .* got 'jemalloc'"):
        allocator_mode({"ROBUST_MIX_MALLOC": "jemalloc"})


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_kept_memory_is_not_faulted_in_again():
    system, keep = _rounds("system"), _rounds("keep")
    assert system["mode"] == "system" and keep["mode"] == "keep"
    pages = 96 * 256  # one round's pages
    assert all(count > pages // 2 for count in system["faults"]), system  # every round faults them in again
    assert keep["faults"][0] > pages // 2, keep  # the first round maps them
    assert all(count < pages // 100 for count in keep["faults"][1:]), keep  # the later ones reuse them


def test_the_thread_policy_applies_the_heap_policy_once(monkeypatch):
    monkeypatch.setattr(allocator._State, "applied", None)
    monkeypatch.setenv("ROBUST_MIX_MALLOC", "system")
    threads.apply_thread_policy(1)
    assert allocator._State.applied == "system"
    monkeypatch.setenv("ROBUST_MIX_MALLOC", "keep")
    assert allocator.apply_allocator_policy() == "system"  # once per process: the first decision stands
    threads._State.plan = None
