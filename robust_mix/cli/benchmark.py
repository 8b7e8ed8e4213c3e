"""CLI subcommands of the harness: ``benchmark``, ``sweep``, ``submit``.

``robust-mix benchmark NAME --out DIR`` (or ``torchrun --nproc-per-node N -m robust_mix.cli
benchmark ...``) evaluates a registry entry; NAME may also be a ``ModelConfig`` JSON file or
``module:function`` returning a model, for models outside the registry.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence, TextIO

import torch
from torch import nn

from robust_mix.protocol import AttackOptions, resolve_attack
from robust_mix.benchmark import FULL_CLEAN_STAGE, benchmark, default_device
from robust_mix.formatting import STAGE_NAMES, format_alpha, interval_heading, percent_interval
from robust_mix.distributed import env_int, finish_distributed, init_distributed
from robust_mix.fastpath import build_channels_last
from robust_mix.cli import (DATA_DIR_HELP, EPS, EPS_HELP, NAME_HELP, PATH, POSITIVE_INT, SEED, SEED_HELP,
                            LogAboveBars, add_progress_argument, bar_width, command, hold_output_folder, interrupts,
                            progress_requested)
from robust_mix.progress import show_bars
from robust_mix.loading import load_model, model_config_of
from robust_mix.results import INTERVAL_LEVEL, BenchmarkResult
from robust_mix.validate import THREAT_MODELS, check_writable_dir


class TqdmProgress:
    """One tqdm bar per attack stage (examples done, rate, ETA) on ``file`` (default the standard error), drawn when
    ``enabled`` (rank 0, no ``--no-progress``) and :func:`robust_mix.progress.show_bars` agrees (a terminal, no
    ``$TQDM_DISABLE``). While the bars are drawn, log records are written above them (:class:`LogAboveBars`)."""

    def __init__(self, enabled: bool = True, file: Optional[TextIO] = None) -> None:
        self.file = file if file is not None else sys.stderr
        self.enabled = show_bars(enabled, self.file, terminal_only=True)
        self.bars: dict = {}
        self._logging: Optional[LogAboveBars] = None

    def start(self, stages: Sequence[str], total: int) -> None:
        from tqdm import tqdm

        self.close()  # a second start (another run on the same object) replaces the bars
        self.bars = {s: tqdm(total=total, desc=f"{s:>18}", unit="ex", position=i, disable=not self.enabled,
                             leave=True, file=self.file, **bar_width(self.file)) for i, s in enumerate(stages)}
        if self.enabled:
            self._logging = LogAboveBars(self.file, quiet=False).__enter__()

    def advance(self, stage: str, n: int) -> None:
        self.bars[stage].update(n)
        interrupts.check()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}
        if self._logging is not None:
            self._logging.__exit__(None, None, None)
            self._logging = None


#: How the progress bars name the clean passes (the attack stages: robust_mix.formatting.STAGE_NAMES).
_CLEAN_STAGE_NAMES = {"clean": "clean", FULL_CLEAN_STAGE: "clean, more images"}


class RowBars:
    """One tqdm bar per benchmark row, in row order: the row's current stage and the time left; a
    :class:`robust_mix.rows.RowProgress`. Use as a context manager.

    Bars are drawn when ``enabled`` (rank 0, no ``--no-progress``) and :func:`robust_mix.progress.show_bars` agrees
    (``file`` a terminal, no ``$TQDM_DISABLE``); otherwise nothing is drawn and logging is left as it is.
    A bar counts attacked examples times attack stages (the clean passes are quick and count
    nothing, so that the ETA, from the row's average rate, is not fooled by them). While the bars
    are drawn, log records below WARNING are dropped (the bars say what the INFO lines would) and
    the rest, Python warnings included, are written above the bars; on a terminal the bars are
    redrawn every ``refresh_s`` seconds so that elapsed time and ETA keep moving between events.
    On exit the bars are removed: the caller prints the results. Drawn on rank 0 only.
    """

    FORMAT = "{desc}: {percentage:3.0f}%|{bar:16}| [{elapsed}<{remaining}{postfix}]"
    WAITING = "{desc}: {percentage:3.0f}%|{bar:16}| [waiting for a worker]"

    def __init__(self, labels: Sequence[str], enabled: bool = True, file: Optional[TextIO] = None,
                 refresh_s: float = 1.0) -> None:
        self.file = file if file is not None else sys.stderr
        self.labels, self.bars = list(labels), []
        self.enabled = show_bars(enabled, self.file, terminal_only=True)
        self.refresh_s = refresh_s
        self._stages: dict[int, list[str]] = {}
        self._logging: Optional[LogAboveBars] = None
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None

    def __enter__(self) -> "RowBars":
        from tqdm import tqdm

        width = max((len(label) for label in self.labels), default=0)
        self.bars = [tqdm(total=1, desc=label.rjust(width), unit="ex", position=i, leave=False, file=self.file,
                          **bar_width(self.file), disable=not self.enabled, smoothing=0, bar_format=self.WAITING)
                     for i, label in enumerate(self.labels)]
        if self.enabled:  # without bars the log lines are the run's account, as they are
            self._logging = LogAboveBars(self.file).__enter__()
        if self.enabled and self.refresh_s > 0:
            self._ticker = threading.Thread(target=self._tick, name="robust_mix-bars", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        for bar in reversed(self.bars):
            bar.close()
        if self._logging is not None:
            self._logging.__exit__(*exc)
            self._logging = None

    def _tick(self) -> None:
        while not self._stop.wait(self.refresh_s):
            for bar in self.bars:
                bar.refresh()

    def start(self, row: int, stages: Sequence[str], total: int) -> None:
        self._stages[row] = list(stages)
        attacks = [s for s in stages if s not in _CLEAN_STAGE_NAMES]
        self.bars[row].bar_format = self.FORMAT
        self.bars[row].reset(total=max(1, total * len(attacks)))  # the clock starts now
        self._show(row, stages[0] if stages else None)

    def advance(self, row: int, stage: str, n: int) -> None:
        interrupts.check()
        stages = self._stages[row]
        if stage not in _CLEAN_STAGE_NAMES:
            self.bars[row].update(n)
        following = stages[stages.index(stage) + 1:] or [s for s in stages if s != FULL_CLEAN_STAGE][:1]
        bar = self.bars[row]
        self._show(row, following[0] if bar.n < bar.total or stage in _CLEAN_STAGE_NAMES else None)

    def finish(self, row: int) -> None:
        bar = self.bars[row]
        took = bar.format_interval(bar.format_dict["elapsed"])  # frozen: later redraws keep the row's own time
        bar.bar_format = "{desc}: {percentage:3.0f}%|{bar:16}| " + f"[{took}, done]"
        bar.refresh()

    def _show(self, row: int, stage: Optional[str]) -> None:
        """Write the row's current stage (``"APGD-T, stage 2/4"``) as the bar's postfix."""
        if stage is None:
            self.bars[row].set_postfix_str("writing the report")
            return
        attacks = [s for s in self._stages[row] if s not in _CLEAN_STAGE_NAMES]
        name = _CLEAN_STAGE_NAMES.get(stage) or STAGE_NAMES.get(stage, stage)
        number = f", stage {attacks.index(stage) + 1}/{len(attacks)}" if stage in attacks else ""
        self.bars[row].set_postfix_str(name + number)


def add_workers_argument(p: argparse.ArgumentParser) -> None:
    """``--workers``: processes for independent rows (see :mod:`robust_mix.parallel`)."""
    p.add_argument("--workers", type=POSITIVE_INT, default=None, metavar="N",
                   help="worker processes running independent rows side by side (default: one per usable CPU, "
                        "at most one per row; 1 under torchrun, whose ranks shard each row)")


def add_channels_last_argument(p: argparse.ArgumentParser) -> None:
    """``--channels-last``: the opt-in NHWC model path (:func:`robust_mix.fastpath.channels_last`)."""
    p.add_argument("--channels-last", action="store_true",
                   help="store the model's weights channels-last (NHWC): faster convolutions and pooling on CPUs "
                        "for small ResNets, but the last bits differ, so a flag can change at a decision boundary "
                        "(benchmarks/bench_fastpath.py --channels-last counts them)")


def model_factory(args: argparse.Namespace, name: str) -> Callable[[], nn.Module]:
    """A picklable factory of model ``name`` (``load_model`` with ``--model-dir``), NHWC with
    ``--channels-last``: the one way the commands build their models."""
    build = functools.partial(load_model, name, model_dir=getattr(args, "model_dir", None))
    return functools.partial(build_channels_last, build) if getattr(args, "channels_last", False) else build


def resolve_workers(args: argparse.Namespace, n_rows: int) -> int:
    """``--workers``, or the default for ``n_rows`` rows; refuses several workers under torchrun."""
    from robust_mix.parallel import default_workers

    if args.workers is None:
        return default_workers(n_rows)
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1 and env_int("WORLD_SIZE", 1) > 1:
        raise ValueError(f"--workers {args.workers} under torchrun: its ranks already shard each row; use --workers 1")
    return args.workers


def _init_distributed(args: argparse.Namespace) -> int:
    """Join the torchrun process group when there is one (:func:`robust_mix.distributed.init_distributed`,
    on ``--device`` or the default device); returns this rank. The other ranks log warnings only (as ``train``'s
    do): rank 0's bars or INFO lines tell the run once, not once per process."""
    rank = init_distributed(args.device or default_device()).rank
    if rank != 0:
        logging.getLogger("robust_mix").setLevel(logging.WARNING)
    return rank


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--dataset", help="default: the entry's data set")
    p.add_argument("--threat-model", choices=THREAT_MODELS, help="default: the entry's")
    p.add_argument("--eps", type=EPS, help=EPS_HELP + " (default: the entry's)")
    p.add_argument("--n-examples", type=POSITIVE_INT, help="default: the leaderboard's count")
    p.add_argument("--clean-examples", type=POSITIVE_INT,
                   help="also measure clean accuracy on the first N images (forward passes only; e.g. 10000, "
                        "the whole test set, beside the attacked subset)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=500, help="images per forward pass (default 500)")
    p.add_argument("--chunk-size", type=POSITIVE_INT, help="examples per resumable unit (default: batch size)")
    p.add_argument("--seed", type=SEED, default=0, help=SEED_HELP)
    p.add_argument("--device", help="default: cuda:<LOCAL_RANK> if available, else cpu")
    p.add_argument("--data-dir", type=PATH, help=DATA_DIR_HELP)
    p.add_argument("--model-dir", type=PATH, help="RobustBench checkpoint folder")
    p.add_argument("--preprocessing", help="ImageNet preprocessing (default: the entry's, else Res256Crop224)")
    p.add_argument("--state-dir", type=PATH, help="resumable progress (default: OUT/state)")
    p.add_argument("--out", type=PATH, default="benchmark_out", help="output folder")
    p.add_argument("--n-iter", type=POSITIVE_INT, help="override APGD/FAB iterations (not leaderboard-grade)")
    p.add_argument("--n-queries", type=POSITIVE_INT, help="override Square queries (not leaderboard-grade)")
    p.add_argument("--n-target-classes", type=POSITIVE_INT,
                   help="override target classes (not leaderboard-grade)")
    add_progress_argument(p)


def _options(args: argparse.Namespace) -> AttackOptions:
    return AttackOptions(n_iter=args.n_iter, n_queries=args.n_queries, n_target_classes=args.n_target_classes)


def _benchmark_kwargs(args: argparse.Namespace) -> dict:
    return dict(dataset=args.dataset, threat_model=args.threat_model, eps=args.eps, n_examples=args.n_examples,
                batch_size=args.batch_size, chunk_size=args.chunk_size, seed=args.seed, device=args.device,
                data_dir=args.data_dir, preprocessing=args.preprocessing, options=_options(args),
                clean_examples=args.clean_examples)


def _benchmark_args(p: argparse.ArgumentParser) -> None:
    _common_args(p)
    p.add_argument("--attack", default="standard", help="standard, rand, adaptive, or a list like apgd-ce,apgd-t")
    p.add_argument("--adaptive", action="store_true", help="add the adaptive attack suite")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model's networks first (minutes on a CPU; pays off on long runs; "
                        "may change the last bits, see robust_mix.fastpath.compile_model)")
    add_channels_last_argument(p)


@command("benchmark", "evaluate a model with the leaderboard's AutoAttack (resumable, torchrun-shardable)",
         _benchmark_args, resume="finished chunks are saved under {out}/state; rerun the same command to resume",
         computes=True)
def _benchmark(args: argparse.Namespace) -> int:
    from robust_mix.report import markdown_table, write_report

    out = check_writable_dir(args.out)
    rank = _init_distributed(args)
    if rank == 0:  # the ranks of one job share the folder
        hold_output_folder(out)
    model = model_factory(args, args.name)()
    if args.compile:
        _compile(model, args)
    progress = TqdmProgress(enabled=rank == 0 and progress_requested(args))
    try:
        result = benchmark(model, attack=args.attack, adaptive=args.adaptive,
                           state_dir=args.state_dir or out / "state", progress=progress,
                           **_benchmark_kwargs(args))
    finally:
        progress.close()
        finish_distributed()
    if rank == 0:
        result = dataclasses.replace(result, command=args.command_line)
        paths = write_report(out, result, getattr(model, "config", None))
        print(markdown_table(result, getattr(model, "config", None)))
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _compile(model: nn.Module, args: argparse.Namespace) -> None:
    from robust_mix.data import load_dataset, preprocessing_for
    from robust_mix.fastpath import compile_model

    config = getattr(model, "config", None)
    dataset = args.dataset or getattr(config, "dataset", None)
    if dataset is None or dataset == "custom":
        raise ValueError("--compile needs the data set to probe the model with: pass --dataset")
    probe, _ = load_dataset(dataset, "test", n_examples=2, data_dir=args.data_dir,
                            preprocessing=preprocessing_for(dataset, args.preprocessing, config))
    device = torch.device(args.device) if args.device else default_device()
    seconds = compile_model(model.to(device), probe.to(device))
    print(f"compiled the model's networks: first forward pass {seconds:.1f} s (compilation included)", flush=True)


def _sweep_args(p: argparse.ArgumentParser) -> None:
    _common_args(p)
    p.add_argument("--alphas", default="0:1:0.1", help="'0,0.5,1' or start:stop:step")
    p.add_argument("--attack", default="standard", help="e.g. apgd-ce,apgd-t for a cheaper sweep")
    p.add_argument("--adaptive", action="store_true", help="add the adaptive attack suite")
    p.add_argument("--no-policy", action="store_true", help="skip the adaptive policy's own point")
    add_channels_last_argument(p)
    add_workers_argument(p)


def _has_policy_point(args: argparse.Namespace) -> bool:
    """Whether the sweep gets an "alpha policy" row: asked for, and the model has an adaptive policy (read from its
    config without building it; a ``module:function`` model may have one, so it keeps the row). A fixed-ratio
    model's row would wait for a worker the whole run."""
    if args.no_policy:
        return False
    config = model_config_of(args.name)
    return config is None or config.policy is not None


@command("sweep", "clean and robust accuracy across mixing ratios, with a plot", _sweep_args,
         resume="finished points and chunks are saved under {out}/state; rerun the same command to resume",
         computes=True)
def _sweep(args: argparse.Namespace) -> int:
    from robust_mix.sweep import parse_alphas, setting_label, sweep, write_sweep

    alphas = parse_alphas(args.alphas)
    out = check_writable_dir(args.out)
    rank = _init_distributed(args)
    if rank == 0:  # the ranks of one job share the folder
        hold_output_folder(out)
    workers = resolve_workers(args, len(alphas) + 1)
    build = model_factory(args, args.name)
    labels = [f"alpha {format_alpha(a)}" for a in alphas] + (["alpha policy"] if _has_policy_point(args) else [])
    try:
        with RowBars(labels, enabled=rank == 0 and progress_requested(args)) as bars:
            points = sweep(build, alphas, include_policy=not args.no_policy, state_dir=args.state_dir or out / "state",
                           attack=args.attack, adaptive=args.adaptive, workers=workers, progress=bars,
                           threads_per_worker=args.threads, **_benchmark_kwargs(args))
    finally:
        finish_distributed()
    if rank == 0:
        # every point's own label: one when they agree (they do unless a point's model differs, e.g. randomized)
        attack = "; ".join(dict.fromkeys(p.label or p.attack for p in points)) or args.attack
        stages = resolve_attack(args.attack, args.adaptive).stages
        paths = write_sweep(points, out, title=args.name,
                            metadata={"model": args.name, "attack": attack, "arguments": vars(args),
                                      "options": _options(args).overrides(stages)})
        for p in points:
            print(f"alpha {format_alpha(p.alpha):>6}: clean {100 * p.clean_accuracy:6.2f}%  "
                  f"robust {100 * p.robust_accuracy:6.2f}%  "
                  f"({interval_heading(INTERVAL_LEVEL)} {percent_interval((p.robust_low, p.robust_high))}, "
                  f"{p.n_examples:,} examples)")
        sizes = sorted({p.n_examples for p in points})
        print(f"{setting_label(points)}, the first {' or '.join(f'{n:,}' for n in sizes)} test images, seed "
              f"{args.seed}; attack: {attack}; wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _submit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="registry name, alias or ModelConfig .json file of the evaluated entry")
    p.add_argument("--report", type=PATH, required=True, help="report.json of a finished benchmark")
    p.add_argument("--out", type=PATH, required=True, help="folder for the submission files")
    p.add_argument("--allow-partial", action="store_true",
                   help="write drafts marked PARTIAL from a report that is not a full leaderboard evaluation "
                        "(other attack, reduced budgets, fewer examples, no config fingerprint)")
    for name in ("link", "authors", "venue", "architecture", "footnote"):
        p.add_argument(f"--{name}", help=f"override the model-info '{name}'")
    p.add_argument("--additional-data", action="store_true", help="the model uses extra training data")


@command("submit", "write RobustBench submission files (model info, claim, model-zoo entry) from a report",
         _submit_args)
def _submit(args: argparse.Namespace) -> int:
    from robust_mix.report import PartialEvaluationError, SubmissionMismatchError, write_submission

    config = model_config_of(args.name)
    if config is None:
        raise ValueError(f"{args.name} names no config (a saved model or a function); submit needs a registry "
                         "name, an alias or a ModelConfig .json file")
    result = BenchmarkResult.from_json(Path(args.report))
    overrides = {k: getattr(args, k) for k in ("link", "authors", "venue", "architecture", "footnote")}
    overrides["additional_data"] = True if args.additional_data else None
    try:
        paths = write_submission(args.out, result, config, allow_partial=args.allow_partial, **overrides)
    except (PartialEvaluationError, SubmissionMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0
