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

# One process per policy: allocate 96 blocks of 1 MiB, touch them, free them all; the faults of the
# later rounds say whether the freed heap was handed back to the OS (and faulted in again) or kept.
_ROUNDS = """
import json, resource, sys
import torch
from robust_mix.allocator import apply_allocator_policy
mode = apply_allocator_policy()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(6):
    before = faults()
    blocks = [torch.ones(1 << 18) for _ in range(96)]
    del blocks
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
    later = 96 * 256 // 2  # half the pages of one round
    if system["faults"][1] < later:  # glibc adapts its thresholds after a round or two
        pytest.skip(f"this libc keeps the freed heap by itself (faults per round {system['faults']})")
    assert keep["faults"][1] < later // 10, keep


def test_the_thread_policy_applies_the_heap_policy_once(monkeypatch):
    monkeypatch.setattr(allocator._State, "applied", None)
    monkeypatch.setenv("ROBUST_MIX_MALLOC", "system")
    threads.apply_thread_policy(1)
    assert allocator._State.applied == "system"
    monkeypatch.setenv("ROBUST_MIX_MALLOC", "keep")
    assert allocator.apply_allocator_policy() == "system"  # once per process: the first decision stands
    threads._State.plan = None
