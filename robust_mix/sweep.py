"""The accuracy-robustness trade-off: clean and robust accuracy across mixing ratios.

Each point sets ``model.alpha`` (0 = standard base only, 1 = robust base only) and runs the
benchmark harness; an adaptive model's own policy is one more point (``alpha = None``). The points
are independent benchmark rows (:mod:`robust_mix.rows`): with ``workers > 1`` they run side by side.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import dataclasses
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from torch import nn

from robust_mix.formatting import evaluation_label, format_alpha, format_eps, interval_heading
from robust_mix.io import atomic_write_bytes, atomic_write_files, figure_png, new_figure
from robust_mix.results import INTERVAL_LEVEL, BenchmarkResult
from robust_mix.rows import BenchmarkRow, ModelFactory, RowProgress, run_rows
from robust_mix.validate import (InvalidInputError, InvalidInputTypeError, check_alpha, check_bool, check_eps,
                                 check_input_file, check_model, check_threat_model, check_wall_seconds,
                                 check_writable_dir, optional_positive_int, parse_json, parse_number, positive_int)

logger = logging.getLogger(__name__)

POLICY = "policy"
#: Most ratios one sweep runs: each is a full benchmark, so a longer grid is a typo (a step like 1e-9).
MAX_ALPHAS = 1001
#: Relative slack when counting the ratios of a range: ``(1 - 0) / 0.1`` is 9.999999999999998 in floats.
_RANGE_SLACK = 1e-9


@dataclass
class SweepPoint:
    """One mixing ratio (``alpha`` is ``"policy"`` for the adaptive policy) and its accuracies (fractions).

    ``attack`` is the attack argument; ``label`` says what ran (:func:`robust_mix.formatting.evaluation_label`).
    ``robust_low``/``robust_high``: the 95 % Clopper-Pearson interval of the robust accuracy on the
    ``n_examples`` attacked examples (``None`` in sweeps written before they were recorded).
    ``dataset``, ``threat_model``, ``eps``: the evaluation setting (``None`` in sweeps written before they were
    recorded).
    """

    alpha: Union[float, str]
    clean_accuracy: float
    robust_accuracy: float
    attack: str
    n_examples: int
    wall_time_s: float
    label: str = ""
    robust_low: Optional[float] = None
    robust_high: Optional[float] = None
    dataset: Optional[str] = None
    threat_model: Optional[str] = None
    eps: Optional[float] = None


def parse_alphas(text: str) -> list[float]:
    """``"0,0.5,1"`` or ``"0:1:0.25"`` (start:stop:step, inclusive) -> sorted ratios in ``[0, 1]``, each once (a
    repeated ratio, e.g. ``"0.1,1e-1"``, is refused as :func:`sweep` refuses it).

    A range never goes beyond ``stop``: ``"0.1:0.8:0.2"`` is ``[0.1, 0.3, 0.5, 0.7]``.

    Raises:
        robust_mix.validate.InvalidInputError: naming ``text``.
    """
    what = f"alphas {text!r}"
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise InvalidInputError("a range is start:stop:step (three numbers, e.g. 0:1:0.1)")
            start, stop, step = (parse_number("alpha", v) for v in parts)
            if step <= 0 or stop < start:
                raise InvalidInputError("a range start:stop:step needs start <= stop and a positive step")
            # floor, not round: a step that does not divide the range stops at the last ratio <= stop (the
            # slack absorbs float error in e.g. (1 - 0) / 0.1), never one beyond it
            count = math.floor((stop - start) / step + _RANGE_SLACK) + 1
            if count > MAX_ALPHAS:
                raise InvalidInputError(f"a range of step {step:g} gives {count} ratios, more than the {MAX_ALPHAS} "
                                        "a sweep runs (each one a full benchmark); use a larger step")
            values = [round(start + i * step, 10) for i in range(count)]
        else:
            items = [v.strip() for v in text.split(",") if v.strip()]
            if POLICY in items:
                raise InvalidInputError(f"{POLICY!r} is not a ratio: the adaptive policy's own point is added for a "
                                        "model that has one (robust-mix sweep --no-policy leaves it out)")
            values = [parse_number("alpha", v) for v in items]
        if not values:
            raise InvalidInputError("give ratios like '0,0.5,1' or a range like '0:1:0.1'")
        values = [check_alpha(value, "every alpha") for value in values]
        repeated = sorted({a for a in values if values.count(a) > 1})
        if repeated:  # sweep() refuses them too: each ratio is one point, run once
            raise InvalidInputError(f"ratios repeat {[format_alpha(a) for a in repeated]}; list each ratio once")
    except InvalidInputError as err:
        raise InvalidInputError(f"{what}: {err}") from None
    return sorted(values)


def sweep(model: Union[nn.Module, ModelFactory], alphas: Sequence[float], *, include_policy: bool = True,
          state_dir: Union[str, Path, None] = None, workers: int = 1, progress: Optional[RowProgress] = None,
          threads_per_worker: Optional[int] = None, **benchmark_kwargs: Any) -> list[SweepPoint]:
    """Benchmark ``model`` at each fixed ``alpha`` (and at its adaptive policy, if it has one).

    Args:
        model: the mixed model, or a function that builds it; with ``workers > 1`` it must be such a
            function, picklable (e.g. ``functools.partial(robust_mix.load_model, NAME)``): each
            worker process builds its own copy.
        alphas: the fixed ratios.
        include_policy: add the adaptive policy's own point (``alpha = "policy"``), if there is one.
        state_dir: each point resumes from ``state_dir/alpha_<a>``.
        workers: points run side by side in this many processes (:func:`robust_mix.rows.run_rows`);
            the points are the same for any number.
        progress: receives each point's progress (point ``i`` in the order returned).
        threads_per_worker: explicit threads per worker (default: the thread policy).
        benchmark_kwargs: go to :func:`robust_mix.benchmark` (dataset, eps, n_examples, attack...).

    A model instance gets its own ratio back afterwards.

    Raises:
        robust_mix.validate.InvalidInputTypeError: ``model`` is neither a model nor a function (a registry name:
            build it with ``robust_mix.load_model``), ``alphas`` is not a list of ratios (one number, a string),
            or ``workers`` / ``include_policy`` has the wrong type; before any run.
        robust_mix.validate.InvalidInputError: a ratio outside ``[0, 1]``, repeated ratios, or none.
    """
    if not callable(model) or isinstance(model, str):
        check_model(model)  # refused, saying how to build one
    try:  # a string iterates over its characters, a number or a 0-d tensor not at all
        given = list(alphas) if not isinstance(alphas, (str, bytes)) else None
    except TypeError:
        given = None
    if given is None:
        hint = (f"; parse text with robust_mix.sweep.parse_alphas({alphas!r})" if isinstance(alphas, str)
                else f"; one ratio is a list of one: [{alphas!r}]")
        raise InvalidInputTypeError(f"alphas must be a list of ratios in [0, 1] such as [0, 0.5, 1], got {alphas!r} "
                                    f"({type(alphas).__name__}){hint}")
    workers = positive_int("workers", workers)
    include_policy = check_bool("include_policy", include_policy)
    threads_per_worker = optional_positive_int("threads_per_worker", threads_per_worker)
    built = not isinstance(model, nn.Module)
    instance = None if built else model
    if instance is None:
        if workers > 1:
            probe = model()
        else:
            instance = probe = model()
    else:
        if workers > 1:
            raise ValueError("sweep with workers > 1 needs a function that builds the model (each worker builds "
                             "its own), e.g. functools.partial(robust_mix.load_model, NAME), not a model instance")
        probe = instance
    check_model(probe, "the model the function built" if built else "model")
    if not hasattr(probe, "alpha"):
        raise InvalidInputTypeError(f"sweep needs a MixedClassifier (a model with an `alpha` to vary), got "
                                    f"{type(probe).__name__}; a plain classifier has no ratio: benchmark it instead")
    policy = getattr(probe, "policy", None)
    settings: list[Union[float, str]] = [_fixed_ratio(a, policy is not None) for a in given]
    repeated = sorted({a for a in settings if settings.count(a) > 1})
    if repeated:  # each point owns state_dir/alpha_<a>: a repeat would run twice, side by side in one folder
        raise InvalidInputError(f"sweep alphas repeat {[format_alpha(a) for a in repeated]} in {given!r}; "
                                "list each ratio once")
    if include_policy and policy is not None:
        settings.append(POLICY)
    del probe
    if not settings:
        raise InvalidInputError("sweep got no alphas (and the model has no adaptive policy to add): pass "
                                "ratios such as [0, 0.5, 1]")
    if state_dir is not None:
        state_dir = check_writable_dir(state_dir, "state folder")
    build: ModelFactory = model if instance is None else functools.partial(_same, instance)
    rows = []
    for a in settings:
        sub = None if state_dir is None else state_dir / f"alpha_{a}"
        label = f"alpha {format_alpha(a)}"
        rows.append(BenchmarkRow(label, functools.partial(_at_alpha, build, a), {**benchmark_kwargs, "state_dir": sub}))
    original = instance.alpha if instance is not None else None
    try:
        results: list[BenchmarkResult] = run_rows(rows, workers=workers, progress=progress,
                                                  threads_per_worker=threads_per_worker)
    finally:
        if instance is not None:
            instance.alpha = original
    points = []
    for alpha, result in zip(settings, results):
        low, high = result.robust_interval()
        points.append(SweepPoint(alpha, result.clean_accuracy, result.robust_accuracy, result.attack,
                                 result.n_examples, result.wall_time_s, evaluation_label(result), low, high,
                                 result.dataset, result.threat_model, result.eps))
        logger.info("alpha %s: clean %.2f%%, robust %.2f%%", alpha, 100 * result.clean_accuracy,
                    100 * result.robust_accuracy)
    return points


def _fixed_ratio(alpha: Any, has_policy: bool) -> float:
    """One of :func:`sweep`'s ``alphas``: a fixed ratio in ``[0, 1]``; the adaptive policy is no such ratio (it is
    ``include_policy``'s point)."""
    try:
        return check_alpha(alpha, "every sweep alpha")
    except InvalidInputTypeError:
        if not (isinstance(alpha, nn.Module) or (isinstance(alpha, str) and alpha.strip() == POLICY)):
            raise
    where = ("include_policy=True (the default) adds its point" if has_policy
             else "this model has a fixed ratio, so it has no policy point")
    shown = f"a {type(alpha).__name__}" if isinstance(alpha, nn.Module) else repr(alpha)
    raise InvalidInputTypeError(f"sweep alphas are fixed ratios in [0, 1], got {shown}: the adaptive policy is not "
                                f"one of them; {where}") from None


def _same(model: nn.Module) -> nn.Module:
    return model


def _at_alpha(build: ModelFactory, alpha: Union[float, str]) -> nn.Module:
    """The model from ``build`` with its ratio set to ``alpha`` (``"policy"``: the adaptive policy)."""
    model = build()
    model.alpha = None if alpha == POLICY else alpha
    return model


def recovered_gap(clean: float, standard_clean: float, robust_clean: float) -> Optional[float]:
    """Share of the clean-accuracy gap between the robust and the standard base a model wins back,
    ``(clean - robust_clean) / (standard_clean - robust_clean)`` (the paper's claim asks for 0.6);
    ``None`` when the standard base is not more accurate."""
    gap = standard_clean - robust_clean
    return (clean - robust_clean) / gap if gap > 0 else None


def kept_robustness(robust: float, robust_base_robust: float) -> Optional[float]:
    """Share of the robust base's robust accuracy a model keeps, ``robust / robust_base_robust`` (the claim
    asks for 0.95); ``None`` when the robust base has none."""
    return robust / robust_base_robust if robust_base_robust > 0 else None


def setting_label(points: Sequence[SweepPoint]) -> str:
    """The evaluation setting of ``points``, e.g. ``"cifar10, Linf, eps 8/255"`` (every distinct one, sorted, joined
    by ``"; "``), or that it was not recorded (points from a sweep written before it was)."""
    settings = sorted({(p.dataset, p.threat_model, p.eps) for p in points if p.dataset is not None}, key=str)
    if not settings:
        return "data set, threat model and eps not recorded"
    return "; ".join(f"{dataset}, {threat or 'Linf'}, eps {format_eps(eps, threat)}"
                     for dataset, threat, eps in settings)


def plot_sweep(points: Sequence[SweepPoint], path: Union[str, Path], title: str = "") -> Path:
    """A PNG of robust vs clean accuracy (percent) along the sweep, joined by increasing alpha; base models (alpha
    0 and 1) marked, and the robust accuracy's 95 % interval (Clopper-Pearson, on the attacked examples) drawn as a
    vertical bar at every point that recorded one.

    The title states ``title`` (default: "accuracy-robustness trade-off"), the data set, threat model and eps
    (:func:`setting_label`) and the attack, so that the saved image says what it shows."""
    atomic_write_bytes(path, _sweep_png(points, title))
    return Path(path)


def _sweep_png(points: Sequence[SweepPoint], title: str) -> bytes:
    """The PNG bytes of :func:`plot_sweep`."""
    # the line runs along the ratio, whatever order the points come in (sweep keeps the caller's order)
    fixed = sorted((p for p in points if p.alpha != POLICY), key=lambda p: float(p.alpha))
    fig = new_figure(figsize=(5.5, 4.2), dpi=120)
    ax = fig.subplots()
    ax.plot([100 * p.clean_accuracy for p in fixed], [100 * p.robust_accuracy for p in fixed], "o-",
            color="tab:blue", label="fixed alpha")
    for p in fixed:
        ax.annotate(format_alpha(p.alpha), (100 * p.clean_accuracy, 100 * p.robust_accuracy),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    markers = {0.0: ("s", "tab:orange", "standard base (alpha 0)"), 1.0: ("D", "tab:green", "robust base (alpha 1)")}
    for p in fixed:
        if p.alpha in markers:
            marker, color, label = markers[p.alpha]
            ax.scatter([100 * p.clean_accuracy], [100 * p.robust_accuracy], marker=marker, s=90, color=color,
                       zorder=3, label=label)
    for p in points:
        if p.alpha == POLICY:
            ax.scatter([100 * p.clean_accuracy], [100 * p.robust_accuracy], marker="*", s=180, color="tab:red",
                       zorder=3, label="adaptive policy")
    bounded = [p for p in points if p.robust_low is not None and p.robust_high is not None]
    if bounded:  # the attacked examples are a sample: the robust accuracy's interval, as the tables give it
        robust = [100 * p.robust_accuracy for p in bounded]
        ax.errorbar([100 * p.clean_accuracy for p in bounded], robust, fmt="none", ecolor="0.45", elinewidth=1,
                    capsize=3, zorder=2, label=f"robust accuracy, {interval_heading(INTERVAL_LEVEL)}",
                    yerr=[[max(0.0, y - 100 * p.robust_low) for y, p in zip(robust, bounded)],
                          [max(0.0, 100 * p.robust_high - y) for y, p in zip(robust, bounded)]])
    attacks = sorted({p.label or p.attack for p in points})
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title(f"{title or 'accuracy-robustness trade-off'}\n{textwrap.fill(setting_label(points), 80)}\n"
                 f"{textwrap.fill('; '.join(attacks), 80)}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)


def write_sweep(points: Sequence[SweepPoint], out_dir: Union[str, Path], *, title: str = "",
                metadata: Optional[dict[str, Any]] = None) -> dict[str, Path]:
    """Write ``sweep.csv``, ``sweep.json`` (points plus ``metadata``, e.g. the attack) and ``sweep.png`` as one set
    (:func:`robust_mix.io.atomic_write_files`: a failed or interrupted write leaves the folder's earlier three whole).

    Raises:
        robust_mix.validate.InvalidInputError: no points (a sweep.json that :func:`read_sweep` refuses), or an
            output folder that cannot be written.
    """
    if not points:
        raise InvalidInputError("write_sweep got no points: a sweep file holds at least one (robust_mix.sweep.sweep "
                                "returns them)")
    out = check_writable_dir(out_dir)
    rows = [asdict(p) for p in points]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["alpha"])
    writer.writeheader()
    writer.writerows(rows)
    written = atomic_write_files(out, {  # one set: an interrupted write leaves the earlier three whole
        "sweep.csv": text.getvalue(),
        "sweep.json": json.dumps({"metadata": metadata or {}, "points": rows}, indent=2) + "\n",
        "sweep.png": _sweep_png(points, title)})
    return {"csv": written["sweep.csv"], "json": written["sweep.json"], "png": written["sweep.png"]}


def read_sweep(path: Union[str, Path]) -> tuple[list[SweepPoint], dict[str, Any]]:
    """The points and metadata of a ``sweep.json`` written by :func:`write_sweep`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder (its ``sweep.json`` is named when it has one), not JSON, or not a sweep (a point
            lacks a field, an accuracy is not a fraction in ``[0, 1]``, or a robust accuracy exceeds its clean one).
    """
    path = check_input_file(path, "sweep file", inside="sweep.json")
    try:
        data = parse_json(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); it may be truncated: rerun robust-mix sweep") from err
    if not isinstance(data, dict) or not isinstance(data.get("points"), list) or not data["points"]:
        raise ValueError(f"{path} is not a sweep: expected an object with a non-empty 'points' list "
                         "(written by robust-mix sweep)")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: 'metadata' must be an object, got {type(metadata).__name__}")
    fields = [f.name for f in dataclasses.fields(SweepPoint)]
    required = [f.name for f in dataclasses.fields(SweepPoint) if f.default is dataclasses.MISSING]
    points = []
    for i, row in enumerate(data["points"]):
        if not isinstance(row, dict) or not set(required) <= set(row) <= set(fields):
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"{path}: point {i} must have exactly the fields {fields} ({required} required), "
                             f"got {got}")
        for key in ("clean_accuracy", "robust_accuracy", "robust_low", "robust_high"):
            value = row.get(key)
            if value is None and key in ("robust_low", "robust_high"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{path}: point {i} {key} must be a fraction in [0, 1], got {value!r}")
        if row.get("robust_low") is not None and row.get("robust_high") is not None and not (
                row["robust_low"] <= row["robust_accuracy"] <= row["robust_high"]):
            raise ValueError(f"{path}: point {i} robust_accuracy {row['robust_accuracy']!r} lies outside its interval "
                             f"[{row['robust_low']!r}, {row['robust_high']!r}]; the file was edited or corrupted")
        if row["robust_accuracy"] > row["clean_accuracy"] + 1e-9:
            raise ValueError(f"{path}: point {i} robust_accuracy {row['robust_accuracy']!r} exceeds its clean_accuracy "
                             f"{row['clean_accuracy']!r}, but an example counts as robust only if it is classified "
                             "correctly: the file was edited or corrupted (or the two were swapped); rerun robust-mix "
                             "sweep")
        _check_point_fields(path, i, row)
        if row["alpha"] != POLICY and (isinstance(row["alpha"], bool) or not isinstance(row["alpha"], (int, float))
                                       or not 0 <= row["alpha"] <= 1):
            raise ValueError(f"{path}: point {i} alpha must be in [0, 1] or {POLICY!r}, got {row['alpha']!r}")
        if any(p.alpha == row["alpha"] for p in points):
            raise ValueError(f"{path}: point {i} repeats alpha {row['alpha']!r} of an earlier point, so the file says "
                             "two things of one ratio; the file was edited or corrupted: rerun robust-mix sweep")
        points.append(SweepPoint(**row))
    return points, metadata


def _check_point_fields(path: Path, i: int, row: dict[str, Any]) -> None:
    """The fields of a ``sweep.json`` point besides alpha, as :func:`write_sweep` writes them, checked with the rules
    of every reader (:mod:`robust_mix.validate`): a string ``n_examples`` or a NaN time passed the reader and broke
    the leaderboard page that printed them; a threat model robust_mix does not run, an eps of 0 or of 8 under Linf
    and a wall time of 1e300 s were shown as read."""
    where = f"{path}: point {i}"
    try:
        n = row["n_examples"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInputError(f"{where} n_examples must be a positive integer, got {n!r}")
        check_wall_seconds(f"{where} wall_time_s", row["wall_time_s"])
        for key in ("attack", "label"):
            if not isinstance(row.get(key, ""), str):
                raise InvalidInputTypeError(f"{where} {key} must be a string, got {row[key]!r}")
        if row.get("dataset") is not None and not isinstance(row["dataset"], str):
            raise InvalidInputTypeError(f"{where} dataset must be a string or null, got {row['dataset']!r}")
        threat_model = row.get("threat_model")
        if threat_model is not None:
            check_threat_model(threat_model, f"{where} threat_model")
        if isinstance(row.get("eps"), str):
            raise InvalidInputTypeError(f"{where} eps must be a finite number (the file holds budgets as numbers), "
                                        f"got {row['eps']!r}")
        if row.get("eps") is not None:
            check_eps(row["eps"], threat_model or "L2", f"{where} eps")
    except InvalidInputError as err:
        raise type(err)(f"{err}; the file was edited or corrupted: rerun robust-mix sweep") from None
