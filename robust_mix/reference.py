"""Reference results: what benchmark rows measured, kept so that a later, smaller run of the same rows
can be checked against them.

A :class:`Reference` holds, per row, the configuration it evaluated (its config fingerprint, which
covers the weights' SHA-256), the attack, clean accuracy on the whole test set and the per-example
robust flags of the attacked first images. :func:`compare` puts a live
:class:`~robust_mix.results.BenchmarkResult` beside its reference row: on the first images both
measured, does the reference's robust accuracy lie inside the live run's 95 % Clopper-Pearson
interval, and on how many of those images do the two disagree.

The Fashion-MNIST zoo ships ``zoo/weights/fmnist-reference.json`` (written by
``python benchmarks/fmnist/claim.py --publish``); ``robust-mix demo`` prints it beside its rows.

>>> reference = Reference.load("fmnist-reference.json")
>>> compare(live_result, reference.rows.get("robust")).status
'agrees'
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from robust_mix.formatting import evaluation_label, format_eps, percent
from robust_mix.io import atomic_write_text
from robust_mix.protocol import same_eps
from robust_mix.results import INTERVAL_LEVEL, BenchmarkResult
from robust_mix.stats import clopper_pearson
from robust_mix.validate import (InvalidInputError, check_eps, check_fraction, check_input_file, check_seed,
                                 check_wall_seconds, parse_json, positive_int)

#: The ``format`` of a reference file this module reads and writes.
FORMAT = "robust_mix-reference/1"
#: The fields a reference file keeps once, for every row (:attr:`ReferenceRow.setting`).
SETTING_FIELDS = ("dataset", "threat_model", "eps")
#: :attr:`Comparison.status` values.
AGREES, DIFFERS, OTHER_MODEL, OTHER_ATTACK, MISSING = "agrees", "differs", "other weights", "other attack", "missing"


@dataclass(frozen=True)
class RowSpec:
    """A benchmark row as data.

    Attributes:
        key: stable identifier (reference rows are keyed by it).
        label: the row's name in tables and progress bars.
        model: a model NAME (:func:`robust_mix.loading.parse_model_name`), e.g. ``"fmnist-robust,alpha=0.9"``.
        adaptive: also run the harness's adaptive attack suite (for adaptive defences).
    """

    key: str
    label: str
    model: str
    adaptive: bool = False

    @property
    def folder(self) -> str:
        """A folder name for the row's state and report: the model NAME, overrides written ``-alpha0.9``."""
        return self.model.replace(",", "-").replace("=", "")


@dataclass
class ReferenceRow:
    """One row's reference figures. ``robust_flags`` are per example, the first ``n_examples`` test images.

    ``dataset``, ``threat_model`` and ``eps`` are what the row was measured on (the file keeps them once,
    at its top; ``None`` when not known): a live run at another eps or on other data is not compared.
    """

    label: str
    model: str
    config_fingerprint: Optional[str]
    attack: str
    attack_label: str
    options: dict[str, Any]
    seed: int
    clean_accuracy: float
    clean_examples: int
    robust_flags: list[bool]
    wall_time_s: float
    dataset: Optional[str] = None
    threat_model: Optional[str] = None
    eps: Optional[float] = None

    @property
    def setting(self) -> tuple[Optional[str], Optional[str], Optional[float]]:
        """``(dataset, threat_model, eps)`` the row was measured on."""
        return self.dataset, self.threat_model, self.eps

    @property
    def n_examples(self) -> int:
        return len(self.robust_flags)

    @property
    def robust_accuracy(self) -> float:
        return sum(self.robust_flags) / self.n_examples

    def robust_interval(self, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
        """Clopper-Pearson interval of :attr:`robust_accuracy`."""
        return clopper_pearson(sum(self.robust_flags), self.n_examples, level)

    def robust_accuracy_first(self, n: int) -> float:
        """Robust accuracy on the first ``n`` images (at most :attr:`n_examples`)."""
        return sum(self.robust_flags[:n]) / min(n, self.n_examples)

    @classmethod
    def from_result(cls, spec: RowSpec, result: BenchmarkResult) -> "ReferenceRow":
        """The reference figures of a finished row; its clean accuracy must have been measured on more
        images (``benchmark(..., clean_examples=...)``)."""
        if result.full_clean_accuracy is None:
            raise ValueError(f"the report of row {spec.key!r} has no clean accuracy on the whole test set; rerun "
                             "it with clean_examples (robust-mix benchmark --clean-examples 10000)")
        if result.images_given:
            raise ValueError(f"the report of row {spec.key!r} was measured on images passed to benchmark(), not on "
                             f"the first test images of {result.dataset} a reference row records; rerun it without "
                             "images= (the harness loads the test split)")
        return cls(label=spec.label, model=spec.model, config_fingerprint=result.config_fingerprint,
                   attack=result.attack, attack_label=evaluation_label(result), options=dict(result.options),
                   seed=result.seed, clean_accuracy=result.full_clean_accuracy,
                   clean_examples=result.full_clean_examples, robust_flags=[bool(f) for f in result.robust_flags],
                   wall_time_s=result.wall_time_s, dataset=result.dataset, threat_model=result.threat_model,
                   eps=result.eps)

    def to_dict(self) -> dict[str, Any]:
        """The row as its file writes it (the setting is the file's, written once: :meth:`Reference.to_dict`)."""
        data = {k: v for k, v in self.__dict__.items() if k not in SETTING_FIELDS}
        data["robust_flags"] = "".join("1" if f else "0" for f in self.robust_flags)  # compact: package data
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str, setting: Optional[dict[str, Any]] = None) -> "ReferenceRow":
        """A row of a reference file, checked field by field; ``setting``: the file's ``dataset``,
        ``threat_model`` and ``eps``.

        Raises:
            robust_mix.validate.InvalidInputError: naming ``source`` and the field.
        """
        names = set(cls.__dataclass_fields__) - set(SETTING_FIELDS)
        if not isinstance(data, dict) or set(data) != names:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise InvalidInputError(f"{source}: a reference row has exactly the fields {sorted(names)}, got {got}")
        flags = data["robust_flags"]
        if not isinstance(flags, str) or not flags or set(flags) - {"0", "1"}:
            raise InvalidInputError(f"{source}: robust_flags must be a non-empty string of 0s and 1s, one per "
                                    f"image, got {str(flags)[:40]!r}")
        for key in ("label", "model", "attack", "attack_label"):
            if not isinstance(data[key], str) or not data[key]:
                raise InvalidInputError(f"{source}: {key} must be a non-empty string, got {data[key]!r}")
        if data["config_fingerprint"] is not None and not isinstance(data["config_fingerprint"], str):
            raise InvalidInputError(f"{source}: config_fingerprint must be a string or null, got "
                                    f"{data['config_fingerprint']!r}")
        if not isinstance(data["options"], dict):
            raise InvalidInputError(f"{source}: options must be an object of budget overrides ({{}} for full "
                                    f"budgets), got {data['options']!r}")
        check_seed(f"{source}: seed", data["seed"])
        check_wall_seconds(f"{source}: wall_time_s", data["wall_time_s"], positive=True)
        row = cls(**{**data, "robust_flags": [c == "1" for c in flags]}, **(setting or {}))
        check_fraction(f"{source}: clean_accuracy", row.clean_accuracy)
        full = positive_int(f"{source}: clean_examples", row.clean_examples)
        if abs(row.clean_accuracy * full - round(row.clean_accuracy * full)) > 1e-6 * full:
            raise InvalidInputError(f"{source}: clean_accuracy is {row.clean_accuracy!r}, not a whole number of the "
                                    f"{full} images; the file was edited or corrupted: write it again with the "
                                    "command that made it")
        return row


@dataclass
class Reference:
    """Reference results of several rows (by :attr:`RowSpec.key`), and how they were made."""

    rows: dict[str, ReferenceRow]
    dataset: str
    threat_model: str
    eps: float
    command: str
    date: str
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_results(cls, specs: Sequence[RowSpec], results: Sequence[BenchmarkResult], *, command: str,
                     date: str) -> "Reference":
        """The reference of finished rows (``results[i]`` is row ``specs[i]``); all on one data set and eps."""
        if not results or len(specs) != len(results):
            raise ValueError(f"a reference needs one result per row, got {len(results)} for {len(specs)} rows")
        first = results[0]
        for spec, result in zip(specs, results):
            if (result.dataset, result.threat_model, result.eps) != (first.dataset, first.threat_model, first.eps):
                raise ValueError(f"row {spec.key!r} was measured on {result.dataset} {result.threat_model} eps "
                                 f"{result.eps}, the others on {first.dataset} {first.threat_model} eps {first.eps}")
        return cls(rows={s.key: ReferenceRow.from_result(s, r) for s, r in zip(specs, results)},
                   dataset=first.dataset, threat_model=first.threat_model, eps=first.eps, command=command, date=date,
                   versions={k: v for k, v in first.versions.items() if k in ("robust_mix", "torch", "pyautoattack")})

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "dataset": self.dataset, "threat_model": self.threat_model, "eps": self.eps,
                "command": self.command, "date": self.date, "versions": self.versions,
                "rows": {key: row.to_dict() for key, row in self.rows.items()}}

    def save(self, path: Union[str, Path]) -> Path:
        """Write as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Reference":
        """Read and check a reference file.

        Raises:
            FileNotFoundError: no such file.
            robust_mix.validate.InvalidInputError: not JSON, or not a reference (names the field).
        """
        path = check_input_file(path, "reference file")
        try:
            data = parse_json(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise InvalidInputError(f"{path} is not a UTF-8 text file, so not a reference file; write it again "
                                    "with the command that made it") from None
        except json.JSONDecodeError as err:
            raise InvalidInputError(f"{path} is not valid JSON ({err}); write it again with the command that "
                                    "made it") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise InvalidInputError(f"{path} is not a reference file: expected format {FORMAT!r}, got {got!r}")
        missing = [k for k in ("dataset", "threat_model", "eps", "command", "date", "rows") if k not in data]
        if missing:
            raise InvalidInputError(f"{path} is not a complete reference file: missing field(s) {missing}; write "
                                    "it again with the command that made it")
        rows = data["rows"]
        if not isinstance(rows, dict) or not rows:
            raise InvalidInputError(f"{path}: 'rows' must be an object with one entry per row")
        for key in ("dataset", "threat_model", "command", "date"):
            if not isinstance(data[key], str) or not data[key]:
                raise InvalidInputError(f"{path}: {key} must be a non-empty string, got {data[key]!r}")
        eps = check_eps(data["eps"], data["threat_model"], name=f"{path}: eps")
        versions = data.get("versions") or {}
        if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
            raise InvalidInputError(f"{path}: versions must be an object of package -> version strings, got "
                                    f"{versions!r}")
        setting = {"dataset": data["dataset"], "threat_model": data["threat_model"], "eps": eps}
        return cls(rows={k: ReferenceRow.from_dict(v, f"{path}: row {k!r}", setting) for k, v in rows.items()},
                   dataset=data["dataset"], threat_model=data["threat_model"], eps=eps,
                   command=data["command"], date=data["date"], versions=dict(versions))


@dataclass(frozen=True)
class Comparison:
    """A live row beside its reference row.

    Attributes:
        status: :data:`AGREES`, :data:`DIFFERS`, :data:`OTHER_MODEL` (the reference evaluated another
            configuration: other weights, ratio or constants, or no fingerprint recorded), :data:`OTHER_ATTACK`
            (another attack, budgets or seed, or another data set, threat model or eps) or :data:`MISSING`.
        n_examples: the first images both runs attacked (0 when not compared).
        reference_robust: the reference's robust accuracy on those images.
        live_interval: the live run's 95 % interval of its robust accuracy on those images.
        differing: images among them on which the two runs disagree (robust in one, not in the other).
        clean_agrees: the reference's clean accuracy lies inside the live one's interval (both on the
            same number of images); ``None`` when not compared.
        detail: one sentence saying why, for the table.
    """

    status: str
    n_examples: int = 0
    reference_robust: Optional[float] = None
    live_interval: Optional[tuple[float, float]] = None
    differing: Optional[int] = None
    clean_agrees: Optional[bool] = None
    detail: str = ""


def _other_setting(live: BenchmarkResult, reference: ReferenceRow) -> list[str]:
    """How the data set, threat model and eps of ``live`` differ from the reference's (empty: the same, or
    not recorded by the reference)."""
    dataset, threat_model, eps = reference.setting
    what = []
    if dataset is not None and live.dataset != dataset:
        what.append(f"on data set {dataset} (this run {live.dataset})")
    elif live.images_given:  # flags of other images: the reference's are the first test images
        what.append(f"on the first test images of {reference.dataset or 'its data set'} (this run on images passed "
                    "to benchmark())")
    if threat_model is not None and live.threat_model != threat_model:
        what.append(f"under threat model {threat_model} (this run {live.threat_model})")
    if eps is not None and not same_eps(live.eps, eps):
        what.append(f"at eps {format_eps(eps, threat_model)} (this run {format_eps(live.eps, live.threat_model)})")
    return what


def _other_attack(live: BenchmarkResult, reference: ReferenceRow) -> str:
    """What differs between the two runs' attacks, short enough for a table cell."""
    what = _other_setting(live, reference)
    if live.attack != reference.attack:
        what.append(f"attack {reference.attack!r} (this run {live.attack!r})")
    if live.options != reference.options:
        budgets = ["full" if not options else "reduced" for options in (reference.options, live.options)]
        what.append("other reduced budgets" if budgets == ["reduced"] * 2
                    else f"{budgets[0]} budgets (this run {budgets[1]})")
    if live.seed != reference.seed:
        what.append(f"seed {reference.seed} (this run {live.seed})")
    return "not compared: the reference ran " + ", ".join(what)


def compare(live: BenchmarkResult, reference: Optional[ReferenceRow], level: float = INTERVAL_LEVEL) -> Comparison:
    """Does ``live`` agree with ``reference`` (the same row, measured on more images) within ``live``'s interval?

    Agreement: the reference's robust accuracy on the first images both attacked lies inside the live
    run's Clopper-Pearson interval on those images, and (when both measured it on the same images)
    its clean accuracy inside the live one's. Runs of other configurations (config fingerprints
    differ, or one of them records none, so that nothing says they evaluated the same weights), on
    other data (another data set, or images passed to ``benchmark()``) or at another eps or threat model, or with other attacks (attack, budgets, seed) are
    not compared.
    """
    if reference is None:
        return Comparison(MISSING, detail="no reference for this row")
    if live.config_fingerprint is None or reference.config_fingerprint is None:
        which = "the reference" if reference.config_fingerprint is None else "this run"
        if live.config_fingerprint is None and reference.config_fingerprint is None:
            which = "neither run"
        return Comparison(OTHER_MODEL, detail=f"no config fingerprint recorded ({which}): nothing says both "
                                              "evaluated the same weights and constants: not compared")
    if live.config_fingerprint != reference.config_fingerprint:
        return Comparison(OTHER_MODEL, detail=f"the reference was measured on other weights or constants "
                                              f"(config fingerprint {reference.config_fingerprint}, this run "
                                              f"{live.config_fingerprint}): not compared")
    if ((live.attack, live.options, live.seed) != (reference.attack, reference.options, reference.seed)
            or _other_setting(live, reference)):
        return Comparison(OTHER_ATTACK, detail=_other_attack(live, reference))
    n = min(live.n_examples, reference.n_examples)
    mine, theirs = live.robust_flags[:n], reference.robust_flags[:n]
    interval = clopper_pearson(sum(bool(f) for f in mine), n, level)
    robust = sum(theirs) / n
    inside = interval[0] <= robust <= interval[1]
    clean_agrees = None
    if live.full_clean_examples == reference.clean_examples and live.full_clean_successes is not None:
        low, high = clopper_pearson(live.full_clean_successes, live.full_clean_examples, level)
        clean_agrees = low <= reference.clean_accuracy <= high
    differing = sum(bool(a) != bool(b) for a, b in zip(mine, theirs))
    agrees = inside and clean_agrees is not False
    parts = [f"robust {percent(robust, 1)} % on the first {n:,} {'inside' if inside else 'OUTSIDE'} the interval",
             f"{differing} of {n:,} images differ"]
    if clean_agrees is False:
        parts.insert(1, f"clean {percent(reference.clean_accuracy)} % OUTSIDE the clean interval")
    elif clean_agrees is None:  # "agrees" judges the robust flags alone then: say so
        live_clean = (f"{live.full_clean_examples:,} images" if live.full_clean_examples is not None
                      else "the attacked images only")
        parts.append(f"clean accuracy not compared (this run measured it on {live_clean}, the reference on "
                     f"{reference.clean_examples:,})")
    return Comparison(AGREES if agrees else DIFFERS, n, robust, interval, differing, clean_agrees,
                      ("agrees: " if agrees else "DIFFERS: ") + "; ".join(parts))
