"""``report.json``: the one schema of a finished evaluation, its one reader and writer.

:class:`BenchmarkResult` is what :func:`robust_mix.benchmark` returns and what every consumer
reads back: reports and submissions (:mod:`robust_mix.report`), model cards and the Hub's
model-index (:mod:`robust_mix.cards`), the leaderboard site. :meth:`BenchmarkResult.from_json`
checks a file before anything trusts its numbers.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from robust_mix.io import atomic_write_text
from robust_mix.protocol import BUDGET_COUNTS, resolve_attack
from robust_mix.stats import clopper_pearson
from robust_mix.validate import (InvalidInputError, check_eps, check_fields, check_fraction, check_input_file,
                                 check_int, check_real, check_seed, check_wall_seconds, parse_json, positive_int)

#: Confidence level of the intervals shown beside accuracies measured on a subset of the test set.
INTERVAL_LEVEL = 0.95
#: Forward passes per prediction that robust_mix's harness counts: 1 for one model, 2 for a mixture.
FORWARD_PASSES = (1, 2)


@dataclass
class BenchmarkResult:
    """One evaluation. Accuracies are fractions in ``[0, 1]``; flags are per example, in order.

    ``robust_accuracy`` (the leaderboard number) counts an example as robust only if it is
    classified correctly and survives every attack suite (AutoAttack and, when run, the
    adaptive attack); ``suite_accuracy`` gives each suite alone, ``stage_accuracy`` the robust
    accuracy after each stage of its suite.

    ``wall_time_s`` covers every session of a resumed run: ``resumed_seconds`` of it were spent
    by earlier sessions on the ``resumed_chunks`` chunks found in the state folder.
    ``config_fingerprint`` is :meth:`ModelConfig.fingerprint` of the configuration the model
    applied (``None`` for a model without a config); ``submit`` checks it against the entry.

    ``full_clean_accuracy`` is clean accuracy on more images than were attacked, the first
    ``full_clean_examples`` test images (usually the whole test set; forward passes only), when
    the run measured it (``None`` otherwise).

    ``cpu_threads`` lists the CPU thread counts the attacks and predictions ran with (every rank and
    session; empty on a GPU and in reports written before it was recorded). Floating-point sums, and so
    the last bits of outputs and gradients, can depend on the thread count: the flags reproduce bit for
    bit on the same device with the same threads (pin them with ``--threads`` or ``$OMP_NUM_THREADS``).

    ``images_given`` is true when the caller passed the images (``benchmark(images=..., labels=...)``) rather than
    letting the harness load ``dataset``'s test split: ``dataset`` then names what the model was built for, not
    where the images came from, and the evaluation cannot back a leaderboard claim (reports written before the
    field read as false).

    ``randomized`` is true when the model gave other scores on a second pass over the same images (test-time
    dropout, input noise, state that changes between calls): its clean and robust accuracy are one draw, which a
    rerun does not reproduce, and unless the ``rand`` version (EOT) attacked it, a deterministic attack overstated
    its robustness, so the evaluation is partial (reports written before the field read as false).
    """

    model: str
    dataset: str
    threat_model: str
    eps: float
    n_examples: int
    attack: str
    seed: int
    clean_accuracy: float
    robust_accuracy: float
    suite_accuracy: dict[str, float]
    stage_accuracy: dict[str, float]
    clean_flags: list[bool]
    robust_flags: list[bool]
    suite_flags: dict[str, list[bool]]
    wall_time_s: float
    examples_per_second: float
    number_forward_passes: int
    attack_settings: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    arguments: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    world_size: int = 1
    chunk_size: int = 0
    resumed_chunks: int = 0
    resumed_seconds: float = 0.0
    config_fingerprint: Optional[str] = None
    command: Optional[str] = None
    full_clean_accuracy: Optional[float] = None
    full_clean_examples: Optional[int] = None
    cpu_threads: list[int] = field(default_factory=list)
    images_given: bool = False
    randomized: bool = False

    @property
    def autoattack_accuracy(self) -> Optional[float]:
        """Robust accuracy under the AutoAttack suite alone (``None`` if it was not run)."""
        return self.suite_accuracy.get("autoattack")

    @property
    def adaptive_accuracy(self) -> Optional[float]:
        """Robust accuracy under the adaptive suite alone (``None`` if it was not run)."""
        return self.suite_accuracy.get("adaptive")

    @property
    def leaderboard_grade(self) -> bool:
        """True when the attacks ran with the leaderboard's full budgets."""
        return not self.options

    @property
    def stages(self) -> list[str]:
        """The attack stages that ran, in order."""
        return list(self.stage_accuracy)

    @property
    def robust_successes(self) -> int:
        """Examples that survive every attack suite (the numerator of ``robust_accuracy``)."""
        return sum(bool(f) for f in self.robust_flags)

    def robust_interval(self, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
        """Clopper-Pearson interval ``(low, high)`` (fractions) of the robust accuracy on these examples."""
        return clopper_pearson(self.robust_successes, self.n_examples, level)

    def interval(self, accuracy: float, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
        """Clopper-Pearson interval of any accuracy of this run measured on its ``n_examples`` (a suite's,
        a stage's): ``accuracy * n_examples`` examples out of ``n_examples``.

        Raises:
            robust_mix.validate.InvalidInputError: ``accuracy`` is not a fraction in ``[0, 1]`` (a percentage such as
                ``85.0`` is named as one; it was reported as 8500 successes out of 100).
        """
        accuracy = check_fraction("accuracy", accuracy)
        return clopper_pearson(round(accuracy * self.n_examples), self.n_examples, level)

    @property
    def full_clean_successes(self) -> Optional[int]:
        """Correctly classified images among the ``full_clean_examples`` (``None`` when not measured)."""
        if self.full_clean_accuracy is None or self.full_clean_examples is None:
            return None
        return round(self.full_clean_accuracy * self.full_clean_examples)

    @property
    def best_clean(self) -> tuple[float, int]:
        """``(accuracy, images)``: clean accuracy on the most images it was measured on, the full clean
        set when measured (``full_clean_accuracy``), else the attacked examples. The figure to compare
        with published clean accuracies, which RobustBench takes on the whole test set."""
        if self.full_clean_accuracy is not None and self.full_clean_examples is not None:
            return self.full_clean_accuracy, self.full_clean_examples
        return self.clean_accuracy, self.n_examples

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: Union[str, Path]) -> None:
        """Write as JSON, atomically."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: Any, source: str = "the report") -> "BenchmarkResult":
        """Rebuild a result and check it: every required field present, accuracies in ``[0, 1]``,
        one flag per example.

        Raises:
            robust_mix.validate.InvalidInputError: naming ``source`` and the offending field.
        """
        if not isinstance(data, dict):
            raise InvalidInputError(f"{source} is not a benchmark report: expected a JSON object, got "
                                    f"{type(data).__name__}")
        other = next((what for keys, what in _OTHER_FILES if set(keys) <= set(data)), None)
        if other is not None:
            raise InvalidInputError(f"{source} is {other}, not a benchmark report; give the report.json that "
                                    "robust-mix benchmark writes into its --out folder (BenchmarkResult.save)")
        fields = dataclasses.fields(cls)
        unknown = sorted(set(data) - {f.name for f in fields})
        missing = [f.name for f in fields if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING and f.name not in data]
        if unknown or missing:
            raise InvalidInputError(f"{source} is not a complete benchmark report: "
                                    + (f"missing field(s) {missing}" if missing else "")
                                    + ("; " if missing and unknown else "")
                                    + (f"unknown field(s) {unknown}" if unknown else "")
                                    + "; write reports with robust-mix benchmark (or BenchmarkResult.save)")
        result = cls(**data)
        if isinstance(result.eps, str):  # a budget written as the field writes it ("8/255"), read as its number
            result.eps = check_eps(result.eps, result.threat_model, name=f"{source}: eps")
        result.check(source)
        return result

    def check(self, source: str = "the report") -> None:
        """Raise ``InvalidInputError`` if a number cannot be a real evaluation's (see :meth:`from_dict`)."""
        where = lambda key: f"{source}: {key}"  # noqa: E731
        try:
            for key in ("model", "dataset", "threat_model", "attack"):
                value = getattr(self, key)
                if not isinstance(value, str) or not value:
                    raise InvalidInputError(f"{where(key)} must be a non-empty string, got {value!r}")
            n = positive_int(where("n_examples"), self.n_examples)
            for key in ("suite_accuracy", "stage_accuracy", "suite_flags", "attack_settings", "options", "arguments",
                        "versions"):
                if not isinstance(getattr(self, key), dict):
                    raise InvalidInputError(f"{where(key)} must be an object (a mapping), got "
                                            f"{getattr(self, key)!r}")
            for group, values in self.attack_settings.items():
                if not isinstance(values, dict):
                    raise InvalidInputError(f"{where(f'attack_settings[{group!r}]')} must be an object (a mapping), "
                                            f"got {values!r}")
                for key in BUDGET_COUNTS:
                    if key in values:
                        positive_int(where(f"attack_settings[{group!r}][{key!r}]"), values[key])
            self._check_run_numbers(source, n)
            for key in ("clean_accuracy", "robust_accuracy"):
                check_fraction(where(key), getattr(self, key))
            for group in ("suite_accuracy", "stage_accuracy"):
                for key, value in getattr(self, group).items():
                    check_fraction(where(f"{group}[{key!r}]"), value)
            flags = {"clean_flags": self.clean_flags, "robust_flags": self.robust_flags,
                     **{f"suite_flags[{k!r}]": v for k, v in self.suite_flags.items()}}
            for key, values in flags.items():
                if not isinstance(values, list) or len(values) != n:
                    raise InvalidInputError(f"{where(key)} must hold one flag per example ({n}), got "
                                            f"{len(values) if isinstance(values, list) else type(values).__name__}")
                odd = next((v for v in values if not isinstance(v, (bool, int)) or v not in (0, 1)), None)
                if odd is not None:
                    raise InvalidInputError(f"{where(key)} must hold true/false flags, got {odd!r}; the report was "
                                            "edited or corrupted")
            accuracies = [("clean_accuracy", self.clean_accuracy, self.clean_flags),
                          ("robust_accuracy", self.robust_accuracy, self.robust_flags),
                          *((f"suite_accuracy[{k!r}]", self.suite_accuracy[k], v) for k, v in self.suite_flags.items()
                            if k in self.suite_accuracy)]
            for key, accuracy, values in accuracies:
                if abs(sum(values) / n - accuracy) > 1e-9:
                    raise InvalidInputError(f"{where(key)} is {accuracy!r} but its per-example flags "
                                            f"give {sum(values) / n!r}; the report was edited or corrupted")
            for key, values in (("clean_flags", self.clean_flags),
                                *((f"suite_flags[{k!r}]", v) for k, v in self.suite_flags.items())):
                wrong = next((i for i, (r, f) in enumerate(zip(self.robust_flags, values)) if r and not f), None)
                if wrong is not None:
                    what = "clean" if key == "clean_flags" else f"robust under {key}"
                    raise InvalidInputError(f"{where('robust_flags')} say robust in example {wrong}, which is not "
                                            f"{what}; the report was edited or corrupted")
            self._check_stages(source, n)
            check_eps(self.eps, self.threat_model, name=where("eps"))
            if (self.full_clean_accuracy is None) != (self.full_clean_examples is None):
                raise InvalidInputError(f"{where('full_clean_accuracy')} and full_clean_examples must both be set "
                                        f"or both be null, got {self.full_clean_accuracy!r} and "
                                        f"{self.full_clean_examples!r}")
            for key in ("images_given", "randomized"):
                if not isinstance(getattr(self, key), bool):
                    raise InvalidInputError(f"{where(key)} must be true or false, got {getattr(self, key)!r}")
            if not isinstance(self.cpu_threads, list) or not all(
                    isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in self.cpu_threads):
                raise InvalidInputError(f"{where('cpu_threads')} must be a list of positive thread counts, got "
                                        f"{self.cpu_threads!r}")
            if self.full_clean_examples is not None:
                full = positive_int(where("full_clean_examples"), self.full_clean_examples)
                check_fraction(where("full_clean_accuracy"), self.full_clean_accuracy)
                if abs(self.full_clean_accuracy * full - round(self.full_clean_accuracy * full)) > 1e-6 * full:
                    raise InvalidInputError(f"{where('full_clean_accuracy')} is {self.full_clean_accuracy!r}, not a "
                                            f"whole number of the {full} images; the report was edited or corrupted")
            self._check_types(source)
        except InvalidInputError:
            raise
        except TypeError as err:  # e.g. a list where a mapping belongs
            raise InvalidInputError(f"{source} is not a valid benchmark report: {err}") from None

    def _check_run_numbers(self, source: str, n: int) -> None:
        """The seed, the counts and the times of the run: each of the kind and range the harness writes, and the
        times consistent (finite; earlier sessions' share of the wall time at most all of it, and none without a
        resumed chunk; no more chunks resumed than the run has).

        Raises:
            robust_mix.validate.InvalidInputError: naming ``source``, the field and its value.
        """
        where = lambda key: f"{source}: {key}"  # noqa: E731
        check_seed(where("seed"), self.seed)
        passes = positive_int(where("number_forward_passes"), self.number_forward_passes)
        if passes not in FORWARD_PASSES:
            raise InvalidInputError(f"{where('number_forward_passes')} is {passes}, but robust_mix's harness counts "
                                    f"{' or '.join(map(str, FORWARD_PASSES))} forward passes per prediction (2 for a "
                                    "mixture, 1 for one model); the report was edited or corrupted")
        positive_int(where("world_size"), self.world_size)
        chunk_size = check_int(where("chunk_size"), self.chunk_size, minimum=0)
        resumed = check_int(where("resumed_chunks"), self.resumed_chunks, minimum=0)
        chunks = -(-n // chunk_size) if chunk_size else None
        if chunks is not None and resumed > chunks:
            raise InvalidInputError(f"{where('resumed_chunks')} is {resumed}, more than the {chunks} chunk(s) of "
                                    f"{chunk_size} that {n} examples make; the report was edited or corrupted")
        wall = check_wall_seconds(where("wall_time_s"), self.wall_time_s, positive=True)
        earlier = check_wall_seconds(where("resumed_seconds"), self.resumed_seconds, high=wall,
                                     why="wall_time_s covers every session")
        if earlier > 0 and not resumed:
            raise InvalidInputError(f"{where('resumed_seconds')} is {earlier!r}, but resumed_chunks is 0: no earlier "
                                    "session's time can count without a chunk it finished; the report was edited or "
                                    "corrupted")
        check_real(where("examples_per_second"), self.examples_per_second, low=0.0, low_open=True)

    def _check_types(self, source: str) -> None:
        """Every field of the kind its annotation states (``eps: "1"`` is text, not a budget; ``versions`` maps names
        to strings), as the harness writes it.

        Raises:
            robust_mix.validate.InvalidInputError: naming ``source``, the field and its value.
        """
        try:
            check_fields(self, prefix=f"{source}: ")
            for name, value in self.versions.items():  # the accuracies' values are checked as fractions
                if not isinstance(value, str):
                    raise InvalidInputError(f"{source}: versions[{name!r}] must be a version string, got {value!r}")
        except InvalidInputError as err:
            raise type(err)(f"{err}; the report was edited or corrupted: write it again with robust-mix benchmark "
                            "(finished chunks resume from its state folder)") from None

    def _check_stages(self, source: str, n: int) -> None:
        """The stages and suites are those of ``attack`` (the stages decide how the run is labelled, and whether it
        is partial), and per suite the accuracy after each stage is a count of the ``n`` examples that never rises
        and ends at the suite's accuracy, as the harness writes them.

        Raises:
            robust_mix.validate.InvalidInputError: naming the stage, and what it should be.
        """
        base, plus, rest = self.attack.partition("+")
        try:
            plan = resolve_attack(base, adaptive=plus == "+" and rest == "adaptive")
        except ValueError:
            plan = None
        if plan is None or (plus and rest != "adaptive") or plan.name != self.attack:
            raise InvalidInputError(f"{source}: attack {self.attack!r} is no attack robust_mix runs; the report was "
                                    "edited or corrupted")
        if list(self.stage_accuracy) != plan.stages or set(self.suite_flags) != set(plan.suites) \
                or set(self.suite_accuracy) != set(plan.suites):
            raise InvalidInputError(
                f"{source}: attack {self.attack!r} runs the stages {plan.stages} in the suites {list(plan.suites)}, "
                f"but stage_accuracy lists {list(self.stage_accuracy)} and suite_accuracy / suite_flags "
                f"{list(self.suite_accuracy)} / {list(self.suite_flags)}; the report was edited or corrupted")
        for suite, stages in plan.suites.items():
            final = sum(self.suite_flags[suite]) / n
            previous = 1.0
            for stage in stages:
                accuracy = self.stage_accuracy[stage]
                key = f"{source}: stage_accuracy[{stage!r}]"
                if abs(accuracy * n - round(accuracy * n)) > 1e-6 * n:
                    raise InvalidInputError(f"{key} is {accuracy!r}, not a whole number of the {n} examples; the "
                                            "report was edited or corrupted")
                if accuracy > previous + 1e-9 or accuracy < final - 1e-9:
                    raise InvalidInputError(f"{key} is {accuracy!r}: a stage only removes robust examples, so it "
                                            f"must lie between the stage before ({previous!r}) and the {suite} "
                                            f"suite's accuracy ({final!r}); the report was edited or corrupted")
                previous = accuracy
            if abs(previous - final) > 1e-9:
                raise InvalidInputError(f"{source}: stage_accuracy[{stages[-1]!r}] is {previous!r}, but the {suite} "
                                        f"suite ends there, at {final!r} by its flags; the report was edited or "
                                        "corrupted")

    @classmethod
    def from_json(cls, path_or_text: Union[str, Path]) -> "BenchmarkResult":
        """Read and check a result from a JSON file (a ``report.json``) or a JSON string.

        Raises:
            FileNotFoundError: no such file.
            robust_mix.validate.InvalidInputError: a folder (e.g. the run's ``--out``: its ``report.json`` is named),
                not JSON (e.g. truncated), or not a valid report.
        """
        text, source = str(path_or_text), "the report text"
        if not text.lstrip().startswith("{"):
            path = check_input_file(path_or_text, "benchmark report", inside="report.json")
            text, source = path.read_text(errors="replace"), str(path)
        try:
            data = parse_json(text)
        except json.JSONDecodeError as err:
            raise InvalidInputError(f"{source} is not valid JSON ({err}); it may be truncated: rerun the "
                                    "benchmark (finished chunks resume from its state folder)") from None
        return cls.from_dict(data, source)


#: Fields by which the other JSON files robust_mix (and RobustBench) write are known -> what such a file is. Each
#: is named when given where a report goes (``submit --report``, ``card --benchmark``), instead of a list of a
#: report's missing fields.
_OTHER_FILES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("clean_acc", "autoattack_acc"), "RobustBench's model-info file (model_info.json, written beside report.json)"),
    (("points", "metadata"), "a sweep file (sweep.json, written by robust-mix sweep)"),
    (("curves", "radii"), "a certificate file (certify.json, written by robust-mix certify)"),
    (("attack_version", "suites"), "a run's record of its arguments (state/run.json)"),
    (("stages_done", "stage_flags"), "one chunk of a run's progress (state/chunk_*.json)"),
    (("format", "rows"), "a reference file of published results"),
    (("standard", "robust"), "a model config (config.json)"),
)


#: A finished evaluation, as a result or as the path of its ``report.json``.
ReportLike = Union[BenchmarkResult, str, Path]


def read_report(report: ReportLike) -> tuple[BenchmarkResult, str]:
    """``(result, name to cite it by)``: a :class:`BenchmarkResult` as given (``"report.json"``), or a
    ``report.json`` path read and checked by :meth:`BenchmarkResult.from_json` (its file name)."""
    if isinstance(report, BenchmarkResult):
        return report, "report.json"
    return BenchmarkResult.from_json(Path(report)), Path(report).name
