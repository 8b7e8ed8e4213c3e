"""How robust_mix writes numbers and names what ran: the one place for eps, percentages and the
attack label shown in reports, model info, cards, the Hub model-index, CLI tables and plots.

"AutoAttack" names only the full standard suite (APGD-CE, APGD-T, FAB-T, Square) at the
leaderboard's budgets. Anything else is named by its stages and budgets, e.g.
``"APGD-CE (100 iter)"``, and an evaluation that differs from the leaderboard's protocol (other
stages, reduced budgets, fewer examples) is marked partial, with the reasons.

>>> format_eps(8 / 255), percent(0.8521), percent_interval((0.5812, 0.6590))
('8/255', '85.21', '58.1–65.9')
>>> attack_label(result)        # a BenchmarkResult or a report summary
'APGD-CE (100 iter)'
"""
from __future__ import annotations

import html
import math
import re
from typing import Any, Mapping, Optional, Protocol, Sequence, Union

from robust_mix.protocol import (ADAPTIVE_STAGES, DEFAULT_ADAPTIVE_WEIGHT, SETTINGS_GROUP, STANDARD_STAGES,
                                 required_examples)

#: How each stage is written (the field's names).
STAGE_NAMES = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab": "FAB", "fab-t": "FAB-T",
               "square": "Square", "adaptive-apgd-ce": "adaptive APGD-CE", "adaptive-apgd-t": "adaptive APGD-T"}
AUTOATTACK = "AutoAttack"
#: Float error a share is allowed beside its target: 0.6 computed as (0.87 - 0.8) / (0.9 - 0.8) - 1e-16 meets 60 %.
TARGET_SLACK = 1e-9
#: Stages whose settings' ``n_restarts`` is their own (the targeted ones restart once per target class).
_RESTARTED = ("apgd-ce", "apgd-dlr", "adaptive-apgd-ce")
#: Stages that average gradients over ``eot_iter`` samples (EOT 20 under attack="rand").
_EOT = ("apgd-ce", "apgd-dlr", "adaptive-apgd-ce", "adaptive-apgd-t")


class Evaluation(Protocol):
    """What a label is made from: a :class:`~robust_mix.benchmark.BenchmarkResult` or a card's
    :class:`~robust_mix.cards.ReportSummary`. ``options`` (budget overrides) and
    ``attack_settings`` are ``None`` when the report did not record them."""

    stages: Sequence[str]
    attack_settings: Optional[Mapping[str, Mapping[str, Any]]]
    options: Optional[Mapping[str, Any]]
    n_examples: int
    dataset: str


# -- numbers --------------------------------------------------------------------------------------
def format_eps(eps: Optional[float], threat_model: Optional[str] = None) -> str:
    """``8/255`` when ``eps`` is a whole number of 255ths (as the field writes Linf budgets), else the number.

    Under ``"L2"`` and ``"L1"`` the budget is a distance, written as a number as RobustBench writes it
    (``0.5``, ``1``, ``12``; never ``255/255`` or ``3060/255``); ``None`` (unknown) is read as Linf. A budget
    below half a 255th is never rounded onto ``0/255`` (``1e-09``, not a budget of zero).
    """
    if eps is None:
        return "n/a"
    steps = eps * 255
    if threat_model in (None, "Linf") and round(steps) >= 1 and abs(steps - round(steps)) < 1e-6:
        return f"{round(steps)}/255"
    return f"{eps:g}"


def format_alpha(alpha: Union[float, str]) -> str:
    """A mixing ratio as labels, tables and plots write it: the shortest text that reads back as the same float
    (``0.1``, ``0.10000000001``; ``1`` for ``1.0``), so two ratios that differ are never written alike (their
    sweep state folders, ``alpha_<ratio>``, differ too); a named setting (``"policy"``, ``"applied"``) as it is."""
    if isinstance(alpha, str):
        return alpha
    text = repr(float(alpha))
    return text[:-2] if text.endswith(".0") else text


def _rounded_percent(fraction: float, decimals: int) -> float:
    """``100 * fraction`` rounded to ``decimals``, but never onto ``0`` or ``100`` unless the fraction is exactly
    ``0`` or ``1``: 19,999 of 20,000 correct (99.995 %) is shown as 99.99, not as 100, and 1 of 25,000
    (0.004 %) as 0.01, not as 0. ``-0.0`` becomes ``0.0``."""
    value = round(100.0 * fraction, decimals) + 0.0
    step = 10.0 ** -decimals
    if 0 < fraction < 1:
        value = min(max(value, step), round(100.0 - step, decimals))
    return value


def percent(fraction: Optional[float], decimals: int = 2) -> str:
    """RobustBench's accuracy format: a percentage with two decimals (``0.8521 -> "85.21"``; ``None -> "-"``;
    ``decimals`` for prose, e.g. ``1``).

    Only ``1`` is written ``"100.00"`` and only ``0`` is written ``"0.00"`` (see :func:`_rounded_percent`)."""
    return "-" if fraction is None else f"{_rounded_percent(fraction, decimals):.{decimals}f}"


def percent_beside_target(fraction: float, target: float, decimals: int = 1, *, at_most: bool = False) -> str:
    """``fraction`` as a percentage with ``decimals`` decimals, or more where rounding would carry a value that
    misses ``target`` onto it or past it: beside a target of "at least 95 %", 94.96 % is ``"94.96"``, never
    ``"95.0"``; beside "at most" (``at_most=True``) 1.004 points is ``"1.004"``, never ``"1.00"``. A value that
    meets its target (within float error, :data:`TARGET_SLACK`, as the checks judge it) keeps ``decimals``
    decimals."""
    misses = fraction > target + TARGET_SLACK if at_most else fraction < target - TARGET_SLACK
    for places in range(decimals, decimals + 3):
        text = f"{100 * fraction:.{places}f}"
        shown = float(text)
        if not misses or (shown > 100 * target if at_most else shown < 100 * target):
            return text
    places = decimals + 3  # still level with the target: cut toward the side the value lies on
    scaled = 100 * fraction * 10 ** places
    return f"{(math.ceil(scaled) if at_most else math.floor(scaled)) / 10 ** places:.{places}f}"


def percent_interval(interval: Sequence[float]) -> str:
    """A confidence interval ``(low, high)`` of an accuracy (fractions) as percentages with one decimal,
    ``"58.1–65.9"``: how every table writes the interval beside a robust accuracy measured on a subset.

    An end inside ``(0, 1)`` is never written as ``0.0`` or ``100.0``: the interval of 0 of 10,000 images
    is ``"0.0–0.1"``, not the single point ``"0.0–0.0"``."""
    low, high = interval
    return f"{_rounded_percent(low, 1):.1f}–{_rounded_percent(high, 1):.1f}"


def interval_heading(level: float) -> str:
    """The column heading of :func:`percent_interval` values: ``"95 % interval"`` (``0.9999999`` is
    ``"99.99999 % interval"``, never rounded up to 100)."""
    return f"{f'{100 * level:.8f}'.rstrip('0').rstrip('.')} % interval"


def percent_value(fraction: float) -> float:
    """The percentage as a number with two decimals (for the Hub's ``model-index``), rounded as :func:`percent`."""
    return _rounded_percent(fraction, 2)


# -- what ran ------------------------------------------------------------------------------------------
def _budget(stage: str, settings: Optional[Mapping[str, Mapping[str, Any]]]) -> str:
    values = (settings or {}).get(SETTINGS_GROUP.get(stage, stage))
    if not values:
        return ""
    parts = []
    if "n_queries" in values and stage == "square":
        parts.append(f"{values['n_queries']} queries")
    elif "n_iter" in values:
        parts.append(f"{values['n_iter']} iter")
    if stage in _RESTARTED and values.get("n_restarts", 1) > 1:
        parts.append(f"{values['n_restarts']} restarts")
    if stage in ("apgd-t", "fab-t", "adaptive-apgd-t") and "n_target_classes" in values:
        parts.append(f"{values['n_target_classes']} targets")
    if stage in _EOT and values.get("eot_iter", 1) > 1:
        parts.append(f"EOT {values['eot_iter']}")
    if stage in ADAPTIVE_STAGES and values.get("bce_weight", DEFAULT_ADAPTIVE_WEIGHT) != DEFAULT_ADAPTIVE_WEIGHT:
        parts.append(f"BCE weight {values['bce_weight']:g}")
    return f" ({', '.join(parts)})" if parts else ""


def stage_label(stage: str, settings: Optional[Mapping[str, Mapping[str, Any]]] = None) -> str:
    """One stage with its budget, e.g. ``"APGD-T (100 iter, 9 targets)"``."""
    return STAGE_NAMES.get(stage, stage) + _budget(stage, settings)


def is_standard_autoattack(run: Evaluation) -> bool:
    """True when the AutoAttack suite is exactly the standard one and no budget was reduced."""
    attack_stages = [s for s in run.stages if s not in ADAPTIVE_STAGES]
    return attack_stages == list(STANDARD_STAGES) and run.options is not None and not run.options


def attack_label(run: Evaluation) -> str:
    """What ran: ``"AutoAttack"`` for the full standard suite, else the stages with their budgets;
    an adaptive suite is named after it (``"AutoAttack + adaptive APGD-CE (100 iter) + ..."``)."""
    adaptive = [stage_label(s, run.attack_settings) for s in run.stages if s in ADAPTIVE_STAGES]
    if is_standard_autoattack(run):
        return " + ".join([AUTOATTACK, *adaptive])
    return " + ".join(stage_label(s, run.attack_settings) for s in run.stages) or "no attack"


def partial_reasons(run: Evaluation, *, short: bool = False) -> list[str]:
    """Why ``run`` is not a leaderboard evaluation (empty when it is one): the one rule for reports, model info,
    submissions and the leaderboard site. ``short=True`` words each reason for a table cell (the site's caveats)."""
    reasons = []
    attack_stages = [s for s in run.stages if s not in ADAPTIVE_STAGES]
    if attack_stages != list(STANDARD_STAGES):
        reasons.append(f"attack {run.attack}, not standard AutoAttack" if short else
                       f"not the standard AutoAttack suite ({', '.join(STAGE_NAMES[s] for s in STANDARD_STAGES)})")
    if run.options is None:
        reasons.append("the report does not record the attack budgets")
    elif run.options:
        reasons.append("attack budgets changed from the protocol's ("
                       + ", ".join(f"{k}={v}" for k, v in run.options.items()) + ")")
    needed = required_examples(run.dataset)
    if needed is None:
        reasons.append(f"{run.n_examples:,} examples; no leaderboard size known for {run.dataset}" if short else
                       f"data set {run.dataset!r} has no leaderboard")
    elif run.n_examples < needed:
        reasons.append(f"partial: {run.n_examples:,} of {needed:,} examples" if short else
                       f"{run.n_examples:,} of the leaderboard's {needed:,} test examples")
    if needed is not None and getattr(run, "images_given", False):
        reasons.append(f"images passed to benchmark(), not {run.dataset}'s test split"
                       + ("" if short else " loaded by the harness"))
    if getattr(run, "randomized", False) and not str(getattr(run, "attack", "")).startswith("rand"):
        reasons.append("randomized model: one draw, attacked deterministically" if short else
                       "the model is randomized (its scores changed between two passes on the same images), and "
                       "a deterministic attack overstates its robustness: evaluate it with attack='rand' (EOT)")
    return reasons


def randomness_note(run: Evaluation) -> Optional[str]:
    """What a report says about a randomized model (``run.randomized``): its numbers are one draw, which a rerun
    does not reproduce; ``None`` for a deterministic one."""
    if not getattr(run, "randomized", False):
        return None
    return ("Randomized model: its scores changed between two passes on the same images, so its clean and robust "
            "accuracy are one draw of a random model, and a rerun gives other numbers.")


def evaluation_label(run: Evaluation) -> str:
    """:func:`attack_label`, followed by ``", partial: <reasons>"`` when the evaluation is partial."""
    reasons = partial_reasons(run)
    label = attack_label(run)
    return f"{label}, partial: {'; '.join(reasons)}" if reasons else label


# -- Markdown ------------------------------------------------------------------------------------------
class Markdown(str):
    """Text already written as Markdown (a code span from :func:`markdown_code`): :func:`markdown_cell` keeps its
    markup and only makes it fit one table cell."""


def markdown_code(text: object) -> Markdown:
    """``text`` as one Markdown code span on one line, fenced by more backticks than it holds in a row (a name
    with a backtick stays one span)."""
    text = " ".join(str(text).splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Markdown(f"{fence}{pad}{text}{pad}{fence}")


def markdown_cell(value: object) -> str:
    """``value`` as the content of one Markdown (GitHub) table cell, read as written: line breaks become spaces and
    ``|`` is escaped (a name such as ``"a|b"`` must not add a column or end the row), and ``&``, ``<``, ``>`` of
    plain text become character references (a name holding ``<script>`` or ``<b>`` is shown, not run as HTML).
    A :class:`Markdown` value (a code span) keeps its markup."""
    text = " ".join(str(value).splitlines())
    if not isinstance(value, Markdown):
        text = html.escape(text, quote=False)
    return text.replace("|", "\\|")


def markdown_row(cells: Sequence[object]) -> str:
    """One Markdown table row of ``cells`` (each through :func:`markdown_cell`)."""
    return "| " + " | ".join(markdown_cell(c) for c in cells) + " |"


def markdown_table(headers: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table: ``headers``, the delimiter row, ``rows`` (every cell through :func:`markdown_cell`)."""
    return "\n".join([markdown_row(headers), "|" + "---|" * len(headers), *(markdown_row(r) for r in rows)])
