"""The evaluation protocol as data: attack stages, named suites, budgets, and the leaderboard's example counts.

An *attack plan* is a set of suites, each an ordered list of stages (``"apgd-ce"``, ``"apgd-t"``,
``"fab-t"``, ``"square"``, ``"adaptive-apgd-ce"``, ...); :func:`resolve_attack` turns the
``attack`` argument of every entry point into one. Nothing here runs an attack
(:mod:`robust_mix.attacks` does), so reports, labels and cards can reason about what ran without
importing any model code.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

from robust_mix.validate import InvalidInputTypeError, check_dataset, check_fields, check_fraction, positive_int

STANDARD_STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
RAND_STAGES = ("apgd-ce", "apgd-dlr")
ADAPTIVE_STAGES = ("adaptive-apgd-ce", "adaptive-apgd-t")
AUTOATTACK_STAGES = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
KNOWN_STAGES = AUTOATTACK_STAGES + ADAPTIVE_STAGES
#: Fewest classes a stage's loss can score (2 where not listed): the DLR loss reads the third-largest score, the
#: targeted DLR loss the fourth; pyautoattack only warns about fewer and then fails mid-run with an ``IndexError``.
MIN_CLASSES: dict[str, int] = {"apgd-dlr": 3, "apgd-t": 4, "adaptive-apgd-t": 4}
#: Named attacks: pyautoattack version (sets the sub-attacks' constants) and stages.
PRESETS = {"standard": ("standard", STANDARD_STAGES), "rand": ("rand", RAND_STAGES),
           "adaptive": ("standard", ADAPTIVE_STAGES)}
#: pyautoattack versions that are no preset of the harness -> what to run instead.
UNRUN_VERSIONS = {
    "plus": "list its stages, attack='apgd-ce,apgd-dlr,fab,square,apgd-t,fab-t', which run with the standard "
            "version's budgets (one restart of APGD-CE and FAB where plus runs five)",
    "custom": "list the stages to run, e.g. attack='apgd-ce,square'",
}
#: Weight ``w`` of ``BCE(gamma, 1)`` in the adaptive objective: the mean of the authors'
#: training-time distribution ``U(0, 0.4)`` (PAPER.md section 3).
DEFAULT_ADAPTIVE_WEIGHT = 0.2


@dataclass
class AttackPlan:
    """What to run: AutoAttack's ``version`` (sets the sub-attacks' constants) and the suites.

    Attributes:
        name: the ``attack`` argument it came from (``"standard"``, ``"rand"``, ``"adaptive"``, a list).
        version: pyautoattack version whose settings the AutoAttack stages use (``"standard"`` or ``"rand"``).
        suites: suite name -> ordered stage names.
    """

    name: str
    version: str
    suites: dict[str, list[str]]

    @property
    def stages(self) -> list[str]:
        """Every stage, in run order."""
        return [s for stages in self.suites.values() for s in stages]


def resolve_attack(attack: Union[str, Sequence[str]], adaptive: bool = False) -> AttackPlan:
    """Turn the ``attack`` argument into an :class:`AttackPlan`.

    ``"standard"``: APGD-CE, APGD-T, FAB-T, Square (AutoAttack's standard version);
    ``"rand"``: APGD-CE, APGD-DLR with EOT (version ``"rand"``); ``"adaptive"``: the adaptive
    APGD-CE and targeted APGD-DLR only; a list or comma-separated string: those stages, with the
    standard version's settings. ``adaptive=True`` adds the adaptive suite to any of them (to a list naming some
    of its stages but not all it is refused: it would run only those).
    """
    if not isinstance(attack, str) and not (isinstance(attack, Sequence) and all(isinstance(s, str) for s in attack)):
        raise InvalidInputTypeError(f"attack must be one of {list(PRESETS)} or a list of stage names like "
                                    f"['apgd-ce', 'apgd-t'], got {attack!r} ({type(attack).__name__})")
    if isinstance(attack, str) and attack.strip() in PRESETS:  # " rand" was read as a list naming a preset
        name = attack.strip()
        version, stages = PRESETS[name]
    else:
        stages = [s.strip() for s in (attack.split(",") if isinstance(attack, str) else attack) if s.strip()]
        unknown = [s for s in stages if s not in KNOWN_STAGES]
        if not stages or unknown:
            raise ValueError(f"{_unknown_stages(attack, unknown)}; use one of {list(PRESETS)} or a comma-separated "
                             f"list of {list(KNOWN_STAGES)}")
        if len(set(stages)) != len(stages):
            raise ValueError(f"attack stages repeat in {attack!r}; list each stage once")
        name, version = ",".join(stages), "standard"
    suites = {"autoattack": [s for s in stages if s not in ADAPTIVE_STAGES],
              "adaptive": [s for s in stages if s in ADAPTIVE_STAGES]}
    if adaptive and not suites["adaptive"]:
        suites["adaptive"], name = list(ADAPTIVE_STAGES), name + "+adaptive"
    elif adaptive and set(suites["adaptive"]) != set(ADAPTIVE_STAGES):
        raise ValueError(f"adaptive=True (--adaptive) adds the adaptive suite {list(ADAPTIVE_STAGES)}, but attack "
                         f"{attack!r} already lists {suites['adaptive']} of it, and only those would run: list every "
                         "adaptive stage, or leave out adaptive=True / --adaptive to run the stages listed")
    return AttackPlan(name, version, {k: v for k, v in suites.items() if v})


def _unknown_stages(attack: Union[str, Sequence[str]], unknown: Sequence[str]) -> str:
    """What is wrong with the stage names of ``attack`` (``unknown``: those that are no stage), with a hint for
    a preset listed among stages and for names in another case or with ``_`` for ``-`` (``"APGD-CE"``)."""
    if not unknown:
        return f"attack {attack!r} names no stage"
    spelled = {n.lower().replace("_", "-"): n for n in (*PRESETS, *KNOWN_STAGES)}
    meant = [spelled[k] for k in (s.lower().replace("_", "-") for s in unknown) if k in spelled]
    presets = [s for s in unknown if s in PRESETS]
    versions = [s for s in unknown if s.strip().lower() in UNRUN_VERSIONS]
    hint = (f" (a preset runs alone, not in a list: {presets[0]!r} is {list(PRESETS[presets[0]][1])}; add the "
            "adaptive suite with adaptive=True / --adaptive)" if presets
            else f" (names are lower case with '-': did you mean {', '.join(map(repr, meant))}?)" if meant
            else f" ({versions[0]!r} is a pyautoattack version the harness does not run: "
                 f"{UNRUN_VERSIONS[versions[0].strip().lower()]})" if versions else "")
    return f"unknown attack stage(s) {list(unknown)}{hint}"


def class_count_problem(stage: str, num_classes: int, n_target_classes: Optional[int] = None) -> Optional[str]:
    """What keeps ``stage`` from running on a model scoring ``num_classes`` classes (``None``: nothing): too few
    classes for its loss (:data:`MIN_CLASSES`), or, for a targeted stage aiming at ``n_target_classes`` classes, more
    targets than the classes besides the true one. Callers add what to do, in their own terms."""
    least = MIN_CLASSES.get(stage, 2)
    if num_classes < least:
        which = "fourth" if least == 4 else "third"
        return (f"the model scores {num_classes} classes, but the {stage} attack needs at least {least} (its "
                f"{'targeted ' if least == 4 else ''}DLR loss reads the {which}-largest score)")
    if n_target_classes is not None and n_target_classes > num_classes - 1:
        return (f"the {stage} attack aims at {n_target_classes} target classes, but the model scores {num_classes} "
                f"classes ({num_classes - 1} besides the true one)")
    return None


#: Fewest iterations an APGD stage with pyautoattack's ``use_largereps`` (L1) can run: it splits them into rounds at
#: 3, 2 and 1 times eps (``ceil`` of 30 % and 30 %, then the rest), and the last round, the only one at the run's eps,
#: needs one.
MIN_LARGEREPS_ITERATIONS = 3


def iteration_problem(stage: str, n_iter: int, use_largereps: bool, norm: str) -> Optional[str]:
    """What keeps the APGD stage ``stage`` from running ``n_iter`` iterations (``None``: nothing): with
    ``use_largereps`` (L1), fewer than :data:`MIN_LARGEREPS_ITERATIONS` failed with ``zeros: Dimension size must be
    non-negative`` (1) or ran no iteration at the run's eps (2). Callers add how to set the budget, in their terms."""
    if use_largereps and n_iter < MIN_LARGEREPS_ITERATIONS:
        return (f"the {stage} attack runs {n_iter} iteration(s), but under {norm} pyautoattack splits APGD's "
                f"iterations into rounds at 3, 2 and 1 times eps and needs at least {MIN_LARGEREPS_ITERATIONS}")
    return None


@dataclass
class AttackOptions:
    """Overrides of the attacks' budgets; ``None`` keeps the leaderboard's value (``adaptive_weight``, the
    adaptive objective's ``w``: :data:`DEFAULT_ADAPTIVE_WEIGHT`).

    Meant for tests and quick looks: any override makes a result non-comparable with the
    leaderboard, and reports say so.
    """

    n_iter: Optional[int] = None
    n_restarts: Optional[int] = None
    n_target_classes: Optional[int] = None
    n_queries: Optional[int] = None
    eot_iter: Optional[int] = None
    adaptive_weight: float = DEFAULT_ADAPTIVE_WEIGHT

    def __post_init__(self) -> None:
        check_fields(self, {**dict.fromkeys(("n_iter", "n_restarts", "n_target_classes", "n_queries", "eot_iter"),
                                            positive_int), "adaptive_weight": check_fraction})

    def overrides(self, stages: Optional[Sequence[str]] = None) -> dict[str, object]:
        """The fields that differ from the leaderboard setting (``adaptive_weight`` too, when it is not
        :data:`DEFAULT_ADAPTIVE_WEIGHT`: the adaptive stages then attack another objective); with ``stages``, only
        those that act on one of them (:data:`OPTION_STAGES`: ``n_queries`` set for a run without Square changes
        nothing)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None and not (k == "adaptive_weight" and v == DEFAULT_ADAPTIVE_WEIGHT)
                and (stages is None or any(stage in OPTION_STAGES[k] for stage in stages))}


def check_options(options: Any) -> AttackOptions:
    """``options`` as :class:`AttackOptions` (``None``: the leaderboard's budgets).

    Raises:
        robust_mix.validate.InvalidInputTypeError: anything else (a dict of budgets, a number), saying how to write
            it (a dict failed later, inside the harness, with an AttributeError).
    """
    if options is None:
        return AttackOptions()
    if isinstance(options, AttackOptions):
        return options
    hint = (f"AttackOptions(**{dict(options)!r})" if isinstance(options, Mapping)
            else "AttackOptions(n_iter=10)")
    raise InvalidInputTypeError(f"options must be robust_mix.protocol.AttackOptions (or None: the leaderboard's "
                                f"budgets), got {options!r} ({type(options).__name__}); write it as {hint}")


#: Budget field of :class:`AttackOptions` -> the stages whose budget it sets (``robust_mix.attacks.StageRunner``).
OPTION_STAGES: dict[str, tuple[str, ...]] = {
    "n_iter": ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t") + ADAPTIVE_STAGES,
    "n_restarts": ("apgd-ce", "apgd-dlr", "adaptive-apgd-ce"),
    "n_target_classes": ("apgd-t", "fab-t", "adaptive-apgd-t"),
    "n_queries": ("square",),
    "eot_iter": ("apgd-ce", "apgd-dlr") + ADAPTIVE_STAGES,
    "adaptive_weight": ADAPTIVE_STAGES,
}
#: Field of :class:`AttackOptions` -> its key in ``attack_settings``, where the two names differ.
OPTION_SETTING: dict[str, str] = {"adaptive_weight": "bce_weight"}



#: Stage -> the group of ``attack_settings`` (``robust_mix.attacks.StageRunner.attack_settings``) holding its budget.
SETTINGS_GROUP: dict[str, str] = {"apgd-ce": "apgd", "apgd-dlr": "apgd", "apgd-t": "apgd-t", "fab": "fab",
                                  "fab-t": "fab", "square": "square", "adaptive-apgd-ce": "adaptive",
                                  "adaptive-apgd-t": "adaptive"}
#: The budgets of a group of ``attack_settings`` that labels name (``"APGD-T (100 iter, 9 targets)"``): counts >= 1.
BUDGET_COUNTS = ("n_iter", "n_restarts", "n_target_classes", "n_queries", "eot_iter")


#: Examples the leaderboard evaluates on (RobustBench): the whole test set, 5,000 for ImageNet.
LEADERBOARD_EXAMPLES = {"cifar10": 10_000, "cifar100": 10_000, "imagenet": 5_000, "fashion-mnist": 10_000}


def canonical_dataset(name: str) -> str:
    """The one spelling of a data set name: lower case, ``-`` for ``_``, ``fmnist`` -> ``fashion-mnist``;
    RobustBench's ``BenchmarkDataset`` members are read as their value (anything but a name is refused)."""
    key = check_dataset(name).lower().replace("_", "-")
    return {"fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}.get(key, key)


#: Relative tolerance of :func:`same_eps`: float32 rounding (about 6e-8) passes, another budget never does.
EPS_RTOL = 1e-6


def same_eps(a: float, b: float) -> bool:
    """Whether two perturbation budgets are the same budget: equal up to float32 rounding, so an eps given as
    ``np.float32(8 / 255)`` or a float32 tensor (recorded as 0.0313725508...) is the entry's 8/255, while 8/255 and
    8.5/255 are two budgets. The one comparison reports, references and leaderboards make."""
    return math.isclose(a, b, rel_tol=EPS_RTOL, abs_tol=0.0)


def required_examples(dataset: str) -> Optional[int]:
    """How many examples the leaderboard evaluates on for ``dataset``, in any of its spellings (``None`` if
    unknown)."""
    return LEADERBOARD_EXAMPLES.get(canonical_dataset(dataset))
