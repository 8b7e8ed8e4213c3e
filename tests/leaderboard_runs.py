"""Real benchmark reports for the leaderboard tests: one tiny harness run, written as the CLI writes it."""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Optional, Sequence

import torch

from robust_mix import BenchmarkResult, benchmark
from robust_mix.protocol import resolve_attack
from robust_mix.report import write_report
from test_benchmark import EPS, FAST, fmnist, tiny_config, tiny_mixed

torch.set_num_threads(1)


@functools.lru_cache(maxsize=1)
def tiny_result() -> BenchmarkResult:
    """AutoAttack's APGD-CE and the adaptive suite on 10 Fashion-MNIST images, reduced budgets."""
    x, y = fmnist(10)
    return benchmark(tiny_mixed(), images=x, labels=y, eps=EPS, batch_size=10, attack="apgd-ce", adaptive=True,
                     options=FAST, device="cpu", dataset="fashion-mnist")


def with_flags(result: BenchmarkResult, clean: Sequence[bool], robust: Sequence[bool], **changes) -> BenchmarkResult:
    """The same report with other per-example outcomes, every accuracy recomputed from them (as the harness does):
    every suite of its attack (``changes["attack"]`` or the result's) and every stage leave the ``robust`` ones."""
    clean, robust = list(clean), [bool(r and c) for r, c in zip(robust, clean)]
    n = len(clean)
    attack = changes.pop("attack", result.attack)
    base, plus, _ = attack.partition("+")
    plan = resolve_attack(base, adaptive=bool(plus))
    suites = {s: list(robust) for s in plan.suites}
    return dataclasses.replace(result, n_examples=n, clean_flags=clean, robust_flags=robust, suite_flags=suites,
                               clean_accuracy=sum(clean) / n, robust_accuracy=sum(robust) / n, attack=attack,
                               suite_accuracy={s: sum(robust) / n for s in suites},
                               stage_accuracy={st: sum(robust) / n for st in plan.stages}, **changes)


def write_run(folder: Path, result: Optional[BenchmarkResult] = None, **changes) -> Path:
    """``folder/report.json`` (+ ``model_info.json``, ``report.md``) of ``result`` with ``changes``; returns the report."""
    result = dataclasses.replace(result or tiny_result(), **changes)
    return write_report(folder, result, tiny_config(name=result.model))["report"]
